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
use cxr_core::{Call, Decision};
use cxr_engine::{select_for_bundle, EnginePreference};
use cxr_radiograph::Radiograph;
use cxr_study::StudyPath;
use embassy_time::Instant;
use serde::Serialize;

use crate::data::{
    read_generic, read_kermany_subset, read_nih_subset, Dataset, LabelValue, Sample,
};
use crate::eval::{
    auprc, auroc, bootstrap_by_patient, bootstrap_gap, brier, coverage_risk, ece, ece_of_bins,
    reliability, roc_points, ReliabilityBin, WithCi,
};
use crate::plots::{RiskCurve, RocPanel};
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
    /// The report's name: writes `OUT/NAME.md`, `OUT/NAME.json` and the
    /// pictures in `OUT/NAME/`, which the Markdown links relatively, so the
    /// three can be moved together.
    #[arg(long, default_value = "report")]
    name: String,
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
    /// What the table's view says the film is (`frontal_chest`,
    /// `lateral_chest`, `decubitus_chest`), `unrecognised view`, or
    /// `not stated`.
    pub expected_content: &'static str,
    /// Calibrated probabilities, when the model scored the study.
    pub probabilities: Option<Vec<f32>>,
    /// The same before the bundle's temperature scaling.
    pub uncalibrated: Option<Vec<f32>>,
    /// Calls (`positive`, `negative`, `uncertain`), when it decided.
    pub calls: Option<Vec<&'static str>>,
    /// Per bundle label: 1, 0, or none when the table does not say.
    pub truth: Vec<Option<f32>>,
}

/// The content class a table's view names.
fn expected_content(view: Option<&str>) -> &'static str {
    use cxr_core::InputClass;
    match view.map(|v| cxr_dicom::input_class_from_tags(Some("DX"), Some("CHEST"), Some(v), &[])) {
        Some(InputClass::FrontalChest) => "frontal_chest",
        Some(InputClass::LateralChest) => "lateral_chest",
        Some(InputClass::DecubitusChest) => "decubitus_chest",
        Some(_) => "unrecognised view",
        None => "not stated",
    }
}

impl StudyRow {
    /// A study about to be run: everything but what the device made of it.
    pub fn new(sample: &Sample, truth: Vec<Option<f32>>) -> Self {
        StudyRow {
            image: sample.image.display().to_string(),
            patient: sample.patient.clone(),
            source: sample.institution.clone(),
            sex: sample.sex,
            age_band: age_band(sample.age_years),
            view: sample.view.clone(),
            outcome: "refused",
            code: None,
            detail: None,
            content: None,
            expected_content: expected_content(sample.view.as_deref()),
            probabilities: None,
            uncalibrated: None,
            calls: None,
            truth,
        }
    }

    /// What `cxr_core::decide` made of the study (`temperatures`: the
    /// bundle's, to recover the probabilities before scaling).
    pub fn record(&mut self, d: &Decision, temperatures: &[f32]) {
        self.outcome = match d.abstention {
            Some(_) => "abstention",
            None if d.is_undecided() => "undecided",
            None => "decision",
        };
        self.code = d.abstention.map(|a| a.reason.code().to_owned());
        if !d.labels.is_empty() {
            self.probabilities = Some(d.labels.iter().map(|l| l.probability).collect());
            self.uncalibrated = Some(
                d.labels
                    .iter()
                    .zip(temperatures)
                    .map(|(l, t)| uncalibrated(l.probability, *t))
                    .collect(),
            );
        }
        if d.abstention.is_none() {
            self.calls = Some(d.labels.iter().map(|l| call_name(l.call)).collect());
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LabelReport {
    pub label: String,
    pub scored: usize,
    pub positives: usize,
    pub auroc: Option<WithCi>,
    /// The same over the studies the device decided (no gate stopped them).
    pub auroc_decided: Option<WithCi>,
    /// Average precision over the scored studies.
    pub auprc: Option<WithCi>,
    pub ece: Option<f64>,
    pub brier: Option<f64>,
    /// ECE and Brier before the bundle's temperature scaling.
    pub ece_uncalibrated: Option<f64>,
    pub brier_uncalibrated: Option<f64>,
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
    /// Group AUROC minus the overall AUROC, with the interval of that
    /// difference over the same patient resamples.
    pub gap: Option<WithCi>,
    /// The gap's interval excludes zero.
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
    /// `(expected from the table's view, content gate's class)` counts,
    /// over the studies whose view the table states.
    pub content_confusion: BTreeMap<String, BTreeMap<String, usize>>,
    /// Studies decided or undecided, over all studies.
    pub coverage: f64,
    pub labels: Vec<LabelReport>,
    /// The label the subgroup audit uses (the one with most positives).
    pub audit_label: Option<String>,
    pub subgroups: Vec<GroupReport>,
    /// Reliability bins over every scored (study, label) pair with a known
    /// truth, before and after temperature scaling.
    pub reliability_uncalibrated: Vec<ReliabilityBin>,
    pub reliability: Vec<ReliabilityBin>,
    /// The pictures, relative to the Markdown report.
    pub figures: Vec<String>,
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
    let c: crate::config::TrainConfig = toml::from_str(&text)
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
    let splits =
        crate::data::split_by_patient(data, fractions, c.data.split_seed.unwrap_or(c.seed))?;
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

/// Whether a file is DICOM, by its first 132 bytes (whatever its name).
fn is_dicom_file(path: &Path) -> bool {
    use std::io::Read;
    let mut prefix = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut prefix))
        .is_ok_and(|()| cxr_dicom::has_part10_prefix(&prefix))
}

/// The study's radiograph: DICOM through the appliance's reader, decoded as
/// far as the study path needs exactly as `classify` does, images through
/// `cxr-preprocess`, tagged as `mode` says.
fn radiograph(
    s: &Sample,
    mode: TagMode,
    target: cxr_dicom::DecodeTarget,
) -> Result<Radiograph, (String, String)> {
    // A `.dcm` name without the prefix still goes to the DICOM reader, whose
    // refusal then says what is wrong with it.
    let named_dicom = s
        .image
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
    let is_dicom = named_dicom || is_dicom_file(&s.image);
    let mut r = if is_dicom {
        cxr_dicom::read_radiograph_file_for(&s.image, &cxr_dicom::ReadLimits::default(), target)
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
        decision_params: cxr_study::tightened(params.decision_params(), board.gate.require_age),
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
        let mut row = StudyRow::new(s, truth);
        let received = now();
        let target = cxr_dicom::DecodeTarget::ShortSideAtLeast(path.decode_short_side());
        let r = match radiograph(s, args.tags, target) {
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
                row.content = out.facts.content.map(|v| v.class.code());
                row.record(&out.decision, &params.temperatures);
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

/// The probability before temperature scaling: the deployed calibrated
/// probability is `sigmoid(logit / t)`, so the model's own is
/// `sigmoid(t * logit(p))`.
fn uncalibrated(p: f32, t: f32) -> f32 {
    let z = f64::from(t) * logit(f64::from(p));
    (1.0 / (1.0 + (-z).exp())) as f32
}

/// Which of a row's probabilities a metric reads.
type Probabilities = fn(&StudyRow) -> Option<&Vec<f32>>;

fn calibrated(r: &StudyRow) -> Option<&Vec<f32>> {
    r.probabilities.as_ref()
}

fn before_scaling(r: &StudyRow) -> Option<&Vec<f32>> {
    r.uncalibrated.as_ref()
}

/// Scores, labels, mask, patient groups, and the rows they came from.
type Columns<'a> = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<usize>, Vec<&'a StudyRow>);

/// Label `k`'s columns over the `rows` scored with a known truth, in order.
fn columns<'a>(rows: &[&'a StudyRow], k: usize, probabilities: Probabilities) -> Columns<'a> {
    // Patient ids are only unique within a source.
    let mut patients: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let (mut s, mut l, mut m, mut g) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut kept = Vec::new();
    for r in rows {
        let (Some(p), Some(t)) = (probabilities(r).and_then(|p| p.get(k)), truth(r, k)) else {
            continue;
        };
        let n = patients.len();
        g.push(*patients.entry((&r.source, &r.patient)).or_insert(n));
        s.push(*p);
        l.push(t);
        m.push(1.0);
        kept.push(*r);
    }
    (s, l, m, g, kept)
}

fn truth(r: &StudyRow, k: usize) -> Option<f32> {
    r.truth.get(k).copied().flatten()
}

fn call_of(r: &StudyRow, k: usize) -> Option<&'static str> {
    r.calls.as_ref().and_then(|c| c.get(k)).copied()
}

/// The device gave the study calls (some may be Uncertain).
fn is_covered(r: &StudyRow) -> bool {
    matches!(r.outcome, "decision" | "undecided")
}

fn label_report(rows: &[StudyRow], k: usize, name: &str) -> LabelReport {
    let all: Vec<&StudyRow> = rows.iter().collect();
    let (s, l, m, g, _) = columns(&all, k, calibrated);
    let (raw, ..) = columns(&all, k, before_scaling);
    let decided: Vec<&StudyRow> = rows.iter().filter(|r| is_covered(r)).collect();
    let (ds, dl, dm, dg, _) = columns(&decided, k, calibrated);
    let (mut tp, mut fnn, mut tn, mut fp, mut unc, mut known) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    for r in rows {
        let (Some(call), Some(t)) = (call_of(r, k), truth(r, k)) else {
            continue;
        };
        known += 1;
        match (call, t > 0.5) {
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
        auroc_decided: with_enough_patients(
            bootstrap_by_patient(&ds, &dl, &dm, &dg, auroc, 500, 7),
            &dl,
            &dg,
        ),
        auprc: with_enough_patients(bootstrap_by_patient(&s, &l, &m, &g, auprc, 500, 7), &l, &g),
        ece: ece(&s, &l, &m, 10),
        brier: brier(&s, &l, &m),
        ece_uncalibrated: ece(&raw, &l, &m, 10),
        brier_uncalibrated: brier(&raw, &l, &m),
        sensitivity: ratio(tp, tp + fnn),
        specificity: ratio(tn, tn + fp),
        uncertain: ratio(unc, known),
    }
}

fn subgroups(rows: &[StudyRow], k: usize) -> Vec<GroupReport> {
    type Key = fn(&StudyRow) -> String;
    let attributes: [(&'static str, Key); 4] = [
        ("sex", |r| r.sex.map_or("unknown".into(), |c| c.to_string())),
        ("age band", |r| r.age_band.to_owned()),
        ("view", |r| {
            r.view.clone().unwrap_or_else(|| "unknown".into())
        }),
        ("source", |r| r.source.clone()),
    ];
    let all: Vec<&StudyRow> = rows.iter().collect();
    let (all_s, all_l, _, all_g, scored) = columns(&all, k, calibrated);
    let mut out = Vec::new();
    for (attribute, key) in attributes {
        let mut groups: BTreeMap<String, Vec<&StudyRow>> = BTreeMap::new();
        rows.iter()
            .for_each(|r| groups.entry(key(r)).or_default().push(r));
        if groups.len() < 2 {
            continue;
        }
        for (group, members) in groups {
            let (s, l, m, g, _) = columns(&members, k, calibrated);
            let auroc =
                with_enough_patients(bootstrap_by_patient(&s, &l, &m, &g, auroc, 500, 11), &l, &g);
            let in_group: Vec<bool> = scored.iter().map(|r| key(r) == group).collect();
            let gap = with_enough_patients(
                bootstrap_gap(
                    &all_s,
                    &all_l,
                    &all_g,
                    &in_group,
                    crate::eval::auroc,
                    500,
                    13,
                ),
                &l,
                &g,
            );
            let flagged = gap.is_some_and(|d| d.resamples > 0 && (d.low > 0.0 || d.high < 0.0));
            let covered = members.iter().filter(|r| is_covered(r)).count();
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

/// `ln(p / (1 - p))`, with `p` kept off 0 and 1 so it stays finite.
fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln()
}

/// Every scored (study, label) pair with a known truth, pooled over labels.
fn pooled(rows: &[StudyRow], probabilities: Probabilities) -> (Vec<f32>, Vec<f32>) {
    let mut out = (Vec::new(), Vec::new());
    for r in rows {
        let Some(p) = probabilities(r) else { continue };
        for (p, t) in p.iter().zip(&r.truth) {
            if let Some(t) = t {
                out.0.push(*p);
                out.1.push(*t);
            }
        }
    }
    out
}

/// Label `k`'s coverage-risk curve over every study with the label known:
/// the scored ones ordered by their distance to the threshold (in logit
/// units, as the Uncertain band measures it), and the deployed calls' point.
fn risk_curve(rows: &[StudyRow], k: usize, label: &str, threshold: f32) -> RiskCurve {
    let centre = logit(f64::from(threshold));
    let known: Vec<&StudyRow> = rows.iter().filter(|r| truth(r, k).is_some()).collect();
    let (mut margin, mut correct) = (Vec::new(), Vec::new());
    let (mut called, mut wrong) = (0usize, 0usize);
    for r in &known {
        let positive = truth(r, k).is_some_and(|t| t > 0.5);
        // Only studies the device covers: an OOD or deadline abstention
        // still carries probabilities, but never a call.
        let probability = r.probabilities.as_ref().and_then(|p| p.get(k));
        if let Some(p) = probability.filter(|_| is_covered(r)) {
            let z = logit(f64::from(*p)) - centre;
            margin.push(z.abs());
            correct.push((z >= 0.0) == positive);
        }
        match call_of(r, k) {
            Some("positive") => (called, wrong) = (called + 1, wrong + usize::from(!positive)),
            Some("negative") => (called, wrong) = (called + 1, wrong + usize::from(positive)),
            _ => {}
        }
    }
    RiskCurve {
        label: label.to_owned(),
        points: coverage_risk(&margin, &correct, known.len()),
        deployed: (called > 0).then(|| {
            (
                called as f64 / known.len() as f64,
                wrong as f64 / called as f64,
            )
        }),
    }
}

/// The three pictures, into `out/name/`; their paths relative to `out`,
/// where the report is written.
fn write_figures(
    report: &EvaluationReport,
    thresholds: &[f32],
    labels: &[String],
    out: &Path,
    name: &str,
) -> Result<Vec<String>, TrainerError> {
    let dir = out.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| TrainerError::io("creating", &dir, e))?;
    let all: Vec<&StudyRow> = report.rows.iter().collect();
    let mut figures = Vec::new();
    let index = |label: &str| labels.iter().position(|l| l == label);
    let panels: Vec<RocPanel> = report
        .labels
        .iter()
        .filter_map(|l| {
            let (s, t, m, ..) = columns(&all, index(&l.label)?, calibrated);
            Some(RocPanel {
                label: l.label.clone(),
                points: roc_points(&s, &t, &m)?,
                auroc: l.auroc,
                positives: l.positives,
                negatives: l.scored - l.positives,
            })
        })
        .collect();
    if !panels.is_empty() {
        crate::plots::roc_grid(&dir.join("roc.png"), &panels)?;
        figures.push(format!("{name}/roc.png"));
    }
    if !report.reliability.is_empty() {
        let (before, after) = (&report.reliability_uncalibrated, &report.reliability);
        crate::plots::reliability_pair(
            &dir.join("reliability.png"),
            (before, ece_of_bins(before)),
            (after, ece_of_bins(after)),
        )?;
        figures.push(format!("{name}/reliability.png"));
    }
    let mut candidates: Vec<&LabelReport> = report
        .labels
        .iter()
        .filter(|l| l.positives >= MIN_PATIENTS_FOR_INTERVAL)
        .collect();
    candidates.sort_by_key(|l| std::cmp::Reverse(l.positives));
    let curves: Vec<RiskCurve> = candidates
        .iter()
        .take(6)
        .filter_map(|l| {
            let k = index(&l.label)?;
            Some(risk_curve(&report.rows, k, &l.label, *thresholds.get(k)?))
        })
        .collect();
    if !curves.is_empty() {
        crate::plots::coverage_risk(&dir.join("coverage-risk.png"), &curves)?;
        figures.push(format!("{name}/coverage-risk.png"));
    }
    Ok(figures)
}

type Confusion = BTreeMap<String, BTreeMap<String, usize>>;

fn tally(rows: &[StudyRow]) -> (BTreeMap<String, usize>, BTreeMap<String, usize>, Confusion) {
    let mut outcomes = BTreeMap::new();
    let mut content = BTreeMap::new();
    let mut confusion: Confusion = BTreeMap::new();
    for r in rows {
        if r.expected_content != "not stated" {
            *confusion
                .entry(r.expected_content.to_owned())
                .or_default()
                .entry(r.content.unwrap_or("none").to_owned())
                .or_insert(0) += 1;
        }
        let key = match &r.code {
            Some(c) => format!("{}: {c}", r.outcome),
            None => r.outcome.to_owned(),
        };
        *outcomes.entry(key).or_insert(0) += 1;
        *content
            .entry(r.content.unwrap_or("none").to_owned())
            .or_insert(0) += 1;
    }
    (outcomes, content, confusion)
}

/// What was evaluated: the model, the data, how studies were tagged.
#[derive(Debug, Clone)]
pub struct Subject {
    pub bundle: String,
    pub bundle_sha256: String,
    pub data: String,
    pub tags: String,
}

/// The report's numbers from the studies' rows (`labels`: the model's).
pub fn summarise(subject: Subject, labels: &[String], rows: Vec<StudyRow>) -> EvaluationReport {
    let (outcomes, content, content_confusion) = tally(&rows);
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
        Some(k) => subgroups(&rows, k),
        None => Vec::new(),
    };
    let covered = rows.iter().filter(|r| is_covered(r)).count();
    let bins = |probabilities| {
        let (p, t) = pooled(&rows, probabilities);
        reliability(&p, &t, &vec![1.0; p.len()], 10)
    };
    EvaluationReport {
        bundle: subject.bundle,
        bundle_sha256: subject.bundle_sha256,
        data: subject.data,
        tags: subject.tags,
        studies: rows.len(),
        outcomes,
        content,
        content_confusion,
        coverage: if rows.is_empty() {
            0.0
        } else {
            covered as f64 / rows.len() as f64
        },
        audit_label: audit.map(|a| a.label.clone()),
        labels: label_reports,
        subgroups,
        reliability_uncalibrated: bins(before_scaling),
        reliability: bins(calibrated),
        figures: Vec::new(),
        rows,
    }
}

/// Evaluate; write `NAME.json`, `NAME.md` and the pictures into `--out`.
pub fn run(args: &EvaluateArgs) -> Result<EvaluationReport, TrainerError> {
    let name_ok = !args.name.is_empty()
        && args
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !args.name.starts_with('.');
    if !name_ok {
        return Err(invalid(
            "report name",
            args.name.clone(),
            "use letters, digits, '-', '_' and '.' (not first)",
        ));
    }
    let (bundle, board) = load_bundle(args)?;
    let mut data = load_dataset(&args.data)?;
    // A training split is drawn over frontal films only; without one, every
    // film goes to the device, laterals included, as in the field.
    if args.split.is_some() {
        let dropped = data.keep_frontal();
        if dropped > 0 {
            eprintln!("cxr-trainer: evaluate: {dropped} films whose table view is not frontal left out (as training splits)");
        }
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
    let m = bundle.manifest();
    let subject = Subject {
        bundle: format!("{} v{}", m.model_id, m.version),
        bundle_sha256: bundle.digest_hex(),
        data: args.data.clone(),
        tags: format!("{:?}", args.tags).to_lowercase(),
    };
    let mut report = summarise(subject, &m.params.labels, rows);
    write_report(
        &mut report,
        &m.params.thresholds,
        &m.params.labels,
        &args.out,
        &args.name,
    )?;
    Ok(report)
}

/// Write `OUT/NAME.json`, `OUT/NAME.md` and the pictures in `OUT/NAME/`.
pub fn write_report(
    report: &mut EvaluationReport,
    thresholds: &[f32],
    labels: &[String],
    out: &Path,
    name: &str,
) -> Result<(), TrainerError> {
    std::fs::create_dir_all(out).map_err(|e| TrainerError::io("creating", out, e))?;
    report.figures = write_figures(report, thresholds, labels, out, name)?;
    let write = |ext: &str, text: String| {
        let p = out.join(format!("{name}.{ext}"));
        std::fs::write(&p, text).map_err(|e| TrainerError::io("writing", &p, e))
    };
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| invalid("report", e.to_string(), "report this bug"))?;
    write("json", json)?;
    write("md", markdown(report))
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
    if r.rows.iter().any(|row| row.content.is_some()) {
        md.push_str("\n## What the content gate saw\n\n| class | studies |\n|---|---:|\n");
        for (k, v) in &r.content {
            md.push_str(&format!("| {k} | {v} |\n"));
        }
        confusion_section(&mut md, r);
    } else {
        md.push_str("\nNo content gate took part in this run.\n");
    }
    md.push_str("\n## Labels\n\nAUROC, ECE and Brier over the studies the model scored, including those the OOD or deadline gate then abstained on (the device withholds their numbers); a 95% interval from 500 resamples of patients, shown only with at least 5 positive and 5 negative patients. Sensitivity and specificity of the shipped calls over the studies it decided, Uncertain calls left out of both; the Uncertain share is over all decided studies with the label known.\n\n| label | scored | positives | AUROC | AUROC (decided) | ECE | Brier | sensitivity | specificity | uncertain |\n|---|---:|---:|---|---|---:|---:|---:|---:|---:|\n");
    for l in &r.labels {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            l.label,
            l.scored,
            l.positives,
            ci(&l.auroc),
            ci(&l.auroc_decided),
            l.ece.map_or("-".into(), |v| format!("{v:.3}")),
            l.brier.map_or("-".into(), |v| format!("{v:.3}")),
            pct(l.sensitivity),
            pct(l.specificity),
            pct(l.uncertain)
        ));
    }
    figure(
        &mut md,
        r,
        "roc.png",
        "Per-label ROC curves of the scored studies",
    );
    calibration_section(&mut md, r);
    if r.figures.iter().any(|f| f.ends_with("coverage-risk.png")) {
        md.push_str("\n## Selective prediction\n\nFor each label with at least 5 positives (up to six), over every study with that label known: the line orders the scored studies by their distance to the label's threshold (the quantity the Uncertain band cuts) and shows the share of wrong calls among the most confident ones; studies that a gate stopped are never covered. The cross is the shipped rule: its gates and Uncertain band together.\n\n");
        figure(&mut md, r, "coverage-risk.png", "Coverage-risk curves");
    }
    if let Some(label) = &r.audit_label {
        md.push_str(&format!(
            "\n## Subgroups ({label} AUROC)\n\nEach group's AUROC and its gap to the overall AUROC, each with a 95% interval from 500 resamples of patients (the gap's from the group and the whole computed on the same resample), shown only with at least 5 positive and 5 negative patients in the group. A group is flagged when its gap's interval excludes zero.\n\n| attribute | group | studies | coverage | AUROC | gap | flagged |\n|---|---|---:|---:|---|---|---|\n"
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
                gap_text(&g.gap),
                if g.flagged { "**yes**" } else { "no" }
            ));
        }
    }
    md
}

fn confusion_section(md: &mut String, r: &EvaluationReport) {
    if r.content_confusion.is_empty() {
        return;
    }
    let classes: std::collections::BTreeSet<&String> = r
        .content_confusion
        .values()
        .flat_map(|m| m.keys())
        .collect();
    md.push_str("\nAgainst the view the table states (rows: the table; columns: the gate; `none`: stopped before the gate ran):\n\n| table says |");
    for c in &classes {
        md.push_str(&format!(" {c} |"));
    }
    md.push_str(&format!("\n|---|{}\n", "---:|".repeat(classes.len())));
    for (expected, seen) in &r.content_confusion {
        md.push_str(&format!("| {expected} |"));
        for c in &classes {
            md.push_str(&format!(" {} |", seen.get(*c).copied().unwrap_or(0)));
        }
        md.push('\n');
    }
}

fn gap_text(v: &Option<WithCi>) -> String {
    match v {
        Some(w) if w.resamples > 0 => format!("{:+.3} ({:+.3} to {:+.3})", w.value, w.low, w.high),
        Some(w) => format!("{:+.3}", w.value),
        None => "-".into(),
    }
}

fn figure(md: &mut String, r: &EvaluationReport, file: &str, alt: &str) {
    if let Some(f) = r.figures.iter().find(|f| f.ends_with(file)) {
        md.push_str(&format!("\n![{alt}]({f})\n"));
    }
}

fn calibration_section(md: &mut String, r: &EvaluationReport) {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
    md.push_str("\n## Calibration\n\nBefore: the model's own probabilities; after: with the bundle's per-label temperature (fitted on validation patients), as deployed. ECE over 10 equal-width bins. The picture pools every scored (study, label) pair with a known truth; the bars along the bottom are each bin's share of those pairs.\n\n| label | ECE before | ECE after | Brier before | Brier after |\n|---|---:|---:|---:|---:|\n");
    for l in &r.labels {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            l.label,
            f(l.ece_uncalibrated),
            f(l.ece),
            f(l.brier_uncalibrated),
            f(l.brier)
        ));
    }
    figure(
        md,
        r,
        "reliability.png",
        "Reliability before and after temperature scaling",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_view_names_the_expected_content() {
        assert_eq!(expected_content(Some("PA")), "frontal_chest");
        assert_eq!(expected_content(Some("AP")), "frontal_chest");
        assert_eq!(expected_content(Some("LL")), "lateral_chest");
        assert_eq!(expected_content(Some("OBLIQUE")), "unrecognised view");
        assert_eq!(expected_content(None), "not stated");
    }

    #[test]
    fn uncalibrated_undoes_the_temperature() {
        // sigmoid(z / t) with z = 2, t = 0.8, back to sigmoid(z).
        let (z, t) = (2.0f64, 0.8f32);
        let p = (1.0 / (1.0 + (-z / f64::from(t)).exp())) as f32;
        let raw = f64::from(uncalibrated(p, t));
        assert!((raw - 1.0 / (1.0 + (-z).exp())).abs() < 1e-6, "{raw}");
        assert!((uncalibrated(p, 1.0) - p).abs() < 1e-6);
    }

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
