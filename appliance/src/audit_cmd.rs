//! `cxr-appliance audit {verify, export}`.

use std::process::ExitCode;

use serde_json::json;

use crate::device::{Device, DeviceArgs};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check every record: digests, sequence, chain, segment continuity.
    /// Exit 0 when intact, 2 when damaged (with where).
    Verify {
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Write the log as JSON Lines on stdout (verifying as it goes).
    Export {
        /// JSON Lines (the only format).
        #[arg(long)]
        jsonl: bool,
        #[command(flatten)]
        device: DeviceArgs,
    },
}

pub fn run(cmd: &AuditCommand) -> anyhow::Result<ExitCode> {
    let (device, export) = match cmd {
        AuditCommand::Verify { device } => (device, false),
        AuditCommand::Export { device, .. } => (device, true),
    };
    let device = Device::open(device)?;
    let dir = device.board.state_dir.join("audit");
    let result = if export {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        cxr_audit::export_jsonl(&dir, &mut out)
    } else {
        cxr_audit::verify(&dir)
    };
    match result {
        Ok(r) => {
            let line = json!({ "ok": true, "segments": r.segments, "records": r.records, "last_seq": r.last_seq, "head": cxr_bundle::hex::encode(&r.head) });
            if export {
                eprintln!("{line}");
            } else {
                crate::bundle_cmd::print(&line);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let line =
                json!({ "ok": false, "error": { "code": e.code(), "message": e.to_string() } });
            if export {
                eprintln!("{line}");
            } else {
                crate::bundle_cmd::print(&line);
            }
            Ok(ExitCode::from(2))
        }
    }
}
