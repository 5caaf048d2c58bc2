//! Property-based fuzzing of the file parsers: random bytes and mutations of valid files
//! (plain and gzip) never panic; every failure is an `Error::File` naming the file; and a
//! mutated file that still parses is self-consistent.

use std::path::Path;

use proptest::prelude::*;
use quadra::data::cifar::{self, Cifar100Labels, CifarKind};
use quadra::data::idx;
use quadra::Error;

const NAME: &str = "fuzz/input.bin";

fn check_err<T>(r: &quadra::Result<T>) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        match e {
            Error::File { path, msg } => {
                prop_assert_eq!(path.as_str(), NAME);
                prop_assert!(!msg.is_empty());
            }
            other => prop_assert!(false, "not a file error: {other:?}"),
        }
    }
    Ok(())
}

fn run_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    let p = Path::new(NAME);
    let im = idx::parse_images(bytes, p);
    check_err(&im)?;
    if let Ok(im) = &im {
        prop_assert_eq!(im.pixels.len(), im.count * im.rows * im.cols);
        prop_assert!(im.count > 0 && im.rows > 0 && im.cols > 0);
    }
    let lb = idx::parse_labels(bytes, p);
    check_err(&lb)?;
    if let Ok(lb) = &lb {
        prop_assert!(!lb.is_empty());
    }
    for kind in [
        CifarKind::Cifar10,
        CifarKind::Cifar100(Cifar100Labels::Fine),
    ] {
        let r = cifar::parse(kind, bytes, p);
        check_err(&r)?;
        if let Ok(r) = &r {
            prop_assert_eq!(r.pixels.len(), r.len() * cifar::PIXELS);
            prop_assert!(r.labels.iter().all(|&l| (l as usize) < 100));
            if kind == CifarKind::Cifar10 {
                prop_assert!(r.labels.iter().all(|&l| l < 10));
            } else {
                prop_assert!(r.coarse.iter().all(|&l| l < 20));
            }
        }
    }
    Ok(())
}

/// Valid seed files to mutate: IDX images and labels, CIFAR-10 and CIFAR-100 records,
/// each plain and gzip-compressed.
fn seeds() -> Vec<Vec<u8>> {
    let px: Vec<u8> = (0..2 * 3 * 4).map(|v| v as u8).collect();
    let im = idx::encode_images(2, 3, 4, &px);
    let lb = idx::encode_labels(&[3, 9, 0]);
    let mut c10 = vec![7u8];
    c10.extend(vec![128u8; cifar::PIXELS]);
    let mut c100 = vec![19u8, 99];
    c100.extend(vec![1u8; cifar::PIXELS]);
    let plain = vec![im, lb, c10, c100];
    let mut all: Vec<Vec<u8>> = plain.iter().map(|b| idx::gzip(b)).collect();
    all.extend(plain);
    all
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
    Insert(usize, u8),
    Remove(usize),
    SetU32(usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        // header fields: big sizes, zero sizes, other magics
        (
            0usize..16,
            prop_oneof![
                Just(0u32),
                Just(1),
                Just(u32::MAX),
                Just(0x803),
                Just(0x801),
                any::<u32>()
            ]
        )
            .prop_map(|(i, v)| Mutation::SetU32(i, v)),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = b.len();
        match m {
            Mutation::Flip(i, x) if n > 0 => b[i % n] ^= x | 1,
            Mutation::Truncate(i) => b.truncate(i % (n + 1)),
            Mutation::Append(v) => b.extend_from_slice(v),
            Mutation::Insert(i, x) => b.insert(i % (n + 1), *x),
            Mutation::Remove(i) if n > 0 => {
                b.remove(i % n);
            }
            Mutation::SetU32(i, v) if n >= 4 => {
                let at = (i * 4).min(n - 4);
                b[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            _ => {}
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
        run_all(&bytes)?;
    }

    #[test]
    fn random_bytes_after_gzip_magic_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut b = idx::GZIP_MAGIC.to_vec();
        b.push(8); // deflate, so the decoder goes on to read a header
        b.extend(bytes);
        run_all(&b)?;
    }

    #[test]
    fn mutated_valid_files_never_panic(
        which in 0usize..8,
        muts in proptest::collection::vec(mutation(), 1..5),
        recompress in any::<bool>(),
    ) {
        let seeds = seeds();
        let mut b = apply(seeds[which].clone(), &muts);
        if recompress {
            b = idx::gzip(&b);
        }
        run_all(&b)?;
    }
}

#[test]
fn the_seed_files_parse() {
    let p = Path::new(NAME);
    let s = seeds();
    for i in [0, 4] {
        assert_eq!(idx::parse_images(&s[i], p).unwrap().count, 2);
    }
    for i in [1, 5] {
        assert_eq!(idx::parse_labels(&s[i], p).unwrap(), vec![3, 9, 0]);
    }
    for i in [2, 6] {
        assert_eq!(
            cifar::parse(CifarKind::Cifar10, &s[i], p).unwrap().labels,
            vec![7]
        );
    }
    for i in [3, 7] {
        let r = cifar::parse(CifarKind::Cifar100(Cifar100Labels::Fine), &s[i], p).unwrap();
        assert_eq!((r.coarse[0], r.labels[0]), (19, 99));
    }
}
