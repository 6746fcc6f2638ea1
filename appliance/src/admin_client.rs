//! The commands' side of `serve`'s admin socket: `bundle install`,
//! `bundle rollback` and `outbox ...` send their request to a running
//! service (it owns the audit log and the outbox), and act themselves only
//! when none is listening.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Where a state directory's running service listens.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.sock")
}

/// Send `request` to a running `serve`: `None` when none is listening.
pub fn ask(state_dir: &Path, request: &Value) -> anyhow::Result<Option<Value>> {
    let path = socket_path(state_dir);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(anyhow::anyhow!("connecting to {}: {e}", path.display())),
    };
    // An install verifies, unpacks and self-tests twice (the slot, then
    // the service's engine): minutes on a slow board.
    let wait = if request["op"]
        .as_str()
        .is_some_and(|op| op.starts_with("bundle_"))
    {
        Duration::from_secs(900)
    } else {
        Duration::from_secs(30)
    };
    stream.set_read_timeout(Some(wait))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).take(1 << 20).read_line(&mut line)?;
    Ok(Some(serde_json::from_str(&line)?))
}
