//! A folder of images as a dataset, in torchvision's `ImageFolder` layout:
//!
//! ```text
//! PATH/train/<class>/<image>.png     PATH/val/<class>/…   (or PATH/test/<class>/…)
//! PATH/<class>/<image>.png                                (no train/: split by seed)
//! ```
//!
//! Classes are the subfolder names in sorted order (label 0 is the first), as
//! torchvision's; files are PNG or JPEG by extension, sorted by name; hidden entries and
//! other files are skipped. Without `train/`, one tenth of the images (at least one) is
//! held out for testing by a split seeded by the run's seed (`Dataset::random_split`).
//!
//! Every image must have the first one's size (no resizing: a mixed-size folder is an error
//! naming the file). The channel count is 1 when every image is grey, else 3 (grey images
//! then repeated over RGB). The images are decoded on all cores at load time into the
//! in-memory dataset (the size is checked against the host's memory first, from the file
//! headers): a folder must fit in memory, as the built-in sets do.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::decode::{decode, dimensions, is_image_file, to_sample, Decoded};
use super::{file_err, Dataset, TrainTest};
use crate::{Device, Result};

/// The train and test sets of a folder (see the module docs); `seed` splits a folder
/// without `train/`.
pub fn load(root: &Path, seed: u64) -> Result<TrainTest> {
    if !root.is_dir() {
        return Err(file_err(
            root,
            "not a folder (expected one subfolder per class)",
        ));
    }
    let train_dir = root.join("train");
    let test_dir = ["val", "test"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir());
    if train_dir.is_dir() {
        let Some(test_dir) = test_dir else {
            return Err(file_err(
                root,
                "has train/ but neither val/ nor test/ (or give a folder of class folders, \
                 which is split by the seed)",
            ));
        };
        let train_files = list_classes(&train_dir)?;
        let test_files = list_classes(&test_dir)?;
        let names: Vec<&String> = train_files.iter().map(|(n, _)| n).collect();
        let test_names: Vec<&String> = test_files.iter().map(|(n, _)| n).collect();
        if names != test_names {
            return Err(file_err(
                &test_dir,
                format!(
                    "its classes {test_names:?} differ from train/'s {names:?} (labels would \
                     mean different classes)"
                ),
            ));
        }
        let (w, h) = scan_size(&train_files, &test_files)?;
        let train_img = decode_all(&train_files)?;
        let test_img = decode_all(&test_files)?;
        let shape = [channels(train_img.iter().chain(&test_img)), h, w];
        let train = build(&train_dir, &train_files, train_img, shape)?;
        let test = build(&test_dir, &test_files, test_img, shape)?;
        return Ok(TrainTest { train, test });
    }
    let files = list_classes(root)?;
    let (w, h) = scan_size(&files, &Vec::new())?;
    let decoded = decode_all(&files)?;
    let shape = [channels(&decoded), h, w];
    let all = build(root, &files, decoded, shape)?;
    if all.len() < 2 {
        return Err(file_err(
            root,
            "holds one image: a split into train and test needs at least two",
        ));
    }
    let n_test = (all.len() / 10).max(1);
    let (test, train) = all.random_split(n_test, seed)?;
    Ok(TrainTest { train, test })
}

/// (class name, its image files) for each class folder of `dir`, sorted.
type Classes = Vec<(String, Vec<PathBuf>)>;

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| file_err(dir, format!("cannot list: {e}")))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| file_err(dir, format!("cannot list: {e}")))?;
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if !hidden {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

fn list_classes(dir: &Path) -> Result<Classes> {
    let mut classes = Vec::new();
    for sub in sorted_entries(dir)?.into_iter().filter(|p| p.is_dir()) {
        let name = sub
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let files: Vec<PathBuf> = sorted_entries(&sub)?
            .into_iter()
            .filter(|p| p.is_file() && is_image_file(p))
            .collect();
        if files.is_empty() {
            return Err(file_err(
                &sub,
                "class folder without images (PNG or JPEG files; each class needs at least one)",
            ));
        }
        classes.push((name, files));
    }
    if classes.is_empty() {
        return Err(file_err(
            dir,
            "no class folders: expected one subfolder of images per class",
        ));
    }
    Ok(classes)
}

/// The (width, height) every image listed has (from the file headers), after checking
/// that they all have one size and that their samples fit in memory.
fn scan_size(a: &Classes, b: &Classes) -> Result<(usize, usize)> {
    let files: Vec<&PathBuf> = a.iter().chain(b).flat_map(|(_, f)| f).collect();
    let dims: Vec<(u32, u32)> = files
        .par_iter()
        .map(|p| dimensions(p))
        .collect::<Result<_>>()?;
    let (w, h) = dims[0];
    if let Some(i) = dims.iter().position(|&d| d != (w, h)) {
        return Err(file_err(
            files[i],
            format!(
                "is {}×{}, {} is {w}×{h}: every image of a folder dataset must have one size",
                dims[i].0,
                dims[i].1,
                files[0].display()
            ),
        ));
    }
    // f32 samples of up to 3 channels, plus the decoded pixels (up to 4 bytes each)
    let bytes = files.len() as u64 * w as u64 * h as u64 * (3 * 4 + 4);
    Device::Cpu.check_alloc(bytes, &|| {
        format!("{} images of {w}×{h} as f32", files.len())
    })?;
    Ok((w as usize, h as usize))
}

/// Every image of `classes`, decoded (on all cores), with its label (class order).
fn decode_all(classes: &Classes) -> Result<Vec<(Decoded, usize)>> {
    let items: Vec<(&PathBuf, usize)> = classes
        .iter()
        .enumerate()
        .flat_map(|(label, (_, files))| files.iter().map(move |f| (f, label)))
        .collect();
    items
        .par_iter()
        .map(|&(p, label)| Ok((decode(p)?, label)))
        .collect()
}

/// The dataset of decoded images (each a `shape` sample) from folder `dir`.
fn build(
    dir: &Path,
    classes: &Classes,
    decoded: Vec<(Decoded, usize)>,
    shape: [usize; 3],
) -> Result<Dataset> {
    let mut images = Vec::with_capacity(decoded.len() * shape.iter().product::<usize>());
    let mut labels = Vec::with_capacity(decoded.len());
    for (d, label) in decoded {
        to_sample(&d.image, shape, &mut images)?;
        labels.push(label);
    }
    let names: Vec<&str> = classes.iter().map(|(n, _)| n.as_str()).collect();
    let source = dir.display().to_string();
    Dataset::from_f32("folder", &source, shape, classes.len(), images, labels)?
        .with_class_names(&names)
}

/// 1 channel when every image is grey, else 3.
fn channels<'a>(decoded: impl IntoIterator<Item = &'a (Decoded, usize)>) -> usize {
    if decoded.into_iter().all(|(d, _)| d.grey) {
        1
    } else {
        3
    }
}
