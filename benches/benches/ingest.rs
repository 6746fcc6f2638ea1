//! Read + normalise (+ prepare at 512) for the RG1 chest, uncompressed and
//! lossless JPEG 2000, decoded in full and decoded for a 512 model input
//! (`DecodeTarget::ShortSideAtLeast(512)`, what `classify` does). Compare
//! with `benches/pydicom_decode.py` via `compare.sh`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use cxr_dicom::{read_radiograph, read_radiograph_for, DecodeTarget, ReadLimits};
use cxr_preprocess::{prepare, InputSpec};

fn ingest(c: &mut Criterion) {
    let Some(dir) = cxr_tests::data::pydicom_data_dir() else {
        return;
    };
    let limits = ReadLimits::default();
    let spec = InputSpec::default();
    let mut group = c.benchmark_group("ingest");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    for name in ["RG1_UNCR", "RG1_J2KR"] {
        let bytes = std::fs::read(dir.join(format!("{name}.dcm"))).unwrap();
        group.bench_function(format!("{name}/read"), |b| {
            b.iter(|| read_radiograph(&bytes, &limits).unwrap())
        });
        group.bench_function(format!("{name}/read+prepare512"), |b| {
            b.iter(|| prepare(&read_radiograph(&bytes, &limits).unwrap(), &spec).unwrap())
        });
        let target = DecodeTarget::ShortSideAtLeast(spec.size);
        group.bench_function(format!("{name}/read-for-512+prepare512"), |b| {
            b.iter(|| {
                let r = read_radiograph_for(&bytes, &limits, target).unwrap();
                prepare(&r, &spec).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
