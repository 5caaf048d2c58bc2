//! Real Fashion-MNIST, opt-in: run with `QUADRA_REAL_DATA=1 cargo test --test data data_real`.
//!
//! Needs the Debian package (`apt-get install dataset-fashion-mnist`, files in
//! /usr/share/datasets/fashion-mnist) or the four IDX files under `$QUADRA_DATA_DIR`.
//! Without `QUADRA_REAL_DATA=1` the test prints that it is skipped and passes; with it, a
//! missing dataset is a failure (the error says what to install).

use quadra::data::augment::{FASHION_MNIST_MEAN, FASHION_MNIST_STD};
use quadra::data::{Augment, Dataset, Loader, LoaderConfig};

use crate::support::serial;

#[test]
fn fashion_mnist_loads() {
    // reads QUADRA_DATA_DIR, which data_files::mnist_format_folders sets for a moment
    let _g = serial();
    if std::env::var("QUADRA_REAL_DATA").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED fashion_mnist_loads: set QUADRA_REAL_DATA=1 to load the real Fashion-MNIST \
             (apt-get install dataset-fashion-mnist)"
        );
        return;
    }
    let t0 = std::time::Instant::now();
    let tt = Dataset::fashion_mnist(None).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "loaded Fashion-MNIST in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!((tt.train.len(), tt.test.len()), (60_000, 10_000));
    assert_eq!((tt.train.classes(), tt.train.shape()), (10, [1, 28, 28]));
    // balanced: 6000 / 1000 of each class
    for (ds, per) in [(&tt.train, 6000), (&tt.test, 1000)] {
        let mut counts = [0usize; 10];
        for &l in ds.labels() {
            counts[l] += 1;
        }
        assert_eq!(counts, [per; 10]);
    }
    // the normalization constants are the training set's statistics
    let v = tt.train.images().as_slice::<f32>().unwrap();
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
    eprintln!("train pixel mean {mean:.4}, std {:.4}", var.sqrt());
    assert!((mean - FASHION_MNIST_MEAN[0] as f64).abs() < 1e-3);
    assert!((var.sqrt() - FASHION_MNIST_STD[0] as f64).abs() < 1e-3);
    // one epoch through the loader
    let l = Loader::new(
        tt.test.clone(),
        LoaderConfig {
            batch_size: 256,
            augment: Augment::train_preset("fashion-mnist"),
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    let mut seen = 0;
    for b in l.epoch(0).unwrap() {
        seen += b.unwrap().1.len();
    }
    assert_eq!(seen, 10_000);
}
