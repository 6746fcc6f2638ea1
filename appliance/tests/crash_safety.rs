//! Crash safety with real processes: installs, rollbacks and classify runs
//! are SIGKILLed at failpoints between steps and at random times; the device
//! must always end with a verified active bundle (the old or the new one),
//! and the audit log must keep every record that was acknowledged.
//!
//! What this does not test: a power loss. A killed process's writes that
//! reached the page cache survive it, so these runs prove the order of the
//! write, fsync and rename steps, not that the storage honours fsync. The
//! half-written audit records (a failpoint between the two halves of one
//! record) stand in for the torn write a power loss can leave.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cxr_bundle::FAILPOINTS;
use cxr_tests::bundles::{dev_signer, locked, write_trust_dir};
use cxr_tests::data::{pydicom_file, scratch_dir};
use cxr_tests::hostile::Rng;
use serde_json::Value;

const BOARDS: &[&str] = &["dev-x86"];

fn appliance(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cxr-appliance"));
    c.env("CXR_STATE_DIR", state)
        .env_remove("CXR_BOARD")
        .env_remove("CXR_FAILPOINT");
    c
}

fn status(state: &Path) -> Value {
    let out = appliance(state)
        .args(["bundle", "status"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "no verified active bundle after a crash: {v}"
    );
    v
}

fn active_digest(state: &Path) -> String {
    status(state)["active"]["record"]["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Wait for the child to report reaching its failpoint, or to exit.
fn wait_for_failpoint(child: &mut Child) -> bool {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("failpoint reached") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).is_ok()
}

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    cxr_bundle::hex::encode(&Sha256::digest(bytes))
}

#[test]
fn install_and_rollback_survive_sigkill_at_every_step_over_randomised_runs() {
    let dir = scratch_dir("crash-install");
    let state = dir.join("state");
    let dev = dev_signer();
    write_trust_dir(&state.join("trust"), &[&dev], &[]);
    let first = dir.join("v1.cxrb");
    std::fs::write(&first, locked(&dev, "demo", 1, BOARDS)).unwrap();
    assert!(appliance(&state)
        .args(["bundle", "install"])
        .arg(&first)
        .output()
        .unwrap()
        .status
        .success());

    let seed = 0x5EED_0001;
    let mut rng = Rng::new(seed);
    let runs = 60;
    let (mut at_failpoint, mut at_random, mut switched, mut exited_early) = (0, 0, 0, 0);
    let mut version = 1u64;
    for run in 0..runs {
        let before = active_digest(&state);
        let rollback = rng.below(5) == 0;
        let (mut cmd, new_digest) = if rollback {
            let prev = status(&state)["previous"]["record"]["digest"]
                .as_str()
                .map(str::to_owned);
            let mut c = appliance(&state);
            c.args(["bundle", "rollback"]);
            (c, prev)
        } else {
            version += 1;
            let bytes = locked(&dev, "demo", version, BOARDS);
            let path = dir.join(format!("v{version}.cxrb"));
            std::fs::write(&path, &bytes).unwrap();
            let mut c = appliance(&state);
            c.args(["bundle", "install"]).arg(&path);
            (c, Some(sha_hex(&bytes)))
        };
        let points: Vec<&str> = FAILPOINTS
            .iter()
            .copied()
            .filter(|p| p.starts_with(if rollback { "rollback:" } else { "install:" }))
            .collect();
        let use_failpoint = rng.below(3) != 0;
        if use_failpoint {
            cmd.env("CXR_FAILPOINT", points[rng.below(points.len())]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if use_failpoint {
            // A rollback with nothing to roll back to exits before any failpoint.
            if wait_for_failpoint(&mut child) {
                at_failpoint += 1;
            } else {
                exited_early += 1;
            }
        } else {
            std::thread::sleep(Duration::from_micros(rng.below(150_000) as u64));
            at_random += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // The device must come back with a verified active bundle: old or new.
        let after = active_digest(&state);
        assert!(
            after == before || Some(&after) == new_digest.as_ref(),
            "run {run} (seed {seed:#x}): active is neither the old nor the new bundle"
        );
        if after != before {
            switched += 1;
        }
    }
    assert!(
        at_failpoint >= runs / 2,
        "only {at_failpoint} runs reached their failpoint"
    );
    // The audit log survives the kills too (torn tails are cut on the next open).
    let last = dir.join("last.cxrb");
    std::fs::write(&last, locked(&dev, "demo", version + 1, BOARDS)).unwrap();
    let out = appliance(&state)
        .args(["bundle", "install"])
        .arg(&last)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = appliance(&state)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    println!(
        "install crash safety: {runs} runs (seed {seed:#x}): {at_failpoint} killed at failpoints, {at_random} at random times, {exited_early} exited before their failpoint, {switched} ended on the new bundle, all with a verified active bundle"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn classify_killed_at_random_times_never_loses_an_acknowledged_audit_record() {
    let Some(rg1) = pydicom_file("RG1_UNCR.dcm") else {
        return;
    };
    let dir = scratch_dir("crash-audit");
    let state = dir.join("state");
    let dev = dev_signer();
    write_trust_dir(&state.join("trust"), &[&dev], &[]);
    let bundle = dir.join("v1.cxrb");
    std::fs::write(&bundle, locked(&dev, "demo", 1, BOARDS)).unwrap();
    assert!(appliance(&state)
        .args(["bundle", "install"])
        .arg(&bundle)
        .output()
        .unwrap()
        .status
        .success());
    let input_sha = sha_hex(&std::fs::read(&rg1).unwrap());

    let seed = 0x5EED_0002;
    let mut rng = Rng::new(seed);
    let runs = 60;
    let mut acknowledged: Vec<u64> = Vec::new();
    let started = Instant::now();
    let mut half_written = 0;
    for run in 0..runs {
        let mut cmd = appliance(&state);
        cmd.arg("classify")
            .args(std::iter::repeat_n(&rg1, 40))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Every fourth run dies with half a record on disk (as a power loss
        // mid-write would leave it); the others die wherever the kill lands.
        // The two runs after it are killed within their first 6 ms, where
        // start-up cuts that half record and reports the cut (about 3.5 ms
        // into a debug build here): a kill between the two once lost the
        // report (CI, 2026-11-28).
        let partial = run % 4 == 0;
        if partial {
            cmd.env("CXR_FAILPOINT", "audit:partial-record");
        }
        let mut child = cmd.spawn().unwrap();
        if partial {
            assert!(wait_for_failpoint(&mut child));
            half_written += 1;
        } else {
            let window = if run % 4 == 3 { 800_000 } else { 6_000 };
            std::thread::sleep(Duration::from_micros(rng.below(window) as u64));
        }
        let _ = child.kill();
        let _ = child.wait();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        // A line on stdout is an acknowledged result: its record must survive.
        for line in out.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some(seq) = v["audit_seq"].as_u64() {
                acknowledged.push(seq);
            }
        }
    }
    // The next start cuts any torn tail; then the whole log verifies.
    let out = appliance(&state)
        .args(["classify", "/nonexistent.dcm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = appliance(&state)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = appliance(&state)
        .args(["audit", "export", "--jsonl"])
        .output()
        .unwrap();
    let records: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for seq in &acknowledged {
        let r = records
            .iter()
            .find(|r| r["seq"].as_u64() == Some(*seq))
            .unwrap_or_else(|| panic!("acknowledged record {seq} lost"));
        assert_eq!(r["event"]["type"], "inference");
        assert_eq!(r["event"]["input_sha256"], input_sha.as_str());
    }
    let torn = records
        .iter()
        .filter(|r| r["event"]["type"] == "torn_tail_recovered")
        .count();
    assert!(
        !acknowledged.is_empty(),
        "no run got far enough to acknowledge a result"
    );
    assert_eq!(
        torn, half_written,
        "every half-written record was found and cut"
    );
    println!(
        "audit crash safety: {runs} classify runs killed at random (seed {seed:#x}) in {:.1} s: {} acknowledged records all present, {} records in all, {torn} torn tails recovered",
        started.elapsed().as_secs_f64(),
        acknowledged.len(),
        records.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
