//! The hostile suite: corrupted variants of real files through the real
//! `cxr-appliance inspect` binary, one child process each, so that a panic,
//! an abort, a hang or a memory blow-up in any variant is seen and measured.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cxr_tests::data::{pydicom_file, scratch_dir, shared_file};
use cxr_tests::hostile::{set_text_in, variants, Base};

/// Generous for a debug build on a loaded 2-core CI machine; measured slowest
/// variant is under 1 s here.
const WALL_LIMIT: Duration = Duration::from_secs(10);
const MEMORY_LIMIT_KIB: u64 = 512 * 1024;

fn base(name: &str, path: &Path, make_cr: bool) -> Base {
    let mut bytes = std::fs::read(path).unwrap();
    let big_endian = name.contains("big_endian");
    if make_cr {
        bytes = set_text_in(&bytes, 0x0008, 0x0060, "CR", big_endian).unwrap();
    }
    Base {
        name: name.to_owned(),
        bytes,
        big_endian,
    }
}

struct Outcome {
    exit: i32,
    line: serde_json::Value,
    peak_kib: u64,
    elapsed: Duration,
}

fn inspect(file: &Path) -> Outcome {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cxr-appliance"))
        .args(["inspect", "--json", "--report-peak-memory"])
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > WALL_LIMIT {
            child.kill().unwrap();
            panic!("{} ran past {:?}", file.display(), WALL_LIMIT);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let output = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    let lines: Vec<serde_json::Value> = output
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}: {output}", file.display());
    Outcome {
        exit: status.code().unwrap_or(-1),
        line: lines[0].clone(),
        peak_kib: lines[1]["peak_rss_kib"].as_u64().unwrap(),
        elapsed,
    }
}

#[test]
fn every_hostile_variant_is_accepted_or_refused_with_a_code() {
    let sources = [
        ("RG1_UNCR", pydicom_file("RG1_UNCR.dcm"), false),
        ("RG1_J2KR", pydicom_file("RG1_J2KR.dcm"), false),
        ("emri_small_RLE-as-CR", pydicom_file("emri_small_RLE.dcm"), true),
        ("JPEG-LL-as-CR", pydicom_file("JPEG-LL.dcm"), true),
        ("emri_small_big_endian-as-CR", pydicom_file("emri_small_big_endian.dcm"), true),
        (
            "chest-jpeg-baseline",
            shared_file("torchxrayvision-test-samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"),
            false,
        ),
    ];
    let mut bases = Vec::new();
    for (name, path, make_cr) in sources {
        let Some(path) = path else { return };
        bases.push(base(name, &path, make_cr));
    }
    let variants = variants(&bases);
    assert!(variants.len() >= 40, "only {} variants", variants.len());

    let dir = scratch_dir("hostile");
    let mut worst = (0u64, String::new());
    let mut slowest = (Duration::ZERO, String::new());
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for v in &variants {
        let path = dir.join(v.name.replace('/', "__"));
        std::fs::write(&path, &v.bytes).unwrap();
        let out = inspect(&path);
        assert!(
            out.exit == 0 || out.exit == 2,
            "{}: exit {} (101 would be a panic)",
            v.name,
            out.exit
        );
        let ok = out.line["ok"].as_bool().unwrap();
        assert_eq!(ok, out.exit == 0, "{}", v.name);
        let code = if ok {
            "accepted".to_owned()
        } else {
            out.line["error"]["code"].as_str().unwrap().to_owned()
        };
        assert!(ok || code.starts_with("DICOM_"), "{}: {code}", v.name);
        if code == "DICOM_DECODER_CRASHED" {
            eprintln!("decoder panic caught: {}", v.name);
        }
        *codes.entry(code).or_default() += 1;
        assert!(
            out.peak_kib < MEMORY_LIMIT_KIB,
            "{}: peak {} KiB",
            v.name,
            out.peak_kib
        );
        if out.peak_kib > worst.0 {
            worst = (out.peak_kib, v.name.clone());
        }
        if out.elapsed > slowest.0 {
            slowest = (out.elapsed, v.name.clone());
        }
        std::fs::remove_file(&path).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!(
        "hostile suite: {} variants; outcomes {codes:?}",
        variants.len()
    );
    eprintln!(
        "worst peak RSS: {} KiB ({}); slowest: {:?} ({})",
        worst.0, worst.1, slowest.0, slowest.1
    );
    // The decoders must actually be reached: some damaged-codec variants are
    // caught only at decode time, others by the pre-checks.
    assert!(codes.contains_key("DICOM_MALFORMED"));
    assert!(codes.contains_key("DICOM_CODESTREAM_MISMATCH"));
    assert!(codes.contains_key("DICOM_BAD_PIXEL_HEADER"));
}
