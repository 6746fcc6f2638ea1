//! `cxr-appliance bundle {verify, install, status, rollback}`: the field
//! engineer's flashing commands. Every outcome is one JSON object on stdout;
//! install and rollback write audit records.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cxr_audit::{BundleRef, Event};
use cxr_board::EngineChoice;
use cxr_bundle::{
    read_bounded, verify, BundleError, SlotRecord, TrustStore, VerifiedBundle, MAX_BUNDLE_BYTES,
};
use cxr_engine::{select_for_bundle, EnginePreference};
use serde_json::{json, Value};

use crate::accel::Accelerators;
use crate::device::{now_unix_ms, Device, DeviceArgs, EnvFailpoints, Recorder};

#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Dry run: verify a bundle for this board and print its manifest summary.
    Verify {
        file: PathBuf,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Verify, unpack into the inactive slot, self-test, switch, raise the floor, audit.
    Install {
        file: PathBuf,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// The active and previous slots (each re-verified), floors and board.
    Status {
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Switch back to the previous slot, if it still verifies.
    Rollback {
        #[command(flatten)]
        device: DeviceArgs,
    },
}

pub fn engine_preference(choice: EngineChoice) -> EnginePreference {
    match choice {
        EngineChoice::Auto => EnginePreference::Auto,
        EngineChoice::Tract => EnginePreference::Tract,
    }
}

pub fn bundle_ref(b: &VerifiedBundle) -> BundleRef {
    BundleRef {
        model_id: b.manifest().model_id.clone(),
        version: b.manifest().version,
        digest: b.digest(),
    }
}

fn record_ref(r: &SlotRecord) -> BundleRef {
    BundleRef {
        model_id: r.model_id.clone(),
        version: r.version,
        digest: cxr_bundle::hex::decode::<32>(&r.digest).unwrap_or_default(),
    }
}

pub fn error_json(code: &str, message: &str) -> Value {
    json!({ "ok": false, "error": { "code": code, "message": message } })
}

pub fn summary(b: &VerifiedBundle) -> Value {
    let m = b.manifest();
    let p = &m.params;
    json!({
        "model_id": m.model_id,
        "version": m.version,
        "schema": m.schema,
        "boards": m.boards,
        "digest": b.digest_hex(),
        "signed_by": { "key_id": b.key_id_hex(), "name": b.key_name(), "role": b.key_role().as_str() },
        "labels": p.labels,
        "model": p.model,
        "input_size": p.input.size,
        "tta_views": p.tta.len(),
        "golden_cases": b.golden().cases.len(),
        "models": m.model_count(),
        "ensemble_temperatures": m.ensemble.iter().map(|e| &e.temperatures).collect::<Vec<_>>(),
        "intended_use": m.provenance.intended_use,
        "provenance": { "created_unix_s": m.provenance.created_unix_s, "tool": m.provenance.tool, "source_revision": m.provenance.source_revision, "seed": m.provenance.seed },
        "members": m.members.iter().map(|e| json!({ "name": e.name, "size": e.size, "sha256": cxr_bundle::hex::encode(&e.sha256) })).collect::<Vec<_>>(),
    })
}

/// One JSON line on stdout; a closed pipe (`| head`) is not an error.
pub fn print(v: &Value) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{v}");
}

fn refuse(e: &BundleError) -> ExitCode {
    print(&error_json(e.code(), &e.to_string()));
    ExitCode::from(2)
}

fn read_and_verify(
    file: &Path,
    device: &Device,
    trust: &TrustStore,
) -> Result<VerifiedBundle, BundleError> {
    let bytes = read_bounded(file, MAX_BUNDLE_BYTES)?;
    let floors = device.store.state()?.floors;
    verify(bytes, trust, &device.board, &floors)
}

pub fn run(cmd: &BundleCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BundleCommand::Verify { file, device } => {
            let device = Device::open(device)?;
            let result = device
                .trust()
                .and_then(|trust| read_and_verify(file, &device, &trust));
            Ok(match result {
                Ok(b) => {
                    print(&json!({ "ok": true, "board": device.board.id, "bundle": summary(&b) }));
                    ExitCode::SUCCESS
                }
                Err(e) => refuse(&e),
            })
        }
        BundleCommand::Install { file, device } => {
            let device = Device::open(device)?;
            let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            let request = json!({ "op": "bundle_install", "file": file });
            if let Some(reply) = crate::admin_client::ask(&device.board.state_dir, &request)? {
                return Ok(printed(&reply));
            }
            let mut audit = device.open_audit()?;
            audit.ensure_room()?;
            Ok(printed(&install(&file, &device, &mut audit)?))
        }
        BundleCommand::Status { device } => {
            let device = Device::open(device)?;
            status(&device)
        }
        BundleCommand::Rollback { device } => {
            let device = Device::open(device)?;
            let request = json!({ "op": "bundle_rollback" });
            if let Some(reply) = crate::admin_client::ask(&device.board.state_dir, &request)? {
                return Ok(printed(&reply));
            }
            let mut audit = device.open_audit()?;
            audit.ensure_room()?;
            Ok(printed(&rollback(&device, &mut audit)?))
        }
    }
}

/// Print a reply; exit 0 when it says ok, 2 when it refuses.
fn printed(reply: &Value) -> ExitCode {
    print(reply);
    if reply["ok"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn refusal(e: &BundleError) -> Value {
    error_json(e.code(), &e.to_string())
}

/// Switch back to the previous slot (it is verified again first), audited.
pub(crate) fn rollback(device: &Device, audit: &mut dyn Recorder) -> anyhow::Result<Value> {
    let trust = match device.trust() {
        Ok(t) => t,
        Err(e) => return Ok(refusal(&e)),
    };
    match device
        .store
        .rollback(&trust, &device.board, &EnvFailpoints::from_env())
    {
        Ok(r) => {
            audit.record(
                now_unix_ms(),
                Event::RolledBack {
                    to: record_ref(&r.active),
                    from: r.previous.as_ref().map(record_ref),
                    slot: r.active.slot.letter(),
                },
            )?;
            Ok(json!({ "ok": true, "active": r.active, "previous": r.previous }))
        }
        Err(e) => Ok(refusal(&e)),
    }
}

/// Verify, unpack into the inactive slot, self-test, switch, audit.
pub(crate) fn install(
    file: &Path,
    device: &Device,
    audit: &mut dyn Recorder,
) -> anyhow::Result<Value> {
    let refused = |audit: &mut dyn Recorder, e: &BundleError| -> anyhow::Result<Value> {
        audit.record(
            now_unix_ms(),
            Event::InstallRefused {
                code: e.code().to_owned(),
                message: e.to_string(),
            },
        )?;
        Ok(refusal(e))
    };
    let trust = match device.trust() {
        Ok(t) => t,
        Err(e) => return refused(audit, &e),
    };
    let bundle = match read_and_verify(file, device, &trust) {
        Ok(b) => b,
        Err(e) => return refused(audit, &e),
    };
    let state = device.store.state()?;
    let slot = state
        .active
        .as_ref()
        .map_or('a', |a| a.slot.other().letter());
    audit.record(
        now_unix_ms(),
        Event::InstallBegun {
            bundle: bundle_ref(&bundle),
            slot,
        },
    )?;
    let engine = &device.board.engine;
    let accelerators = Accelerators::for_board(&device.board, device.kernel_cache_key()?);
    let self_test = |b: &VerifiedBundle| -> Result<String, BundleError> {
        select_for_bundle(
            b,
            engine_preference(engine.preference),
            engine.threads,
            &accelerators.refs(),
        )
        .map(|(_, report)| report.summary())
        .map_err(|e| BundleError::SelfTestFailed {
            engine: "selected".into(),
            problem: e.to_string(),
        })
    };
    let now_s = now_unix_ms() / 1000;
    match device.store.install(
        &bundle,
        &trust,
        &device.board,
        &self_test,
        now_s,
        &EnvFailpoints::from_env(),
    ) {
        Ok(r) => {
            audit.record(
                now_unix_ms(),
                Event::Installed {
                    bundle: bundle_ref(&bundle),
                    slot: r.active.slot.letter(),
                    key_id: bundle.key_id_hex(),
                    self_test: r.self_test.clone(),
                    previous: r.previous.as_ref().map(record_ref),
                },
            )?;
            Ok(json!({
                "ok": true, "installed": summary(&bundle), "active": r.active,
                "previous": r.previous, "self_test": r.self_test,
            }))
        }
        Err(e) => refused(audit, &e),
    }
}

fn status(device: &Device) -> anyhow::Result<ExitCode> {
    let state = match device.store.state() {
        Ok(s) => s,
        Err(e) => return Ok(refuse(&e)),
    };
    let trust = device.trust();
    let check = |r: &Option<SlotRecord>| -> Value {
        match (r, &trust) {
            (None, _) => Value::Null,
            (Some(r), Err(e)) => {
                json!({ "record": r, "verified": false, "error": { "code": e.code(), "message": e.to_string() } })
            }
            (Some(r), Ok(t)) => match device.store.load_slot(r, t, &device.board) {
                Ok(b) => json!({ "record": r, "verified": true, "bundle": summary(&b) }),
                Err(e) => {
                    json!({ "record": r, "verified": false, "error": { "code": e.code(), "message": e.to_string() } })
                }
            },
        }
    };
    let active = check(&state.active);
    let ok = active.get("verified") == Some(&Value::Bool(true));
    print(&json!({
        "ok": ok,
        "board": { "id": device.board.id, "kind": device.board.kind, "accepts": device.board.accept_roles, "state_dir": device.board.state_dir, "trust_dir": device.board.trust_dir },
        "generation": state.generation,
        "active": active,
        "previous": check(&state.previous),
        "floors": state.floors,
    }));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}
