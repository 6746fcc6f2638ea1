//! `tls fingerprint`: the SHA-256 fingerprint and expiry of the HTTPS
//! certificate in `<state>/http/tls/`, so that a browser's warning about
//! the self-signed certificate can be checked against the device itself.
//! Without a certificate yet, the self-signed one `serve` would make is
//! made now (the same files), so that it can be pinned before first start.

use std::process::ExitCode;

use serde_json::json;

use crate::bundle_cmd::print;
use crate::device::{Device, DeviceArgs};

#[derive(Debug, clap::Subcommand)]
pub enum TlsCommand {
    /// Print the certificate's SHA-256 fingerprint and expiry.
    Fingerprint {
        #[command(flatten)]
        device: DeviceArgs,
    },
}

pub fn run(cmd: &TlsCommand) -> anyhow::Result<ExitCode> {
    let TlsCommand::Fingerprint { device } = cmd;
    let device = Device::open(device)?;
    let state = &device.board.state_dir;
    let listen = device
        .board
        .serve
        .http_listen
        .as_deref()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
    crate::serve::http::tls_config(state, &listen)?;
    let info =
        cxr_http::tls::certificate_info(state).map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
    let (cert, _) = cxr_http::tls::tls_paths(state);
    print(&json!({
        "ok": true,
        "fingerprint_sha256": info.fingerprint_sha256,
        "not_after": info.not_after,
        "self_signed_here": info.self_signed_here,
        "certificate": cert.display().to_string(),
    }));
    Ok(ExitCode::SUCCESS)
}
