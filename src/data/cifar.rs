//! CIFAR-10 and CIFAR-100, binary versions.
//!
//! - CIFAR-10 (`data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`): records of
//!   3073 bytes: 1 label byte (0..10), then 3072 pixels: the 1024 red values of the 32×32
//!   image row-major, then green, then blue: already (C, H, W).
//! - CIFAR-100 (`train.bin`, `test.bin`): records of 3074 bytes: the coarse label (0..20),
//!   the fine label (0..100), then 3072 pixels as above.
//!
//! A file must be a whole, non-zero number of records and every label in range; errors
//! are `Error::File` naming the file, the record and the problem. gzip-compressed files
//! are accepted (detected by their magic bytes).

use std::path::{Path, PathBuf};

use super::idx::{decompress, read_bytes};
use super::{display_dirs, file_err, Dataset, TrainTest};
use crate::Result;

pub const PIXELS: usize = 3 * 32 * 32;
pub const CIFAR10_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";
pub const CIFAR100_TRAIN_FILE: &str = "train.bin";
pub const CIFAR100_TEST_FILE: &str = "test.bin";

/// Which CIFAR-100 labels a dataset uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar100Labels {
    /// The 100 classes.
    Fine,
    /// The 20 superclasses.
    Coarse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarKind {
    Cifar10,
    Cifar100(Cifar100Labels),
}

impl CifarKind {
    /// Bytes per record: label byte(s) and 3072 pixels.
    pub fn record_size(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1 + PIXELS,
            CifarKind::Cifar100(_) => 2 + PIXELS,
        }
    }
    /// Classes of the labels the dataset uses.
    pub fn classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100(Cifar100Labels::Fine) => 100,
            CifarKind::Cifar100(Cifar100Labels::Coarse) => 20,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar10",
            CifarKind::Cifar100(Cifar100Labels::Fine) => "cifar100",
            CifarKind::Cifar100(Cifar100Labels::Coarse) => "cifar100-coarse",
        }
    }
}

/// The records of one CIFAR file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CifarRecords {
    /// count·3072 bytes, each image (3, 32, 32).
    pub pixels: Vec<u8>,
    /// CIFAR-10: the label; CIFAR-100: the fine label.
    pub labels: Vec<u8>,
    /// CIFAR-100: the coarse label; empty for CIFAR-10.
    pub coarse: Vec<u8>,
}

impl CifarRecords {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Parse a CIFAR binary file from memory (`kind`'s label choice does not matter here:
/// both CIFAR-100 labels are returned and checked). `path` names it in errors.
pub fn parse(kind: CifarKind, bytes: &[u8], path: &Path) -> Result<CifarRecords> {
    let bytes = decompress(bytes, path)?;
    let rec = kind.record_size();
    let set = match kind {
        CifarKind::Cifar10 => "CIFAR-10",
        CifarKind::Cifar100(_) => "CIFAR-100",
    };
    if bytes.is_empty() {
        return Err(file_err(path, format!("empty file: no {set} records")));
    }
    if bytes.len() % rec != 0 {
        return Err(file_err(
            path,
            format!(
                "{} bytes is not a whole number of {rec}-byte {set} records ({} records and {} \
                 bytes left over): truncated, trailing bytes, or not a {set} binary file",
                bytes.len(),
                bytes.len() / rec,
                bytes.len() % rec
            ),
        ));
    }
    let n = bytes.len() / rec;
    let mut out = CifarRecords {
        pixels: Vec::with_capacity(n * PIXELS),
        labels: Vec::with_capacity(n),
        coarse: Vec::new(),
    };
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let check = |l: u8, classes: u8, what: &str| {
            if l >= classes {
                Err(file_err(
                    path,
                    format!(
                        "{what} {l} of record {i} (byte offset {}) is out of range 0..{classes}",
                        i * rec
                    ),
                ))
            } else {
                Ok(l)
            }
        };
        match kind {
            CifarKind::Cifar10 => out.labels.push(check(r[0], 10, "label")?),
            CifarKind::Cifar100(_) => {
                out.coarse.push(check(r[0], 20, "coarse label")?);
                out.labels.push(check(r[1], 100, "fine label")?);
            }
        }
        out.pixels.extend_from_slice(&r[rec - PIXELS..]);
    }
    Ok(out)
}

/// Read and parse a CIFAR binary file.
pub fn read(kind: CifarKind, path: &Path) -> Result<CifarRecords> {
    parse(kind, &read_bytes(path)?, path)
}

/// Several files of one kind as one dataset, in file order (3×32×32, scaled to [0, 1]).
pub fn load_files(kind: CifarKind, files: &[PathBuf]) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let r = read(kind, f)?;
        pixels.extend_from_slice(&r.pixels);
        let ls = match kind {
            CifarKind::Cifar100(Cifar100Labels::Coarse) => &r.coarse,
            _ => &r.labels,
        };
        labels.extend(ls.iter().map(|&l| l as usize));
    }
    let source = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Dataset::from_u8(
        kind.name(),
        &source,
        [3, 32, 32],
        kind.classes(),
        &pixels,
        labels,
    )
}

/// A CIFAR dataset from the first of `dirs` holding its first training file.
pub fn load_dir(kind: CifarKind, dirs: &[PathBuf]) -> Result<TrainTest> {
    let (train_files, test_file, archive, folder): (&[&str], &str, &str, &str) = match kind {
        CifarKind::Cifar10 => (
            &CIFAR10_TRAIN_FILES,
            CIFAR10_TEST_FILE,
            "cifar-10-binary.tar.gz",
            "cifar-10-batches-bin",
        ),
        CifarKind::Cifar100(_) => (
            &[CIFAR100_TRAIN_FILE],
            CIFAR100_TEST_FILE,
            "cifar-100-binary.tar.gz",
            "cifar-100-binary",
        ),
    };
    let Some(dir) = dirs.iter().find(|d| d.join(train_files[0]).is_file()) else {
        return Err(file_err(
            display_dirs(dirs),
            format!(
                "{} not found: no {} in these folders. It has no Debian package: get the \
                 binary version ({archive}), extract it, and pass the {folder} folder (or its \
                 parent), or set {}",
                kind.name(),
                train_files[0],
                super::DATA_DIR_ENV
            ),
        ));
    };
    let files = |names: &[&str]| -> Result<Vec<PathBuf>> {
        names
            .iter()
            .map(|n| {
                let p = dir.join(n);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(file_err(
                        &p,
                        format!("missing: {} needs {} here", kind.name(), names.join(", ")),
                    ))
                }
            })
            .collect()
    };
    Ok(TrainTest {
        train: load_files(kind, &files(train_files)?)?,
        test: load_files(kind, &files(&[test_file])?)?,
    })
}
