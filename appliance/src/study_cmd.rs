//! `study rerun UID`: run every instance of a study again on the model
//! served now, through the running `serve` (it owns study assembly and the
//! audit log). The study then publishes a new version that names the one it
//! replaces. Audited as the field engineer's action.

use std::process::ExitCode;

use serde_json::json;

use crate::bundle_cmd::print;
use crate::device::{Device, DeviceArgs};

#[derive(Debug, clap::Subcommand)]
pub enum StudyCommand {
    /// Run a study again (after a fault was fixed, say): every instance,
    /// on the model served now; a new result version follows.
    Rerun {
        /// The Study Instance UID.
        study_instance_uid: String,
        #[command(flatten)]
        device: DeviceArgs,
    },
}

pub fn run(cmd: &StudyCommand) -> anyhow::Result<ExitCode> {
    let StudyCommand::Rerun {
        study_instance_uid,
        device,
    } = cmd;
    let device = Device::open(device)?;
    let request = json!({ "op": "study_rerun", "study_instance_uid": study_instance_uid });
    let reply = crate::admin_client::ask(&device.board.state_dir, &request)?.unwrap_or_else(|| {
        json!({ "ok": false, "error": { "code": "STUDY_NO_SERVICE", "message": "no service runs on this state directory: a study is re-run by the running `serve` (fix: start it, then ask again)" } })
    });
    print(&reply);
    Ok(ExitCode::from(if reply["ok"] == true { 0 } else { 1 }))
}
