//! Acknowledged means durable: `serve` is killed with SIGKILL at arbitrary
//! moments while `storescu` bursts instances at it over several
//! associations; after each restart every instance the modality saw
//! acknowledged has its result, and the PACS ends with exactly the SRs the
//! service published. CI runs 3 kills of a 24-instance burst;
//! `benches/serve_durability.sh` runs the long version (set
//! `CXR_DURABILITY_KILLS` and `CXR_DURABILITY_INSTANCES`).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cxr_tests::data::scratch_dir;
use cxr_tests::dicom_net::{free_port, tool, wait_until, Pacs, Service};
use cxr_tests::hostile::set_text;
use cxr_tests::wrap::{wrap_grey8, WrapTags};

mod serve_common;
use serve_common::{appliance, demo, journal_lines, sop_instance_uid, study_files};

/// The SR files the service wrote.
fn published(state: &Path) -> Vec<PathBuf> {
    study_files(state, "dcm")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `count` small films, six to a study; returns (file, SOP Instance UID).
fn burst(dir: &Path, count: usize) -> Vec<(PathBuf, String)> {
    std::fs::create_dir_all(dir).unwrap();
    (0..count as u64)
        .map(|i| {
            let pixels: Vec<u8> = (0..256 * 256u32)
                .map(|p| ((p * 7 + i as u32 * 13) % 251) as u8)
                .collect();
            let bytes = wrap_grey8(256, 256, &pixels, &WrapTags::adult_chest_pa(1000 + i));
            // Six instances share a study (UIDs of even length: no padding).
            let study = format!("1.2.826.0.1.3680043.10.99.{:04}", 1000 + i / 6);
            let bytes = set_text(&bytes, 0x0020, 0x000D, &study).unwrap();
            let path = dir.join(format!("{i:04}.dcm"));
            std::fs::write(&path, bytes).unwrap();
            (
                path,
                format!("1.2.826.0.1.3680043.10.1234.{}", 1000 + i + 1),
            )
        })
        .collect()
}

fn storescu(port: u16, files: &[&Path]) -> Child {
    Command::new(tool("storescu").unwrap())
        .args([
            "-v",
            "-aec",
            "CXR_APPLIANCE",
            "-to",
            "10",
            "-ta",
            "10",
            "-td",
            "10",
            "127.0.0.1",
            &port.to_string(),
        ])
        .args(files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The files a `storescu -v` run saw acknowledged with success.
fn acknowledged(child: Child) -> Vec<PathBuf> {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sending: Option<PathBuf> = None;
    let mut acked = Vec::new();
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("I: Sending file: ") {
            sending = Some(PathBuf::from(f.trim()));
        } else if line.contains("Received Store Response (Success)") {
            acked.extend(sending.take());
        }
    }
    acked
}

/// Send every file over three concurrent associations.
fn send_all(port: u16, files: &[(PathBuf, String)]) -> Vec<Child> {
    (0..3)
        .map(|k| {
            let part: Vec<&Path> = files
                .iter()
                .skip(k)
                .step_by(3)
                .map(|(p, _)| p.as_path())
                .collect();
            storescu(port, &part)
        })
        .collect()
}

fn start(state: &Path, dir: &Path, pacs_port: u16, round: usize) -> Service {
    Service::start(
        &appliance(),
        &[
            "--bundle",
            &demo(),
            "--state-dir",
            state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--stable-s",
            "1",
            "--forward",
            &format!("PACS@127.0.0.1:{pacs_port}"),
            "--retry-initial-s",
            "1",
            "--retry-max-s",
            "4",
        ],
        &[],
        &dir.join(format!("serve-{round}.err")),
    )
}

/// SOP Instance UID to the instance results that name it.
fn instance_results(state: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for f in std::fs::read_dir(state.join("results/instances"))
        .unwrap()
        .flatten()
    {
        if f.path().extension().is_some_and(|e| e == "json") {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
            *out.entry(v["sop_instance_uid"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    out
}

fn count_results(state: &Path) -> usize {
    std::fs::read_dir(state.join("results/instances"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn srs_in(dcmdump: &Path, files: impl Iterator<Item = PathBuf>) -> BTreeSet<String> {
    files.map(|f| sop_instance_uid(dcmdump, &f)).collect()
}

/// Wait for a kill moment: mid-burst (after some instances are journalled)
/// in even rounds, mid-inference and publishing (after a new result) in odd.
fn kill_moment(state: &Path, round: usize, count: usize) {
    let target = (journal_lines(state) + 1 + (round * 7) % count.max(1)).min(count);
    let results_so_far = count_results(state);
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let reached = match round % 2 {
            0 => journal_lines(state) >= target,
            _ => count_results(state) > results_so_far || results_so_far >= count,
        };
        if reached {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Everything processed and every SR delivered.
fn settled(state: &Path, count: usize, studies: usize) -> bool {
    let list = Command::new(appliance())
        .args(["outbox", "list", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap_or_default();
    let entries = list["entries"].as_array().cloned().unwrap_or_default();
    let srs = published(state).len();
    instance_results(state).len() == count
        && srs >= studies
        && entries.len() == srs
        && entries.iter().all(|e| e["state"] == "delivered")
}

/// Study UID to (latest version, its instance count).
fn latest_versions(state: &Path) -> BTreeMap<String, (u64, usize)> {
    let mut latest: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    for f in study_files(state, "json") {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        let key = v["study_instance_uid"].as_str().unwrap().to_owned();
        let entry = (
            v["version"].as_u64().unwrap(),
            v["instances"].as_array().unwrap().len(),
        );
        let e = latest.entry(key).or_insert(entry);
        if entry.0 > e.0 {
            *e = entry;
        }
    }
    latest
}

#[test]
fn acknowledged_instances_survive_sigkill_and_reach_the_pacs_once() {
    let (Some(_), Some(storescp), Some(dcmdump)) =
        (tool("storescu"), tool("storescp"), tool("dcmdump"))
    else {
        return;
    };
    let kills = env_usize("CXR_DURABILITY_KILLS", 3);
    let count = env_usize("CXR_DURABILITY_INSTANCES", 24);
    let dir = scratch_dir("serve-durability");
    let state = dir.join("state");
    let files = burst(&dir.join("burst"), count);
    let uid_of_file: BTreeMap<PathBuf, String> = files.iter().cloned().collect();
    let pacs_port = free_port();
    let pacs = Pacs::start(&storescp, &dir.join("pacs"), pacs_port);
    let mut acked: BTreeSet<String> = BTreeSet::new();
    for round in 0..kills {
        let service = start(&state, &dir, pacs_port, round);
        let senders = send_all(service.port, &files);
        kill_moment(&state, round, count);
        service.kill();
        let before = acked.len();
        for s in senders {
            acked.extend(acknowledged(s).iter().map(|f| uid_of_file[f].clone()));
        }
        println!(
            "durability: round {round}: {} newly acknowledged before the kill",
            acked.len() - before
        );
    }
    let acked_before_last = acked.len();
    // The last run is left alone: the modality resends everything.
    let service = start(&state, &dir, pacs_port, kills);
    for s in send_all(service.port, &files) {
        acked.extend(acknowledged(s).iter().map(|f| uid_of_file[f].clone()));
    }
    assert_eq!(
        acked.len(),
        count,
        "the final run acknowledges every instance"
    );
    let studies = count.div_ceil(6);
    let done = wait_until(Duration::from_secs(300), || settled(&state, count, studies));
    assert!(
        done,
        "not everything was processed and delivered:\n{}",
        service.stderr_text()
    );
    // Every acknowledged instance has exactly one result.
    let results = instance_results(&state);
    for uid in &acked {
        assert_eq!(results.get(uid), Some(&1), "{uid}");
    }
    // The journal holds each instance once: resent copies were duplicates.
    let journal = std::fs::read_to_string(state.join("spool/journal.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), count, "{journal}");
    // The PACS has exactly the SRs the service published: none lost, none
    // under a second UID.
    let sent = srs_in(&dcmdump, published(&state).into_iter());
    let received = srs_in(&dcmdump, pacs.received().into_iter());
    assert_eq!(received, sent);
    // Each study's latest version covers all its instances.
    let latest = latest_versions(&state);
    assert_eq!(latest.len(), studies);
    assert_eq!(latest.values().map(|(_, n)| n).sum::<usize>(), count);
    println!(
        "durability: {kills} kills, {count} instances, {acked_before_last} acknowledged before the last kill, {} SR versions delivered",
        sent.len()
    );
}

#[test]
fn an_instance_is_acknowledged_only_once_it_is_durable() {
    let (Some(_), Some(_)) = (tool("storescu"), tool("dcmdump")) else {
        return;
    };
    let dir = scratch_dir("serve-failpoint");
    let state = dir.join("state");
    let files = burst(&dir.join("one"), 1);
    let args = [
        "--state-dir",
        state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--stable-s",
        "1",
    ];
    // The process stops between the fsync of the received bytes and the
    // rename that makes them an instance: the modality never hears success.
    let service = Service::start(
        &appliance(),
        &args,
        &[("CXR_FAILPOINT", "spool:before-rename")],
        &dir.join("a.err"),
    );
    let sender = storescu(service.port, &[files[0].0.as_path()]);
    let reached = wait_until(Duration::from_secs(30), || {
        service
            .stderr_text()
            .contains("failpoint reached: spool:before-rename")
    });
    assert!(reached, "{}", service.stderr_text());
    service.kill();
    assert!(
        acknowledged(sender).is_empty(),
        "acknowledged before it was durable"
    );
    // After the restart the half-written file is gone, and the modality's
    // resend is stored.
    let service = Service::start(&appliance(), &args, &[], &dir.join("b.err"));
    assert!(
        service.stderr_text().contains("\"partial_removed\":1"),
        "{}",
        service.stderr_text()
    );
    assert_eq!(
        std::fs::read_to_string(state.join("spool/journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .count(),
        0
    );
    let sender = storescu(service.port, &[files[0].0.as_path()]);
    assert_eq!(acknowledged(sender).len(), 1);
    assert_eq!(
        std::fs::read_to_string(state.join("spool/journal.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

fn outbox_entries(state: &Path) -> Vec<serde_json::Value> {
    let list = Command::new(appliance())
        .args(["outbox", "list", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap_or_default();
    list["entries"].as_array().cloned().unwrap_or_default()
}

/// A destination removed from the board: its queued results are dropped
/// (audited) at the next start, and a dropped entry cannot be revived.
#[test]
fn entries_for_a_removed_destination_are_dropped_and_stay_dropped() {
    if tool("storescu").is_none() {
        return;
    }
    let dir = scratch_dir("serve-removed-destination");
    let state = dir.join("state");
    let files = burst(&dir.join("one"), 1);
    let first = start(&state, &dir, free_port(), 0);
    let mut sender = storescu(first.port, &[files[0].0.as_path()]);
    assert!(sender.wait().unwrap().success());
    let queued = wait_until(Duration::from_secs(120), || {
        outbox_entries(&state)
            .iter()
            .any(|e| e["state"] == "pending")
    });
    assert!(queued, "{}", first.stderr_text());
    assert_eq!(first.terminate(), Some(0));
    // The next start names another destination.
    let second = start(&state, &dir, free_port(), 1);
    let entries = outbox_entries(&state);
    let old = entries
        .iter()
        .find(|e| e["state"] == "dropped")
        .unwrap_or_else(|| panic!("{entries:?}"));
    let id = old["id"].as_u64().unwrap().to_string();
    let retry = Command::new(appliance())
        .args(["outbox", "retry", &id, "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!retry.status.success(), "a dropped entry stays dropped");
    assert!(String::from_utf8_lossy(&retry.stdout).contains("is dropped"));
    assert_eq!(second.terminate(), Some(0));
    let records = serve_common::audit_records(&["--state-dir", state.to_str().unwrap()]);
    assert!(records
        .iter()
        .any(|r| r["event"]["type"] == "outbox_changed"
            && r["event"]["detail"] == "destination removed from the board"
            && r["event"]["entry"].as_u64() == id.parse::<u64>().ok()));
}

/// A result file that no longer parses (a disk fault, a hand edit) is moved
/// aside and audited at the next start instead of stopping it; the
/// instance runs again and its study is published again.
#[test]
fn a_corrupt_result_file_is_quarantined_and_the_study_recovers() {
    if tool("storescu").is_none() {
        return;
    }
    let dir = scratch_dir("serve-corrupt-result");
    let state = dir.join("state");
    let files = burst(&dir.join("one"), 1);
    let pacs_port = free_port();
    let first = start(&state, &dir, pacs_port, 0);
    assert!(storescu(first.port, &[files[0].0.as_path()])
        .wait()
        .unwrap()
        .success());
    let published = wait_until(Duration::from_secs(120), || {
        !study_files(&state, "json").is_empty()
    });
    assert!(published, "{}", first.stderr_text());
    assert_eq!(first.terminate(), Some(0));
    let study = study_files(&state, "json").remove(0);
    let instance = state.join("results/instances/1.json");
    for f in [&study, &instance] {
        std::fs::write(f, b"{\"torn").unwrap();
    }
    let second = start(&state, &dir, pacs_port, 1);
    let recovered = wait_until(Duration::from_secs(120), || {
        std::fs::read(&study)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some()
    });
    assert!(recovered, "{}", second.stderr_text());
    assert_eq!(second.terminate(), Some(0));
    let quarantined = std::fs::read_dir(state.join("results/quarantine"))
        .unwrap()
        .count();
    assert_eq!(quarantined, 2);
    let records = serve_common::audit_records(&["--state-dir", state.to_str().unwrap()]);
    let paths: Vec<&str> = records
        .iter()
        .filter(|r| r["event"]["type"] == "file_quarantined")
        .filter_map(|r| r["event"]["path"].as_str())
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(paths.contains(&"results/instances/1.json"), "{paths:?}");
}

/// Results are kept for the retention, then pruned with their pictures;
/// the spool keeps a tombstone without patient attributes, so a resend is
/// still a duplicate; the journals are compacted and a restart is clean.
#[test]
fn results_are_pruned_after_the_retention_and_a_resend_is_still_recognised() {
    let (Some(_), Some(storescp)) = (tool("storescu"), tool("storescp")) else {
        return;
    };
    let dir = scratch_dir("serve-prune");
    let state = dir.join("state");
    let files = burst(&dir.join("one"), 1);
    let pacs_port = free_port();
    let _pacs = Pacs::start(&storescp, &dir.join("pacs"), pacs_port);
    let args = |round: usize| -> Vec<String> {
        vec![
            "--bundle".into(),
            demo(),
            "--state-dir".into(),
            state.to_str().unwrap().into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--stable-s".into(),
            "1".into(),
            "--forward".into(),
            format!("PACS@127.0.0.1:{pacs_port}"),
            "--retain-hours".into(),
            "0".into(),
            // About 3 s.
            "--retention-days".into(),
            "0.00003".into(),
            format!("--retry-initial-s={}", 1 + round),
        ]
    };
    let start_round = |round: usize| {
        let a = args(round);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        Service::start(
            &appliance(),
            &refs,
            &[],
            &dir.join(format!("prune-{round}.err")),
        )
    };
    let first = start_round(0);
    let send = |port: u16| {
        assert!(storescu(port, &[files[0].0.as_path()])
            .wait()
            .unwrap()
            .success())
    };
    send(first.port);
    let results = |kind: &str| {
        std::fs::read_dir(state.join("results").join(kind))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let published = wait_until(Duration::from_secs(120), || results("studies") == 1);
    assert!(published, "{}", first.stderr_text());
    let pruned = wait_until(Duration::from_secs(60), || {
        results("studies") == 0 && results("instances") == 0
    });
    assert!(pruned, "{}", first.stderr_text());
    let events = serve_common::console_events(&first.stderr_text());
    assert!(events.iter().any(|e| e["event"] == "results_pruned"));
    let journal = std::fs::read_to_string(state.join("spool/journal.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 1);
    assert!(
        !journal.contains("patient_id\":\"") && !journal.contains("STORESCU"),
        "a tombstone keeps no patient attribute or sender: {journal}"
    );
    // The worklist lists nothing: a tombstone is not a study.
    let auth = serve_common::viewer_bearer(state.to_str().unwrap());
    let worklist = cxr_tests::http::request(
        first.http_port.unwrap(),
        "GET",
        "/api/v1/worklist",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(worklist.status, 200);
    assert_eq!(
        worklist.json()["studies"],
        serde_json::json!([]),
        "{}",
        String::from_utf8_lossy(&worklist.body)
    );
    // The same film again: a duplicate, not a new study.
    send(first.port);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(results("studies"), 0);
    assert_eq!(serve_common::journal_lines(&state), 1);
    assert_eq!(first.terminate(), Some(0));
    let second = start_round(1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(results("studies"), 0, "nothing pruned comes back");
    let events = serve_common::console_events(&second.stderr_text());
    assert!(
        !events.iter().any(|e| e["event"] == "worker_fault"),
        "{events:?}"
    );
    assert_eq!(second.terminate(), Some(0));
}
