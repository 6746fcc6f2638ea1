//! `serve` as a DICOM node, with real peers: dcmtk's `echoscu` and
//! `storescu` as the modality, dcmtk's `storescp` as the PACS, dicom3tools'
//! `dciodvfy` and dcmtk's `dsrdump` as the SR's judges. Timers are short
//! (`--stable-s 1`, retries from 1 s) so that the suite runs in a minute.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cxr_tests::data::{pydicom_file, scratch_dir, shared_file};
use cxr_tests::dicom_net::{free_port, tool, wait_until, Pacs, Service};
use cxr_tests::web_peers::{Fault, FhirPeer, Orthanc};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod serve_common;
use serve_common::{appliance, demo, sop_instance_uid, study_files};

/// The study results on disk, every version.
fn study_results(state: &Path) -> Vec<Value> {
    study_files(state, "json")
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

/// The SOP Instance UIDs of the SR files the service wrote, sorted.
fn published_srs(state: &Path) -> Vec<String> {
    let dcmdump = tool("dcmdump").unwrap();
    let mut uids: Vec<String> = study_files(state, "dcm")
        .iter()
        .map(|f| sop_instance_uid(&dcmdump, f))
        .collect();
    uids.sort();
    uids
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

/// Run a dcmtk tool; (exit code, stdout and stderr).
fn run(tool: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(tool).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn latest(results: &[Value], study: &str) -> Option<Value> {
    results
        .iter()
        .filter(|r| r["study_instance_uid"] == study)
        .max_by_key(|r| r["version"].as_u64())
        .cloned()
}

/// Every SR a PACS received passes `dciodvfy` without an Error line and
/// `dsrdump` without failure.
fn assert_valid_srs(files: &[PathBuf]) {
    let (dciodvfy, dsrdump) = (tool("dciodvfy").unwrap(), tool("dsrdump").unwrap());
    for f in files {
        let (_, text) = run(&dciodvfy, &[f.to_str().unwrap()]);
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
        assert!(
            errors.is_empty(),
            "dciodvfy {}:\n{}",
            f.display(),
            errors.join("\n")
        );
        assert!(text.contains("Comprehensive3DSR"), "{text}");
        let (code, text) = run(&dsrdump, &[f.to_str().unwrap()]);
        assert_eq!(code, 0, "dsrdump {}: {text}", f.display());
        assert!(text.contains("Imaging Measurement Report"), "{text}");
        assert!(text.contains("UNVERIFIED"), "{text}");
    }
}

/// A copy of `src` changed by `dcmodify` with `args`.
fn modified(dcmodify: &Path, src: &Path, dst: &Path, args: &[&str]) -> PathBuf {
    std::fs::copy(src, dst).unwrap();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-nb", dst.to_str().unwrap()]);
    let (code, text) = run(dcmodify, &all);
    assert_eq!(code, 0, "dcmodify: {text}");
    dst.to_owned()
}

/// The files the modality sends.
struct Films {
    rg1: PathBuf,
    rg3: PathBuf,
    ct: PathBuf,
    siim: PathBuf,
}

fn films() -> Option<Films> {
    Some(Films {
        rg1: pydicom_file("RG1_UNCR.dcm")?,
        rg3: pydicom_file("RG3_UNCR.dcm")?,
        ct: pydicom_file("eCT_Supplemental.dcm")?,
        siim: shared_file("torchxrayvision-test-samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")?,
    })
}

const RG1_STUDY: &str = "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457";

/// Echo (our AE and a wrong one), then the modality's pushes: one study of
/// the frontal film uncompressed, a lateral-tagged copy (a new instance), a
/// copy with the same SOP Instance UID and other bytes (a conflict) and the
/// lossy JPEG 2000 encoding; a tibia; the SIIM chest in JPEG baseline; and
/// a CT, refused at negotiation.
fn modality_pushes(port: u16, f: &Films, dir: &Path, state: &Path) {
    let (echoscu, storescu, dcmodify) = (
        tool("echoscu").unwrap(),
        tool("storescu").unwrap(),
        tool("dcmodify").unwrap(),
    );
    let port = port.to_string();
    let (code, text) = run(&echoscu, &["-aec", "CXR_APPLIANCE", "127.0.0.1", &port]);
    assert_eq!(code, 0, "echoscu: {text}");
    let (code, _) = run(&echoscu, &["-aec", "NOT_US", "127.0.0.1", &port]);
    assert_ne!(code, 0, "a wrong called AE title is rejected");
    let lateral = modified(
        &dcmodify,
        &f.rg1,
        &dir.join("lateral.dcm"),
        &["-gin", "-m", "(0018,5101)=LL"],
    );
    let conflict = modified(
        &dcmodify,
        &f.rg1,
        &dir.join("conflict.dcm"),
        &["-i", "(0008,103E)=resent"],
    );
    for (args, what) in [
        (
            vec![
                f.rg1.to_str().unwrap(),
                lateral.to_str().unwrap(),
                conflict.to_str().unwrap(),
                f.rg3.to_str().unwrap(),
            ],
            "uncompressed",
        ),
        (
            vec!["-xw", sample("RG1_J2KI.dcm").to_str().unwrap()],
            "JPEG 2000",
        ),
        (vec!["-xy", f.siim.to_str().unwrap()], "JPEG baseline"),
    ] {
        let mut all = vec!["-aec", "CXR_APPLIANCE", "127.0.0.1", port.as_str()];
        all.extend(args);
        let (code, text) = run(&storescu, &all);
        assert_eq!(code, 0, "storescu {what}: {text}");
    }
    let (code, text) = run(
        &storescu,
        &[
            "-aec",
            "CXR_APPLIANCE",
            "127.0.0.1",
            &port,
            f.ct.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0, "a CT is refused at negotiation: {text}");
    let journal = std::fs::read_to_string(state.join("spool/journal.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 6, "{journal}");
    assert!(
        !journal.contains("1.2.840.10008.5.1.4.1.1.2"),
        "no CT stored"
    );
}

/// The study rule on what arrived: the lateral never decides, the conflict
/// is flagged, the tibia abstains with no probability.
fn check_results(state: &Path) {
    let results = study_results(state);
    let rg1 = latest(&results, RG1_STUDY).unwrap();
    assert_eq!(rg1["outcome"], "decision", "{rg1}");
    let instances = rg1["instances"].as_array().unwrap();
    let lateral = instances.iter().find(|i| i["frontal"] == false).unwrap();
    assert_eq!(
        lateral["outcome"], "abstention",
        "the lateral is not classified"
    );
    assert!(!rg1["decided_by"]
        .as_array()
        .unwrap()
        .contains(&lateral["instance"]));
    assert!(
        instances
            .iter()
            .any(|i| !i["conflicts_with"].as_array().unwrap().is_empty()),
        "the conflicting copy is flagged: {rg1}"
    );
    let rg3 = results
        .iter()
        .find(|r| r["outcome"] == "abstention")
        .unwrap();
    let labels = rg3["labels"].as_array().unwrap();
    assert!(
        !labels.is_empty()
            && labels
                .iter()
                .all(|l| l["probability"].is_null() && l["finding"] == "indeterminate")
    );
}

/// The PACS was down: the outbox shows the failed attempts. It comes up:
/// everything arrives, under the UIDs first made, and every SR validates.
fn pacs_comes_up(state: &Path, dir: &Path, pacs_port: u16, service: &Service) -> Pacs {
    let list = Command::new(appliance())
        .args(["outbox", "list", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let entries = list["entries"].as_array().unwrap();
    assert!(
        !entries.is_empty() && entries.iter().all(|e| e["state"] == "pending"),
        "{list}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["attempts"].as_u64().unwrap() >= 1 && e["last_error"].is_string()),
        "{list}"
    );
    let pacs = Pacs::start(&tool("storescp").unwrap(), &dir.join("pacs"), pacs_port);
    let expected = published_srs(state);
    let arrived = wait_until(Duration::from_secs(60), || {
        pacs.received().len() >= expected.len()
    });
    assert!(
        arrived,
        "SRs at the PACS: {:?}, expected {expected:?}\n{}",
        pacs.received(),
        service.stderr_text()
    );
    let dcmdump = tool("dcmdump").unwrap();
    let mut received: Vec<String> = pacs
        .received()
        .iter()
        .map(|f| sop_instance_uid(&dcmdump, f))
        .collect();
    received.sort();
    assert_eq!(
        received, expected,
        "the PACS has exactly the SRs the service published"
    );
    assert_valid_srs(&pacs.received());
    pacs
}

#[test]
fn a_modality_and_a_pacs_interoperate_with_the_service() {
    let tools = [
        "echoscu", "storescu", "storescp", "dcmodify", "dcmdump", "dciodvfy", "dsrdump",
    ];
    if tools.iter().any(|t| tool(t).is_none()) {
        return;
    }
    let Some(films) = films() else {
        return;
    };
    let dir = scratch_dir("serve-interop");
    let state = dir.join("state");
    // The PACS is down at first.
    let pacs_port = free_port();
    let forward = format!("PACS@127.0.0.1:{pacs_port}");
    let service = Service::start(
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
            &forward,
            "--retry-initial-s",
            "1",
            "--retry-max-s",
            "4",
            "--retain-hours",
            "0",
        ],
        &[],
        &dir.join("serve.err"),
    );
    assert_eq!(service.ready["model"]["ready"], true, "{}", service.ready);
    assert_eq!(service.ready["destinations"], serde_json::json!([forward]));
    modality_pushes(service.port, &films, &dir, &state);
    let complete = wait_until(Duration::from_secs(120), || {
        let r = study_results(&state);
        latest(&r, RG1_STUDY).is_some_and(|s| s["instances"].as_array().unwrap().len() == 4)
            && r.iter()
                .filter_map(|s| s["study_instance_uid"].as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 3
    });
    assert!(complete, "studies not complete: {}", service.stderr_text());
    check_results(&state);
    std::thread::sleep(Duration::from_secs(2));
    let pacs = pacs_comes_up(&state, &dir, pacs_port, &service);
    // The outage and its end are on the console, one JSON line each.
    let events = serve_common::console_events(&service.stderr_text());
    for name in [
        "association_refused",
        "study_published",
        "delivery_failed",
        "delivery_succeeded",
    ] {
        assert!(
            events.iter().any(|e| e["event"] == name),
            "no {name} on the console: {events:?}"
        );
    }
    inputs_go_once_delivered(&state, &service);
    late_instance_makes_a_new_version(&state, &dir, service.port, &pacs, &films.rg1);
    assert_eq!(
        service.terminate(),
        Some(0),
        "SIGTERM stops the service cleanly"
    );
}

/// Delivered everywhere, and kept for 0 hours: the inputs go, their
/// records stay.
fn inputs_go_once_delivered(state: &Path, service: &Service) {
    let spool_files = || {
        std::fs::read_dir(state.join("spool"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "dcm"))
            .count()
    };
    let gone = wait_until(Duration::from_secs(30), || spool_files() == 0);
    assert!(gone, "{}", service.stderr_text());
    let retired = std::fs::read_to_string(state.join("spool/retired.jsonl")).unwrap();
    assert_eq!(retired.lines().count(), 6);
}

/// An instance after completion makes version N+1, which names version N's
/// digest, and its SR reaches the PACS too.
fn late_instance_makes_a_new_version(state: &Path, dir: &Path, port: u16, pacs: &Pacs, rg1: &Path) {
    let before = latest(&study_results(state), RG1_STUDY).unwrap();
    let version = before["version"].as_u64().unwrap();
    let dcmodify = tool("dcmodify").unwrap();
    let late = modified(
        &dcmodify,
        rg1,
        &dir.join("late.dcm"),
        &["-gin", "-m", "(0018,5101)=LL"],
    );
    let (code, text) = run(
        &tool("storescu").unwrap(),
        &[
            "-aec",
            "CXR_APPLIANCE",
            "127.0.0.1",
            &port.to_string(),
            late.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{text}");
    let next = wait_until(Duration::from_secs(60), || {
        latest(&study_results(state), RG1_STUDY)
            .is_some_and(|r| r["version"].as_u64() == Some(version + 1))
    });
    assert!(next, "no new version after a late instance");
    let after = latest(&study_results(state), RG1_STUDY).unwrap();
    let key_dir = std::fs::read_dir(state.join("results/studies"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|d| d.join(format!("v{}.json", version + 1)).is_file())
        .unwrap();
    let previous = std::fs::read(key_dir.join(format!("v{version}.json"))).unwrap();
    let digest: String = Sha256::digest(&previous)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(after["previous"], digest.as_str());
    assert_eq!(after["instances"].as_array().unwrap().len(), 5);
    let expected = published_srs(state).len();
    let arrived = wait_until(Duration::from_secs(60), || {
        pacs.received().len() >= expected
    });
    assert!(arrived, "the new version's SR reaches the PACS");
}

#[test]
fn a_release_board_binds_only_to_what_its_profile_names() {
    let dir = scratch_dir("serve-release");
    let out = Command::new(appliance())
        .args(["serve", "--board", "x86-release", "--state-dir"])
        .arg(dir.join("state"))
        .args(["--listen", "0.0.0.0:4242"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SERVE_OVERRIDE_REFUSED"), "{err}");
    // An https destination with nothing to check its certificate against
    // stops the start, as does a trust file that holds no certificate.
    let start = |extra: &[&str]| {
        let out = Command::new(appliance())
            .args(["serve", "--state-dir"])
            .arg(dir.join("dev-state"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--forward",
                "fhir:https://127.0.0.1:1/fhir",
            ])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = start(&[]);
    assert!(
        code != Some(0) && err.contains("SERVE_BAD_DESTINATION"),
        "{err}"
    );
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let (code, err) = start(&["--forward-trust-pem", junk.to_str().unwrap()]);
    assert!(code != Some(0) && err.contains("SERVE_BAD_TRUST"), "{err}");
}

#[test]
fn a_bundle_installed_while_serving_takes_effect_without_a_restart() {
    let Some(storescu) = tool("storescu") else {
        return;
    };
    let dir = scratch_dir("serve-install");
    let state = dir.join("state");
    let state_arg = state.to_str().unwrap();
    let service = Service::start(
        &appliance(),
        &[
            "--state-dir",
            state_arg,
            "--listen",
            "127.0.0.1:0",
            "--stable-s",
            "1",
        ],
        &[],
        &dir.join("serve.err"),
    );
    assert_eq!(service.ready["model"]["ready"], false);
    // The install goes through the running service (it owns the audit log).
    let install = Command::new(appliance())
        .args(["bundle", "install", &demo(), "--state-dir", state_arg])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Meanwhile the audit log stays free between the install's records:
    // other work that records (here `outbox list`, which takes the log) is
    // answered while the install verifies and self-tests.
    let mut install = install;
    let mut answered_during_install = 0;
    while install.try_wait().unwrap().is_none() {
        let list = Command::new(appliance())
            .args(["outbox", "list", "--state-dir", state_arg])
            .output()
            .unwrap();
        assert!(list.status.success());
        if install.try_wait().unwrap().is_none() {
            answered_during_install += 1;
        }
    }
    let out = install.wait_with_output().unwrap();
    assert!(
        answered_during_install >= 2,
        "the install held the audit log: {answered_during_install} answers during it"
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{reply}");
    assert_eq!(reply["serving"]["ready"], true, "{reply}");
    assert_eq!(reply["serving"]["bundle"]["model_id"], "cxr-demo-nih");
    // Rolling back with no previous bundle is refused; the service goes on.
    let out = Command::new(appliance())
        .args(["bundle", "rollback", "--state-dir", state_arg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let port = service.port.to_string();
    let (code, text) = run(
        &storescu,
        &[
            "-xw",
            "-aec",
            "CXR_APPLIANCE",
            "127.0.0.1",
            &port,
            sample("RG1_J2KI.dcm").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{text}");
    let decided = wait_until(Duration::from_secs(60), || {
        latest(&study_results(&state), RG1_STUDY).is_some()
    });
    assert!(decided, "{}", service.stderr_text());
    let result = latest(&study_results(&state), RG1_STUDY).unwrap();
    assert_eq!(
        result["outcome"], "decision",
        "the new bundle classified it: {result}"
    );
    assert_eq!(result["model"]["model_id"], "cxr-demo-nih");
    assert_eq!(service.terminate(), Some(0));
    let out = Command::new(appliance())
        .args(["audit", "export", "--state-dir", state_arg])
        .output()
        .unwrap();
    let export = String::from_utf8_lossy(&out.stdout);
    assert!(
        export.contains("\"type\":\"installed\""),
        "the install is audited by the service"
    );
}

/// The outbox's state per destination, from `outbox list`.
fn outbox_states(state: &Path) -> Vec<(String, String)> {
    let list = Command::new(appliance())
        .args(["outbox", "list", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&list.stdout).unwrap_or(Value::Null);
    list["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (field("destination"), field("state"))
        })
        .collect()
}

/// A result goes to a DICOMweb server (Debian's Orthanc) by STOW-RS and to
/// a FHIR server over HTTPS (its certificate from a CA the service is
/// told to trust) as a transaction of conditional creates. The FHIR server
/// is down for the first attempt and loses its answer to the second, which
/// it committed: the retry finds every resource, and the server ends with
/// one report, one Device and one Observation per label.
#[test]
fn results_reach_a_dicomweb_server_and_a_fhir_server_once_each() {
    let (Some(storescu), Some(_)) = (tool("storescu"), tool("dcmdump")) else {
        return;
    };
    let Some(rg1) = pydicom_file("RG1_UNCR.dcm") else {
        return;
    };
    let dir = scratch_dir("serve-web-destinations");
    let Some(orthanc) = Orthanc::start(&dir.join("orthanc")) else {
        return;
    };
    let fhir = FhirPeer::start_tls(&[Fault::Unavailable, Fault::LoseAnswer]);
    let trust = dir.join("fhir-ca.pem");
    std::fs::write(&trust, fhir.ca_pem.as_deref().unwrap()).unwrap();
    let state = dir.join("state");
    let stow = format!("dicomweb:http://127.0.0.1:{}/dicom-web/", orthanc.http_port);
    let fhir_destination = format!("fhir:{}", fhir.url());
    let service = Service::start(
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
            &stow,
            "--forward",
            &fhir_destination,
            "--forward-trust-pem",
            trust.to_str().unwrap(),
            "--retry-initial-s",
            "1",
            "--retry-max-s",
            "4",
        ],
        &[],
        &dir.join("serve.err"),
    );
    let port = service.port.to_string();
    let (code, text) = run(
        &storescu,
        &[
            "-aec",
            "CXR_APPLIANCE",
            "127.0.0.1",
            &port,
            rg1.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "storescu: {text}");
    let delivered = wait_until(Duration::from_secs(90), || {
        let states = outbox_states(&state);
        states.len() == 2 && states.iter().all(|(_, s)| s == "delivered")
    });
    assert!(
        delivered,
        "{:?}\n{}",
        outbox_states(&state),
        service.stderr_text()
    );
    let names: Vec<String> = outbox_states(&state).into_iter().map(|(d, _)| d).collect();
    let stow_name = stow.trim_end_matches('/');
    assert!(
        names.iter().any(|n| n == stow_name) && names.contains(&fhir_destination),
        "{names:?}"
    );
    // DICOMweb: Orthanc holds the SR, under the UID the service made.
    assert_eq!(orthanc.instances_of(RG1_STUDY), published_srs(&state));
    // FHIR: three transactions (refused, answer lost, retried), one of each.
    assert_eq!(fhir.received().len(), 3, "{}", service.stderr_text());
    the_fhir_server_holds_the_result_once(&fhir, &state);
    let Some(validator) = cxr_tests::data::fhir_validator() else {
        return;
    };
    let sent = fhir.save_received(&dir.join("fhir-received"));
    let paths: Vec<&Path> = sent.iter().map(|p| p.as_path()).collect();
    let (valid, report) = validator.check(&paths);
    assert!(valid, "FHIR R4 validation of the transactions:\n{report}");
}

/// One DiagnosticReport (one per study, whatever the version), one Device,
/// one Observation per label, and the report's results point at the
/// Observations the server stored.
fn the_fhir_server_holds_the_result_once(fhir: &FhirPeer, state: &Path) {
    let result = latest(&study_results(state), RG1_STUDY).unwrap();
    let reports = fhir.resources("DiagnosticReport");
    assert_eq!(
        reports.len(),
        1,
        "one DiagnosticReport, whatever the retries"
    );
    assert_eq!(fhir.resources("Device").len(), 1);
    let observations = fhir.resources("Observation");
    assert_eq!(
        observations.len(),
        result["labels"].as_array().unwrap().len()
    );
    let report = &reports[0];
    assert_eq!(report["status"], "preliminary");
    assert_eq!(
        report["imagingStudy"][0]["identifier"]["value"],
        format!("urn:oid:{RG1_STUDY}").as_str()
    );
    // The lost answer's retry updated the same report: a second version.
    assert_eq!(report["meta"]["versionId"], "2", "{report}");
    assert_eq!(fhir.history("DiagnosticReport").len(), 1);
    let mut stored: Vec<String> = observations
        .iter()
        .map(|o| format!("Observation/{}", o["id"].as_str().unwrap()))
        .collect();
    let mut referenced: Vec<String> = report["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reference"].as_str().unwrap().to_owned())
        .collect();
    referenced.sort();
    stored.sort();
    assert_eq!(referenced, stored);
}

/// The SR files a PACS received, as (SOP Instance UID, dcmdump text).
fn received_srs(pacs: &Pacs) -> Vec<(String, String)> {
    let dcmdump = tool("dcmdump").unwrap();
    pacs.received()
        .iter()
        .map(|f| {
            let (_, text) = run(&dcmdump, &["-M", "+L", f.to_str().unwrap()]);
            (sop_instance_uid(&dcmdump, f), text)
        })
        .collect()
}

/// The latest result of `study` once it reaches `version`.
fn wait_for_version(state: &Path, study: &str, version: u64, service: &Service) -> Value {
    let reached = wait_until(Duration::from_secs(90), || {
        latest(&study_results(state), study).is_some_and(|r| r["version"].as_u64() >= Some(version))
    });
    assert!(
        reached,
        "study {study} never reached version {version}:\n{}",
        service.stderr_text()
    );
    latest(&study_results(state), study).unwrap()
}

fn send(storescu: &Path, port: u16, files: &[&Path]) {
    let port = port.to_string();
    let mut args = vec!["-aec", "CXR_APPLIANCE", "127.0.0.1", port.as_str()];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let (code, text) = run(storescu, &args);
    assert_eq!(code, 0, "storescu: {text}");
}

/// What a result says is true, current and about one patient, with real
/// peers: a PACS that takes only Implicit VR Little Endian (`storescp
/// +xi`) gets every SR and answers `dicom echo`; a study that failed for
/// want of a model runs again when one is installed and its new version
/// names the one it replaces; a second patient under the same Study UID
/// withdraws the decision; a film without view tags that the content gate
/// calls frontal decides; a resent UID with another patient name abstains;
/// `study rerun` is audited and re-runs.
#[test]
fn a_result_is_true_current_and_about_one_patient() {
    let names = [
        "storescu", "storescp", "dcmodify", "dcmdump", "dciodvfy", "dsrdump",
    ];
    if names.iter().any(|t| tool(t).is_none()) {
        return;
    }
    let Some(rg1) = pydicom_file("RG1_UNCR.dcm") else {
        return;
    };
    let (storescu, dcmodify) = (tool("storescu").unwrap(), tool("dcmodify").unwrap());
    let dir = scratch_dir("serve-truth");
    let state = dir.join("state");
    let state_arg = state.to_str().unwrap();
    let pacs_port = free_port();
    let pacs = Pacs::start_with(
        &tool("storescp").unwrap(),
        &dir.join("pacs"),
        pacs_port,
        &["+xi"],
    );
    let destination = format!("PACS@127.0.0.1:{pacs_port}");
    let echo = Command::new(appliance())
        .args(["dicom", "echo", &destination])
        .output()
        .unwrap();
    assert_eq!(
        echo.status.code(),
        Some(0),
        "echo to an implicit-only SCP: {}",
        String::from_utf8_lossy(&echo.stdout)
    );
    let args = [
        "--state-dir",
        state_arg,
        "--listen",
        "127.0.0.1:0",
        "--stable-s",
        "1",
        "--forward",
        &destination,
        "--retry-initial-s",
        "1",
        "--retry-max-s",
        "4",
    ];
    let service = Service::start(&appliance(), &args, &[], &dir.join("serve.err"));
    assert_eq!(service.ready["model"]["ready"], false);
    send(&storescu, service.port, &[&rg1]);
    let v1 = wait_for_version(&state, RG1_STUDY, 1, &service);
    assert_eq!(v1["outcome"], "failed", "no model yet: {v1}");
    // A model arrives: what failed for want of one runs again.
    let out = Command::new(appliance())
        .args(["bundle", "install", &demo(), "--state-dir", state_arg])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v2 = wait_for_version(&state, RG1_STUDY, 2, &service);
    assert_eq!(v2["outcome"], "decision", "{v2}");
    assert_eq!(v2["supersedes"]["version"], 1, "{v2}");
    // The second patient under the same Study Instance UID.
    let other = modified(
        &dcmodify,
        &rg1,
        &dir.join("pat-b.dcm"),
        &["-gin", "-m", "(0010,0020)=PAT-B"],
    );
    send(&storescu, service.port, &[&other]);
    let v3 = wait_for_version(&state, RG1_STUDY, 3, &service);
    assert_eq!(v3["outcome"], "abstention", "{v3}");
    assert_eq!(v3["reason"]["code"], "ABSTAIN_PATIENT_CONFLICT", "{v3}");
    assert_eq!(v3["flags"], serde_json::json!(["patient_conflict"]));
    assert!(v3["labels"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["probability"].is_null()));
    // Every version reached the implicit-only PACS, in order, each naming
    // the one it replaces.
    let arrived = wait_until(Duration::from_secs(60), || pacs.received().len() >= 3);
    assert!(
        arrived,
        "SRs at the PACS: {:?}\n{}",
        pacs.received(),
        service.stderr_text()
    );
    let srs = received_srs(&pacs);
    let sr_of = |v: &Value| -> String {
        let file = state
            .join("results/studies")
            .join(cxr_store::results::study_key(RG1_STUDY))
            .join(format!("v{}.dcm", v["version"]));
        sop_instance_uid(&tool("dcmdump").unwrap(), &file)
    };
    let v2_uid = sr_of(&v2);
    let v3_text = srs
        .iter()
        .find(|(uid, _)| *uid == sr_of(&v3))
        .map(|(_, t)| t.clone())
        .expect("v3 at the PACS");
    assert!(
        v3_text.contains("LittleEndianImplicit"),
        "sent in implicit VR: {v3_text}"
    );
    assert!(
        v3_text.contains("PredecessorDocumentsSequence") && v3_text.contains(&v2_uid),
        "v3 names v2: {v3_text}"
    );
    assert!(v3_text.contains("ABSTAIN_PATIENT_CONFLICT"), "{v3_text}");
    assert_valid_srs(&pacs.received());
    fhir_keeps_one_report_with_its_history(&service, state_arg);
    untagged_and_resent(&storescu, &dcmodify, &dir, &state, &service, &rg1);
    assert_eq!(service.terminate(), Some(0));
}

/// The appliance's own FHIR side: one DiagnosticReport for the study, at
/// its third version (withdrawn: `entered-in-error`), with versions 1 and
/// 2 still readable through `_history`.
fn fhir_keeps_one_report_with_its_history(service: &Service, state: &str) {
    let auth = serve_common::viewer_bearer(state);
    let port = service.http_port.unwrap();
    let get = |path: &str| {
        let reply =
            cxr_tests::http::request(port, "GET", path, &[("authorization", auth.as_str())], b"");
        assert_eq!(reply.status, 200, "{path}");
        reply.json()
    };
    let found = get(&format!("/fhir/DiagnosticReport?identifier={RG1_STUDY}"));
    assert_eq!(found["total"], 1, "one report per study: {found}");
    let report = &found["entry"][0]["resource"];
    assert_eq!(report["meta"]["versionId"], "3");
    assert_eq!(
        report["status"], "entered-in-error",
        "the decision is withdrawn"
    );
    let id = report["id"].as_str().unwrap();
    let history = get(&format!("/fhir/DiagnosticReport/{id}/_history"));
    assert_eq!(history["type"], "history");
    let versions: Vec<&str> = history["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["3", "2", "1"]);
    let v2 = get(&format!("/fhir/DiagnosticReport/{id}/_history/2"));
    assert_eq!(
        (v2["status"].as_str(), v2["id"].as_str()),
        (Some("preliminary"), Some(id))
    );
    assert!(
        v2["conclusion"].as_str().unwrap().contains("present"),
        "{v2}"
    );
}

/// A study whose film has no view tags decides by the content gate, as
/// `classify` does; the same SOP Instance UID resent with another patient
/// name makes its study abstain; `study rerun` runs it again, audited.
fn untagged_and_resent(
    storescu: &Path,
    dcmodify: &Path,
    dir: &Path,
    state: &Path,
    service: &Service,
    rg1: &Path,
) {
    let untagged = modified(
        dcmodify,
        rg1,
        &dir.join("untagged.dcm"),
        &[
            "-gst",
            "-gse",
            "-gin",
            "-ea",
            "(0018,5101)",
            "-ea",
            "(0020,0020)",
        ],
    );
    let study = Command::new(tool("dcmdump").unwrap())
        .args(["+P", "0020,000d"])
        .arg(&untagged)
        .output()
        .unwrap();
    let study = String::from_utf8_lossy(&study.stdout)
        .split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap()
        .to_owned();
    send(storescu, service.port, &[&untagged]);
    let v1 = wait_for_version(state, &study, 1, service);
    assert_eq!(
        v1["outcome"], "decision",
        "no view tags, frontal by content: {v1}"
    );
    assert_eq!(v1["instances"][0]["frontal"], true);
    let renamed = modified(
        dcmodify,
        &untagged,
        &dir.join("renamed.dcm"),
        &["-m", "(0010,0010)=OTHER^PATIENT"],
    );
    send(storescu, service.port, &[&renamed]);
    let v2 = wait_for_version(state, &study, 2, service);
    assert_eq!(v2["reason"]["code"], "ABSTAIN_INSTANCE_CONFLICT", "{v2}");
    // The resend names another patient too: both flags.
    assert_eq!(
        v2["flags"],
        serde_json::json!(["patient_conflict", "instance_conflict"])
    );
    let state_arg = state.to_str().unwrap();
    let out = Command::new(appliance())
        .args(["study", "rerun", &study, "--state-dir", state_arg])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new(appliance())
        .args(["study", "rerun", "1.2.3.4", "--state-dir", state_arg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "an unknown study is refused");
    let rerun = serve_common::audit_records(&["--state-dir", state_arg])
        .into_iter()
        .any(|r| r["event"]["type"] == "operator_action" && r["event"]["action"] == "study_rerun");
    assert!(rerun, "the re-run is audited");
}

/// The same film to two appliances (two state directories, two device
/// identities): two different SR UIDs, never one UID with two contents.
#[test]
fn two_appliances_give_the_same_film_different_sr_uids() {
    let (Some(storescu), Some(dcmdump)) = (tool("storescu"), tool("dcmdump")) else {
        return;
    };
    let Some(rg1) = pydicom_file("RG1_UNCR.dcm") else {
        return;
    };
    let dir = scratch_dir("serve-two-devices");
    let mut uids = Vec::new();
    for name in ["a", "b"] {
        let state = dir.join(name);
        let args = [
            "--bundle",
            &demo(),
            "--state-dir",
            state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--stable-s",
            "1",
        ];
        let service = Service::start(&appliance(), &args, &[], &dir.join(format!("{name}.err")));
        send(&storescu, service.port, &[&rg1]);
        let r = wait_for_version(&state, RG1_STUDY, 1, &service);
        assert_eq!(r["outcome"], "decision");
        let sr = state
            .join("results/studies")
            .join(cxr_store::results::study_key(RG1_STUDY))
            .join("v1.dcm");
        uids.push(sop_instance_uid(&dcmdump, &sr));
        assert_eq!(service.terminate(), Some(0));
    }
    assert_ne!(uids[0], uids[1], "two appliances, two SR UIDs");
}
