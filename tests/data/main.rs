//! Datasets: IDX/CIFAR files and their errors, fuzzed parsers, augmentation, the loader,
//! and (opt-in, `QUADRA_REAL_DATA=1 cargo test --test data data_real`) real Fashion-MNIST.
//! The tests that read or set `QUADRA_DATA_DIR` hold `support::serial()`.

#[path = "../support/mod.rs"]
mod support;

mod data_augment;
mod data_files;
mod data_folder;
mod data_fuzz;
mod data_loader;
mod data_real;
