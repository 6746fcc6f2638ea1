//! `cxr-trainer`: the training companion. For now: `keygen` and `lock`.
//! `anyhow` is used here (a binary) only.

mod lock;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use cxr_board::KeyRole;
use cxr_bundle::BundleSigner;

#[derive(Debug, Parser)]
#[command(
    name = "cxr-trainer",
    version,
    about = "Chest X-ray classifier: training companion"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    Release,
    Development,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new Ed25519 key pair: NAME.key (secret, 0600) and NAME.pub.toml.
    Keygen {
        /// Development keys must be named dev-…; release keys must not.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// Folder for the two files (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Lock an ONNX model and its decision parameters into a signed bundle.
    Lock(Box<lock::LockArgs>),
    /// Fit calibration, thresholds and OOD statistics on the validation split
    /// of a run, evaluate on its test split, and write model.onnx,
    /// params.toml, model-card.md and report.{json,md} for `lock`.
    Finalize {
        /// The run folder written by `train`.
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Studies to score as out of distribution (other body parts,
        /// modalities); those the guarded ingest refuses are listed as such.
        #[arg(long = "ood")]
        ood: Vec<PathBuf>,
    },
    /// Train the ViT from a TOML configuration (see trainer/configs/).
    Train {
        #[arg(long)]
        config: PathBuf,
        /// Run folder: checkpoints, log.jsonl, report.
        #[arg(long)]
        out: PathBuf,
        /// Continue from the run folder's last checkpoint.
        #[arg(long)]
        resume: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { name, role, out } => keygen(&name, role, &out),
        Command::Lock(args) => lock::run(&args),
        Command::Finalize { run, out, ood } => {
            type Cpu = burn::backend::NdArray<f32>;
            cxr_trainer::finalize::finalize::<Cpu>(&run, &out, &ood, &Default::default())
                .map(|r| println!("{}", serde_json::json!({ "macro_auroc": r.macro_auroc, "macro_auprc": r.macro_auprc, "out": out })))
                .map_err(Into::into)
        }
        Command::Train {
            config,
            out,
            resume,
        } => train(&config, &out, resume),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cxr-trainer: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn train(config: &std::path::Path, out: &std::path::Path, resume: bool) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let config: cxr_trainer::train::TrainConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    type Cpu = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
    let report = cxr_trainer::train::train::<Cpu>(&config, out, resume, &Default::default())?;
    std::fs::write(out.join("config.toml"), &text)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn keygen(name: &str, role: Role, out: &std::path::Path) -> anyhow::Result<()> {
    let role = match role {
        Role::Release => KeyRole::Release,
        Role::Development => KeyRole::Development,
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let signer = BundleSigner::generate(name, role)?;
    let (secret, public) = signer.write_files(out)?;
    println!(
        "{}",
        serde_json_line(&[
            ("key_id", cxr_bundle::hex::encode(&signer.key_id())),
            ("role", role.as_str().to_owned()),
            ("secret_key", secret.display().to_string()),
            ("public_key", public.display().to_string()),
        ])
    );
    Ok(())
}

/// A flat JSON object of strings, without pulling serde_json into the trainer.
fn serde_json_line(pairs: &[(&str, String)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k:?}: {:?}", v))
        .collect();
    format!("{{{}}}", body.join(", "))
}
