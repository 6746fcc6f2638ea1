//! Dataset images (PNG/JPEG) into the same `Radiograph` and `prepare` as DICOM.
#![allow(clippy::unwrap_used)]

use std::io::Cursor;

use cxr_preprocess::{load_image, load_image_file, prepare, InputSpec};
use cxr_tests::data::shared_data_dir;

fn encode(image: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn nih_subset_pngs_load_and_prepare() {
    let dir = shared_data_dir().join("nih-chestxray14-subset");
    if !dir.is_dir() {
        cxr_tests::data::missing::<()>("nih-chestxray14-subset", "CXR_DATA_DIR has no NIH subset");
        return;
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len(), 1000);
    for path in names.iter().take(20) {
        let r = load_image_file(path).unwrap();
        assert_eq!((r.rows(), r.cols()), (256, 256), "{}", path.display());
        let input = prepare(&r, &InputSpec::default()).unwrap();
        assert!(input.data.iter().all(|v| v.is_finite()));
    }
    // The 1024 px originals include an RGBA file: equal channels, opaque alpha.
    for entry in std::fs::read_dir(dir.join("originals")).unwrap() {
        let path = entry.unwrap().path();
        let r = load_image_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(r.rows() >= 1000, "{}", path.display());
    }
}

#[test]
fn sixteen_bit_grey_keeps_its_values() {
    let img = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(5, 3, |x, y| {
        image::Luma([(x * 1000 + y * 20000) as u16])
    });
    let r = load_image(&encode(img.into(), image::ImageFormat::Png)).unwrap();
    assert_eq!((r.rows(), r.cols()), (3, 5));
    assert_eq!(r.at(2, 4), Some(44000.0));
    assert_eq!(r.value_range(), (0.0, 65535.0));
}

#[test]
fn colour_and_transparency_and_garbage_are_refused() {
    let colour = image::RgbImage::from_fn(4, 4, |x, _| image::Rgb([x as u8, 0, 0]));
    assert_eq!(
        load_image(&encode(colour.into(), image::ImageFormat::Png))
            .unwrap_err()
            .code(),
        "IMAGE_COLOUR"
    );
    let clear = image::RgbaImage::from_fn(4, 4, |_, _| image::Rgba([9, 9, 9, 0]));
    assert_eq!(
        load_image(&encode(clear.into(), image::ImageFormat::Png))
            .unwrap_err()
            .code(),
        "IMAGE_TRANSPARENT"
    );
    assert_eq!(
        load_image(b"not an image").unwrap_err().code(),
        "IMAGE_DECODE_FAILED"
    );
    let grey_jpeg = image::GrayImage::from_fn(16, 8, |x, _| image::Luma([(x * 16) as u8]));
    let r = load_image(&encode(grey_jpeg.into(), image::ImageFormat::Jpeg)).unwrap();
    assert_eq!((r.rows(), r.cols()), (8, 16));
}
