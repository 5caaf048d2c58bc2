//! Augmentation properties: flip, padded crop, normalize, cutout, determinism per seed.

use quadra::data::augment::{self, Augment, Normalize};
use quadra::data::rng_for;

fn ramp(shape: [usize; 3]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n).map(|v| 1.0 + v as f32).collect()
}

#[test]
fn flip_twice_is_identity_and_mirrors_rows() {
    let shape = [3, 4, 5];
    let img = ramp(shape);
    let mut x = img.clone();
    augment::hflip(&mut x, shape).unwrap();
    assert_ne!(x, img);
    for c in 0..3 {
        for y in 0..4 {
            for xx in 0..5 {
                assert_eq!(x[(c * 4 + y) * 5 + xx], img[(c * 4 + y) * 5 + (4 - xx)]);
            }
        }
    }
    augment::hflip(&mut x, shape).unwrap();
    assert_eq!(x, img);
    assert!(augment::hflip(&mut x[..10], shape).is_err());
}

#[test]
fn padded_crop_keeps_shape_and_shifts_content() {
    let shape = [2, 6, 7];
    let [c, h, w] = shape;
    let img = ramp(shape);
    let p = 3;
    for top in 0..=2 * p {
        for left in 0..=2 * p {
            let mut out = vec![f32::NAN; img.len()];
            augment::crop_padded(&img, shape, p, top, left, &mut out).unwrap();
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let (sy, sx) = (
                            y as isize + top as isize - p as isize,
                            x as isize + left as isize - p as isize,
                        );
                        let want = if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx)
                        {
                            img[(ch * h + sy as usize) * w + sx as usize]
                        } else {
                            0.0 // zero padding
                        };
                        assert_eq!(
                            out[(ch * h + y) * w + x],
                            want,
                            "offset ({top},{left}) at {ch},{y},{x}"
                        );
                    }
                }
            }
        }
    }
    // the centre offset is the identity
    let mut out = vec![0.0; img.len()];
    augment::crop_padded(&img, shape, p, p, p, &mut out).unwrap();
    assert_eq!(out, img);
    assert!(augment::crop_padded(&img, shape, p, 2 * p + 1, 0, &mut out).is_err());

    // random crops draw offsets in 0..=2p, all of them eventually
    let mut seen = std::collections::HashSet::new();
    let mut scratch = Vec::new();
    for i in 0..400 {
        let mut x = img.clone();
        let (t, l) =
            augment::random_crop(&mut x, shape, 2, &mut rng_for(1, 2, i), &mut scratch).unwrap();
        assert!(t <= 4 && l <= 4);
        assert_eq!(x.len(), img.len());
        seen.insert((t, l));
    }
    assert_eq!(seen.len(), 25);
}

#[test]
fn normalize_gives_zero_mean_unit_std() {
    let shape = [3, 8, 8];
    let img: Vec<f32> = (0..192).map(|v| ((v * 37 % 101) as f32) / 100.0).collect();
    let plane = 64;
    let stats = |x: &[f32]| {
        x.chunks(plane)
            .map(|p| {
                let m = p.iter().map(|&v| v as f64).sum::<f64>() / p.len() as f64;
                let var = p.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / p.len() as f64;
                (m, var.sqrt())
            })
            .collect::<Vec<_>>()
    };
    let st = stats(&img);
    let mean: Vec<f32> = st.iter().map(|s| s.0 as f32).collect();
    let std: Vec<f32> = st.iter().map(|s| s.1 as f32).collect();
    let mut x = img.clone();
    augment::normalize(&mut x, shape, &mean, &std).unwrap();
    for (m, s) in stats(&x) {
        assert!(m.abs() < 1e-5, "mean {m}");
        assert!((s - 1.0).abs() < 1e-5, "std {s}");
    }
    // one constant for all channels
    let mut y = img.clone();
    augment::normalize(&mut y, shape, &[0.5], &[0.25]).unwrap();
    assert!((y[0] - (img[0] - 0.5) / 0.25).abs() < 1e-6);
    assert!(augment::normalize(&mut y, shape, &[0.5, 0.5], &[1.0, 1.0]).is_err());
    assert!(Normalize::new(&[0.1], &[0.0]).is_err());
    // the reference's constants
    let n = Normalize::for_dataset("cifar10").unwrap();
    assert_eq!(n.mean, vec![0.4914, 0.4822, 0.4465]);
    assert_eq!(n.std, vec![0.2023, 0.1994, 0.2010]);
    assert_eq!(
        Normalize::for_dataset("cifar100").unwrap().std,
        vec![0.2675, 0.2565, 0.2761]
    );
    assert_eq!(
        Normalize::for_dataset("fashion-mnist").unwrap().mean.len(),
        1
    );
    assert!(Normalize::for_dataset("synthetic").is_none());
}

#[test]
fn cutout_zeroes_exactly_one_square() {
    let shape = [3, 10, 12];
    let [_, h, w] = shape;
    for i in 0..200 {
        let mut x = vec![1.0f32; 360];
        let (ys, xs) = augment::cutout(&mut x, shape, 4, &mut rng_for(9, 0, i)).unwrap();
        // the square, clipped at the border
        assert!(ys.len() <= 4 && xs.len() <= 4 && !ys.is_empty() && !xs.is_empty());
        let interior = ys.start > 0 && ys.end < h && xs.start > 0 && xs.end < w;
        if interior {
            assert_eq!((ys.len(), xs.len()), (4, 4));
        }
        for plane in x.chunks(h * w) {
            for y in 0..h {
                for xx in 0..w {
                    let inside = ys.contains(&y) && xs.contains(&xx);
                    assert_eq!(
                        plane[y * w + xx] == 0.0,
                        inside,
                        "({y},{xx}) hole {ys:?}×{xs:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn pipeline_is_deterministic_per_seed() {
    let shape = [3, 8, 8];
    let img = ramp(shape);
    let aug = Augment {
        crop_padding: Some(2),
        hflip: true,
        normalize: Normalize::for_dataset("cifar10"),
        cutout: Some(3),
    };
    aug.check(shape).unwrap();
    let run = |seed: u64| {
        let mut x = img.clone();
        aug.apply(&mut x, shape, &mut rng_for(seed, 1, 2), &mut Vec::new())
            .unwrap();
        x
    };
    assert_eq!(run(5), run(5));
    let distinct: std::collections::HashSet<Vec<u32>> = (0..20)
        .map(|s| run(s).iter().map(|v| v.to_bits()).collect())
        .collect();
    assert!(
        distinct.len() > 10,
        "only {} distinct results from 20 seeds",
        distinct.len()
    );
    // identity augmentation leaves the image alone
    let mut x = img.clone();
    Augment::none()
        .apply(&mut x, shape, &mut rng_for(0, 0, 0), &mut Vec::new())
        .unwrap();
    assert_eq!(x, img);
    // presets
    assert_eq!(Augment::train_preset("cifar10").crop_padding, Some(4));
    assert!(Augment::train_preset("cifar10").hflip);
    assert!(!Augment::train_preset("fashion-mnist").hflip);
    assert!(Augment::train_preset("synthetic").is_identity());
    // a normalize for 3 channels does not fit a grey image
    assert!(aug.check([1, 8, 8]).is_err());
}
