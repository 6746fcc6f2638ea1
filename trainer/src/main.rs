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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { name, role, out } => keygen(&name, role, &out),
        Command::Lock(args) => lock::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cxr-trainer: error: {e:#}");
            ExitCode::from(1)
        }
    }
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
