//! FHIR R4 read side: `GET /fhir/DiagnosticReport` (search by `identifier`
//! and `date`), and each DiagnosticReport, Observation and Device by id.
//! The resources are encoded from the latest version of each study result
//! by `cxr-report`; nothing FHIR-shaped is stored. Each study has one
//! report whose `meta.versionId` is the result's version; the earlier
//! versions stay readable: `GET /fhir/{kind}/{id}/_history` (a `history`
//! Bundle, newest first) and `GET /fhir/{kind}/{id}/_history/{vid}`.
//!
//! `identifier` matches the report's identifiers (the result's UID, the
//! accession number) and the study's (its Study Instance UID, with or
//! without `urn:oid:`), as `[system|]value`. `date` compares the study's
//! date with the prefixes `eq` (default), `ge`, `le`, `gt`, `lt`, and may be
//! given twice for a range.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::auth::authorize;
use super::credentials::Role;
use super::{ApiError, HttpService};
use cxr_store::results::StudyResult;

fn fhir_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json"),
    );
    response
}

/// An OperationOutcome for a refusal, as FHIR clients expect.
fn outcome(status: StatusCode, code: &str, text: &str) -> Response {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code, "diagnostics": text }],
    });
    fhir_json(status, &body)
}

async fn latest(service: &Arc<HttpService>) -> Result<Vec<StudyResult>, ApiError> {
    let s = Arc::clone(service);
    super::off_task(move || s.results.latest_studies())
        .await?
        .map(|m| m.into_values().collect())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.code(), e.to_string()))
}

/// Whether a `[system|]value` token names one of `identifiers`.
fn token_matches(token: &str, identifiers: &[&Value]) -> bool {
    let (system, value) = match token.split_once('|') {
        Some((s, v)) => (Some(s), v),
        None => (None, token),
    };
    identifiers.iter().any(|i| {
        let have = i["value"].as_str().unwrap_or_default();
        let value_ok = have == value || have.strip_prefix("urn:oid:") == Some(value);
        // `|value` names an identifier without a system.
        let system_ok = match system {
            None => true,
            Some("") => i["system"].is_null(),
            Some(s) => i["system"].as_str() == Some(s),
        };
        value_ok && system_ok
    })
}

/// Whether the report's date (its first 10 characters) passes `query`.
fn date_matches(query: &str, report: &Value) -> bool {
    let Some(date) = report["effectiveDateTime"]
        .as_str()
        .and_then(|d| d.get(..10))
    else {
        return false;
    };
    let (op, want) = match query.get(..2) {
        Some(p @ ("eq" | "ge" | "le" | "gt" | "lt")) => (p, &query[2..]),
        _ => ("eq", query),
    };
    let want = want.get(..10).unwrap_or(want);
    match op {
        "ge" => date >= want,
        "le" => date <= want,
        "gt" => date > want,
        "lt" => date < want,
        _ => date == want,
    }
}

fn report_matches(report: &Value, params: &[(String, String)]) -> bool {
    let mut identifiers: Vec<&Value> = report["identifier"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if let Some(studies) = report["imagingStudy"].as_array() {
        identifiers.extend(studies.iter().map(|s| &s["identifier"]));
    }
    let subject: Vec<&Value> = report["subject"].get("identifier").into_iter().collect();
    params.iter().all(|(k, v)| match k.as_str() {
        "identifier" => v.split(',').any(|t| token_matches(t, &identifiers)),
        "date" => date_matches(v, report),
        "status" => v.split(',').any(|s| report["status"].as_str() == Some(s)),
        // A report withdrawn for a patient conflict names no subject, so it
        // matches no patient.
        "subject:identifier" => v.split(',').any(|t| token_matches(t, &subject)),
        _ => true,
    })
}

/// The search parameters DiagnosticReport takes.
const SEARCH_PARAMETERS: &[(&str, &str)] = &[
    ("identifier", "token"),
    ("date", "date"),
    ("status", "token"),
];

/// Patient parameters taken only with the `:identifier` modifier: ignoring
/// one (lenient handling) would answer every patient's reports.
const PATIENT_PARAMETERS: &[&str] = &["subject", "patient"];

/// When this capability statement last changed.
const CAPABILITY_DATE: &str = "2026-12-07";

/// `GET /fhir/metadata`: what this FHIR side serves (no credentials: it
/// carries no patient data).
pub(super) async fn metadata() -> Response {
    let params: Vec<Value> = SEARCH_PARAMETERS
        .iter()
        .map(|(name, kind)| json!({ "name": name, "type": kind }))
        .collect();
    let read = |extra: &[&str]| -> Vec<Value> {
        ["read", "vread", "history-instance"]
            .iter()
            .chain(extra)
            .map(|c| json!({ "code": c }))
            .collect()
    };
    let body = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": CAPABILITY_DATE,
        "kind": "instance",
        "software": { "name": "cxr-appliance", "version": env!("CARGO_PKG_VERSION") },
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Read-only: the appliance's preliminary AI results. A patient is searched by subject:identifier (a token) only; subject and patient without it are refused.",
            "resource": [
                { "type": "DiagnosticReport", "interaction": read(&["search-type"]), "searchParam": params },
                { "type": "Observation", "interaction": read(&[]) },
                { "type": "Device", "interaction": [{ "code": "read" }] },
            ],
        }],
    });
    fhir_json(StatusCode::OK, &body)
}

pub(super) async fn search_reports(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    // Unknown parameters are ignored (FHIR's lenient handling) unless the
    // client asks for strict handling.
    let strict = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("handling=strict"));
    let known = [
        "identifier",
        "date",
        "status",
        "subject:identifier",
        "_count",
        "_format",
    ];
    if let Some((k, _)) = params.iter().find(|(k, _)| {
        PATIENT_PARAMETERS.contains(&k.split(':').next().unwrap_or("")) && k != "subject:identifier"
    }) {
        return Ok(outcome(
            StatusCode::BAD_REQUEST,
            "not-supported",
            &format!("{k:?}: a patient is searched by subject:identifier only"),
        ));
    }
    let unknown = params.iter().find(|(k, _)| !known.contains(&k.as_str()));
    if let (true, Some((k, _))) = (strict, unknown) {
        return Ok(outcome(
            StatusCode::BAD_REQUEST,
            "not-supported",
            &format!("search parameter {k:?} is not supported (identifier, date, status and subject:identifier are)"),
        ));
    }
    let count = params
        .iter()
        .find(|(k, _)| k == "_count")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(50)
        .min(500);
    let scheme = if service.config.secure_cookies {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b))
        })
        .unwrap_or("localhost");
    let base = format!("{scheme}://{host}/fhir");
    let mut seen = std::collections::HashSet::new();
    let mut entries = Vec::new();
    let mut total = 0;
    for result in latest(&service).await? {
        let resources = cxr_report::fhir::resources(&result, &service.device);
        if !report_matches(&resources[0], &params) {
            continue;
        }
        total += 1;
        if total > count {
            continue;
        }
        for (i, r) in resources.into_iter().enumerate() {
            let mode = if i == 0 { "match" } else { "include" };
            let url = format!(
                "{base}/{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            );
            // One entry per resource: reports of one model share its Device.
            if !seen.insert(url.clone()) {
                continue;
            }
            entries.push(json!({ "fullUrl": url, "resource": r, "search": { "mode": mode } }));
        }
    }
    let bundle =
        json!({ "resourceType": "Bundle", "type": "searchset", "total": total, "entry": entries });
    Ok(fhir_json(StatusCode::OK, &bundle))
}

/// One resource by type and id.
pub(super) async fn read(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    if let Some(refusal) = unserved(&kind) {
        return Ok(refusal);
    }
    for result in latest(&service).await? {
        let found = cxr_report::fhir::resources(&result, &service.device)
            .into_iter()
            .find(|r| r["resourceType"] == kind.as_str() && r["id"] == id.as_str());
        if let Some(r) = found {
            return Ok(fhir_json(StatusCode::OK, &r));
        }
    }
    Ok(outcome(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such resource",
    ))
}

/// A 404 for a resource type this side does not serve.
fn unserved(kind: &str) -> Option<Response> {
    let served = ["DiagnosticReport", "Observation", "Device"].contains(&kind);
    (!served).then(|| {
        outcome(
            StatusCode::NOT_FOUND,
            "not-supported",
            "only DiagnosticReport, Observation and Device are served",
        )
    })
}

/// Every version of the resource `kind/id`, oldest first (empty when no
/// study has it, and for a Device: one per model, not per study, it has no
/// versions of its own).
async fn versions_of(
    service: &Arc<HttpService>,
    kind: &str,
    id: &str,
) -> Result<Vec<Value>, ApiError> {
    if kind == "Device" {
        return Ok(Vec::new());
    }
    let study = latest(service).await?.into_iter().find(|r| {
        cxr_report::fhir::resources(r, &service.device)
            .iter()
            .any(|x| x["resourceType"] == kind && x["id"] == id)
    });
    let Some(study) = study else {
        return Ok(Vec::new());
    };
    let s = Arc::clone(service);
    let (kind, id) = (kind.to_owned(), id.to_owned());
    super::off_task(move || {
        s.results
            .study_versions(&study.study_instance_uid)
            .iter()
            .filter_map(|v| {
                cxr_report::fhir::resources(v, &s.device)
                    .into_iter()
                    .find(|x| x["resourceType"] == kind.as_str() && x["id"] == id.as_str())
            })
            .collect()
    })
    .await
}

/// Every version of one resource: a `history` Bundle, newest first.
pub(super) async fn history(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    if let Some(refusal) = unserved(&kind) {
        return Ok(refusal);
    }
    let versions = versions_of(&service, &kind, &id).await?;
    if versions.is_empty() {
        return Ok(outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            "no such resource",
        ));
    }
    let entries: Vec<Value> = versions
        .into_iter()
        .rev()
        .map(|r| json!({ "fullUrl": format!("{kind}/{id}"), "resource": r, "request": { "method": "PUT", "url": format!("{kind}/{id}") }, "response": { "status": "200" } }))
        .collect();
    let bundle = json!({ "resourceType": "Bundle", "type": "history", "total": entries.len(), "entry": entries });
    Ok(fhir_json(StatusCode::OK, &bundle))
}

/// One version of one resource (`vread`).
pub(super) async fn version(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path((kind, id, vid)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    if let Some(refusal) = unserved(&kind) {
        return Ok(refusal);
    }
    let found = versions_of(&service, &kind, &id)
        .await?
        .into_iter()
        .find(|r| r["meta"]["versionId"] == vid.as_str());
    Ok(match found {
        Some(r) => fhir_json(StatusCode::OK, &r),
        None => outcome(StatusCode::NOT_FOUND, "not-found", "no such version"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_match_with_or_without_system_and_urn_prefix() {
        let ids = [
            json!({ "system": "urn:dicom:uid", "value": "urn:oid:1.2.3" }),
            json!({ "value": "ACC1" }),
        ];
        let refs: Vec<&Value> = ids.iter().collect();
        assert!(token_matches("1.2.3", &refs));
        assert!(token_matches("urn:dicom:uid|urn:oid:1.2.3", &refs));
        assert!(token_matches("|ACC1", &refs));
        assert!(
            !token_matches("|urn:oid:1.2.3", &refs),
            "that one has a system"
        );
        assert!(!token_matches("other|ACC1", &refs));
        assert!(!token_matches("1.2.4", &refs));
    }

    #[test]
    fn dates_compare_with_prefixes() {
        let r = json!({ "effectiveDateTime": "2004-08-26T12:00:00Z" });
        assert!(date_matches("2004-08-26", &r));
        assert!(date_matches("ge2004-01-01", &r) && date_matches("le2004-12-31", &r));
        assert!(!date_matches("gt2004-08-26", &r));
        assert!(!date_matches("2005-01-01", &r));
    }
}
