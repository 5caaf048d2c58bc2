//! IDX files: the MNIST / Fashion-MNIST format, plain or gzip-compressed.
//!
//! Layout (big-endian): a 4-byte magic `00 00 08 NDIM` (0x08 = unsigned bytes), NDIM
//! 32-bit dimension sizes, then the values.
//! - images: magic 0x00000803, dims (N, rows, cols), N·rows·cols pixel bytes;
//! - labels: magic 0x00000801, dims (N), N label bytes.
//!
//! Compression is detected by the gzip magic bytes (1f 8b), never by the file name. The
//! length must be exactly what the header declares: a truncated file or trailing bytes are
//! errors. Every error is `Error::File` naming the file and the problem; no input panics.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{display_dirs, file_err, Dataset, TrainTest};
use crate::{Device, Result};

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// The two bytes every gzip member starts with.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The most bytes a compressed file may expand to (a guard against gzip bombs).
pub const MAX_DECOMPRESSED: u64 = 1 << 31;
/// Where Debian's `dataset-fashion-mnist` package installs the four gzip IDX files.
pub const FASHION_MNIST_DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The four files of an MNIST-format dataset (each may also carry a `.gz` suffix).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// A parsed IDX image file: `count` images of `rows`×`cols` bytes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// `bytes` as stored, or gunzipped when they start with the gzip magic. `path` names the
/// file in errors.
pub fn decompress<'a>(bytes: &'a [u8], path: &Path) -> Result<Cow<'a, [u8]>> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(Cow::Borrowed(bytes));
    }
    // the decoded bytes are then widened to f32 (4 bytes each) beside themselves: a member
    // may expand only as far as 5× its size fits in memory (and never past the hard cap)
    let available = Device::Cpu.available_memory().map_or(u64::MAX, |(a, _)| a);
    let limit = MAX_DECOMPRESSED.min(available / 5);
    let mut out = Vec::new();
    let dec = flate2::read::MultiGzDecoder::new(bytes);
    dec.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| file_err(path, format!("corrupt or truncated gzip data: {e}")))?;
    if out.len() as u64 > limit {
        let why = if limit == MAX_DECOMPRESSED {
            format!("past {MAX_DECOMPRESSED} bytes (the cap on decompressed data)")
        } else {
            format!(
                "past {limit} bytes; with its f32 images (4× that) it would need more than the \
                 {} of memory available",
                crate::device::gib(available)
            )
        };
        return Err(file_err(
            path,
            format!("gzip data expands {why}; refusing to read it"),
        ));
    }
    Ok(Cow::Owned(out))
}

/// Read a whole file; a failure names the file.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn describe_magic(m: u32) -> String {
    match m {
        IMAGES_MAGIC => "0x00000803 (IDX images)".to_string(),
        LABELS_MAGIC => "0x00000801 (IDX labels)".to_string(),
        _ if m >> 16 == 0x1f8b => format!("0x{m:08x} (gzip data that did not decompress)"),
        _ => format!("0x{m:08x}"),
    }
}

/// Check the magic and read the `ndim` dimensions; returns (dims, header length).
fn header(bytes: &[u8], path: &Path, magic: u32, what: &str) -> Result<(Vec<usize>, usize)> {
    let ndim = (magic & 0xff) as usize;
    let hlen = 4 + 4 * ndim;
    if bytes.len() < 4 {
        return Err(file_err(
            path,
            format!(
                "{} bytes is too short for an IDX {what} file (needs a {hlen}-byte header)",
                bytes.len()
            ),
        ));
    }
    let m = be_u32(bytes, 0);
    if m != magic {
        return Err(file_err(
            path,
            format!(
                "wrong magic number {}: an IDX {what} file starts with 0x{magic:08x}",
                describe_magic(m)
            ),
        ));
    }
    if bytes.len() < hlen {
        return Err(file_err(
            path,
            format!(
                "truncated header: {} bytes, an IDX {what} header is {hlen}",
                bytes.len()
            ),
        ));
    }
    let dims = (0..ndim)
        .map(|i| be_u32(bytes, 4 + 4 * i) as usize)
        .collect();
    Ok((dims, hlen))
}

fn check_len(
    bytes: &[u8],
    path: &Path,
    hlen: usize,
    body: Option<usize>,
    what: &str,
) -> Result<()> {
    let Some(expected) = body.and_then(|b| b.checked_add(hlen)) else {
        return Err(file_err(
            path,
            format!("header declares more {what} than this machine can address"),
        ));
    };
    if bytes.len() < expected {
        return Err(file_err(
            path,
            format!(
                "truncated: the header declares {what} needing {expected} bytes, the (decompressed) \
                 file has {}",
                bytes.len()
            ),
        ));
    }
    if bytes.len() > expected {
        return Err(file_err(
            path,
            format!(
                "{} trailing bytes after the {what} the header declares ({expected} bytes expected)",
                bytes.len() - expected
            ),
        ));
    }
    Ok(())
}

/// Parse an IDX image file (plain or gzip) from memory. `path` names it in errors.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages> {
    let bytes = decompress(bytes, path)?;
    let (dims, hlen) = header(&bytes, path, IMAGES_MAGIC, "images")?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if count == 0 {
        return Err(file_err(path, "the header declares 0 images"));
    }
    if rows == 0 || cols == 0 {
        return Err(file_err(
            path,
            format!("the header declares {rows}×{cols} images (a zero dimension)"),
        ));
    }
    let body = count.checked_mul(rows).and_then(|v| v.checked_mul(cols));
    check_len(
        &bytes,
        path,
        hlen,
        body,
        &format!("{count} images of {rows}×{cols}"),
    )?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: bytes[hlen..].to_vec(),
    })
}

/// Parse an IDX label file (plain or gzip) from memory. `path` names it in errors.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let bytes = decompress(bytes, path)?;
    let (dims, hlen) = header(&bytes, path, LABELS_MAGIC, "labels")?;
    let count = dims[0];
    if count == 0 {
        return Err(file_err(path, "the header declares 0 labels"));
    }
    check_len(&bytes, path, hlen, Some(count), &format!("{count} labels"))?;
    Ok(bytes[hlen..].to_vec())
}

/// Read and parse an IDX image file.
pub fn read_images(path: &Path) -> Result<IdxImages> {
    parse_images(&read_bytes(path)?, path)
}

/// Read and parse an IDX label file.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels(&read_bytes(path)?, path)
}

/// The bytes of an IDX image file (uncompressed). `pixels.len()` must be
/// `count·rows·cols`.
pub fn encode_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [IMAGES_MAGIC, count, rows, cols] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// The bytes of an IDX label file (uncompressed).
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

/// gzip-compress `bytes` (for writing `.gz` IDX files).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // writing to a Vec cannot fail
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// An image file and its label file as one dataset (1×rows×cols, pixels scaled to
/// [0, 1]). The counts must match and every label must be below `classes`.
pub fn load_pair(images: &Path, labels: &Path, name: &str, classes: usize) -> Result<Dataset> {
    let im = read_images(images)?;
    let lb = read_labels(labels)?;
    if lb.len() != im.count {
        return Err(file_err(
            labels,
            format!(
                "holds {} labels but {} holds {} images",
                lb.len(),
                images.display(),
                im.count
            ),
        ));
    }
    let labels_usize = lb.iter().map(|&l| l as usize).collect();
    Dataset::from_u8(
        name,
        &labels.display().to_string(),
        [1, im.rows, im.cols],
        classes,
        &im.pixels,
        labels_usize,
    )
}

/// `dir/base` or `dir/base.gz`, whichever exists (the plain name first).
pub fn find_file(dir: &Path, base: &str) -> Option<PathBuf> {
    [dir.join(base), dir.join(format!("{base}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// An MNIST-format dataset (10 classes) from the first of `dirs` that holds the training
/// images; `hint` says how to get the files when none does.
pub fn load_mnist_format(name: &str, dirs: &[PathBuf], hint: &str) -> Result<TrainTest> {
    let Some(dir) = dirs.iter().find(|d| find_file(d, TRAIN_IMAGES).is_some()) else {
        return Err(file_err(
            display_dirs(dirs),
            format!(
                "{name} not found: no {TRAIN_IMAGES}[.gz] in these folders. {hint}; or pass \
                 the folder holding {TRAIN_IMAGES}, {TRAIN_LABELS}, {TEST_IMAGES} and \
                 {TEST_LABELS} (plain or .gz), or set {}",
                super::DATA_DIR_ENV
            ),
        ));
    };
    let get = |base: &str| {
        find_file(dir, base).ok_or_else(|| {
            file_err(
                dir.join(base),
                format!("missing ({base} or {base}.gz): {name} needs all four IDX files here"),
            )
        })
    };
    let train = load_pair(&get(TRAIN_IMAGES)?, &get(TRAIN_LABELS)?, name, 10)?;
    let test = load_pair(&get(TEST_IMAGES)?, &get(TEST_LABELS)?, name, 10)?;
    if train.shape() != test.shape() {
        return Err(file_err(
            dir,
            format!(
                "train images are {:?} but test images are {:?}",
                train.shape(),
                test.shape()
            ),
        ));
    }
    Ok(TrainTest { train, test })
}
