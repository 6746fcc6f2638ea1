//! `lock`: ONNX + decision parameters → signed bundle with golden vectors
//! from the reference forward and a generated model card.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use cxr_bundle::{
    compute_gate_golden, compute_golden, BundleDraft, BundleSigner, ContentGateData,
    ContentGateDraft, DataDigest, EnsembleMember, GoldenTolerance, ModelDraft, ModelParams,
    Provenance,
};
use cxr_trainer::finalize::EnsembleFile;
use sha2::{Digest, Sha256};

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// The model, with canonical (timm) initializer names.
    #[arg(
        long,
        required_unless_present = "ensemble",
        conflicts_with = "ensemble"
    )]
    onnx: Option<PathBuf>,
    /// Lock an ensemble instead: the `ensemble.toml` that `finalize` wrote
    /// for several runs (its models' files beside it).
    #[arg(long)]
    ensemble: Option<PathBuf>,
    /// Model spec and decision parameters, TOML (the developer-mode params format).
    #[arg(long)]
    params: PathBuf,
    /// The signing key written by `keygen`.
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    model_id: String,
    /// Monotonic per model id: devices refuse anything below what they have had.
    #[arg(long)]
    version: u64,
    /// A board profile id this bundle may run on (repeat for several).
    #[arg(long = "board", required = true)]
    boards: Vec<String>,
    #[arg(long)]
    out: PathBuf,
    /// A model card to include instead of the generated one.
    #[arg(long)]
    card: Option<PathBuf>,
    #[arg(long, default_value = "research demonstration, not for clinical use")]
    intended_use: String,
    /// Training inputs to record by SHA-256 in the provenance (repeatable).
    #[arg(long = "data")]
    data: Vec<PathBuf>,
    /// Source revision of the training code.
    #[arg(long, default_value = "unknown")]
    source_revision: String,
    #[arg(long)]
    seed: Option<u64>,
    /// Training configuration file to embed in the provenance.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of golden vectors.
    #[arg(long, default_value_t = 2)]
    golden: usize,
    /// Relative-L2 tolerance of the self-test for f32 engines.
    #[arg(long, default_value_t = 1e-4)]
    tolerance_f32: f32,
    /// Relative-L2 tolerance of the self-test for bf16/fp16 engines.
    #[arg(long, default_value_t = 1e-2)]
    tolerance_reduced: f32,
    /// The folder `fit-gate` wrote: content-gate.onnx and content-gate.toml.
    #[arg(long)]
    content_gate: PathBuf,
    /// Creation time (Unix seconds); defaults to now. Fix it for reproducible bundles.
    #[arg(long)]
    created_unix_s: Option<u64>,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn model_card(args: &LockArgs, params: &ModelParams, provenance: &Provenance) -> String {
    let m = &params.model;
    let mut card = format!(
        "# Model card: {id} v{version}\n\n\
         **Intended use:** {use_}.\n\n\
         ## Model\n\n\
         - ViT: patch {p}, width {w}, depth {d}, heads {h}, input {s}x{s}, {c} channel(s)\n\
         - Labels ({n}): {labels}\n\
         - Test-time views: {views}\n\
         - Boards: {boards}\n\n\
         ## Decision parameters\n\n\
         - Temperatures: {temps:?} (calibrated: {cal:?})\n\
         - Thresholds: {thr:?}\n\
         - Uncertain bands (logit units either side of each threshold): {bands:?}\n\
         - OOD gate: {ood}\n\
         - Mahalanobis statistics: {maha}\n\
         - Input gate: {gate}\n\n\
         ## Provenance\n\n\
         - Tool: {tool}\n- Source revision: {rev}\n- Seed: {seed:?}\n",
        id = args.model_id,
        version = args.version,
        use_ = args.intended_use,
        p = m.patch,
        w = m.width,
        d = m.depth,
        h = m.heads,
        s = m.image_size,
        c = m.in_channels,
        n = params.labels.len(),
        labels = params.labels.join(", "),
        views = params.tta.len(),
        boards = args.boards.join(", "),
        temps = params.temperatures,
        thr = params.thresholds,
        cal = params.calibrated,
        bands = params.bands,
        ood = params.ood_gate_summary(),
        maha = if params.feature_stats.is_some() {
            "present"
        } else {
            "absent"
        },
        gate = params.input_gate_summary(),
        tool = provenance.tool,
        rev = provenance.source_revision,
        seed = provenance.seed,
    );
    for d in &provenance.data {
        card.push_str(&format!("- Data `{}`: sha256 {}\n", d.name, d.sha256_hex));
    }
    card.push_str(
        "\n## Limitations\n\n\
         - Metrics, calibration and subgroup results are not part of this card unless the trainer \
         wrote them: a bundle locked from a loose model carries no evidence of clinical performance.\n\
         - Only adult frontal chest radiographs pass the input gate; everything else is refused.\n",
    );
    card
}

/// The content gate `fit-gate` wrote, with golden vectors from its
/// reference forward.
fn read_content_gate(
    dir: &Path,
    golden: usize,
    seed: u64,
) -> anyhow::Result<(ContentGateData, ContentGateDraft)> {
    let onnx = read(&dir.join("content-gate.onnx"))?;
    let text = String::from_utf8(read(&dir.join("content-gate.toml"))?)
        .context("content-gate.toml is not UTF-8")?;
    let data: ContentGateData = toml::from_str(&text).context("parsing content-gate.toml")?;
    data.validate()?;
    let weights = cxr_model::onnx::read_gate(&onnx, &data.spec)
        .with_context(|| format!("reading the content gate in {}", dir.display()))?;
    let golden = compute_gate_golden(&weights, golden, seed)?;
    Ok((data, ContentGateDraft { onnx, golden }))
}

/// The models to lock, in member order, each with its golden vectors and,
/// in an ensemble, its own calibration.
fn read_models(
    args: &LockArgs,
    params: &ModelParams,
) -> anyhow::Result<(Vec<ModelDraft>, Vec<EnsembleMember>)> {
    let params_sha256 = cxr_bundle::hex::encode(&Sha256::digest(read(&args.params)?));
    // Each model file with the SHA-256 `finalize` listed for it (none for --onnx).
    let (files, ensemble): (Vec<(PathBuf, Option<String>)>, _) = match (&args.onnx, &args.ensemble)
    {
        (Some(onnx), None) => {
            refuse_ensemble_params(&args.params, &params_sha256)?;
            (vec![(onnx.clone(), None)], Vec::new())
        }
        (None, Some(list)) => {
            let file = read_ensemble_file(list, &params_sha256)?;
            let dir = list.parent().unwrap_or(Path::new("."));
            let files = file
                .member
                .iter()
                .map(|m| (dir.join(&m.onnx), Some(m.sha256.clone())))
                .collect();
            let calibrations = file
                .member
                .into_iter()
                .map(|m| EnsembleMember {
                    temperatures: m.temperatures,
                    calibrated: m.calibrated,
                })
                .collect();
            (files, calibrations)
        }
        _ => anyhow::bail!("pass either --onnx or --ensemble"),
    };
    let mut models = Vec::new();
    for (path, listed) in &files {
        let onnx = read(path)?;
        if let Some(listed) = listed {
            ensure!(
                &cxr_bundle::hex::encode(&Sha256::digest(&onnx)) == listed,
                "{} is not the model `finalize` listed (its SHA-256 differs) (fix: finalize the runs again; the folder changed after finalize)",
                path.display()
            );
        }
        let weights = cxr_model::onnx::read_weights(&onnx, &params.model)
            .with_context(|| format!("reading the weights of {}", path.display()))?;
        let golden = compute_golden(&weights, args.golden, args.version)?;
        models.push(ModelDraft { onnx, golden });
    }
    Ok((models, ensemble))
}

/// `ensemble.toml`, checked: 2 to the most models, fitted together with
/// the parameters being locked.
fn read_ensemble_file(list: &Path, params_sha256: &str) -> anyhow::Result<EnsembleFile> {
    let text = String::from_utf8(read(list)?).context("the ensemble list is not UTF-8")?;
    let file: EnsembleFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", list.display()))?;
    let most = cxr_core::ensemble::MAX_ENSEMBLE_MEMBERS;
    ensure!(
        (2..=most).contains(&file.member.len()),
        "{} lists {} model(s); an ensemble has 2 to {most} (fix: finalize 2 to {most} runs together)",
        list.display(),
        file.member.len()
    );
    ensure!(
        file.params_sha256 == params_sha256,
        "the --params file was not fitted for the ensemble {} (fix: pass the params.toml that `finalize` wrote beside it)",
        list.display()
    );
    Ok(file)
}

/// A single model may not be locked with parameters fitted for an
/// ensemble (those of the `ensemble.toml` beside them): its probabilities
/// would be calibrated, thresholded and OOD-gated for another model.
fn refuse_ensemble_params(params: &Path, params_sha256: &str) -> anyhow::Result<()> {
    let beside = params
        .parent()
        .unwrap_or(Path::new("."))
        .join(EnsembleFile::NAME);
    let Ok(text) = std::fs::read_to_string(&beside) else {
        return Ok(());
    };
    let file: EnsembleFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", beside.display()))?;
    ensure!(
        file.params_sha256 != params_sha256,
        "{} were fitted for the ensemble in {} (fix: lock it with `--ensemble {}`; one of its models alone needs its own `finalize`)",
        params.display(),
        beside.display(),
        beside.display()
    );
    Ok(())
}

/// The ensemble's part of the model card (nothing for one model).
fn ensemble_card(ensemble: &[EnsembleMember]) -> String {
    if ensemble.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\n## Ensemble\n\n{} models run on every view. Each model's logits are calibrated with its own temperatures; the calibrated probabilities are averaged; the decision parameters above (temperatures, thresholds, bands, OOD gate) were fitted on that average. The appliance refuses this bundle on a board that runs fewer models.\n\n",
        ensemble.len()
    );
    for (i, m) in ensemble.iter().enumerate() {
        s.push_str(&format!(
            "- Model {}: temperatures {:?}\n",
            i + 1,
            m.temperatures
        ));
    }
    s
}

pub fn run(args: &LockArgs) -> anyhow::Result<()> {
    ensure!(args.golden >= 1, "at least one golden vector");
    let text = String::from_utf8(read(&args.params)?).context("params are not UTF-8")?;
    let mut params = ModelParams::from_toml(&text)?;
    let (gate, content_gate) = read_content_gate(&args.content_gate, args.golden, args.version)?;
    params.content_gate = Some(gate);
    let (mut models, ensemble) = read_models(args, &params)?;
    let first = models.remove(0);
    let signer = BundleSigner::from_file(&args.key)?;
    let mut data = Vec::new();
    for path in &args.data {
        data.push(DataDigest {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256_hex: cxr_bundle::hex::encode(&Sha256::digest(read(path)?)),
        });
    }
    let config = match &args.config {
        Some(p) => String::from_utf8(read(p)?).context("config is not UTF-8")?,
        None => String::new(),
    };
    let created = args.created_unix_s.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let provenance = Provenance {
        created_unix_s: created,
        tool: format!("cxr-trainer {}", env!("CARGO_PKG_VERSION")),
        source_revision: args.source_revision.clone(),
        seed: args.seed,
        config,
        data,
        intended_use: args.intended_use.clone(),
    };
    let mut model_card = match &args.card {
        Some(p) => String::from_utf8(read(p)?).context("the model card is not UTF-8")?,
        None => model_card(args, &params, &provenance),
    };
    model_card.push_str(&ensemble_card(&ensemble));
    // The gate's own report (what it accepts and rejects) belongs on the card.
    if let Ok(report) = std::fs::read_to_string(args.content_gate.join("report.md")) {
        model_card.push_str("\n#");
        model_card.push_str(&report);
    }
    let draft = BundleDraft {
        model_id: args.model_id.clone(),
        version: args.version,
        boards: args.boards.clone(),
        params,
        golden_tolerance: GoldenTolerance {
            f32_rel_l2: args.tolerance_f32,
            reduced_rel_l2: args.tolerance_reduced,
        },
        provenance,
        onnx: first.onnx,
        golden: first.golden,
        model_card,
        content_gate,
        ensemble,
        more_models: models,
    };
    let bytes = draft.lock(&signer)?;
    cxr_fsio::write_atomically(&args.out, &bytes, 0o666)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{{\"bundle\": {:?}, \"bytes\": {}, \"sha256\": {:?}, \"key_id\": {:?}, \"role\": {:?}}}",
        args.out.display().to_string(),
        bytes.len(),
        cxr_bundle::hex::encode(&Sha256::digest(&bytes)),
        cxr_bundle::hex::encode(&signer.key_id()),
        signer.role.as_str()
    );
    Ok(())
}
