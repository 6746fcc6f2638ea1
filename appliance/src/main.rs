//! `cxr-appliance`: the appliance's command line. Wiring only; the work lives
//! in the library crates. `anyhow` is used here and nowhere else.

mod accel;
mod audit_cmd;
mod bundle_cmd;
mod classify;
mod dev_model;
mod device;
mod inspect;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cxr-appliance",
    version,
    about = "Chest X-ray classifier appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read DICOM files through the guarded ingest path and report what the
    /// appliance would see: one JSON object per line per file. Exit code 0 when
    /// every file was accepted, 2 when any was refused.
    Inspect(inspect::InspectArgs),
    /// Classify studies with the active signed bundle (or `--bundle FILE`,
    /// verified on the fly): one JSON decision per line, each audited before
    /// it is printed. Exit code 0 when every study got a decision, 3 when any
    /// abstained, 2 when any was refused, 4 when no verified model is available.
    Classify(classify::ClassifyArgs),
    /// Model bundles: verify, install, status, rollback.
    #[command(subcommand)]
    Bundle(bundle_cmd::BundleCommand),
    /// The audit log: verify, export.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Write a random-weight model and neutral parameters, to try `classify`
    /// end to end. The output is noise: never use it on patients.
    #[command(hide = true)]
    DevRandomModel(dev_model::DevModelArgs),
}

fn main() -> ExitCode {
    // A decoder panic is caught and reported as a typed error; keep its
    // default multi-line report off the operator's console.
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("cxr-appliance: internal decoder fault caught{place}");
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Classify(args) => classify::run(&args),
        Command::Bundle(cmd) => bundle_cmd::run(&cmd),
        Command::Audit(cmd) => audit_cmd::run(&cmd),
        Command::DevRandomModel(args) => dev_model::run(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cxr-appliance: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
