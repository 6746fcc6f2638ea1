//! Every read of study data over HTTP is audited as an export: the results
//! API, the page's study views, QIDO-RS and WADO-RS, FHIR. A middleware
//! looks at each answered GET: a 200 on a path that carries study data is
//! appended to the audit log (off the network task) before the answer
//! leaves, and when the log cannot take the record the answer is replaced
//! by a 503 (no unaudited export).
//!
//! Pages poll, so one read stands for its repeats: after a read of a study
//! (or a list with the same query) by the same actor from the same address
//! is recorded, the same read within [`WINDOW`] is counted, not recorded
//! again, and the next record of it carries the count. A read is counted
//! only against a record already in the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::auth::authorize;
use super::credentials::Role;
use super::{ApiError, HttpEvent, HttpService, Peer};

/// Reads of the same thing within this are one record.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Kept at most; older ones go first.
const MAX_KEYS: usize = 4096;

/// What a request exports: its channel, the study (a UID) if one, and the
/// kind of read (with the resource id, or a digest of a list's query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportKind {
    pub channel: &'static str,
    pub study: Option<String>,
    pub what: String,
}

fn kind(channel: &'static str, study: Option<&str>, what: impl Into<String>) -> Option<ExportKind> {
    Some(ExportKind {
        channel,
        study: study.map(str::to_owned),
        what: what.into(),
    })
}

/// `%XX` decoded (as the routes decode their path parameters); a segment
/// that does not decode to UTF-8 is kept as sent.
fn decoded(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| segment.to_owned())
}

/// The key of the query digests: drawn at start, never stored, so that a
/// digest tells queries apart without letting anyone test a guess (a
/// search may name a patient's identifier).
fn query_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        // Without randomness the digests are unkeyed: still distinct.
        let _ = getrandom::fill(&mut key);
        key
    })
}

/// A list read's kind: its name, and a keyed digest of its query.
fn listed(name: &str, query: Option<&str>) -> String {
    match query.filter(|q| !q.is_empty()) {
        None => name.to_owned(),
        Some(q) => {
            let mut h = Sha256::new();
            h.update(query_key());
            h.update(q.as_bytes());
            let d = h.finalize();
            let short = cxr_fsio::hex(&d[..6]);
            format!("{name} (query {short})")
        }
    }
}

/// The export a GET of `path` (with `query`) makes, if any; health, the
/// page's assets, the system page and session reads carry no study data.
pub fn classify(path: &str, query: Option<&str>) -> Option<ExportKind> {
    let parts: Vec<String> = path.trim_matches('/').split('/').map(decoded).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["api", "v1", "studies"] => kind("api", None, listed("results list", query)),
        ["api", "v1", "changes"] => kind("api", None, listed("change feed", query)),
        ["api", "v1", "worklist"] => kind("page", None, listed("worklist", query)),
        ["api", "v1", "studies", uid] => kind("api", Some(uid), "result"),
        ["api", "v1", "studies", uid, "detail"] => kind("page", Some(uid), "study view"),
        ["api", "v1", "studies", uid, "picture"] => kind("page", Some(uid), "result picture"),
        ["dicomweb", "studies"] => kind("dicomweb", None, listed("QIDO-RS studies", query)),
        ["dicomweb", "series"] => kind("dicomweb", None, listed("QIDO-RS series", query)),
        ["dicomweb", "instances"] => kind("dicomweb", None, listed("QIDO-RS instances", query)),
        ["dicomweb", "studies", uid, rest @ ..] => {
            let what = match rest.last() {
                Some(&"series") | Some(&"instances") => listed("QIDO-RS", query),
                Some(&"rendered") => "WADO-RS rendered".to_owned(),
                _ => "WADO-RS".to_owned(),
            };
            kind("dicomweb", Some(uid), what)
        }
        ["fhir", "DiagnosticReport"] => kind("fhir", None, listed("FHIR search", query)),
        ["fhir", resource, id] => kind("fhir", None, format!("FHIR read {resource}/{id}")),
        ["fhir", resource, id, "_history", version @ ..] => kind(
            "fhir",
            None,
            format!("FHIR history {resource}/{id}/{}", version.join("/")),
        ),
        _ => None,
    }
}

type Key = (String, String, &'static str, String, String);

/// One read's last record: when, whether it is in the log yet, and the
/// reads counted since.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    recorded: bool,
    repeats: u32,
}

/// Which reads were recorded lately, and how many were counted since.
#[derive(Debug, Default)]
pub struct ExportLedger {
    seen: Mutex<HashMap<Key, Seen>>,
}

impl ExportLedger {
    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some(repeats)` when this read is to be recorded now (carrying the
    /// reads counted since the previous record), `None` when it is counted
    /// against a record in the log within the window.
    fn admit(&self, key: &Key, now: Instant) -> Option<u32> {
        let mut seen = self.seen();
        if seen.len() >= MAX_KEYS {
            seen.retain(|_, s| now.duration_since(s.at) < WINDOW);
        }
        match seen.get_mut(key) {
            Some(s) if s.recorded && now.duration_since(s.at) < WINDOW => {
                s.repeats = s.repeats.saturating_add(1);
                None
            }
            Some(s) => {
                let repeats = s.repeats;
                *s = Seen {
                    at: now,
                    recorded: false,
                    repeats: 0,
                };
                Some(repeats)
            }
            None => {
                if seen.len() < MAX_KEYS {
                    seen.insert(
                        key.clone(),
                        Seen {
                            at: now,
                            recorded: false,
                            repeats: 0,
                        },
                    );
                }
                Some(0)
            }
        }
    }

    /// The record of `key` is in the log: reads may be counted against it.
    fn recorded(&self, key: &Key) {
        if let Some(s) = self.seen().get_mut(key) {
            s.recorded = true;
        }
    }

    /// The record could not be made: the next read is recorded, carrying
    /// the counts this one would have.
    fn failed(&self, key: &Key, repeats: u32) {
        if let Some(s) = self.seen().get_mut(key) {
            s.recorded = false;
            s.repeats = s.repeats.saturating_add(repeats);
        }
    }
}

/// The middleware: audit each answered read of study data.
pub(super) async fn audited(
    State(service): State<Arc<HttpService>>,
    request: Request,
    next: Next,
) -> Response {
    let export = (request.method() == Method::GET)
        .then(|| classify(request.uri().path(), request.uri().query()))
        .flatten();
    let Some(export) = export else {
        return next.run(request).await;
    };
    let headers = request.headers().clone();
    let peer = request
        .extensions()
        .get::<Peer>()
        .map_or_else(String::new, |p| p.0.ip().to_string());
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    // The handler authorized this request; this names who it was.
    let actor = authorize(&service, &headers, &Method::GET, Role::Viewer)
        .map_or_else(|_| "unknown".to_owned(), |p| p.name);
    let study = export
        .study
        .as_deref()
        .map(|uid| (service.study_pseudonym)(uid))
        .unwrap_or_default();
    let key: Key = (actor, peer, export.channel, study, export.what);
    let Some(repeats) = service.exports.admit(&key, Instant::now()) else {
        return response;
    };
    let event = HttpEvent::Export {
        actor: key.0.clone(),
        peer: key.1.clone(),
        channel: key.2.to_owned(),
        study_key: key.3.clone(),
        what: key.4.clone(),
        repeats,
    };
    let s = Arc::clone(&service);
    let in_log = super::off_task(move || (s.observer)(event))
        .await
        .unwrap_or(false);
    if in_log {
        service.exports.recorded(&key);
        return response;
    }
    service.exports.failed(&key, repeats);
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "AUDIT_UNAVAILABLE",
        "the audit log cannot take the record of this export, so nothing is sent (fix: see the system page's audit state)",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_study_data_are_exports_and_the_rest_are_not() {
        let study = |p: &str| classify(p, None).map(|k| (k.channel, k.study, k.what));
        assert_eq!(
            study("/api/v1/studies/1.2.3/picture"),
            Some(("page", Some("1.2.3".into()), "result picture".into()))
        );
        assert_eq!(
            study("/dicomweb/studies/1.2/series/1.3/instances/1.4/rendered"),
            Some(("dicomweb", Some("1.2".into()), "WADO-RS rendered".into()))
        );
        assert_eq!(
            study("/dicomweb/studies/1.2/instances"),
            Some(("dicomweb", Some("1.2".into()), "QIDO-RS".into()))
        );
        assert_eq!(
            study("/fhir/Observation/2.25.1").map(|k| k.2),
            Some("FHIR read Observation/2.25.1".into())
        );
        assert_eq!(
            study("/fhir/DiagnosticReport/2.25.1/_history/2").map(|k| k.2),
            Some("FHIR history DiagnosticReport/2.25.1/2".into())
        );
        // The study is named as the route reads it: percent-decoded, and
        // only `%` with two hex digits.
        assert_eq!(
            classify("/api/v1/studies/1%2E2%2E3", None).and_then(|k| k.study),
            Some("1.2.3".into())
        );
        assert_eq!(decoded("1%+12%2"), "1%+12%2");
        // A list's query is kept as a digest only, and tells lists apart.
        let search = |q| classify("/fhir/DiagnosticReport", Some(q)).map(|k| k.what);
        let a = search("identifier=ACC123").unwrap_or_default();
        assert!(
            !a.contains("ACC123") && a.starts_with("FHIR search (query "),
            "{a}"
        );
        assert_ne!(Some(a), search("identifier=ACC124"));
        for quiet in [
            "/",
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/v1/system",
            "/api/v1/session",
            "/assets/app.js",
            "/api/v1/access",
            "/api/v1/jobs/3",
        ] {
            assert_eq!(classify(quiet, None), None, "{quiet}");
        }
    }

    #[test]
    fn reads_are_counted_only_against_a_record_in_the_log() {
        let ledger = ExportLedger::default();
        let key = |s: &str| -> Key {
            (
                "ada".into(),
                "127.0.0.1".into(),
                "page",
                s.into(),
                "study view".into(),
            )
        };
        let t0 = Instant::now();
        let later = |s| t0 + Duration::from_secs(s);
        assert_eq!(ledger.admit(&key("a"), t0), Some(0));
        // While the first record is not in the log, a second read records too.
        assert_eq!(ledger.admit(&key("a"), later(1)), Some(0));
        ledger.recorded(&key("a"));
        assert_eq!(ledger.admit(&key("a"), later(5)), None);
        assert_eq!(ledger.admit(&key("a"), later(10)), None);
        assert_eq!(ledger.admit(&key("b"), later(10)), Some(0), "another study");
        assert_eq!(
            ledger.admit(&key("a"), t0 + WINDOW + Duration::from_secs(2)),
            Some(2)
        );
        // A record that failed: the next read is recorded, with the count.
        ledger.failed(&key("a"), 2);
        assert_eq!(
            ledger.admit(&key("a"), t0 + WINDOW + Duration::from_secs(3)),
            Some(2)
        );
    }
}
