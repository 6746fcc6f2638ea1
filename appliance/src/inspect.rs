//! `inspect`: the ingest path made visible, one JSON line per file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cxr_dicom::{read_radiograph_file, ReadLimits};
use cxr_preprocess::{prepare, preview_png, InputSpec};
use cxr_radiograph::{Radiograph, Sex, Step};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// DICOM files to read.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print JSON lines (the default and, for now, only format).
    #[arg(long)]
    json: bool,
    /// Write a PNG preview of the model input (default input spec) per accepted file into this folder.
    #[arg(long, value_name = "OUT_DIR")]
    png: Option<PathBuf>,
    /// Largest accepted file, MiB.
    #[arg(long, default_value_t = 64)]
    max_input_mib: usize,
    /// Append the process's peak resident memory (KiB, from /proc) as a last JSON line.
    #[cfg(feature = "testing")]
    #[arg(long, hide = true)]
    report_peak_memory: bool,
}

#[derive(Debug, Serialize)]
struct ErrorReport {
    code: &'static str,
    message: String,
}

#[derive(Debug, Serialize)]
struct Acquisition<'a> {
    modality: Option<&'a str>,
    body_part: Option<&'a str>,
    view: Option<&'a str>,
    sex: Option<Sex>,
    age: Option<f32>,
    manufacturer: Option<&'a str>,
    manufacturer_model: Option<&'a str>,
    portable: Option<bool>,
    portable_how: &'a str,
    pixel_spacing_mm: Option<[f64; 2]>,
    pixel_spacing_source: Option<&'a str>,
    bits_stored: Option<u16>,
    photometric_interpretation: Option<&'a str>,
    transfer_syntax: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct Accepted<'a> {
    file: String,
    ok: bool,
    /// Always `null` here; present so every line has the same keys.
    error: Option<ErrorReport>,
    input_class: &'static str,
    acquisition: Acquisition<'a>,
    rows: usize,
    cols: usize,
    steps: &'a [Step],
    pixel_sha256: String,
    burned_in_annotation: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preview: Option<String>,
}

#[derive(Debug, Serialize)]
struct Refused {
    file: String,
    ok: bool,
    error: ErrorReport,
    /// Set when the refusal itself says what the image is (e.g. CT is not a radiograph).
    input_class: Option<&'static str>,
}

fn accepted<'a>(file: &Path, r: &'a Radiograph, preview: Option<String>) -> Accepted<'a> {
    let a = &r.acquisition;
    Accepted {
        file: file.display().to_string(),
        ok: true,
        error: None,
        input_class: a.input_class.code(),
        acquisition: Acquisition {
            modality: a.modality.as_deref(),
            body_part: a.body_part.as_deref(),
            view: a.view_position.as_deref(),
            sex: a.sex,
            age: a.age_years,
            manufacturer: a.manufacturer.as_deref(),
            manufacturer_model: a.manufacturer_model.as_deref(),
            portable: a.portable.value,
            portable_how: &a.portable.how,
            pixel_spacing_mm: a.pixel_spacing_mm,
            pixel_spacing_source: a.pixel_spacing_source.as_deref(),
            bits_stored: a.bits_stored,
            photometric_interpretation: a.photometric_interpretation.as_deref(),
            transfer_syntax: a.transfer_syntax.as_deref(),
        },
        rows: r.rows(),
        cols: r.cols(),
        steps: &r.steps,
        pixel_sha256: r.pixel_sha256(),
        burned_in_annotation: r.burned_in_annotation,
        preview,
    }
}

fn write_preview(r: &Radiograph, file: &Path, dir: &Path, index: usize) -> anyhow::Result<String> {
    let input = prepare(r, &InputSpec::default()).context("preparing the preview")?;
    let png = preview_png(&input).context("encoding the preview")?;
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let out = dir.join(format!("{index:03}-{stem}.png"));
    std::fs::write(&out, png).with_context(|| format!("writing {}", out.display()))?;
    Ok(out.display().to_string())
}

/// Peak resident set size of this process, KiB (Linux), from /proc/self/status.
#[cfg(feature = "testing")]
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let limits = ReadLimits {
        max_input_bytes: args.max_input_mib.saturating_mul(1024 * 1024),
        ..ReadLimits::default()
    };
    if let Some(dir) = &args.png {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut any_refused = false;
    for (index, file) in args.files.iter().enumerate() {
        let line = match read_radiograph_file(file, &limits) {
            Ok(r) => {
                let preview = match &args.png {
                    Some(dir) => Some(write_preview(&r, file, dir, index)?),
                    None => None,
                };
                serde_json::to_string(&accepted(file, &r, preview))?
            }
            Err(e) => {
                any_refused = true;
                let input_class = matches!(e, cxr_dicom::DicomError::NotARadiograph { .. })
                    .then_some(cxr_radiograph::InputClass::NotRadiograph.code());
                serde_json::to_string(&Refused {
                    file: file.display().to_string(),
                    ok: false,
                    error: ErrorReport {
                        code: e.code(),
                        message: e.to_string(),
                    },
                    input_class,
                })?
            }
        };
        writeln!(out, "{line}")?;
    }
    #[cfg(feature = "testing")]
    if args.report_peak_memory {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "peak_rss_kib": peak_rss_kib() })
        )?;
    }
    out.flush()?;
    Ok(if any_refused {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
