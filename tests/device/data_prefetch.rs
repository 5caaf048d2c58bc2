//! The loader's prefetch is bounded: with the consumer idle, each worker holds at most
//! `prefetch` finished batches plus the one it is blocked sending. In tests/device, whose
//! tests hold `support::serial()`, so that the Data byte counter sees no other test's
//! tensors.

use quadra::data::{Augment, Dataset, Loader, LoaderConfig};
use quadra::Category;

use crate::support::serial;

#[test]
fn prefetch_is_bounded_and_released() {
    let _g = serial();
    let n = 800;
    let xs: Vec<f32> = (0..n * 9).map(|v| v as f32).collect();
    let ds = Dataset::from_f32("t", "mem", [1, 3, 3], 2, xs, vec![1; n]).unwrap();
    let cfg = LoaderConfig {
        batch_size: 10,
        workers: 2,
        prefetch: 2,
        augment: Augment::none(),
        ..LoaderConfig::default()
    };
    let l = Loader::new(ds, cfg).unwrap();
    let tracker = quadra::device::alloc::cpu_tracker();
    let before = tracker.current(Category::Data);
    let batch_bytes = (10 * 9 * 4) as u64;
    let it = l.epoch(0).unwrap();
    // wait until the workers have filled their channels (or give up after 5 s)
    let t0 = std::time::Instant::now();
    while tracker.current(Category::Data) - before < 6 * batch_bytes && t0.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let held = tracker.current(Category::Data) - before;
    assert!(held >= 2 * batch_bytes, "nothing prefetched: {held} bytes");
    assert!(
        held <= 6 * batch_bytes,
        "{held} bytes prefetched, more than 2·(2+1) batches"
    );
    let mut it = it;
    let b = it.next().unwrap().unwrap();
    drop(b);
    drop(it);
    assert_eq!(
        tracker.current(Category::Data),
        before,
        "batches leaked after drop"
    );
}
