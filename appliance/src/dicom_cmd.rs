//! `dicom echo AE@HOST:PORT`: check that a destination (a PACS) answers.

use std::process::ExitCode;
use std::time::Instant;

use cxr_net::scu::{self, Destination, SendLimits};
use serde_json::json;

use crate::bundle_cmd::print;

#[derive(Debug, clap::Subcommand)]
pub enum DicomCommand {
    /// C-ECHO a destination: exit 0 when it answers success.
    Echo {
        /// The destination, AE@HOST:PORT.
        destination: String,
        /// Our AE title in the association.
        #[arg(long, default_value = "CXR_APPLIANCE")]
        calling_ae: String,
    },
}

pub fn run(cmd: &DicomCommand) -> anyhow::Result<ExitCode> {
    let DicomCommand::Echo {
        destination,
        calling_ae,
    } = cmd;
    let destination = Destination::parse(destination).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let result = runtime.block_on(scu::echo(&destination, calling_ae, SendLimits::default()));
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(()) => {
            print(&json!({ "echo": "success", "destination": destination.name(), "ms": ms }));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print(&json!({ "echo": "failed", "destination": destination.name(), "error": e }));
            Ok(ExitCode::from(1))
        }
    }
}
