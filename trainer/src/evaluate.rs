//! `evaluate`: the deployed decision of a verified bundle on a labelled set,
//! through the appliance's own study path (`cxr-study`: content gate, input
//! gate, `prepare`, TTA, engine, `decide`), not a re-implementation.
//!
//! The report: outcomes and abstentions by reason code, the content gate's
//! classes, per-label discrimination (AUROC with a 95% interval from
//! resampling patients) and calibration (ECE, Brier) of the studies the
//! model scored, the shipped rule's sensitivity, specificity and Uncertain
//! share on the studies it decided, and a subgroup audit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant as StdInstant;

use cxr_bundle::{read_bounded, verify, TrustStore, VerifiedBundle, MAX_BUNDLE_BYTES};
use cxr_core::Call;
use cxr_engine::{select_for_bundle, EnginePreference};
use cxr_radiograph::Radiograph;
use cxr_study::StudyPath;
use embassy_time::Instant;
use serde::Serialize;

use crate::data::{
    read_generic, read_kermany_subset, read_nih_subset, Dataset, LabelValue, Sample,
};
use crate::eval::{auroc, bootstrap_by_patient, brier, ece, WithCi};
use crate::TrainerError;

/// How studies loaded from image files (PNG, JPEG) are tagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TagMode {
    /// Image files get the tags the table gives (a DX chest film with its
    /// view and age, classified by ingest's own tag rules); DICOM files keep
    /// their own tags.
    Table,
    /// No tags at all (the content gate decides, and there is no age).
    None,
}

#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// The bundle, verified like a device does (board, trust).
    #[arg(long)]
    bundle: PathBuf,
    /// `nih:LABELS.csv` (the NIH subset), `kermany:LABELS.csv` (the Kermany
    /// subset: Pneumonia only), or a generic table (path, patient_id,
    /// optional institution/age/sex/view, one column per label).
    #[arg(long)]
    data: String,
    /// Keep only this split of patients (`train`, `validation`, `test`), as
    /// the training configuration `--config` splits them.
    #[arg(long, requires = "config")]
    split: Option<String>,
    #[arg(long, requires = "split")]
    config: Option<PathBuf>,
    /// Keep only the images listed in this file (one path per line, as the
    /// table resolves them), e.g. `fit-gate`'s held-out lists.
    #[arg(long)]
    only: Option<PathBuf>,
    #[arg(long, default_value = "dev-x86")]
    board: String,
    /// A trust directory besides the board's built-in keys.
    #[arg(long)]
    trust: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    tags: TagMode,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long)]
    out: PathBuf,
}

/// One study as the appliance saw it.
#[derive(Debug, Clone, Serialize)]
pub struct StudyRow {
    pub image: String,
    pub patient: String,
    pub source: String,
    pub sex: Option<char>,
    pub age_band: &'static str,
    pub view: Option<String>,
    /// `decision`, `undecided`, `abstention`, `refused` or `failed`.
    pub outcome: &'static str,
    /// The abstention or fault code.
    pub code: Option<String>,
    /// A refusal's or fault's message.
    pub detail: Option<String>,
    pub content: Option<&'static str>,
    /// Calibrated probabilities, when the model scored the study.
    pub probabilities: Option<Vec<f32>>,
    /// Calls (`positive`, `negative`, `uncertain`), when it decided.
    pub calls: Option<Vec<&'static str>>,
    /// Per bundle label: 1, 0, or none when the table does not say.
    pub truth: Vec<Option<f32>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabelReport {
    pub label: String,
    pub scored: usize,
    pub positives: usize,
    pub auroc: Option<WithCi>,
    pub ece: Option<f64>,
    pub brier: Option<f64>,
    /// On decided studies: called positive / positives not Uncertain.
    pub sensitivity: Option<f64>,
    pub specificity: Option<f64>,
    /// Share of decided studies with this label known whose call was Uncertain.
    pub uncertain: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub attribute: &'static str,
    pub group: String,
    pub studies: usize,
    pub coverage: f64,
    pub auroc: Option<WithCi>,
    /// Group AUROC minus the overall AUROC.
    pub gap: Option<f64>,
    /// The group's interval excludes the overall AUROC.
    pub flagged: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvaluationReport {
    pub bundle: String,
    /// SHA-256 of the bundle file evaluated.
    pub bundle_sha256: String,
    pub data: String,
    pub tags: String,
    pub studies: usize,
    pub outcomes: BTreeMap<String, usize>,
    pub content: BTreeMap<String, usize>,
    /// Studies decided or undecided, over all studies.
    pub coverage: f64,
    pub labels: Vec<LabelReport>,
    /// The label the subgroup audit uses (the one with most positives).
    pub audit_label: Option<String>,
    pub subgroups: Vec<GroupReport>,
    pub rows: Vec<StudyRow>,
}

fn invalid(what: &'static str, problem: String, fix: &'static str) -> TrainerError {
    TrainerError::invalid(what, problem, fix)
}

fn load_bundle(
    args: &EvaluateArgs,
) -> Result<(VerifiedBundle, cxr_board::BoardProfile), TrainerError> {
    let board = cxr_board::BoardProfile::builtin(&args.board)
        .map_err(|e| invalid("board", e.to_string(), "name a built-in board profile"))?;
    let store = match &args.trust {
        Some(dir) => TrustStore::load(dir),
        None => Ok(TrustStore::default()),
    }
    .and_then(|s| s.with_builtin(board.builtin_keys()))
    .map_err(|e| invalid("trust", e.to_string(), "check --trust"))?;
    let bytes = read_bounded(&args.bundle, MAX_BUNDLE_BYTES)
        .map_err(|e| invalid("bundle", e.to_string(), "check --bundle"))?;
    let bundle = verify(bytes, &store, &board, &Default::default()).map_err(|e| {
        invalid(
            "bundle",
            e.to_string(),
            "pass the board the bundle was locked for (--board) and its signer's key (--trust DIR)",
        )
    })?;
    Ok((bundle, board))
}

fn load_dataset(spec: &str) -> Result<Dataset, TrainerError> {
    match spec.split_once(':') {
        Some(("nih", p)) => read_nih_subset(Path::new(p)),
        Some(("kermany", p)) => read_kermany_subset(Path::new(p)),
        _ => read_generic(Path::new(spec), "table"),
    }
}

/// The samples of one split, as the training configuration splits patients
/// (children held out when it holds them out).
fn select(data: &Dataset, args: &EvaluateArgs) -> Result<Vec<usize>, TrainerError> {
    let mut picked = select_split(data, args)?;
    if let Some(list) = &args.only {
        let text =
            std::fs::read_to_string(list).map_err(|e| TrainerError::io("reading", list, e))?;
        let keep: std::collections::BTreeSet<PathBuf> = text.lines().map(PathBuf::from).collect();
        picked.retain(|&i| keep.contains(&data.samples[i].image));
    }
    Ok(picked)
}

fn select_split(data: &Dataset, args: &EvaluateArgs) -> Result<Vec<usize>, TrainerError> {
    let (Some(split), Some(config)) = (&args.split, &args.config) else {
        return Ok((0..data.samples.len()).collect());
    };
    let text =
        std::fs::read_to_string(config).map_err(|e| TrainerError::io("reading", config, e))?;
    let c: crate::train::TrainConfig = toml::from_str(&text)
        .map_err(|e| invalid("training config", e.to_string(), "fix the TOML"))?;
    let want = match split.as_str() {
        "train" => crate::data::Split::Train,
        "validation" => crate::data::Split::Validation,
        "test" => crate::data::Split::Test,
        other => {
            return Err(invalid(
                "split",
                other.to_owned(),
                "use train, validation or test",
            ))
        }
    };
    let fractions = crate::data::SplitFractions {
        validation: c.data.validation,
        test: c.data.test,
    };
    let splits = crate::data::split_by_patient(data, fractions, c.seed)?;
    // As training assigns them: a split the source prescribes wins.
    Ok((0..data.samples.len())
        .filter(|&i| data.samples[i].given_split.unwrap_or(splits[i]) == want)
        .filter(|&i| {
            !(c.data.hold_out_pediatric && data.samples[i].age_years.is_some_and(|a| a < 18.0))
        })
        .collect())
}

fn age_band(age: Option<f32>) -> &'static str {
    match age {
        None => "unknown",
        Some(a) if a < 18.0 => "under 18",
        Some(a) if a < 40.0 => "18-39",
        Some(a) if a < 65.0 => "40-64",
        Some(_) => "65 and over",
    }
}

/// The study's radiograph: DICOM through the appliance's reader, images
/// through `cxr-preprocess`, tagged as `mode` says.
fn radiograph(s: &Sample, mode: TagMode) -> Result<Radiograph, (String, String)> {
    let is_dicom = s
        .image
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
    let mut r = if is_dicom {
        cxr_dicom::read_radiograph_file(&s.image, &cxr_dicom::ReadLimits::default())
            .map_err(|e| (e.code().to_owned(), e.to_string()))?
    } else {
        cxr_preprocess::load_image_file(&s.image)
            .map_err(|e| (e.code().to_owned(), e.to_string()))?
    };
    let a = &mut r.acquisition;
    match mode {
        TagMode::None => *a = cxr_radiograph::AcquisitionInfo::untagged(),
        TagMode::Table if !is_dicom => {
            a.modality = Some("DX".into());
            a.body_part = Some("CHEST".into());
            a.view_position = s.view.clone();
            a.age_years = s.age_years;
            a.input_class =
                cxr_dicom::input_class_from_tags(Some("DX"), Some("CHEST"), s.view.as_deref(), &[]);
        }
        TagMode::Table => {}
    }
    Ok(r)
}

fn call_name(c: Option<Call>) -> &'static str {
    match c {
        Some(Call::Positive) => "positive",
        Some(Call::Negative) => "negative",
        _ => "uncertain",
    }
}

/// Run every selected study through the study path.
fn run_studies(
    bundle: &VerifiedBundle,
    board: &cxr_board::BoardProfile,
    data: &Dataset,
    picked: &[usize],
    args: &EvaluateArgs,
) -> Result<Vec<StudyRow>, TrainerError> {
    let params = &bundle.manifest().params;
    let (selection, _) = select_for_bundle(bundle, EnginePreference::Tract, args.threads, &[])
        .map_err(|e| {
            invalid(
                "engine",
                e.to_string(),
                "re-lock the bundle: its golden vectors do not reproduce on tract",
            )
        })?;
    let path = StudyPath {
        selection: &selection,
        params,
        decision_params: cxr_study::tightened(params.decision_params(), board),
        gate_required: true,
    };
    let label_index: Vec<Option<usize>> = params
        .labels
        .iter()
        .map(|l| data.labels.iter().position(|d| d == l))
        .collect();
    let start = StdInstant::now();
    let now = || Instant::from_micros(start.elapsed().as_micros() as u64);
    let mut rows = Vec::with_capacity(picked.len());
    for &i in picked {
        let s = &data.samples[i];
        let truth = label_index
            .iter()
            .map(|j| match j.map(|j| s.labels[j]) {
                Some(LabelValue::Positive) => Some(1.0),
                Some(LabelValue::Negative) => Some(0.0),
                _ => None,
            })
            .collect();
        let mut row = StudyRow {
            image: s.image.display().to_string(),
            patient: s.patient.clone(),
            source: s.institution.clone(),
            sex: s.sex,
            age_band: age_band(s.age_years),
            view: s.view.clone(),
            outcome: "refused",
            code: None,
            detail: None,
            content: None,
            probabilities: None,
            calls: None,
            truth,
        };
        let received = now();
        let r = match radiograph(s, args.tags) {
            Ok(r) => r,
            Err((code, message)) => {
                row.code = Some(code);
                row.detail = Some(message);
                rows.push(row);
                continue;
            }
        };
        // One study's internal fault fails that study alone, as in `classify`.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            path.run(&r, received, &now)
        }))
        .unwrap_or_else(|_| {
            Err(cxr_study::StudyFault {
                code: "STUDY_PANICKED",
                message: "internal fault while processing this study (fix: report this study)"
                    .into(),
            })
        });
        match ran {
            Err(e) => {
                row.outcome = "failed";
                row.code = Some(e.code.to_owned());
                row.detail = Some(e.message);
            }
            Ok(out) => {
                let d = &out.decision;
                row.content = out.facts.content.map(|v| v.class.code());
                row.outcome = match d.abstention {
                    Some(_) => "abstention",
                    None if d.is_undecided() => "undecided",
                    None => "decision",
                };
                row.code = d.abstention.map(|a| a.reason.code().to_owned());
                if !d.labels.is_empty() {
                    row.probabilities = Some(d.labels.iter().map(|l| l.probability).collect());
                }
                if d.abstention.is_none() {
                    row.calls = Some(d.labels.iter().map(|l| call_name(l.call)).collect());
                }
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Fewest positive and negative patients for an interval (or a flag).
pub const MIN_PATIENTS_FOR_INTERVAL: usize = 5;

/// The interval only when both classes have enough patients: a bootstrap of
/// one positive film looks precise and is not.
fn with_enough_patients(ci: Option<WithCi>, labels: &[f32], groups: &[usize]) -> Option<WithCi> {
    let count = |positive: bool| {
        groups
            .iter()
            .zip(labels)
            .filter(|(_, l)| (**l > 0.5) == positive)
            .map(|(g, _)| *g)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let enough =
        count(true) >= MIN_PATIENTS_FOR_INTERVAL && count(false) >= MIN_PATIENTS_FOR_INTERVAL;
    ci.map(|c| {
        if enough {
            c
        } else {
            WithCi {
                low: f64::NAN,
                high: f64::NAN,
                resamples: 0,
                ..c
            }
        }
    })
}

/// `(scores, labels, mask, patient groups)` of label `k` over `rows`.
fn columns(rows: &[&StudyRow], k: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<usize>) {
    let mut patients: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut s, mut l, mut m, mut g) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let (Some(p), Some(t)) = (r.probabilities.as_ref().and_then(|p| p.get(k)), r.truth[k])
        else {
            continue;
        };
        let n = patients.len();
        g.push(*patients.entry(r.patient.as_str()).or_insert(n));
        s.push(*p);
        l.push(t);
        m.push(1.0);
    }
    (s, l, m, g)
}

fn label_report(rows: &[StudyRow], k: usize, name: &str) -> LabelReport {
    let all: Vec<&StudyRow> = rows.iter().collect();
    let (s, l, m, g) = columns(&all, k);
    let (mut tp, mut fnn, mut tn, mut fp, mut unc, mut known) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    for r in rows {
        let (Some(calls), Some(t)) = (&r.calls, r.truth[k]) else {
            continue;
        };
        known += 1;
        match (calls[k], t > 0.5) {
            ("positive", true) => tp += 1,
            ("negative", true) => fnn += 1,
            ("negative", false) => tn += 1,
            ("positive", false) => fp += 1,
            _ => unc += 1,
        }
    }
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    LabelReport {
        label: name.to_owned(),
        scored: s.len(),
        positives: l.iter().filter(|v| **v > 0.5).count(),
        auroc: with_enough_patients(bootstrap_by_patient(&s, &l, &m, &g, auroc, 500, 7), &l, &g),
        ece: ece(&s, &l, &m, 10),
        brier: brier(&s, &l, &m),
        sensitivity: ratio(tp, tp + fnn),
        specificity: ratio(tn, tn + fp),
        uncertain: ratio(unc, known),
    }
}

fn subgroups(rows: &[StudyRow], k: usize, overall: Option<f64>) -> Vec<GroupReport> {
    type Key = fn(&StudyRow) -> String;
    let attributes: [(&'static str, Key); 4] = [
        ("sex", |r| r.sex.map_or("unknown".into(), |c| c.to_string())),
        ("age band", |r| r.age_band.to_owned()),
        ("view", |r| {
            r.view.clone().unwrap_or_else(|| "unknown".into())
        }),
        ("source", |r| r.source.clone()),
    ];
    let mut out = Vec::new();
    for (attribute, key) in attributes {
        let mut groups: BTreeMap<String, Vec<&StudyRow>> = BTreeMap::new();
        rows.iter()
            .for_each(|r| groups.entry(key(r)).or_default().push(r));
        if groups.len() < 2 {
            continue;
        }
        for (group, members) in groups {
            let (s, l, m, g) = columns(&members, k);
            let auroc =
                with_enough_patients(bootstrap_by_patient(&s, &l, &m, &g, auroc, 500, 11), &l, &g);
            let gap = auroc.zip(overall).map(|(a, o)| a.value - o);
            let flagged = auroc
                .zip(overall)
                .is_some_and(|(a, o)| a.resamples > 0 && (o < a.low || o > a.high));
            let covered = members
                .iter()
                .filter(|r| matches!(r.outcome, "decision" | "undecided"))
                .count();
            out.push(GroupReport {
                attribute,
                group,
                studies: members.len(),
                coverage: covered as f64 / members.len() as f64,
                auroc,
                gap,
                flagged,
            });
        }
    }
    out
}

/// Evaluate; write `report.json` and `report.md` into `--out`.
pub fn run(args: &EvaluateArgs) -> Result<EvaluationReport, TrainerError> {
    let (bundle, board) = load_bundle(args)?;
    let mut data = load_dataset(&args.data)?;
    let dropped = data.keep_frontal();
    if dropped > 0 {
        eprintln!("cxr-trainer: evaluate: {dropped} films whose table view is not frontal left out (as in training)");
    }
    let picked = select(&data, args)?;
    if picked.is_empty() {
        return Err(invalid(
            "evaluation set",
            "no study selected".into(),
            "check --data, --split/--config and --only (paths must match the table's as it resolves them)",
        ));
    }
    eprintln!(
        "cxr-trainer: evaluate: {} studies of {}",
        picked.len(),
        data.name
    );
    let rows = run_studies(&bundle, &board, &data, &picked, args)?;
    let labels = &bundle.manifest().params.labels;
    let mut outcomes = BTreeMap::new();
    let mut content = BTreeMap::new();
    for r in &rows {
        let key = match &r.code {
            Some(c) => format!("{}: {c}", r.outcome),
            None => r.outcome.to_owned(),
        };
        *outcomes.entry(key).or_insert(0) += 1;
        *content
            .entry(r.content.unwrap_or("none").to_owned())
            .or_insert(0) += 1;
    }
    let label_reports: Vec<LabelReport> = (0..labels.len())
        .map(|k| label_report(&rows, k, &labels[k]))
        .filter(|l| l.scored > 0)
        .collect();
    let audit = label_reports
        .iter()
        .max_by_key(|l| l.positives)
        .filter(|l| l.positives > 0);
    let audit_k = audit.and_then(|a| labels.iter().position(|l| *l == a.label));
    let subgroups = match audit_k {
        Some(k) => subgroups(&rows, k, audit.and_then(|a| a.auroc).map(|a| a.value)),
        None => Vec::new(),
    };
    let covered = rows
        .iter()
        .filter(|r| matches!(r.outcome, "decision" | "undecided"))
        .count();
    let report = EvaluationReport {
        bundle: format!(
            "{} v{}",
            bundle.manifest().model_id,
            bundle.manifest().version
        ),
        bundle_sha256: bundle.digest_hex(),
        data: args.data.clone(),
        tags: format!("{:?}", args.tags).to_lowercase(),
        studies: rows.len(),
        outcomes,
        content,
        coverage: if rows.is_empty() {
            0.0
        } else {
            covered as f64 / rows.len() as f64
        },
        audit_label: audit.map(|a| a.label.clone()),
        labels: label_reports,
        subgroups,
        rows,
    };
    std::fs::create_dir_all(&args.out).map_err(|e| TrainerError::io("creating", &args.out, e))?;
    let write = |name: &str, text: String| {
        let p = args.out.join(name);
        std::fs::write(&p, text).map_err(|e| TrainerError::io("writing", &p, e))
    };
    write(
        "report.json",
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )?;
    write("report.md", markdown(&report))?;
    Ok(report)
}

fn ci(v: &Option<WithCi>) -> String {
    match v {
        Some(w) if w.resamples > 0 => format!("{:.3} ({:.3}-{:.3})", w.value, w.low, w.high),
        Some(w) => format!("{:.3}", w.value),
        None => "-".into(),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

/// The report as a reader takes it in: outcomes, content, labels, subgroups.
pub fn markdown(r: &EvaluationReport) -> String {
    let mut md = format!(
        "# Evaluation of {} on `{}` (tags: {})\n\nBundle SHA-256 `{}`. {} studies through the appliance's study path; coverage (decided or undecided) {:.1}%.\n\n## Outcomes\n\n| outcome | studies |\n|---|---:|\n",
        r.bundle, r.data, r.tags, r.bundle_sha256, r.studies, r.coverage * 100.0
    );
    for (k, v) in &r.outcomes {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str("\n## What the content gate saw\n\n| class | studies |\n|---|---:|\n");
    for (k, v) in &r.content {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str("\n## Labels\n\nAUROC, ECE and Brier over the studies the model scored, including those the OOD or deadline gate then abstained on (the device withholds their numbers); a 95% interval from 500 resamples of patients, shown only with at least 5 positive and 5 negative patients. Sensitivity and specificity of the shipped calls over the studies it decided, Uncertain calls left out of both; the Uncertain share is over all decided studies with the label known.\n\n| label | scored | positives | AUROC | ECE | Brier | sensitivity | specificity | uncertain |\n|---|---:|---:|---|---:|---:|---:|---:|---:|\n");
    for l in &r.labels {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            l.label,
            l.scored,
            l.positives,
            ci(&l.auroc),
            l.ece.map_or("-".into(), |v| format!("{v:.3}")),
            l.brier.map_or("-".into(), |v| format!("{v:.3}")),
            pct(l.sensitivity),
            pct(l.specificity),
            pct(l.uncertain)
        ));
    }
    if let Some(label) = &r.audit_label {
        md.push_str(&format!(
            "\n## Subgroups ({label} AUROC)\n\nA group is flagged when its interval (shown only with at least 5 positive and 5 negative patients) excludes the overall AUROC.\n\n| attribute | group | studies | coverage | AUROC | gap | flagged |\n|---|---|---:|---:|---|---:|---|\n"
        ));
        if r.subgroups.is_empty() {
            md.push_str("| (no attribute has two groups in this set) | | | | | | |\n");
        }
        for g in &r.subgroups {
            md.push_str(&format!(
                "| {} | {} | {} | {:.1}% | {} | {} | {} |\n",
                g.attribute,
                g.group,
                g.studies,
                g.coverage * 100.0,
                ci(&g.auroc),
                g.gap.map_or("-".into(), |v| format!("{v:+.3}")),
                if g.flagged { "**yes**" } else { "no" }
            ));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_needs_five_patients_of_each_class() {
        let ci = Some(WithCi {
            value: 0.8,
            low: 0.7,
            high: 0.9,
            resamples: 500,
        });
        // Four positive patients (one with two films): no interval.
        let labels = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let groups = [0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let few = with_enough_patients(ci, &labels, &groups).unwrap();
        assert_eq!(few.resamples, 0);
        assert!(few.low.is_nan() && few.value == 0.8);
        let groups = [0, 9, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(with_enough_patients(ci, &labels, &groups), ci);
    }
}
