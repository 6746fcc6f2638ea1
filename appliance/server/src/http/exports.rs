//! Every read of study data over HTTP is audited as an export: the results
//! API, the page's study views, QIDO-RS and WADO-RS, FHIR. A middleware
//! looks at each answered GET: a 200 on a path that carries study data is
//! reported before the answer leaves, and when the audit log cannot take
//! the record the answer is replaced by a 503 (no unaudited export).
//!
//! Pages poll: the same read (actor, address, channel, study, kind) within
//! [`WINDOW`] is counted, not recorded again, and the next record of it
//! carries the count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::authorize;
use super::credentials::Role;
use super::{ApiError, HttpEvent, HttpService, Peer};
use crate::results::study_key;

/// Reads of the same thing within this are one record.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Kept at most; older ones go first.
const MAX_KEYS: usize = 4096;

/// What a path exports: its channel, the study (a UID) if one, and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportKind {
    pub channel: &'static str,
    pub study: Option<String>,
    pub what: &'static str,
}

fn kind(channel: &'static str, study: Option<&str>, what: &'static str) -> Option<ExportKind> {
    Some(ExportKind {
        channel,
        study: study.map(str::to_owned),
        what,
    })
}

/// The export a GET of `path` makes, if any (health, the page's assets,
/// the system page and session reads carry no study data).
pub fn classify(path: &str) -> Option<ExportKind> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "studies"] => kind("api", None, "results list"),
        ["api", "v1", "changes"] => kind("api", None, "change feed"),
        ["api", "v1", "worklist"] => kind("page", None, "worklist"),
        ["api", "v1", "studies", uid] => kind("api", Some(uid), "result"),
        ["api", "v1", "studies", uid, "detail"] => kind("page", Some(uid), "study view"),
        ["api", "v1", "studies", uid, "picture"] => kind("page", Some(uid), "result picture"),
        ["dicomweb", "studies"] => kind("dicomweb", None, "QIDO-RS studies"),
        ["dicomweb", "studies", uid, rest @ ..] => {
            let what = match rest.last() {
                Some(&"series") | Some(&"instances") => "QIDO-RS",
                Some(&"rendered") => "WADO-RS rendered",
                _ => "WADO-RS",
            };
            kind("dicomweb", Some(uid), what)
        }
        ["fhir", "DiagnosticReport"] => kind("fhir", None, "FHIR search"),
        ["fhir", _, _] => kind("fhir", None, "FHIR read"),
        _ => None,
    }
}

type Key = (String, String, &'static str, String, &'static str);

/// When each read was last recorded, and how many were not since.
#[derive(Debug, Default)]
pub struct ExportLedger {
    seen: Mutex<HashMap<Key, (Instant, u32)>>,
}

impl ExportLedger {
    /// `Some(repeats)` when this read is to be recorded now (with the
    /// reads not recorded since the previous record), `None` when it is
    /// counted within the window.
    fn admit(&self, key: Key, now: Instant) -> Option<u32> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_KEYS {
            seen.retain(|_, (at, _)| now.duration_since(*at) < WINDOW);
        }
        match seen.get_mut(&key) {
            Some((at, repeats)) if now.duration_since(*at) < WINDOW => {
                *repeats = repeats.saturating_add(1);
                None
            }
            Some((at, repeats)) => {
                let before = *repeats;
                *at = now;
                *repeats = 0;
                Some(before)
            }
            None => {
                if seen.len() < MAX_KEYS {
                    seen.insert(key, (now, 0));
                }
                Some(0)
            }
        }
    }

    /// Forget a read whose record could not be queued, so that the next
    /// one is recorded.
    fn forget(&self, key: &Key) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// The middleware: audit each answered read of study data.
pub(super) async fn audited(
    State(service): State<Arc<HttpService>>,
    request: Request,
    next: Next,
) -> Response {
    let export = (request.method() == Method::GET)
        .then(|| classify(request.uri().path()))
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
    let study = export.study.as_deref().map(study_key).unwrap_or_default();
    let key: Key = (actor, peer, export.channel, study, export.what);
    let Some(repeats) = service.exports.admit(key.clone(), Instant::now()) else {
        return response;
    };
    let event = HttpEvent::Export {
        actor: key.0.clone(),
        peer: key.1.clone(),
        channel: key.2.to_owned(),
        study_key: key.3.clone(),
        what: key.4.to_owned(),
        repeats,
    };
    if (service.observer)(event) {
        return response;
    }
    service.exports.forget(&key);
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
        let study = |p: &str| classify(p).map(|k| (k.channel, k.study, k.what));
        assert_eq!(
            study("/api/v1/studies/1.2.3/picture"),
            Some(("page", Some("1.2.3".into()), "result picture"))
        );
        assert_eq!(
            study("/dicomweb/studies/1.2/series/1.3/instances/1.4/rendered"),
            Some(("dicomweb", Some("1.2".into()), "WADO-RS rendered"))
        );
        assert_eq!(
            study("/dicomweb/studies/1.2/instances"),
            Some(("dicomweb", Some("1.2".into()), "QIDO-RS"))
        );
        assert_eq!(study("/fhir/Observation/2.25.1").map(|k| k.0), Some("fhir"));
        assert_eq!(study("/api/v1/worklist").map(|k| k.2), Some("worklist"));
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
            assert_eq!(classify(quiet), None, "{quiet}");
        }
    }

    #[test]
    fn repeated_reads_within_the_window_are_one_record_with_their_count() {
        let ledger = ExportLedger::default();
        let key = |s: &str| -> Key {
            (
                "ada".into(),
                "127.0.0.1".into(),
                "page",
                s.into(),
                "study view",
            )
        };
        let t0 = Instant::now();
        assert_eq!(ledger.admit(key("a"), t0), Some(0));
        assert_eq!(ledger.admit(key("a"), t0 + Duration::from_secs(5)), None);
        assert_eq!(ledger.admit(key("a"), t0 + Duration::from_secs(10)), None);
        assert_eq!(
            ledger.admit(key("b"), t0 + Duration::from_secs(10)),
            Some(0),
            "another study"
        );
        assert_eq!(
            ledger.admit(key("a"), t0 + WINDOW + Duration::from_secs(1)),
            Some(2)
        );
        ledger.forget(&key("b"));
        assert_eq!(
            ledger.admit(key("b"), t0 + Duration::from_secs(11)),
            Some(0),
            "forgotten: recorded again"
        );
    }
}
