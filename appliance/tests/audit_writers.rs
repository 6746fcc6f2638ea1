//! One writer for the audit log: concurrent `classify` runs and a `bundle
//! install` on one device take turns on the log (the chain stays whole and
//! every acknowledged record is there), and a writer that cannot get the log
//! in time refuses with `AUDIT_LOCKED` and exit code 75, doing nothing.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cxr_tests::data::scratch_dir;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn appliance(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cxr-appliance"));
    c.env("CXR_STATE_DIR", state)
        .env_remove("CXR_BOARD")
        .env_remove("CXR_FAILPOINT")
        .env_remove("CXR_TEST_PANIC_STUDY")
        .current_dir(root());
    c
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

const DEMO: &str = "trainer/demo/demo-nih.cxrb";
const SAMPLES: [&str; 2] = [
    "appliance/samples/RG1_J2KI.dcm",
    "appliance/samples/RG3_J2KI.dcm",
];

#[test]
fn concurrent_classify_and_install_keep_one_chain_and_lose_nothing() {
    let dir = scratch_dir("audit-writers");
    let state = dir.join("state");
    let spawn = |args: &[&str]| {
        appliance(&state)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Each writer holds the log for its whole run (verification, self-test,
    // studies) and the others wait up to 10 s: keep the runs short.
    let mut classify_args = vec!["classify", "--bundle", DEMO];
    classify_args.extend(SAMPLES.iter());
    let children = [
        spawn(&classify_args),
        spawn(&["bundle", "install", DEMO]),
        spawn(&classify_args),
    ];
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut acknowledged: HashMap<u64, String> = HashMap::new();
    for (i, out) in outputs.iter().enumerate() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().unwrap();
        if i == 1 {
            assert_eq!(code, 0, "install: {stderr}");
            continue;
        }
        // The chest film is decided (or undecided), the tibia abstains.
        assert!([3, 5].contains(&code), "classify {i} exit {code}: {stderr}");
        let printed = lines(out);
        assert_eq!(printed.len(), 2, "{stderr}");
        for l in printed {
            let seq = l["audit_seq"].as_u64().unwrap();
            let outcome = l["outcome"].as_str().unwrap().to_owned();
            assert!(
                acknowledged.insert(seq, outcome).is_none(),
                "sequence number {seq} printed twice"
            );
        }
    }
    let verify = appliance(&state)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let export = appliance(&state)
        .args(["audit", "export", "--jsonl"])
        .output()
        .unwrap();
    let records: HashMap<u64, Value> = lines(&export)
        .into_iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r))
        .collect();
    assert_eq!(acknowledged.len(), 4);
    for (seq, outcome) in &acknowledged {
        let record = records
            .get(seq)
            .unwrap_or_else(|| panic!("acknowledged record {seq} is missing"));
        assert_eq!(record["event"]["type"], "inference");
        let logged = record["event"]["outcome"].to_string();
        assert!(
            logged.contains(outcome.as_str()),
            "record {seq}: {logged} vs printed {outcome}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_writer_that_cannot_get_the_log_refuses_with_exit_75_and_does_nothing() {
    let dir = scratch_dir("audit-locked");
    let state = dir.join("state");
    let config = cxr_audit::AuditConfig {
        segment_bytes: 1 << 20,
        max_total_bytes: 1 << 24,
        fsync_every_record: true,
        lock_wait_ms: 0,
    };
    let (holder, _) = cxr_audit::AuditLog::open(&state.join("audit"), config, 0).unwrap();
    let out = appliance(&state)
        .args(["classify", "--bundle", DEMO, SAMPLES[0]])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("AUDIT_LOCKED"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "a result was printed without its record"
    );
    drop(holder);
    let verify = appliance(&state)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(verify.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}
