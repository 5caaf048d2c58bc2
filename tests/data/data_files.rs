//! IDX and CIFAR files: round trips through files written in a temp dir, and every kind of
//! bad file giving an `Error::File` that names the file and the problem.

use std::path::Path;

use quadra::data::cifar::{self, Cifar100Labels, CifarKind};
use quadra::data::idx;
use quadra::data::Dataset;
use quadra::Error;

use crate::support::{serial, TempDir};

fn pixels(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The error must be `Error::File` for `path` and its message must contain every `words`.
fn expect_file_err<T: std::fmt::Debug>(r: quadra::Result<T>, path: &Path, words: &[&str]) {
    match r {
        Err(Error::File { path: p, msg }) => {
            assert_eq!(
                p,
                path.display().to_string(),
                "error names another file: {msg}"
            );
            for w in words {
                assert!(msg.contains(w), "message `{msg}` lacks `{w}`");
            }
            let shown = Error::File { path: p, msg }.to_string();
            assert!(shown.contains(&path.display().to_string()));
        }
        other => panic!(
            "expected a file error for {}, got {other:?}",
            path.display()
        ),
    }
}

// ---- IDX -----------------------------------------------------------------------------------

#[test]
fn idx_round_trip_plain_and_gzip() {
    let dir = TempDir::new("idx-rt");
    let (n, r, c) = (7usize, 5usize, 4usize);
    let px = pixels(n * r * c, 3);
    let labels: Vec<u8> = (0..n as u8).map(|i| i % 10).collect();
    let img_bytes = idx::encode_images(n as u32, r as u32, c as u32, &px);
    let lab_bytes = idx::encode_labels(&labels);
    for gz in [false, true] {
        let enc = |b: &[u8]| if gz { idx::gzip(b) } else { b.to_vec() };
        // names deliberately say nothing about compression: detection is by magic bytes
        let ip = dir.write(&format!("images-{gz}"), &enc(&img_bytes));
        let lp = dir.write(&format!("labels-{gz}"), &enc(&lab_bytes));
        if gz {
            assert_eq!(&std::fs::read(&ip).unwrap()[..2], &idx::GZIP_MAGIC);
        }
        let im = idx::read_images(&ip).unwrap();
        assert_eq!((im.count, im.rows, im.cols), (n, r, c));
        assert_eq!(im.pixels, px);
        assert_eq!(idx::read_labels(&lp).unwrap(), labels);

        let ds = idx::load_pair(&ip, &lp, "tiny", 10).unwrap();
        assert_eq!(ds.len(), n);
        assert_eq!(ds.shape(), [1, r, c]);
        assert_eq!(ds.classes(), 10);
        assert_eq!(ds.images().shape(), &[n, 1, r, c]);
        assert_eq!(ds.images().category(), quadra::Category::Data);
        let (img3, l3) = ds.sample(3).unwrap();
        assert_eq!(l3, 3);
        let want: Vec<f32> = px[3 * r * c..4 * r * c]
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect();
        assert_eq!(img3, &want[..]);
        assert!(ds.sample(n).is_none());
        let all = ds.images().as_slice::<f32>().unwrap();
        assert!(all.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }
}

fn tiny_idx(n: u32) -> (Vec<u8>, Vec<u8>) {
    let px = pixels(n as usize * 6, 1);
    let labels: Vec<u8> = (0..n as u8).map(|i| i % 10).collect();
    (
        idx::encode_images(n, 2, 3, &px),
        idx::encode_labels(&labels),
    )
}

#[test]
fn idx_truncated_files() {
    let dir = TempDir::new("idx-trunc");
    let (im, lb) = tiny_idx(4);
    for gz in [false, true] {
        let enc = |b: &[u8]| if gz { idx::gzip(b) } else { b.to_vec() };
        let p = dir.write("im", &enc(&im[..im.len() - 1]));
        expect_file_err(idx::read_images(&p), &p, &["truncated", "4 images of 2×3"]);
        let p = dir.write("lb", &enc(&lb[..lb.len() - 2]));
        expect_file_err(idx::read_labels(&p), &p, &["truncated", "4 labels"]);
        // header cut short
        let p = dir.write("im-h", &enc(&im[..10]));
        expect_file_err(idx::read_images(&p), &p, &["truncated header"]);
        let p = dir.write("empty", &enc(&[]));
        expect_file_err(idx::read_images(&p), &p, &["too short"]);
    }
    // a gzip stream cut in the middle
    let gz = idx::gzip(&im);
    let p = dir.write("cut.gz", &gz[..gz.len() / 2]);
    expect_file_err(idx::read_images(&p), &p, &["gzip"]);
}

#[test]
fn idx_trailing_bytes() {
    let dir = TempDir::new("idx-trail");
    let (mut im, mut lb) = tiny_idx(3);
    im.extend_from_slice(b"xyz");
    lb.push(0);
    let p = dir.write("im", &im);
    expect_file_err(idx::read_images(&p), &p, &["3 trailing bytes"]);
    let p = dir.write("lb.gz", &idx::gzip(&lb));
    expect_file_err(idx::read_labels(&p), &p, &["1 trailing bytes"]);
}

#[test]
fn idx_wrong_magic() {
    let dir = TempDir::new("idx-magic");
    let (im, lb) = tiny_idx(3);
    // labels where images are expected, and the other way round
    let p = dir.write("swapped-im", &lb);
    expect_file_err(
        idx::read_images(&p),
        &p,
        &["wrong magic", "0x00000801", "0x00000803"],
    );
    let p = dir.write("swapped-lb", &im);
    expect_file_err(
        idx::read_labels(&p),
        &p,
        &["wrong magic", "0x00000803", "0x00000801"],
    );
    let mut bad = im.clone();
    bad[2] = 0x0d; // float data
    let p = dir.write("float", &bad);
    expect_file_err(idx::read_images(&p), &p, &["wrong magic", "0x00000d03"]);
    let p = dir.write("text.gz", b"hello, not idx at all");
    expect_file_err(idx::read_images(&p), &p, &["wrong magic"]);
}

#[test]
fn idx_zero_dimensions() {
    let dir = TempDir::new("idx-zero");
    let p = dir.write("zero-n", &idx::encode_images(0, 2, 2, &[]));
    expect_file_err(idx::read_images(&p), &p, &["0 images"]);
    let p = dir.write("zero-rows", &idx::encode_images(2, 0, 2, &[]));
    expect_file_err(idx::read_images(&p), &p, &["zero dimension"]);
    let p = dir.write("zero-lb", &idx::encode_labels(&[]));
    expect_file_err(idx::read_labels(&p), &p, &["0 labels"]);
    // a header whose sizes overflow when multiplied
    let p = dir.write(
        "huge",
        &idx::encode_images(u32::MAX, u32::MAX, u32::MAX, &[1, 2]),
    );
    assert!(matches!(idx::read_images(&p), Err(Error::File { .. })));
}

#[test]
fn idx_count_mismatch_and_label_range() {
    let dir = TempDir::new("idx-pair");
    let (im, _) = tiny_idx(4);
    let ip = dir.write("im", &im);
    let lp = dir.write("lb", &idx::encode_labels(&[1, 2, 3]));
    expect_file_err(
        idx::load_pair(&ip, &lp, "t", 10),
        &lp,
        &["3 labels", "4 images", &ip.display().to_string()],
    );
    let lp = dir.write("lb-range", &idx::encode_labels(&[1, 2, 10, 3]));
    expect_file_err(
        idx::load_pair(&ip, &lp, "t", 10),
        &lp,
        &["label 10", "index 2", "out of range"],
    );
}

#[test]
fn idx_missing_file_is_an_error() {
    let dir = TempDir::new("idx-missing");
    let p = dir.0.join("nope");
    expect_file_err(idx::read_images(&p), &p, &["cannot read"]);
}

fn write_mnist_dir(dir: &Path, n_train: u32, n_test: u32, gz: bool) {
    let enc = |b: Vec<u8>| if gz { idx::gzip(&b) } else { b };
    let suffix = if gz { ".gz" } else { "" };
    for (base, bytes) in [
        (idx::TRAIN_IMAGES, tiny_idx(n_train).0),
        (idx::TRAIN_LABELS, tiny_idx(n_train).1),
        (idx::TEST_IMAGES, tiny_idx(n_test).0),
        (idx::TEST_LABELS, tiny_idx(n_test).1),
    ] {
        std::fs::write(dir.join(format!("{base}{suffix}")), enc(bytes)).unwrap();
    }
}

#[test]
fn mnist_format_folders() {
    // sets QUADRA_DATA_DIR below: the tests of this binary that read it hold the lock too
    let _g = serial();
    let dir = TempDir::new("mnist-dir");
    // gzip files in <root>/fashion-mnist, as Debian lays them out
    let sub = dir.0.join("fashion-mnist");
    std::fs::create_dir_all(&sub).unwrap();
    write_mnist_dir(&sub, 12, 5, true);
    let tt = Dataset::fashion_mnist(Some(&dir.0)).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (12, 5));
    assert_eq!(tt.train.name(), "fashion-mnist");
    assert_eq!((tt.train.classes(), tt.train.shape()), (10, [1, 2, 3]));
    let tt = Dataset::fashion_mnist(Some(&sub)).unwrap();
    assert_eq!(tt.train.len(), 12);

    // plain files for MNIST
    let m = dir.0.join("plain");
    std::fs::create_dir_all(&m).unwrap();
    write_mnist_dir(&m, 8, 3, false);
    let tt = Dataset::mnist(Some(&m)).unwrap();
    assert_eq!(
        (tt.train.len(), tt.test.len(), tt.train.name()),
        (8, 3, "mnist")
    );

    // one file missing: the error names it
    std::fs::remove_file(m.join(idx::TEST_LABELS)).unwrap();
    match Dataset::mnist(Some(&m)) {
        Err(Error::File { path, msg }) => {
            assert!(path.ends_with(idx::TEST_LABELS), "{path}");
            assert!(msg.contains("missing"), "{msg}");
        }
        other => panic!("expected a missing-file error, got {other:?}"),
    }

    // nothing there: the error lists the folders and says which package to install
    let empty = dir.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    match Dataset::fashion_mnist(Some(&empty)) {
        Err(e @ Error::File { .. }) => {
            let s = e.to_string();
            assert!(s.contains(&empty.display().to_string()), "{s}");
            assert!(s.contains("apt-get install dataset-fashion-mnist"), "{s}");
            assert!(s.contains("QUADRA_DATA_DIR"), "{s}");
        }
        other => panic!("expected a not-found error, got {other:?}"),
    }

    // QUADRA_DATA_DIR is looked at (before the system folder) when no folder is passed.
    // The only test in this binary that changes the environment.
    std::env::set_var(quadra::data::DATA_DIR_ENV, &dir.0);
    let tt = Dataset::fashion_mnist(None);
    let m2 = Dataset::by_name("mnist", None);
    std::env::remove_var(quadra::data::DATA_DIR_ENV);
    assert_eq!(tt.unwrap().train.len(), 12);
    // $QUADRA_DATA_DIR/mnist does not exist and the root holds no MNIST files
    assert!(matches!(m2, Err(Error::File { .. })), "{m2:?}");
}

// ---- CIFAR ---------------------------------------------------------------------------------

fn cifar10_bytes(labels: &[u8], seed: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        out.push(l);
        out.extend(pixels(cifar::PIXELS, seed.wrapping_add(i as u8)));
    }
    out
}

fn cifar100_bytes(labels: &[(u8, u8)], seed: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &(c, f)) in labels.iter().enumerate() {
        out.push(c);
        out.push(f);
        out.extend(pixels(cifar::PIXELS, seed.wrapping_add(i as u8)));
    }
    out
}

#[test]
fn cifar10_round_trip() {
    let dir = TempDir::new("c10");
    let root = dir.0.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&root).unwrap();
    for (k, f) in cifar::CIFAR10_TRAIN_FILES.iter().enumerate() {
        let labels: Vec<u8> = (0..3).map(|i| ((k * 3 + i) % 10) as u8).collect();
        std::fs::write(root.join(f), cifar10_bytes(&labels, k as u8)).unwrap();
    }
    std::fs::write(
        root.join(cifar::CIFAR10_TEST_FILE),
        cifar10_bytes(&[9, 0], 77),
    )
    .unwrap();
    let tt = Dataset::cifar10(Some(&dir.0)).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (15, 2));
    assert_eq!((tt.train.shape(), tt.train.classes()), ([3, 32, 32], 10));
    let want: Vec<usize> = (0..15).map(|i| i % 10).collect();
    assert_eq!(tt.train.labels(), &want[..]);
    assert_eq!(tt.test.labels(), &[9, 0]);
    // record 4 = second record of data_batch_2: pixels from seed 1 + 1
    let (img, _) = tt.train.sample(4).unwrap();
    let px = pixels(cifar::PIXELS, 2);
    assert!(img.iter().zip(&px).all(|(&a, &b)| a == b as f32 / 255.0));
    // gzip-compressed batches are accepted too
    let r = cifar::parse(
        CifarKind::Cifar10,
        &idx::gzip(&cifar10_bytes(&[1, 2], 0)),
        Path::new("x"),
    )
    .unwrap();
    assert_eq!(r.labels, vec![1, 2]);
}

#[test]
fn cifar100_round_trip_fine_and_coarse() {
    let dir = TempDir::new("c100");
    let recs = [(0u8, 99u8), (19, 0), (5, 42)];
    dir.write(cifar::CIFAR100_TRAIN_FILE, &cifar100_bytes(&recs, 0));
    dir.write(cifar::CIFAR100_TEST_FILE, &cifar100_bytes(&recs[..1], 9));
    let fine = Dataset::cifar100(Some(&dir.0), Cifar100Labels::Fine).unwrap();
    assert_eq!(fine.train.labels(), &[99, 0, 42]);
    assert_eq!((fine.train.classes(), fine.train.name()), (100, "cifar100"));
    let coarse = Dataset::cifar100(Some(&dir.0), Cifar100Labels::Coarse).unwrap();
    assert_eq!(coarse.train.labels(), &[0, 19, 5]);
    assert_eq!(coarse.train.classes(), 20);
    assert_eq!(coarse.test.len(), 1);
    let (img, _) = fine.train.sample(2).unwrap();
    let px = pixels(cifar::PIXELS, 2);
    assert!(img.iter().zip(&px).all(|(&a, &b)| a == b as f32 / 255.0));
}

#[test]
fn cifar_bad_files() {
    let dir = TempDir::new("c-bad");
    let good = cifar10_bytes(&[1, 2, 3], 0);
    let p = dir.write("trunc.bin", &good[..good.len() - 5]);
    expect_file_err(
        cifar::read(CifarKind::Cifar10, &p),
        &p,
        &["3073-byte", "2 records", "3068 bytes left over"],
    );
    let mut trailing = good.clone();
    trailing.push(0);
    let p = dir.write("trail.bin", &trailing);
    expect_file_err(
        cifar::read(CifarKind::Cifar10, &p),
        &p,
        &["not a whole number", "1 bytes left over"],
    );
    let p = dir.write("empty.bin", &[]);
    expect_file_err(cifar::read(CifarKind::Cifar10, &p), &p, &["empty"]);
    let p = dir.write("range.bin", &cifar10_bytes(&[1, 10, 3], 0));
    expect_file_err(
        cifar::read(CifarKind::Cifar10, &p),
        &p,
        &["label 10", "record 1", "out of range 0..10"],
    );
    let p = dir.write("fine.bin", &cifar100_bytes(&[(1, 1), (2, 100)], 0));
    expect_file_err(
        cifar::read(CifarKind::Cifar100(Cifar100Labels::Fine), &p),
        &p,
        &["fine label 100", "record 1"],
    );
    let p = dir.write("coarse.bin", &cifar100_bytes(&[(20, 1)], 0));
    expect_file_err(
        cifar::read(CifarKind::Cifar100(Cifar100Labels::Fine), &p),
        &p,
        &["coarse label 20", "record 0"],
    );
    // a CIFAR-10 file read as CIFAR-100: the record size does not divide
    let p = dir.write("ten.bin", &good);
    expect_file_err(
        cifar::read(CifarKind::Cifar100(Cifar100Labels::Fine), &p),
        &p,
        &["3074-byte"],
    );
}

#[test]
fn cifar_missing_folder_and_files() {
    let dir = TempDir::new("c-missing");
    match Dataset::cifar10(Some(&dir.0)) {
        Err(e @ Error::File { .. }) => {
            let s = e.to_string();
            assert!(
                s.contains("data_batch_1.bin") && s.contains("cifar-10-binary.tar.gz"),
                "{s}"
            );
        }
        other => panic!("{other:?}"),
    }
    dir.write("data_batch_1.bin", &cifar10_bytes(&[1], 0));
    match Dataset::cifar10(Some(&dir.0)) {
        Err(Error::File { path, msg }) => {
            assert!(path.ends_with("data_batch_2.bin"), "{path}");
            assert!(msg.contains("missing"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

// ---- the dataset type ----------------------------------------------------------------------

#[test]
fn dataset_labels_out_of_range_name_source_and_index() {
    let r = Dataset::from_u8(
        "t",
        "some/file.bin",
        [1, 1, 2],
        3,
        &[0, 1, 2, 3, 4, 5],
        vec![0, 2, 3],
    );
    expect_file_err(
        r,
        Path::new("some/file.bin"),
        &["label 3", "index 2", "3 classes"],
    );
    let r = Dataset::from_f32("t", "src", [1, 1, 2], 3, vec![0.0; 5], vec![0, 1, 2]);
    assert!(matches!(r, Err(Error::File { .. })));
}

#[test]
fn dataset_split_subset_take() {
    let n = 10;
    let imgs: Vec<f32> = (0..n * 4).map(|v| v as f32).collect();
    let labels: Vec<usize> = (0..n).map(|i| i % 3).collect();
    let ds = Dataset::from_f32("t", "mem", [1, 2, 2], 3, imgs, labels).unwrap();
    let (a, b) = ds.split(7).unwrap();
    assert_eq!((a.len(), b.len()), (7, 3));
    assert_eq!(b.sample(0).unwrap().0, ds.sample(7).unwrap().0);
    assert_eq!(b.labels(), &ds.labels()[7..]);
    assert!(ds.split(11).is_err());
    let s = ds.subset(&[9, 0, 9]).unwrap();
    assert_eq!(s.labels(), &[0, 0, 0]);
    assert_eq!(s.sample(0).unwrap().0, &[36.0, 37.0, 38.0, 39.0]);
    assert_eq!(s.sample(2).unwrap().0, ds.sample(9).unwrap().0);
    assert!(ds.subset(&[10]).is_err());
    assert_eq!(ds.take(4).unwrap().len(), 4);
    assert_eq!(ds.take(100).unwrap().len(), 10);
    let (x, y) = ds.random_split(6, 5).unwrap();
    let (x2, _) = ds.random_split(6, 5).unwrap();
    assert_eq!(
        x.images().to_vec::<f32>().unwrap(),
        x2.images().to_vec::<f32>().unwrap()
    );
    // together the two parts hold every sample once
    let mut firsts: Vec<u32> = x
        .images()
        .as_slice::<f32>()
        .unwrap()
        .chunks(4)
        .chain(y.images().as_slice::<f32>().unwrap().chunks(4))
        .map(|c| c[0] as u32)
        .collect();
    firsts.sort();
    assert_eq!(firsts, (0..n as u32).map(|i| i * 4).collect::<Vec<_>>());
}

#[test]
fn synthetic_through_the_dataset_type() {
    let tt = Dataset::synthetic(50, 20, 3).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (50, 20));
    assert_eq!((tt.train.shape(), tt.train.classes()), ([1, 28, 28], 10));
    assert_eq!(tt.train.images().category(), quadra::Category::Data);
    let again = Dataset::synthetic(50, 20, 3).unwrap();
    assert_eq!(
        tt.train.images().to_vec::<f32>().unwrap(),
        again.train.images().to_vec::<f32>().unwrap()
    );
    assert_ne!(
        tt.train.images().to_vec::<f32>().unwrap()[..784],
        tt.test.images().to_vec::<f32>().unwrap()[..784]
    );
    assert!(Dataset::by_name("imagenet", None).is_err());
}
