//! Datasets. For now the synthetic one used by the smoke tests, the first-run example and
//! benchmarks; real datasets (IDX, CIFAR) come with quadra-train.

pub mod synthetic;
