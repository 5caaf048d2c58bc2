//! Image files (PNG, JPEG) → raw samples: (C, H, W) f32 pixel values in [0, 1], as the
//! datasets hold them and torchvision's `ToTensor` gives.
//!
//! Decoding is the `image` crate's, within its default limits (512 MiB per decode), so a
//! hostile file is an error, not an allocation abort. Colour: a 1-channel model gets the
//! image's luma (Rec. 709 weights, the `image` crate's), a 3-channel one its RGB (grey
//! images repeated over the channels); alpha is dropped.

use std::path::Path;

use image::imageops::FilterType;
use image::{ColorType, DynamicImage};

use super::file_err;
use crate::Result;

/// File name extensions read as images (case-insensitive), as torchvision's
/// `IMG_EXTENSIONS` for the formats this build decodes.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Whether `path` names an image file by its extension.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// A decoded image file.
pub struct Decoded {
    pub image: DynamicImage,
    /// No colour information (luma, with or without alpha).
    pub grey: bool,
}

/// Decodes one image file (format from its content); errors name the file.
pub fn decode(path: &Path) -> Result<Decoded> {
    let reader = image::io::Reader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let image = reader
        .decode()
        .map_err(|e| file_err(path, format!("cannot decode as an image: {e}")))?;
    let grey = matches!(
        image.color(),
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16
    );
    Ok(Decoded { image, grey })
}

/// The (width, height) of an image file from its header alone (no pixel is decoded).
pub fn dimensions(path: &Path) -> Result<(u32, u32)> {
    image::io::Reader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| file_err(path, format!("cannot read: {e}")))?
        .into_dimensions()
        .map_err(|e| file_err(path, format!("cannot read as an image: {e}")))
}

/// `img` as a raw (C, H, W) sample for `shape` = [C, H, W], C 1 or 3, appended to `out`.
/// An image of another size is resized (bilinear) to cover H × W and center-cropped, as
/// torchvision's `Resize` + `CenterCrop`; one of the right size is taken as it is.
pub fn to_sample(img: &DynamicImage, shape: [usize; 3], out: &mut Vec<f32>) -> Result<()> {
    let [c, h, w] = shape;
    if c != 1 && c != 3 {
        return Err(crate::Error::shape(
            "image input",
            format!("the model takes {c}-channel inputs; images give 1 (grey) or 3 (RGB)"),
        ));
    }
    let (hu, wu) = (h as u32, w as u32);
    let resized;
    let img = if img.width() == wu && img.height() == hu {
        img
    } else {
        resized = img.resize_to_fill(wu, hu, FilterType::Triangle);
        &resized
    };
    out.reserve(c * h * w);
    if c == 1 {
        out.extend(img.to_luma8().as_raw().iter().map(|&p| p as f32 / 255.0));
    } else {
        let rgb = img.to_rgb8();
        let px = rgb.as_raw();
        // interleaved HWC bytes → planar CHW
        for ch in 0..3 {
            out.extend(px.iter().skip(ch).step_by(3).map(|&p| p as f32 / 255.0));
        }
    }
    Ok(())
}

/// An image file as a raw (C, H, W) sample for `shape` (see [`to_sample`]).
pub fn load_sample(path: &Path, shape: [usize; 3]) -> Result<Vec<f32>> {
    let d = decode(path)?;
    let mut out = Vec::new();
    to_sample(&d.image, shape, &mut out).map_err(|e| file_err(path, e.to_string()))?;
    Ok(out)
}
