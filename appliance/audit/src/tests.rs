//! Unit tests of the log: appends, rotation, budget, torn tails, and every
//! kind of tampering `verify` must catch.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::frame::{self, HEADER_BYTES};
use crate::*;

fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "cxr-audit-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

const SMALL: AuditConfig = AuditConfig {
    segment_bytes: 64 * 1024,
    max_total_bytes: 4 * 1024 * 1024,
    fsync_every_record: true,
    lock_wait_ms: 0,
};

fn event(i: u64) -> Event {
    Event::StartRefused {
        code: format!("TEST_{i}"),
        message: "x".repeat(200),
    }
}

fn fill(dir: &Path, n: u64, config: AuditConfig) {
    let (mut log, torn) = AuditLog::open(dir, config, 0).unwrap();
    assert!(torn.is_empty());
    for i in 0..n {
        assert_eq!(log.append(1000 + i, event(i)).unwrap(), log.next_seq() - 1);
    }
}

fn seg(dir: &Path, i: u64) -> PathBuf {
    dir.join(frame::segment_name(i))
}

/// Offsets of every frame in a segment.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = HEADER_BYTES;
    while let frame::Frame::Whole { end, .. } = frame::read(bytes, at) {
        out.push((at, end));
        at = end;
    }
    out
}

#[test]
fn appends_rotate_and_verify_and_reopen_continues_the_chain() {
    let dir = scratch("rotate");
    fill(&dir, 500, SMALL);
    let r = verify(&dir).unwrap();
    assert_eq!(r.records, 500);
    assert!(r.segments >= 2, "{r:?}");
    fill(&dir, 10, SMALL);
    let r2 = verify(&dir).unwrap();
    assert_eq!(r2.records, 510);
    assert_eq!(r2.last_seq, Some(509));
    let mut out = Vec::new();
    export_jsonl(&dir, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 510);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 0);
    assert_eq!(first["event"]["type"], "start_refused");
}

#[test]
fn a_full_log_refuses_rather_than_drops() {
    let dir = scratch("full");
    let config = AuditConfig {
        segment_bytes: 64 * 1024,
        max_total_bytes: 192 * 1024,
        fsync_every_record: false,
        lock_wait_ms: 0,
    };
    let (mut log, _) = AuditLog::open(&dir, config, 0).unwrap();
    assert_eq!(log.takes_records(), Ok(()));
    let mut appended = 0u64;
    loop {
        match log.append(0, event(appended)) {
            Ok(_) => appended += 1,
            Err(e) => {
                assert_eq!(e.code(), "AUDIT_FULL", "{e}");
                break;
            }
        }
        assert!(appended < 10_000);
    }
    assert!(log.ensure_room().is_err());
    assert_eq!(
        log.takes_records().map_err(|(code, _)| code),
        Err("AUDIT_FULL")
    );
    assert!(log.used_bytes() <= config.max_total_bytes);
    assert_eq!(verify(&dir).unwrap().records, appended);
}

#[test]
fn a_torn_tail_is_cut_kept_and_reported_and_nothing_acknowledged_is_lost() {
    for cut in [1usize, 3, 4, 20, 60] {
        let dir = scratch("torn");
        fill(&dir, 5, SMALL);
        let path = seg(&dir, 1);
        let whole = std::fs::read(&path).unwrap();
        // A sixth record whose write was cut short by a power loss.
        let mut partial = whole.clone();
        let extra = frame::encode(&[7u8; 100]);
        partial.extend_from_slice(&extra[..cut]);
        std::fs::write(&path, &partial).unwrap();
        assert_eq!(verify(&dir).unwrap_err().code(), "AUDIT_TRUNCATED");
        let (mut log, torn) = AuditLog::open(&dir, SMALL, 7).unwrap();
        let [torn] = &torn[..] else {
            panic!("one torn tail expected, got {torn:?}")
        };
        assert_eq!(torn.bytes, cut as u64);
        assert_eq!((torn.segment, torn.offset), (1, whole.len() as u64));
        assert_eq!(std::fs::read(&torn.kept_as).unwrap(), &extra[..cut]);
        assert!(std::fs::read(&path).unwrap().starts_with(&whole));
        log.append(9, event(99)).unwrap();
        // The five records, the report of the cut, and the new one.
        assert_eq!(verify(&dir).unwrap().records, 7);
        assert_eq!(torn_reports(&dir), vec![torn.kept_as.clone()]);
    }
}

/// The kept paths named by every `TornTailRecovered` record, in log order.
fn torn_reports(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    verify::walk(dir, |r| {
        if let Event::TornTailRecovered { kept_as, .. } = &r.event {
            out.push(PathBuf::from(kept_as));
        }
    })
    .unwrap();
    out
}

fn with_torn_tail(name: &str) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let dir = scratch(name);
    fill(&dir, 4, SMALL);
    let whole = std::fs::read(seg(&dir, 1)).unwrap();
    let mut partial = whole.clone();
    let tail = frame::encode(&[3u8; 90])[..25].to_vec();
    partial.extend_from_slice(&tail);
    std::fs::write(seg(&dir, 1), &partial).unwrap();
    (dir, whole, tail)
}

fn kept_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("torn"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Regression (CI, 2026-11-28): a start killed after cutting a torn tail but
/// before recording the cut lost the report for good. Each crash point of
/// the recovery, replayed: the tail is reported exactly once.
#[test]
fn a_start_killed_anywhere_in_recovery_reports_each_torn_tail_exactly_once() {
    // Killed after keeping the bytes, before cutting the segment: the next
    // start cuts the same tail again and reuses the identical kept file.
    let (dir, whole, tail) = with_torn_tail("kill-before-cut");
    let kept = dir
        .join("torn")
        .join(format!("seg-00000001-at-{}.bin", whole.len()));
    std::fs::create_dir_all(dir.join("torn")).unwrap();
    std::fs::write(&kept, &tail).unwrap();
    let (_, torn) = AuditLog::open(&dir, SMALL, 1).unwrap();
    assert_eq!(torn.len(), 1);
    assert_eq!(torn[0].kept_as, kept);
    assert_eq!(torn_reports(&dir), vec![kept.clone()]);
    assert_eq!(
        kept_files(&dir),
        vec![
            format!("seg-00000001-at-{}.bin", whole.len()),
            format!("seg-00000001-at-{}.bin.reported", whole.len()),
        ]
    );

    // Killed after the cut, before the report: the owed report is made by
    // the next start (this is what the CI run caught).
    let (dir, whole, tail) = with_torn_tail("kill-before-report");
    std::fs::create_dir_all(dir.join("torn")).unwrap();
    let kept = dir
        .join("torn")
        .join(format!("seg-00000001-at-{}.bin", whole.len()));
    std::fs::write(&kept, &tail).unwrap();
    std::fs::write(seg(&dir, 1), &whole).unwrap();
    assert!(torn_reports(&dir).is_empty());
    let (_, torn) = AuditLog::open(&dir, SMALL, 2).unwrap();
    assert_eq!(torn.len(), 1);
    assert_eq!(torn[0].bytes, tail.len() as u64);
    assert_eq!(torn[0].offset, whole.len() as u64);
    assert_eq!(torn_reports(&dir), vec![kept.clone()]);

    // Killed after the report, before its marker: not reported twice.
    std::fs::remove_file(
        dir.join("torn")
            .join(format!("seg-00000001-at-{}.bin.reported", whole.len())),
    )
    .unwrap();
    let (_, torn) = AuditLog::open(&dir, SMALL, 3).unwrap();
    assert_eq!(torn.len(), 1, "the marker is written again");
    assert_eq!(torn_reports(&dir), vec![kept.clone()], "no second report");
    let (_, torn) = AuditLog::open(&dir, SMALL, 4).unwrap();
    assert!(torn.is_empty(), "nothing owed any more: {torn:?}");
    assert_eq!(verify(&dir).unwrap().records, 5);
}

/// A power loss that tears the report of a torn tail at the same offset
/// keeps both tails under different names; neither overwrites the other.
#[test]
fn a_second_tail_at_the_same_place_keeps_both_and_reports_both() {
    let (dir, whole, first) = with_torn_tail("same-place");
    drop(AuditLog::open(&dir, SMALL, 1).unwrap());
    // Tear the report itself: the segment goes back to `whole` + new bytes.
    let mut again = whole.clone();
    let second = frame::encode(&[9u8; 90])[..40].to_vec();
    again.extend_from_slice(&second);
    std::fs::write(seg(&dir, 1), &again).unwrap();
    let (_, torn) = AuditLog::open(&dir, SMALL, 2).unwrap();
    assert_eq!(torn.len(), 1);
    assert_eq!(std::fs::read(&torn[0].kept_as).unwrap(), second);
    let base = format!("seg-00000001-at-{}", whole.len());
    assert_eq!(
        std::fs::read(dir.join("torn").join(format!("{base}.bin"))).unwrap(),
        first
    );
    assert!(torn[0].kept_as.ends_with(format!("{base}-2.bin")));
    assert_eq!(torn_reports(&dir), vec![torn[0].kept_as.clone()]);
}

#[test]
fn a_garbled_last_frame_is_a_torn_tail_but_damage_before_it_is_refused() {
    // A whole-length last frame with garbage inside (a write whose data
    // blocks never reached the disk): cut as a torn tail.
    let dir = scratch("garbled-last");
    fill(&dir, 3, SMALL);
    let path = seg(&dir, 1);
    let whole = std::fs::read(&path).unwrap();
    let mut garbled = whole.clone();
    let mut extra = frame::encode(&[5u8; 80]);
    extra[30] ^= 0xFF;
    garbled.extend_from_slice(&extra);
    std::fs::write(&path, &garbled).unwrap();
    let (_, torn) = AuditLog::open(&dir, SMALL, 0).unwrap();
    assert_eq!(torn[0].bytes, extra.len() as u64);
    assert!(std::fs::read(&path).unwrap().starts_with(&whole));
    assert_eq!(verify(&dir).unwrap().records, 4, "3 and the report");

    let dir = scratch("garbled");
    fill(&dir, 5, SMALL);
    let path = seg(&dir, 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let f = frames(&bytes);
    // Flip a byte in the middle record: open must refuse, never truncate.
    let (s, _) = f[2];
    bytes[s + 10] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let e = AuditLog::open(&dir, SMALL, 0).unwrap_err();
    assert_eq!(e.code(), "AUDIT_DAMAGED", "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
}

/// Each way of tampering with a closed log, and the error `verify` gives.
#[test]
fn verify_detects_flips_deletions_reorders_insertions_and_mid_truncation() {
    let make = || {
        let dir = scratch("tamper");
        fill(&dir, 400, SMALL);
        assert!(verify(&dir).unwrap().segments >= 2);
        dir
    };
    // Any flipped byte anywhere in segment 1 (header, lengths, payloads, digests).
    let dir = make();
    let path = seg(&dir, 1);
    let clean = std::fs::read(&path).unwrap();
    let step = (clean.len() / 97).max(1);
    let mut checked = 0;
    for at in (0..clean.len()).step_by(step) {
        let mut b = clean.clone();
        b[at] ^= 0x01;
        std::fs::write(&path, &b).unwrap();
        assert!(verify(&dir).is_err(), "flip at {at} went unnoticed");
        checked += 1;
    }
    assert!(checked > 90);
    std::fs::write(&path, &clean).unwrap();
    verify(&dir).unwrap();

    let f = frames(&clean);
    let splice = |parts: &[&[u8]]| parts.concat();
    // Deleted record.
    let deleted = splice(&[&clean[..f[3].0], &clean[f[4].0..]]);
    std::fs::write(&path, &deleted).unwrap();
    assert_eq!(verify(&dir).unwrap_err().code(), "AUDIT_SEQUENCE");
    // Two records swapped.
    let swapped = splice(&[
        &clean[..f[3].0],
        &clean[f[4].0..f[4].1],
        &clean[f[3].0..f[3].1],
        &clean[f[5].0..],
    ]);
    std::fs::write(&path, &swapped).unwrap();
    assert_eq!(verify(&dir).unwrap_err().code(), "AUDIT_SEQUENCE");
    // A forged record inserted with the next sequence number and a valid
    // digest, but it cannot chain to its neighbours.
    let forged = Record {
        seq: 4,
        time_unix_ms: 0,
        prev: [0; 32],
        event: event(4),
    };
    let forged = frame::encode(&postcard::to_allocvec(&forged).unwrap());
    let inserted = splice(&[&clean[..f[4].0], &forged, &clean[f[4].0..]]);
    std::fs::write(&path, &inserted).unwrap();
    assert_eq!(verify(&dir).unwrap_err().code(), "AUDIT_CHAIN_BROKEN");
    // Segment 1 truncated in the middle of a record, and at a record boundary.
    std::fs::write(&path, &clean[..f[10].0 + 7]).unwrap();
    assert_eq!(verify(&dir).unwrap_err().code(), "AUDIT_TRUNCATED");
    std::fs::write(&path, &clean[..f[10].0]).unwrap();
    let e = verify(&dir).unwrap_err();
    assert!(
        matches!(e.code(), "AUDIT_SEQUENCE" | "AUDIT_CHAIN_BROKEN"),
        "{e}"
    );
    std::fs::write(&path, &clean).unwrap();
    // A whole segment removed from the middle.
    let dir = make();
    let n = verify(&dir).unwrap().segments;
    if n >= 3 {
        std::fs::remove_file(seg(&dir, 2)).unwrap();
        assert_eq!(verify(&dir).unwrap_err().code(), "AUDIT_MISSING_SEGMENT");
    } else {
        std::fs::remove_file(seg(&dir, 1)).unwrap();
        assert_eq!(verify(&dir).unwrap_err().code(), "AUDIT_MISSING_SEGMENT");
    }
}

#[test]
fn records_hold_no_identifiers_in_clear() {
    let dir = scratch("phi");
    let secret = DeviceSecret::from_bytes([3; 32]);
    let uid = "1.2.826.0.1.3680043.8.498.99999";
    let (mut log, _) = AuditLog::open(&dir, SMALL, 0).unwrap();
    log.append(
        0,
        Event::Inference(Inference {
            mode: Mode::Verified,
            bundle: BundleRef {
                model_id: "m".into(),
                version: 1,
                digest: [1; 32],
            },
            engine: "tract".into(),
            engine_reasons: vec![],
            input_sha256: [2; 32],
            study_key: Some(secret.study_key(uid)),
            decision: None,
            latency_us: 5,
            outcome: Outcome::Decision,
        }),
    )
    .unwrap();
    let bytes = std::fs::read(seg(&dir, 1)).unwrap();
    let hay = String::from_utf8_lossy(&bytes);
    assert!(!hay.contains(uid) && !hay.contains("99999"));
    let mut out = Vec::new();
    export_jsonl(&dir, &mut out).unwrap();
    assert!(!String::from_utf8(out).unwrap().contains(uid));
}

#[test]
fn a_second_writer_is_refused_naming_the_holder_and_never_cuts_its_record() {
    let dir = scratch("locked");
    let (mut first, _) = AuditLog::open(&dir, SMALL, 0).unwrap();
    first.append(0, event(0)).unwrap();
    let err = AuditLog::open(&dir, SMALL, 0).unwrap_err();
    assert_eq!(err.code(), "AUDIT_LOCKED");
    let message = err.to_string();
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    // The refused writer changed nothing: the holder goes on appending.
    first.append(0, event(1)).unwrap();
    drop(first);
    let (log, torn) = AuditLog::open(&dir, SMALL, 0).unwrap();
    assert!(torn.is_empty());
    assert_eq!(log.next_seq(), 2);
    drop(log);
    assert_eq!(crate::verify(&dir).unwrap().records, 2);
}

#[test]
fn a_second_writer_waits_for_the_first_to_let_go() {
    let dir = scratch("lock-wait");
    let (first, _) = AuditLog::open(&dir, SMALL, 0).unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(first);
    });
    let patient = AuditConfig {
        lock_wait_ms: 10_000,
        ..SMALL
    };
    let started = std::time::Instant::now();
    let (_second, _) = AuditLog::open(&dir, patient, 0).unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    releaser.join().unwrap();
}
