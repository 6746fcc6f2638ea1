//! Golden tests on small hand-computed images, and property tests of `prepare`
//! and the TTA views.
#![allow(clippy::unwrap_used)]

use cxr_preprocess::{
    prepare, tta_view, AspectPolicy, Channels, ElementType, InputSpec, IntensityNorm, TtaView,
};
use cxr_radiograph::{AcquisitionInfo, Radiograph};
use proptest::prelude::*;

fn radiograph(rows: usize, cols: usize, pixels: Vec<f32>) -> Radiograph {
    Radiograph::new(
        rows,
        cols,
        pixels,
        (0.0, 4095.0),
        AcquisitionInfo::untagged(),
    )
    .unwrap()
}

fn spec(size: u32) -> InputSpec {
    InputSpec {
        size,
        channels: Channels::One,
        antialias: true,
        aspect: AspectPolicy::Letterbox,
        intensity: IntensityNorm {
            low_percentile: 0.0,
            high_percentile: 100.0,
            mean: 0.0,
            std: 1.0,
        },
        element: ElementType::F32,
    }
}

#[test]
fn golden_letterbox_of_a_wide_image() {
    // 8 wide x 4 high, value = column index * 10. Target 8: scale 1, so the
    // content is 4 rows of 8, centred with 2 padding rows above and below.
    let img: Vec<f32> = (0..4)
        .flat_map(|_| (0..8).map(|c| c as f32 * 10.0))
        .collect();
    let out = prepare(&radiograph(4, 8, img), &spec(8)).unwrap();
    assert_eq!((out.channels, out.height, out.width), (1, 8, 8));
    // Min-max over content: 0..70 -> 0..1.
    let expected_row: Vec<f32> = (0..8).map(|c| c as f32 / 7.0).collect();
    for y in 0..8 {
        let row = &out.data[y * 8..(y + 1) * 8];
        if (2..6).contains(&y) {
            for (got, want) in row.iter().zip(&expected_row) {
                assert!((got - want).abs() < 1e-6, "row {y}: {row:?}");
            }
        } else {
            assert!(row.iter().all(|v| *v == 0.0), "padding row {y}: {row:?}");
        }
    }
}

#[test]
fn golden_halving_with_mean_std() {
    // 16x16 horizontal ramp v = column -> 8x8, antialiased. Each output column
    // x has its centre at source 2x + 0.5 with triangle weights of radius 2:
    // inside, a linear ramp is preserved (2.5, 4.5, ..., 12.5); at the edges the
    // clipped taps give (0*.75 + 1*.75 + 2*.25)/1.75 and (13*.25 + 14*.75 + 15*.75)/1.75.
    let img: Vec<f32> = (0..16).flat_map(|_| (0..16).map(|c| c as f32)).collect();
    let mut s = spec(8);
    s.intensity = IntensityNorm {
        low_percentile: 0.0,
        high_percentile: 100.0,
        mean: 0.5,
        std: 0.25,
    };
    let out = prepare(&radiograph(16, 16, img), &s).unwrap();
    let resized = [1.25 / 1.75, 2.5, 4.5, 6.5, 8.5, 10.5, 12.5, 25.0 / 1.75];
    let (lo, hi) = (resized[0], resized[7]);
    for y in 0..8 {
        for (x, r) in resized.iter().enumerate() {
            let want = ((r - lo) / (hi - lo) - 0.5) / 0.25;
            let got = out.data[y * 8 + x];
            assert!(
                (got - want).abs() < 1e-5,
                "({y},{x}): got {got}, want {want}"
            );
        }
    }
}

#[test]
fn three_channels_repeat_and_reduced_precision_round_trips() {
    let img: Vec<f32> = (0..64).map(|v| v as f32).collect();
    let mut s = spec(8);
    s.channels = Channels::Three;
    s.element = ElementType::Bf16;
    let out = prepare(&radiograph(8, 8, img), &s).unwrap();
    assert_eq!(out.data.len(), 3 * 64);
    assert_eq!(&out.data[..64], &out.data[64..128]);
    assert_eq!(&out.data[..64], &out.data[128..]);
    let bytes = out.to_le_bytes();
    assert_eq!(bytes.len(), 3 * 64 * 2);
    let back: Vec<f32> = bytes
        .chunks_exact(2)
        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    assert_eq!(
        back, out.data,
        "data is already rounded to the element type"
    );
}

#[test]
fn center_crop_keeps_the_middle() {
    // 2 rows x 6 cols; the centre 2x2 is columns 2..4 with values 100.
    let img = vec![
        0.0, 0.0, 100.0, 100.0, 0.0, 0.0, 0.0, 0.0, 100.0, 100.0, 0.0, 0.0,
    ];
    let mut s = spec(8);
    s.aspect = AspectPolicy::CenterCrop;
    let out = prepare(&radiograph(2, 6, img), &s).unwrap();
    // A flat crop scales to all zeros (no spread between the percentiles).
    assert!(out.data.iter().all(|v| *v == 0.0));
}

#[test]
fn bad_specs_are_refused() {
    let r = radiograph(2, 2, vec![0.0, 1.0, 2.0, 3.0]);
    let mut s = spec(8);
    s.intensity.std = 0.0;
    assert_eq!(prepare(&r, &s).unwrap_err().code(), "PREPROCESS_BAD_SPEC");
    let mut s = spec(8);
    s.intensity.low_percentile = 60.0;
    s.intensity.high_percentile = 40.0;
    assert!(prepare(&r, &s).is_err());
    assert!(prepare(&r, &spec(2)).is_err(), "size under 8");
}

#[test]
fn a_small_rotation_moves_pixels_about_the_centre() {
    // A single bright pixel right of centre rotates (counter-clockwise, y down) upwards.
    let size = 33usize;
    let mut img = vec![0.0f32; size * size];
    img[16 * size + 26] = 1.0;
    let input = prepare(&radiograph(size, size, img), &spec(size as u32)).unwrap();
    let rotated = tta_view(
        &input,
        &TtaView {
            rotation_deg: 90.0,
            scale: 1.0,
            hflip: false,
        },
    );
    let argmax = rotated
        .data
        .iter()
        .enumerate()
        .fold(
            (0, f32::MIN),
            |m, (i, v)| if *v > m.1 { (i, *v) } else { m },
        )
        .0;
    assert_eq!((argmax / size, argmax % size), (6, 16));
    let flipped = tta_view(
        &input,
        &TtaView {
            rotation_deg: 0.0,
            scale: 1.0,
            hflip: true,
        },
    );
    assert_eq!(flipped.data[16 * size + 6], input.data[16 * size + 26]);
}

fn arbitrary_image() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (1usize..40, 1usize..40).prop_flat_map(|(r, c)| {
        (
            Just(r),
            Just(c),
            prop::collection::vec(-5000.0f32..5000.0, r * c),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn outputs_are_finite_and_in_range((rows, cols, pixels) in arbitrary_image(), size in 8u32..48, crop in any::<bool>()) {
        let mut s = spec(size);
        s.intensity = IntensityNorm { low_percentile: 1.0, high_percentile: 99.0, mean: 0.5, std: 0.25 };
        if crop { s.aspect = AspectPolicy::CenterCrop; }
        let out = prepare(&radiograph(rows, cols, pixels), &s).unwrap();
        prop_assert_eq!(out.data.len(), (size * size) as usize);
        // [0, 1] maps to [(0 - 0.5) / 0.25, (1 - 0.5) / 0.25] = [-2, 2].
        prop_assert!(out.data.iter().all(|v| v.is_finite() && (-2.0..=2.0).contains(v)));
    }

    /// Views near the identity stay near the input (the resampling path
    /// itself is checked at the identity in `tta.rs`).
    #[test]
    fn a_tiny_view_change_barely_moves_the_input((rows, cols, pixels) in arbitrary_image()) {
        let input = prepare(&radiograph(rows, cols, pixels), &spec(16)).unwrap();
        let nudged = tta_view(&input, &TtaView { rotation_deg: 1e-4, scale: 1.0, hflip: false });
        let worst = nudged.data.iter().zip(&input.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let range = input.data.iter().copied().fold(0.0f32, |m, v| m.max(v.abs()));
        prop_assert!(worst <= 1e-3 * range.max(1.0), "moved by {}", worst);
    }

    #[test]
    fn views_stay_finite_and_within_the_input_range((rows, cols, pixels) in arbitrary_image(), deg in -10.0f32..10.0, scale in 0.9f32..1.1) {
        let mut s = spec(16);
        s.intensity.mean = 0.5;
        s.intensity.std = 0.25;
        let input = prepare(&radiograph(rows, cols, pixels), &s).unwrap();
        let view = tta_view(&input, &TtaView { rotation_deg: deg, scale, hflip: false });
        let lo = input.data.iter().copied().fold(s.fill_value(), f32::min);
        let hi = input.data.iter().copied().fold(s.fill_value(), f32::max);
        prop_assert!(view.data.iter().all(|v| v.is_finite() && *v >= lo - 1e-5 && *v <= hi + 1e-5));
    }
}
