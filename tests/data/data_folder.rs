//! Folder datasets (`quadra::data::folder`, torchvision's `ImageFolder` layout) and image
//! decoding (`quadra::data::decode`): labels in sorted class order, the channel rule, the
//! seeded split, and a clear error naming the file or folder for every bad layout.

use std::path::Path;

use quadra::data::decode::{load_sample, to_sample};
use quadra::data::folder;
use quadra::Error;

use crate::support::tempdir;

fn grey(path: &Path, w: u32, h: u32, v: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(w, h, image::Luma([v]))
        .save(path)
        .unwrap();
}

fn rgb(path: &Path, w: u32, h: u32, px: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb(px))
        .save(path)
        .unwrap();
}

/// The error's text, which must name `needle` (a file or folder) and say `what`.
fn err_of(r: quadra::Result<quadra::data::TrainTest>, needle: &Path, what: &str) {
    let e = r.expect_err("must fail").to_string();
    assert!(e.contains(&needle.display().to_string()), "{e}");
    assert!(e.contains(what), "`{what}` not in: {e}");
}

#[test]
fn train_and_val_folders_give_sorted_labels_names_and_values() {
    let d = tempdir("folder-ok");
    // classes written out of order: labels follow the sorted names
    for (c, v) in [("zebra", 200u8), ("ant", 10), ("moth", 100)] {
        for i in 0..3 {
            grey(&d.join("train").join(c).join(format!("{i}.png")), 5, 4, v);
        }
        grey(&d.join("val").join(c).join("a.png"), 5, 4, v);
    }
    std::fs::write(d.join("train/ant/notes.txt"), "not an image").unwrap();
    std::fs::write(d.join("train/ant/.hidden.png"), "skipped").unwrap();
    let tt = folder::load(&d, 0).unwrap();
    assert_eq!(tt.train.class_names(), ["ant", "moth", "zebra"]);
    assert_eq!(tt.train.shape(), [1, 4, 5]);
    assert_eq!((tt.train.len(), tt.test.len()), (9, 3));
    assert_eq!(tt.train.labels(), [0, 0, 0, 1, 1, 1, 2, 2, 2]);
    let (img, label) = tt.test.sample(2).unwrap();
    assert_eq!(label, 2);
    assert!(
        img.iter().all(|&p| p == 200.0 / 255.0),
        "pixels scaled to [0, 1]"
    );
}

#[test]
fn a_folder_without_train_is_split_by_the_seed_and_colour_gives_three_channels() {
    let d = tempdir("folder-split");
    for i in 0..15 {
        grey(&d.join("a").join(format!("{i:02}.png")), 3, 3, i as u8);
        grey(
            &d.join("b").join(format!("{i:02}.jpg")),
            3,
            3,
            100 + i as u8,
        );
    }
    let a = folder::load(&d, 7).unwrap();
    assert_eq!((a.train.len(), a.test.len()), (27, 3), "one tenth held out");
    assert_eq!(a.train.shape(), [1, 3, 3], "all grey: one channel");
    // the split depends on the seed alone
    let b = folder::load(&d, 7).unwrap();
    assert_eq!(a.test.images().to_f64_vec(), b.test.images().to_f64_vec());
    let c = folder::load(&d, 8).unwrap();
    assert_ne!(a.test.images().to_f64_vec(), c.test.images().to_f64_vec());

    // one colour image makes the whole set RGB; grey images are repeated over the channels
    rgb(&d.join("b/zz.png"), 3, 3, [255, 0, 0]);
    let tt = folder::load(&d, 7).unwrap();
    assert_eq!(tt.train.shape(), [3, 3, 3]);
}

#[test]
fn bad_layouts_are_errors_naming_the_file_or_folder() {
    let d = tempdir("folder-bad");
    err_of(
        folder::load(&d.join("missing"), 0),
        &d.join("missing"),
        "not a folder",
    );
    err_of(folder::load(&d, 0), &d, "no class folders");

    grey(&d.join("a/1.png"), 4, 4, 0);
    std::fs::create_dir_all(d.join("empty")).unwrap();
    err_of(folder::load(&d, 0), &d.join("empty"), "without images");
    std::fs::remove_dir(d.join("empty")).unwrap();

    err_of(folder::load(&d, 0), &d, "at least two");

    grey(&d.join("a/2.png"), 5, 4, 0);
    err_of(folder::load(&d, 0), &d.join("a/2.png"), "one size");
    std::fs::remove_file(d.join("a/2.png")).unwrap();

    std::fs::write(d.join("a/3.png"), b"\x89PNG not really").unwrap();
    err_of(folder::load(&d, 0), &d.join("a/3.png"), "image");
    std::fs::remove_file(d.join("a/3.png")).unwrap();

    let t = tempdir("folder-bad-tv");
    grey(&t.join("train/a/1.png"), 4, 4, 0);
    err_of(folder::load(&t, 0), &t, "neither val/ nor test/");
    grey(&t.join("test/b/1.png"), 4, 4, 0);
    err_of(folder::load(&t, 0), &t.join("test"), "differ from train/");
}

#[test]
fn image_samples_are_resized_to_cover_then_center_cropped() {
    let d = tempdir("decode");
    // 8 wide, 4 high: left half black, right half white; as 2×2 after covering (4×2 → crop
    // the middle 2 columns): one black and one white column
    let mut img = image::GrayImage::new(8, 4);
    for (x, _, p) in img.enumerate_pixels_mut() {
        *p = image::Luma([if x < 4 { 0 } else { 255 }]);
    }
    let p = d.join("wide.png");
    img.save(&p).unwrap();
    let v = load_sample(&p, [1, 2, 2]).unwrap();
    assert_eq!(v.len(), 4);
    assert!(
        v[0] < 0.5 && v[1] > 0.5 && v[2] < 0.5 && v[3] > 0.5,
        "{v:?}"
    );
    // RGB of a grey image: three equal planes; of a colour one for a grey model: its luma
    let g = load_sample(&p, [3, 2, 2]).unwrap();
    assert_eq!(&g[..4], &g[4..8]);
    let red =
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(2, 2, image::Rgb([255, 0, 0])));
    let mut out = Vec::new();
    to_sample(&red, [1, 2, 2], &mut out).unwrap();
    assert!(
        out.iter().all(|&l| l > 0.1 && l < 0.4),
        "red's luma: {out:?}"
    );
    let e = to_sample(&red, [2, 2, 2], &mut Vec::new()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}
