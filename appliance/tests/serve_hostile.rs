//! Hostile network input to `serve`: each case gets the right status, the
//! service stays up, and its memory stays bounded. The service runs without
//! a bundle here: it still receives, stores and answers "no verified model".
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cxr_net::dimse::{echo_request, store_request};
use cxr_tests::data::{pydicom_file, scratch_dir};
use cxr_tests::dicom_net::{tool, wait_until, RawPeer, Service, CR_STORAGE, VERIFICATION};
mod serve_common;
use serve_common::{appliance, journal_lines};

use dicom_ul::pdu::{
    AssociationRJResult, AssociationRJServiceProviderPresentationReason, AssociationRJSource, Pdu,
};

/// A development board whose service has small caps and short timeouts.
fn board_file(dir: &Path, extra: &str) -> PathBuf {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-config/boards/dev-x86.toml"),
    )
    .unwrap();
    let base = &base[..base.find("[serve]").unwrap()];
    let text = format!(
        "{base}[serve]\ndicom_listen = \"127.0.0.1:0\"\nae_title = \"CXR_APPLIANCE\"\nallow = [{{ from = \"loopback\" }}]\nstable_s = 1.0\nmax_associations = 3\nmax_per_calling_ae = 3\nacse_timeout_s = 2\ndimse_timeout_s = 2\nidle_timeout_s = 2\nmax_pdu = 65536\n{extra}"
    );
    let path = dir.join("board.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn echo_works(echoscu: &Path, port: u16) -> bool {
    Command::new(echoscu)
        .args(["-aec", "CXR_APPLIANCE", "127.0.0.1", &port.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

fn is_accepted(answer: Option<Pdu>) -> bool {
    matches!(answer, Some(Pdu::AssociationAC(_)))
}

/// Malformed PDUs (an unknown type, an A-ASSOCIATE-RQ cut short) and a PDU
/// that claims 4 GiB (refused from its header, nothing allocated).
fn malformed_and_huge_pdus_are_refused(port: u16) {
    for garbage in [
        &[0x42u8, 0, 0, 0, 0, 2, 1, 2][..],
        &[1, 0, 0, 0, 0, 4, 0, 1, 0, 0][..],
    ] {
        let mut peer = RawPeer::connect(port);
        peer.send_bytes(garbage).unwrap();
        assert!(!is_accepted(peer.read()), "{garbage:?}");
    }
    let mut peer = RawPeer::connect(port);
    peer.send_bytes(&[1, 0, 0xFF, 0xFF, 0xFF, 0xFE]).unwrap();
    assert!(!is_accepted(peer.read()));
}

/// A wrong called AE title is rejected permanently; a command fragmented
/// over two PDVs is reassembled and answered.
fn wrong_ae_and_fragmented_command(port: u16) {
    // Twenty in a row: audited once, the rest counted into the next record.
    for _ in 0..20 {
        let mut peer = RawPeer::connect(port);
        match peer.associate("MODALITY", "SOMEONE_ELSE", &[VERIFICATION]) {
            Some(Pdu::AssociationRJ(rj)) => assert_eq!(rj.result, AssociationRJResult::Permanent),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    let mut peer = RawPeer::connect(port);
    assert!(is_accepted(peer.associate(
        "MODALITY",
        "CXR_APPLIANCE",
        &[VERIFICATION]
    )));
    let echo = echo_request(7);
    peer.pdv(1, true, false, &echo[..10]).unwrap();
    peer.pdv(1, true, true, &echo[10..]).unwrap();
    assert_eq!(peer.response_status(), Some(0x0000));
    peer.send(&Pdu::ReleaseRQ).unwrap();
    assert!(matches!(peer.read(), Some(Pdu::ReleaseRP)));
}

/// A data set that does not parse gets C000; an abort mid-transfer leaves
/// no partial file. Neither is stored.
fn bad_transfers_store_nothing(port: u16, state: &Path, rg1: &Path) {
    let mut peer = RawPeer::connect(port);
    assert!(is_accepted(peer.associate(
        "MODALITY",
        "CXR_APPLIANCE",
        &[CR_STORAGE]
    )));
    peer.pdv(1, true, true, &store_request(1, CR_STORAGE, "1.2.3.4.5"))
        .unwrap();
    peer.pdv(1, false, true, b"\x08\x00\x16\x00UI\xff\x7fnot a data set")
        .unwrap();
    assert_eq!(peer.response_status(), Some(0xC000));
    assert_eq!(journal_lines(state), 0);

    let mut peer = RawPeer::connect(port);
    assert!(is_accepted(peer.associate(
        "MODALITY",
        "CXR_APPLIANCE",
        &[CR_STORAGE]
    )));
    peer.pdv(1, true, true, &store_request(2, CR_STORAGE, "1.2.3.4.6"))
        .unwrap();
    let bytes = std::fs::read(rg1).unwrap();
    peer.pdv(1, false, false, &bytes[1000..40_000]).unwrap();
    peer.send(&Pdu::AbortRQ {
        source: dicom_ul::pdu::AbortRQSource::ServiceUser,
    })
    .unwrap();
    drop(peer);
    let clean = wait_until(Duration::from_secs(5), || {
        std::fs::read_dir(state.join("spool"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".part"))
    });
    assert!(clean, "the aborted transfer's partial file is removed");
    assert_eq!(journal_lines(state), 0);
}

/// An idle association is aborted after the idle timeout (2 s); a flood
/// above the cap (3) gets a transient rejection, local limit exceeded.
fn idle_and_flooding_peers(port: u16, echoscu: &Path) {
    let mut idle = RawPeer::connect(port);
    assert!(is_accepted(idle.associate(
        "MODALITY",
        "CXR_APPLIANCE",
        &[VERIFICATION]
    )));
    let started = Instant::now();
    let next = idle.read();
    assert!(matches!(next, None | Some(Pdu::AbortRQ { .. })), "{next:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the idle association was not dropped"
    );

    let mut held = Vec::new();
    for _ in 0..3 {
        let mut p = RawPeer::connect(port);
        assert!(is_accepted(p.associate(
            "MODALITY",
            "CXR_APPLIANCE",
            &[VERIFICATION]
        )));
        held.push(p);
    }
    let mut over = RawPeer::connect(port);
    match over.associate("MODALITY", "CXR_APPLIANCE", &[VERIFICATION]) {
        Some(Pdu::AssociationRJ(rj)) => {
            assert_eq!(rj.result, AssociationRJResult::Transient);
            assert_eq!(
                rj.source,
                AssociationRJSource::ServiceProviderPresentation(
                    AssociationRJServiceProviderPresentationReason::LocalLimitExceeded
                )
            );
        }
        other => panic!("expected a transient rejection, got {other:?}"),
    }
    drop(held);
    assert!(
        wait_until(Duration::from_secs(10), || echo_works(echoscu, port)),
        "the cap frees up"
    );
}

/// Without a bundle, an instance is still acknowledged once durable and
/// its study answered "no verified model".
fn stored_and_answered_without_a_model(port: u16, state: &Path, storescu: &Path, rg1: &Path) {
    let out = Command::new(storescu)
        .args(["-aec", "CXR_APPLIANCE", "127.0.0.1", &port.to_string()])
        .arg(rg1)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(journal_lines(state), 1);
    // The study's folder appears before its first version is renamed into it.
    let answered = wait_until(Duration::from_secs(30), || {
        std::fs::read_dir(state.join("results/studies"))
            .is_ok_and(|d| d.flatten().any(|e| e.path().join("v1.json").is_file()))
    });
    assert!(answered);
    let study = std::fs::read_dir(state.join("results/studies"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(study.join("v1.json")).unwrap()).unwrap();
    // No verified model is the device's fault, not the film's: `failed`.
    assert_eq!(result["outcome"], "failed");
    assert!(
        result["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("No verified model"),
        "{result}"
    );
}

#[test]
fn hostile_peers_get_the_right_status_and_the_service_stays_up() {
    let (Some(echoscu), Some(storescu)) = (tool("echoscu"), tool("storescu")) else {
        return;
    };
    let Some(rg1) = pydicom_file("RG1_UNCR.dcm") else {
        return;
    };
    let dir = scratch_dir("serve-hostile");
    let state = dir.join("state");
    let board = board_file(&dir, "");
    let mut service = Service::start(
        &appliance(),
        &[
            "--board-file",
            board.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[],
        &dir.join("serve.err"),
    );
    assert_eq!(
        service.ready["model"]["ready"], false,
        "no bundle installed: {}",
        service.ready
    );
    let port = service.port;
    malformed_and_huge_pdus_are_refused(port);
    wrong_ae_and_fragmented_command(port);
    bad_transfers_store_nothing(port, &state, &rg1);
    idle_and_flooding_peers(port, &echoscu);
    stored_and_answered_without_a_model(port, &state, &storescu, &rg1);

    assert!(service.is_running(), "{}", service.stderr_text());
    assert!(echo_works(&echoscu, port));
    let peak = service.peak_rss_kib();
    assert!(peak > 0 && peak < 512 * 1024, "peak RSS {peak} KiB");
    assert_eq!(service.terminate(), Some(0));
    // Every refusal and abort was audited.
    let export = Command::new(appliance())
        .args(["audit", "export", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    let export = String::from_utf8_lossy(&export.stdout);
    for code in [
        "ASSOCIATION_CALLED_AE",
        "ASSOCIATION_LIMIT",
        "PDU_TOO_LARGE",
        "PDU_MALFORMED",
        "ASSOCIATION_TIMEOUT",
    ] {
        assert!(export.contains(code), "{code} not audited");
    }
    let called_ae = export
        .lines()
        .filter(|l| l.contains("ASSOCIATION_CALLED_AE"))
        .count();
    assert_eq!(called_ae, 1, "a burst from one address is summarised");
}

#[test]
fn a_disk_below_its_watermark_turns_modalities_away_transiently() {
    if tool("echoscu").is_none() {
        return;
    }
    let dir = scratch_dir("serve-watermark");
    let state = dir.join("state");
    // No disk has a petabyte free: every association meets the watermark.
    let board = board_file(&dir, "min_free_disk_bytes = 1125899906842624\n");
    let service = Service::start(
        &appliance(),
        &[
            "--board-file",
            board.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[],
        &dir.join("serve.err"),
    );
    let mut peer = RawPeer::connect(service.port);
    match peer.associate("MODALITY", "CXR_APPLIANCE", &[CR_STORAGE]) {
        Some(Pdu::AssociationRJ(rj)) => assert_eq!(rj.result, AssociationRJResult::Transient),
        other => panic!("expected a transient rejection, got {other:?}"),
    }
    // The refusal is logged just after it is sent.
    assert!(
        wait_until(Duration::from_secs(5), || service
            .stderr_text()
            .contains("ASSOCIATION_DISK_WATERMARK")),
        "{}",
        service.stderr_text()
    );
}
