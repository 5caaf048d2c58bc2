//! The loader: deterministic batches whatever the worker count, every sample once per
//! epoch, mid-epoch start = tail of a full epoch, clean early drop.

use quadra::data::{Augment, Dataset, Loader, LoaderConfig, Normalize};
use quadra::Category;

/// n samples of 1×3×3 whose first pixel is the sample index (so batches can be traced).
fn indexed(n: usize) -> Dataset {
    let mut xs = Vec::new();
    for i in 0..n {
        xs.push(i as f32);
        xs.extend((1..9).map(|k| (i * 9 + k) as f32 / 1000.0));
    }
    Dataset::from_f32(
        "indexed",
        "mem",
        [1, 3, 3],
        7,
        xs,
        (0..n).map(|i| i % 7).collect(),
    )
    .unwrap()
}

type Flat = Vec<(Vec<u32>, Vec<usize>)>;

fn collect(it: impl Iterator<Item = quadra::Result<(quadra::Tensor, Vec<usize>)>>) -> Flat {
    it.map(|r| {
        let (x, y) = r.unwrap();
        assert_eq!(x.category(), Category::Data);
        assert_eq!(x.shape()[0], y.len());
        (
            x.as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect(),
            y,
        )
    })
    .collect()
}

fn cfg(workers: usize, augment: Augment) -> LoaderConfig {
    LoaderConfig {
        batch_size: 8,
        shuffle: true,
        drop_last: false,
        seed: 1234,
        workers,
        prefetch: 2,
        augment,
    }
}

fn heavy_augment() -> Augment {
    Augment {
        crop_padding: Some(1),
        hflip: true,
        normalize: Some(Normalize::new(&[0.1], &[0.5]).unwrap()),
        cutout: Some(2),
    }
}

#[test]
fn same_batches_with_0_1_and_3_workers() {
    let ds = indexed(61);
    for aug in [Augment::none(), heavy_augment()] {
        let reference = collect(
            Loader::new(ds.clone(), cfg(0, aug.clone()))
                .unwrap()
                .epoch(3)
                .unwrap(),
        );
        assert_eq!(reference.len(), 8); // 61 = 7·8 + 5
        for workers in [1, 3] {
            for _ in 0..3 {
                let l = Loader::new(ds.clone(), cfg(workers, aug.clone())).unwrap();
                assert_eq!(collect(l.epoch(3).unwrap()), reference, "{workers} workers");
            }
        }
        // the synchronous per-batch call agrees too
        let l = Loader::new(ds.clone(), cfg(3, aug.clone())).unwrap();
        for (b, want) in reference.iter().enumerate() {
            let (x, y) = l.batch(3, b).unwrap();
            assert_eq!(&y, &want.1);
            assert_eq!(
                x.as_slice::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
                want.0
            );
        }
    }
}

#[test]
fn seeds_and_epochs_change_the_order() {
    let ds = indexed(40);
    let l = Loader::new(ds.clone(), cfg(2, Augment::none())).unwrap();
    assert_ne!(l.order(0), l.order(1));
    let mut c = cfg(2, Augment::none());
    c.seed = 99;
    let l2 = Loader::new(ds.clone(), c).unwrap();
    assert_ne!(l.order(0), l2.order(0));
    assert_eq!(
        l.order(0),
        Loader::new(ds.clone(), cfg(1, Augment::none()))
            .unwrap()
            .order(0)
    );
    let mut c = cfg(2, Augment::none());
    c.shuffle = false;
    let l3 = Loader::new(ds, c).unwrap();
    assert_eq!(l3.order(5), (0..40).collect::<Vec<_>>());
}

#[test]
fn every_sample_exactly_once_per_epoch() {
    let n = 53;
    let ds = indexed(n);
    for workers in [0, 1, 3] {
        for epoch in 0..3 {
            let l = Loader::new(ds.clone(), cfg(workers, Augment::none())).unwrap();
            let mut seen = vec![0usize; n];
            let mut sizes = Vec::new();
            for r in l.epoch(epoch).unwrap() {
                let (x, y) = r.unwrap();
                let v = x.as_slice::<f32>().unwrap();
                sizes.push(y.len());
                for (k, img) in v.chunks(9).enumerate() {
                    let i = img[0] as usize;
                    seen[i] += 1;
                    assert_eq!(y[k], i % 7, "label travels with its image");
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
            assert_eq!(sizes, vec![8, 8, 8, 8, 8, 8, 5]);
        }
    }
    // drop_last: only full batches, no sample twice
    let mut c = cfg(2, Augment::none());
    c.drop_last = true;
    let l = Loader::new(ds.clone(), c).unwrap();
    assert_eq!((l.batches_per_epoch(), l.samples_per_epoch()), (6, 48));
    let got = collect(l.epoch(0).unwrap());
    assert_eq!(got.len(), 6);
    assert!(got.iter().all(|(_, y)| y.len() == 8));
    let mut firsts: Vec<u32> = got
        .iter()
        .flat_map(|(x, _)| x.chunks(9).map(|c| f32::from_bits(c[0]) as u32))
        .collect();
    firsts.sort();
    firsts.dedup();
    assert_eq!(firsts.len(), 48);
}

#[test]
fn mid_epoch_start_is_the_tail_of_a_full_epoch() {
    let ds = indexed(45);
    for workers in [0, 1, 3] {
        let l = Loader::new(ds.clone(), cfg(workers, heavy_augment())).unwrap();
        let full = collect(l.epoch(7).unwrap());
        assert_eq!(full.len(), 6);
        for start in 0..=6 {
            let it = l.epoch_from(7, start).unwrap();
            assert_eq!(it.next_batch(), start);
            assert_eq!(it.len(), 6 - start);
            assert_eq!(
                collect(it),
                full[start..],
                "start {start}, {workers} workers"
            );
        }
        assert!(l.epoch_from(7, 7).is_err());
    }
}

#[test]
fn dropping_early_stops_the_workers() {
    let ds = indexed(400);
    let mut c = cfg(3, heavy_augment());
    c.batch_size = 4;
    c.prefetch = 2;
    let l = Loader::new(ds, c).unwrap();
    for _ in 0..20 {
        let mut it = l.epoch(0).unwrap();
        let first = it.next().unwrap().unwrap();
        assert_eq!(first.1.len(), 4);
        assert_eq!(it.next_batch(), 1);
        drop(it); // must join the workers (blocked on full channels) without hanging
    }
    // drop before taking anything, and drop after the end
    drop(l.epoch(1).unwrap());
    let mut it = l.epoch_from(1, 98).unwrap();
    assert!(it.next().is_some() && it.next().is_some() && it.next().is_none());
}

#[test]
fn bad_configs_are_errors() {
    let ds = indexed(5);
    let mut c = cfg(1, Augment::none());
    c.batch_size = 0;
    assert!(Loader::new(ds.clone(), c).is_err());
    let mut c = cfg(1, Augment::none());
    c.prefetch = 0;
    assert!(Loader::new(ds.clone(), c).is_err());
    let mut c = cfg(1, Augment::none());
    c.drop_last = true; // 5 < 8
    assert!(Loader::new(ds.clone(), c).is_err());
    let c = cfg(1, Augment::train_preset("cifar10")); // 3-channel normalize, grey images
    assert!(Loader::new(ds.clone(), c).is_err());
    let empty = ds.subset(&[]).unwrap();
    assert!(Loader::new(empty, cfg(1, Augment::none())).is_err());
}
