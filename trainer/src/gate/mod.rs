//! `fit-gate`: the content gate (see `cxr_model::gate`), fitted on frontal
//! chest films of two hospitals against real and synthetic negatives, its
//! cut-offs set for a target acceptance of frontal films on validation
//! patients, and reported on held-out patients, the external paediatric
//! half, real chest DICOMs of other devices, and each negative source.

mod fit;
mod sources;
pub mod synthetic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_bundle::ContentGateData;
use cxr_core::{ContentClass, ContentCuts};
use cxr_model::{GateSpec, GateWeights};
use cxr_preprocess::InputSpec;
use serde::Serialize;

use crate::config::TrainConfig;
use crate::data::patient_position;
use crate::prepared::Prepared;
use crate::rng::Rng;
use crate::TrainerError;
pub use sources::GateExample;

/// Share of validation frontal films the cuts must accept.
pub const TARGET_ACCEPTANCE: f64 = 0.975;

#[derive(Debug, clap::Args)]
pub struct FitGateArgs {
    /// The classifier's training configuration: its NIH patient split is
    /// the gate's (train fits, validation sets the cuts, test reports).
    #[arg(long)]
    config: PathBuf,
    /// The Kermany paediatric subset's labels.csv: half its patients train
    /// the gate, the other half is the external report.
    #[arg(long)]
    kermany: PathBuf,
    /// Folders of negative images (DICOM, PNG, JPEG), repeatable.
    #[arg(long = "negatives")]
    negatives: Vec<PathBuf>,
    /// Chest DICOMs from other devices, reported only (repeatable).
    #[arg(long = "chest-dicom")]
    chest_dicoms: Vec<PathBuf>,
    #[arg(long, default_value_t = 1500)]
    steps: usize,
    #[arg(long)]
    out: PathBuf,
}

/// What a set of examples did at the gate.
#[derive(Debug, Clone, Serialize)]
pub struct SourceResult {
    pub source: String,
    /// `frontal_chest` for positives, else the class it stands for.
    pub expected: String,
    pub count: usize,
    /// Share judged frontal chest (accepted).
    pub accepted: f64,
    /// Counts per content class (frontal, lateral, other, not radiograph, atypical).
    pub classes: BTreeMap<String, usize>,
    /// Whether these examples, or others like them, trained the gate.
    pub seen_in_training: Seen,
    /// Share beyond the distance cut alone: what the one-class part rejects
    /// without the head (evidence for kinds the head never saw).
    pub beyond_distance: f64,
    /// Medians of the one-class distance and of the thumbnail's left-right
    /// asymmetry (mean squared difference with its mirror image).
    pub median_distance: f32,
    pub median_asymmetry: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    pub spec: GateSpec,
    pub cuts: ContentCuts,
    pub target_acceptance: f64,
    pub validation_acceptance: f64,
    pub training_examples: BTreeMap<String, usize>,
    pub final_loss: f32,
    pub results: Vec<SourceResult>,
}

fn gate_input_spec(spec: &GateSpec) -> InputSpec {
    InputSpec {
        size: spec.image_size as u32,
        ..InputSpec::default()
    }
}

struct Kermany {
    train: Vec<PathBuf>,
    external: Vec<PathBuf>,
}

/// The Kermany subset split in halves by patient.
fn read_kermany(csv: &Path, seed: u64) -> Result<Kermany, TrainerError> {
    let data = crate::data::read_kermany_subset(csv)?;
    let (train, external): (Vec<_>, Vec<_>) = data
        .samples
        .into_iter()
        .partition(|s| patient_position(seed, &s.patient) < 0.5);
    Ok(Kermany {
        train: train.into_iter().map(|s| s.image).collect(),
        external: external.into_iter().map(|s| s.image).collect(),
    })
}

/// Load chest films, skipping (and counting) any the loaders refuse.
fn load_all(paths: &[PathBuf], spec: &InputSpec) -> Vec<Vec<f32>> {
    let mut skipped = 0;
    let out: Vec<Vec<f32>> = paths
        .iter()
        .filter_map(|p| match sources::chest(p, spec) {
            Ok(v) => Some(v),
            Err(_) => {
                skipped += 1;
                None
            }
        })
        .collect();
    if skipped > 0 {
        eprintln!(
            "cxr-trainer: fit-gate: {skipped} chest film(s) refused by the loaders, left out"
        );
    }
    out
}

fn labelled(inputs: Vec<Vec<f32>>, class: usize, source: &str) -> Vec<GateExample> {
    inputs
        .into_iter()
        .map(|input| GateExample {
            input,
            class,
            source: source.to_owned(),
        })
        .collect()
}

/// Every example, split: (train, validation frontal films, report sets).
struct Gathered {
    train: Vec<GateExample>,
    validation: Vec<Vec<f32>>,
    report: Vec<(Vec<GateExample>, Seen)>,
    /// The held-out film lists, written beside the report for external checks.
    held_out: Vec<(&'static str, Vec<PathBuf>)>,
}

/// How a reported set relates to what trained the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Seen {
    /// Nothing of it trained the gate.
    No,
    /// These very images (and augmentations of them) trained the gate.
    Trained,
    /// Other draws of the same synthetic generator trained the gate.
    SameGenerator,
}

impl Seen {
    fn words(self) -> &'static str {
        match self {
            Seen::No => "no",
            Seen::Trained => "yes (augmented)",
            Seen::SameGenerator => "same generator, other draws",
        }
    }
}

/// The NIH and Kermany sets: (train examples, validation films, report sets,
/// held-out lists).
type ChestSets = (
    Vec<GateExample>,
    Vec<Vec<f32>>,
    Vec<(Vec<GateExample>, Seen)>,
    Vec<(&'static str, Vec<PathBuf>)>,
);

fn chest_sets(
    args: &FitGateArgs,
    config: &TrainConfig,
    input: &InputSpec,
) -> Result<ChestSets, TrainerError> {
    let nih = Prepared::load(&config.data, config.seed)?;
    let samples = &nih.dataset.samples;
    let paths =
        |idx: &[usize]| -> Vec<PathBuf> { idx.iter().map(|&i| samples[i].image.clone()).collect() };
    let (train_idx, val_idx, test_idx) = (
        nih.indices(crate::data::Split::Train),
        nih.indices(crate::data::Split::Validation),
        nih.indices(crate::data::Split::Test),
    );
    // Children held out per film: a child whose patient has a film in any
    // split is not "never trained on", so only wholly held-out patients count.
    let in_splits: std::collections::BTreeSet<&str> = train_idx
        .iter()
        .chain(&val_idx)
        .chain(&test_idx)
        .map(|&i| samples[i].patient.as_str())
        .collect();
    let child_idx: Vec<usize> = nih
        .held_out()
        .into_iter()
        .filter(|&i| !in_splits.contains(samples[i].patient.as_str()))
        .collect();
    let (nih_train, nih_test) = (paths(&train_idx), paths(&test_idx));
    let kermany = read_kermany(&args.kermany, config.seed)?;

    let mut train = labelled(load_all(&nih_train, input), 0, "NIH train patients");
    train.extend(labelled(
        load_all(&kermany.train, input),
        0,
        "Kermany train patients",
    ));
    for (i, p) in nih_train.iter().chain(&kermany.train).enumerate() {
        if let Ok(v) = sources::hemithorax(p, i % 2 == 0, input) {
            train.push(GateExample {
                input: v,
                class: 1,
                source: "hemithorax crops (train)".into(),
            });
        }
    }
    let lateral_test: Vec<GateExample> = nih_test
        .iter()
        .enumerate()
        .filter_map(|(i, p)| sources::hemithorax(p, i % 2 == 1, input).ok())
        .map(|v| GateExample {
            input: v,
            class: 1,
            source: "hemithorax crops of held-out patients (lateral stand-in)".into(),
        })
        .collect();
    let report = vec![
        (
            labelled(
                load_all(&nih_test, input),
                0,
                "NIH held-out adult patients (test)",
            ),
            Seen::No,
        ),
        (
            labelled(
                load_all(&paths(&child_idx), input),
                0,
                "NIH paediatric patients (no film in any split)",
            ),
            Seen::No,
        ),
        (
            labelled(
                load_all(&kermany.external, input),
                0,
                "Kermany external half (paediatric, second hospital)",
            ),
            Seen::No,
        ),
        (
            labelled(
                load_all(&args.chest_dicoms, input),
                0,
                "chest DICOMs of other devices",
            ),
            Seen::No,
        ),
        (lateral_test, Seen::No),
    ];
    let validation = load_all(&paths(&val_idx), input);
    let held_out = vec![
        ("held-out-nih-test.txt", nih_test),
        ("held-out-kermany-external.txt", kermany.external),
    ];
    Ok((train, validation, report, held_out))
}

/// Real negatives, by file group: the trained groups augmented many times
/// into `train`, every group into the report.
fn real_negatives(
    args: &FitGateArgs,
    seed: u64,
    input: &InputSpec,
    rng: &mut Rng,
    train: &mut Vec<GateExample>,
) -> Result<Vec<(Vec<GateExample>, Seen)>, TrainerError> {
    let mut trained: BTreeMap<String, Vec<GateExample>> = BTreeMap::new();
    let mut held: BTreeMap<String, Vec<GateExample>> = BTreeMap::new();
    for path in sources::files_in(&args.negatives)? {
        let Some(ex) = sources::negative(&path, input) else {
            continue;
        };
        let group = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.split('_').next())
            .unwrap_or_default();
        let target = if sources::held_out_group(seed, group) {
            &mut held
        } else {
            &mut trained
        };
        target.entry(ex.source.clone()).or_default().push(ex);
    }
    let side = input.size as usize;
    let mut report = Vec::new();
    for (source, examples) in trained {
        // Few real negatives: each is augmented many times.
        for _ in 0..(60 / examples.len()).max(4) {
            for e in &examples {
                let v = sources::augment(&e.input, side, input.fill_value(), rng);
                train.push(GateExample {
                    input: v,
                    class: e.class,
                    source: source.clone(),
                });
            }
        }
        train.extend(examples.iter().cloned());
        report.push((examples, Seen::Trained));
    }
    report.extend(held.into_values().map(|e| (e, Seen::No)));
    Ok(report)
}

fn gather(args: &FitGateArgs, spec: &GateSpec, rng: &mut Rng) -> Result<Gathered, TrainerError> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| TrainerError::io("reading", &args.config, e))?;
    let config: TrainConfig = toml::from_str(&text)
        .map_err(|e| TrainerError::invalid("training config", e.to_string(), "fix the TOML"))?;
    let input = gate_input_spec(spec);
    let (mut train, validation, mut report, held_out) = chest_sets(args, &config, &input)?;
    report.extend(real_negatives(args, config.seed, &input, rng, &mut train)?);
    for kind in 0..synthetic::KINDS.len() {
        train.extend(sources::synthetic(kind, 300, rng, &input));
        let mut other_draws = Rng::new(config.seed ^ 0xFEED ^ kind as u64);
        report.push((
            sources::synthetic(kind, 100, &mut other_draws, &input),
            Seen::SameGenerator,
        ));
    }
    Ok(Gathered {
        train,
        validation,
        report,
        held_out,
    })
}

/// Fit the gate; write `content-gate.onnx`, `content-gate.toml` (the
/// bundle's `ContentGateData`), `report.json` and `report.md` into `out`.
pub fn run(args: &FitGateArgs) -> Result<GateReport, TrainerError> {
    let spec = GateSpec::default();
    let input = gate_input_spec(&spec);
    let mut rng = Rng::new(0xC0_47E7);
    let data = gather(args, &spec, &mut rng)?;
    let mut train = data.train;
    // Augmented copies of every training film and crop.
    let originals = train.len();
    for i in 0..originals {
        let e = &train[i];
        if e.class <= 1 {
            let v = sources::augment(&e.input, spec.image_size, input.fill_value(), &mut rng);
            let copy = GateExample {
                input: v,
                class: e.class,
                source: e.source.clone(),
            };
            train.push(copy);
        }
    }
    let weights = fit_weights(&spec, &train, args.steps)?;
    let (cuts, validation_acceptance) = fit_cuts(&weights, &data.validation)?;
    let mut counts = BTreeMap::new();
    for e in &train {
        *counts.entry(e.source.clone()).or_insert(0) += 1;
    }
    let results = data
        .report
        .iter()
        .filter(|(e, _)| !e.is_empty())
        .map(|(e, seen)| judge_all(&weights, &cuts, e, *seen))
        .collect::<Result<Vec<_>, _>>()?;
    let report = GateReport {
        spec,
        cuts,
        target_acceptance: TARGET_ACCEPTANCE,
        validation_acceptance,
        training_examples: counts,
        final_loss: weights.1,
        results,
    };
    write_outputs(&args.out, &weights.0, &input, &report)?;
    for (name, paths) in &data.held_out {
        let list: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
        let p = args.out.join(name);
        std::fs::write(&p, list).map_err(|e| TrainerError::io("writing", &p, e))?;
    }
    Ok(report)
}

fn fit_weights(
    spec: &GateSpec,
    train: &[GateExample],
    steps: usize,
) -> Result<(GateWeights, f32), TrainerError> {
    let t = spec.thumb();
    let thumbs: Vec<Vec<f32>> = train
        .iter()
        .map(|e| cxr_model::gate::average_pool(&e.input, spec.image_size, spec.pool))
        .collect();
    let frontal: Vec<Vec<f32>> = thumbs
        .iter()
        .zip(train)
        .filter(|(_, e)| e.class == 0)
        .map(|(t, _)| t.clone())
        .collect();
    if frontal.len() < 2 * spec.components {
        return Err(TrainerError::invalid(
            "content gate data",
            format!("{} frontal films loaded", frontal.len()),
            "check --config's label table and the image paths: the gate needs frontal films to fit",
        ));
    }
    eprintln!(
        "cxr-trainer: fit-gate: principal components of {} frontal thumbnails ({t}x{t})",
        frontal.len()
    );
    let (mean, basis, eigen) = fit::principal_components(&frontal, spec.components, 17);
    let inv_residual = 1.0 / fit::mean_residual(&frontal, &mean, &basis, spec.components).max(1e-6);
    // Features first with a neutral head, then the standardiser, then the head.
    let neutral = fit::Head {
        w1: vec![0.0; spec.hidden * spec.features()],
        b1: vec![0.0; spec.hidden],
        w2: vec![0.0; 4 * spec.hidden],
        b2: vec![0.0; 4],
    };
    let f = spec.features();
    let probe = fit::assemble(
        spec,
        mean.clone(),
        basis.clone(),
        &eigen,
        inv_residual,
        (vec![0.0; f], vec![1.0; f]),
        neutral,
    )?;
    let raw: Vec<Vec<f32>> = train
        .iter()
        .map(|e| probe.features(&e.input).map(|g| g.raw))
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TrainerError::invalid("content gate features", e.to_string(), "report this fit")
        })?;
    let (fmean, finv) = fit::standardiser(&raw);
    let standard: Vec<Vec<f32>> = raw
        .iter()
        .map(|r| {
            r.iter()
                .zip(&fmean)
                .zip(&finv)
                .map(|((x, m), w)| (x - m) * w)
                .collect()
        })
        .collect();
    let y: Vec<usize> = train.iter().map(|e| e.class).collect();
    eprintln!(
        "cxr-trainer: fit-gate: training the head on {} examples, {steps} steps",
        y.len()
    );
    let (head, loss) = fit::train_head(&standard, &y, spec.hidden, steps, 23)?;
    Ok((
        fit::assemble(spec, mean, basis, &eigen, inv_residual, (fmean, finv), head)?,
        loss,
    ))
}

/// The distance cut at the 99th percentile of validation frontal films, then
/// the lowest frontal-probability cut (at least 0.5) that keeps the target
/// acceptance; returns the cuts and the acceptance they reach.
fn fit_cuts(
    weights: &(GateWeights, f32),
    validation: &[Vec<f32>],
) -> Result<(ContentCuts, f64), TrainerError> {
    let outs: Vec<(f32, f32)> = validation
        .iter()
        .map(|v| {
            weights
                .0
                .forward(v)
                .map(|o| (softmax(&o.logits)[0], o.distance))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| TrainerError::invalid("content gate", e.to_string(), "report this fit"))?;
    if outs.len() < 20 {
        return Err(TrainerError::invalid(
            "content gate",
            format!("{} validation films", outs.len()),
            "give the gate at least 20 validation films",
        ));
    }
    let mut d: Vec<f32> = outs.iter().map(|o| o.1).collect();
    d.sort_by(f32::total_cmp);
    let max_distance = d[((d.len() as f64 * 0.99).ceil() as usize).min(d.len() - 1)] * 1.05;
    let mut p: Vec<f32> = outs
        .iter()
        .filter(|o| o.1 <= max_distance)
        .map(|o| o.0)
        .collect();
    p.sort_by(f32::total_cmp);
    let allowed_out = ((1.0 - TARGET_ACCEPTANCE) * outs.len() as f64).floor() as usize;
    let already_out = outs.len() - p.len();
    let k = allowed_out
        .saturating_sub(already_out)
        .min(p.len().saturating_sub(1));
    let min_frontal_probability = p.get(k).copied().unwrap_or(0.5).clamp(0.501, 0.99);
    let cuts = ContentCuts {
        min_frontal_probability,
        max_distance,
    };
    let accepted = outs
        .iter()
        .filter(|o| o.0 >= min_frontal_probability && o.1 <= max_distance)
        .count();
    Ok((cuts, accepted as f64 / outs.len() as f64))
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn judge_all(
    weights: &(GateWeights, f32),
    cuts: &ContentCuts,
    examples: &[GateExample],
    seen: Seen,
) -> Result<SourceResult, TrainerError> {
    let mut classes: BTreeMap<String, usize> = ContentClass::ALL
        .iter()
        .map(|c| (c.code().to_owned(), 0))
        .collect();
    let mut far = 0usize;
    let (mut distances, mut asymmetries) = (Vec::new(), Vec::new());
    let spec = weights.0.spec;
    for e in examples {
        let thumb = cxr_model::gate::average_pool(&e.input, spec.image_size, spec.pool);
        asymmetries.push(cxr_model::gate::asymmetry(&thumb, spec.thumb()));
        let o = weights.0.forward(&e.input).map_err(|er| {
            TrainerError::invalid("content gate", er.to_string(), "report this fit")
        })?;
        let logits: [f32; 4] = [o.logits[0], o.logits[1], o.logits[2], o.logits[3]];
        let within = o
            .distance
            .partial_cmp(&cuts.max_distance)
            .is_some_and(|c| c.is_le());
        far += usize::from(!within);
        distances.push(o.distance);
        *classes
            .entry(cuts.judge(&logits, o.distance).class.code().to_owned())
            .or_insert(0) += 1;
    }
    let n = examples.len();
    Ok(SourceResult {
        source: examples[0].source.clone(),
        expected: cxr_model::gate::CONTENT_CLASSES[examples[0].class].to_owned(),
        count: n,
        accepted: classes["frontal_chest"] as f64 / n as f64,
        classes,
        seen_in_training: seen,
        beyond_distance: far as f64 / n as f64,
        median_distance: median(&mut distances),
        median_asymmetry: median(&mut asymmetries),
    })
}

fn median(v: &mut [f32]) -> f32 {
    v.sort_by(f32::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f32::NAN)
}

fn write_outputs(
    out: &Path,
    weights: &GateWeights,
    input: &InputSpec,
    report: &GateReport,
) -> Result<(), TrainerError> {
    std::fs::create_dir_all(out).map_err(|e| TrainerError::io("creating", out, e))?;
    let write = |name: &str, bytes: &[u8]| {
        let p = out.join(name);
        std::fs::write(&p, bytes).map_err(|e| TrainerError::io("writing", &p, e))
    };
    let onnx = cxr_model::onnx::write_gate(weights)
        .map_err(|e| TrainerError::invalid("content gate", e.to_string(), "report this fit"))?;
    write("content-gate.onnx", &onnx)?;
    let data = ContentGateData {
        spec: report.spec,
        input: *input,
        cuts: report.cuts,
        acceptance: report.validation_acceptance as f32,
    };
    data.validate()
        .map_err(|e| TrainerError::invalid("content gate", e.to_string(), "report this fit"))?;
    let toml = toml::to_string(&data)
        .map_err(|e| TrainerError::invalid("content gate", e.to_string(), "report this fit"))?;
    write("content-gate.toml", toml.as_bytes())?;
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    write("report.json", json.as_bytes())?;
    write("report.md", markdown(report).as_bytes())
}

/// The report as a table a reader can take in at once.
pub fn markdown(r: &GateReport) -> String {
    let mut md = format!(
        "# Content gate\n\n\
         Input {s}x{s} (the appliance's `prepare`), a {t}x{t} thumbnail, {k} principal components of frontal films, \
         left-right asymmetry, an {g}x{g} layout, a {h}-unit head.\n\n\
         Cuts: frontal probability at least {p:.3} and distance at most {d:.3}, fitted for {ta:.1}% acceptance of \
         validation patients' frontal films (reached: {va:.1}%). Final training loss {loss:.3}.\n\n\
         | source | expected | n | accepted as frontal | frontal | lateral | other radiograph | not radiograph | atypical | beyond the distance cut alone | median distance | median asymmetry | trained on |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        s = r.spec.image_size,
        t = r.spec.thumb(),
        k = r.spec.components,
        g = r.spec.coarse,
        h = r.spec.hidden,
        p = r.cuts.min_frontal_probability,
        d = r.cuts.max_distance,
        ta = r.target_acceptance * 100.0,
        va = r.validation_acceptance * 100.0,
        loss = r.final_loss,
    );
    for x in &r.results {
        let c = |k: &str| x.classes.get(k).copied().unwrap_or(0);
        md.push_str(&format!(
            "| {} | {} | {} | {:.1}% | {} | {} | {} | {} | {} | {:.1}% | {:.2} | {:.3} | {} |\n",
            x.source,
            x.expected,
            x.count,
            x.accepted * 100.0,
            c("frontal_chest"),
            c("lateral_chest"),
            c("other_radiograph"),
            c("not_radiograph"),
            c("atypical"),
            x.beyond_distance * 100.0,
            x.median_distance,
            x.median_asymmetry,
            x.seen_in_training.words()
        ));
    }
    md.push_str("\nNo real lateral chest film was available: the lateral rows are hemithorax crops of frontal films and synthetic outlines, stand-ins only.\n");
    md
}
