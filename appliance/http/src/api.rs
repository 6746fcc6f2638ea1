//! Health and the results API: the published study results, newest first,
//! one study's latest version as written (schema `RESULT_SCHEMA`), and a
//! change feed in publication order (both from the publication log).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::authorize;
use super::credentials::Role;
use super::{ApiError, HttpService};
use cxr_store::publications::Publication;

/// Liveness: the process answers.
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "alive": true }))
}

/// Readiness: a verified model serves, and the spool takes input.
pub(super) async fn readyz(State(service): State<Arc<HttpService>>) -> Response {
    let not_ready = if let Err((code, message)) = (service.ready)() {
        Some((code, message))
    } else if service.below_watermark() {
        Some((
            "SPOOL_WATERMARK".to_owned(),
            "the spool or its disk is at the watermark".to_owned(),
        ))
    } else {
        None
    };
    match not_ready {
        None => Json(json!({ "ready": true })).into_response(),
        Some((code, message)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "code": code, "message": message })),
        )
            .into_response(),
    }
}

/// The Prometheus text exposition: a viewer's, or a loopback scraper's
/// when the board allows it.
pub(super) async fn metrics(
    State(service): State<Arc<HttpService>>,
    axum::extract::Extension(super::Peer(peer)): axum::extract::Extension<super::Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let local = service.config.metrics_open_to_loopback && peer.ip().is_loopback();
    if !local {
        authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    }
    let text = {
        let service = Arc::clone(&service);
        super::off_task(move || service.metrics.render(&(service.gauges)())).await?
    };
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// The largest page of studies or changes.
const MAX_PAGE: usize = 500;

#[derive(Debug, Deserialize)]
pub(super) struct StudyQuery {
    limit: Option<usize>,
    offset: Option<usize>,
    /// `decision`, `undecided`, `abstention`, `refused` or `failed`.
    outcome: Option<String>,
    /// Completed at or after this time (Unix ms).
    since_ms: Option<u64>,
    accession: Option<String>,
}

/// One study version as lists and the feed show it.
fn summary(p: &Publication) -> Value {
    json!({
        "seq": p.seq,
        "study_instance_uid": p.study_instance_uid,
        "version": p.version,
        "outcome": p.outcome,
        "flags": p.flags,
        "summary": p.summary,
        "completed_unix_ms": p.completed_unix_ms,
        "published_unix_ms": p.published_unix_ms,
        "accession_number": p.accession_number,
        "study_date": p.study_date,
        "present": p.present,
        "reason": p.reason,
        "instances": p.instances,
    })
}

fn log_error(e: cxr_store::SpoolError) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.code(), e.to_string())
}

pub(super) async fn studies(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    query: Result<Query<StudyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "API_BAD_QUERY", e.to_string()))?;
    let limit = q.limit.unwrap_or(50).min(MAX_PAGE);
    let offset = q.offset.unwrap_or(0);
    let all = {
        let service = Arc::clone(&service);
        super::off_task(move || service.results.publications().latest().map_err(log_error))
            .await??
    };
    let mut matching: Vec<&Publication> = all
        .values()
        .filter(|r| q.outcome.as_ref().is_none_or(|o| r.outcome.as_str() == o))
        .filter(|r| q.since_ms.is_none_or(|t| r.completed_unix_ms >= t))
        .filter(|r| {
            q.accession
                .as_ref()
                .is_none_or(|a| r.accession_number.as_ref() == Some(a))
        })
        .collect();
    matching.sort_by(|a, b| {
        b.completed_unix_ms
            .cmp(&a.completed_unix_ms)
            .then_with(|| a.study_instance_uid.cmp(&b.study_instance_uid))
    });
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| summary(r))
        .collect();
    Ok(Json(
        json!({ "total": matching.len(), "offset": offset, "limit": limit, "studies": page }),
    ))
}

pub(super) async fn study(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path(study): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    let found = {
        let service = Arc::clone(&service);
        super::off_task(move || service.results.latest_study_file(&study)).await?
    };
    let (_, bytes) = found.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "API_NO_STUDY",
            "no published result for this Study Instance UID",
        )
    })?;
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(super) struct ChangeQuery {
    /// The `next` of the previous page (0 for everything).
    since: Option<u64>,
}

/// Study versions in the order they were published, after `since` (a
/// publication sequence number); `next` is the cursor for the following
/// call. A version published late (a retry, a re-run, a late instance)
/// still comes after everything already read, so nothing is missed and
/// nothing is read twice.
pub(super) async fn changes(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    query: Result<Query<ChangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "API_BAD_QUERY", e.to_string()))?;
    let since = q.since.unwrap_or(0);
    let (page, last) = {
        let service = Arc::clone(&service);
        super::off_task(move || {
            let log = service.results.publications();
            Ok::<_, ApiError>((
                log.since(since, MAX_PAGE).map_err(log_error)?,
                log.last_seq().map_err(log_error)?,
            ))
        })
        .await??
    };
    if since > last {
        // A cursor from elsewhere (or the completion time an older feed
        // used): reading on would silently give nothing.
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "API_STALE_CURSOR",
            format!("since={since} is beyond the feed's last publication ({last}) (fix: read again from since=0; the cursor is a publication sequence number)"),
        ));
    }
    let next = page.last().map_or(since, |p| p.seq);
    let changes: Vec<Value> = page.iter().map(summary).collect();
    Ok(Json(json!({ "next": next, "changes": changes })))
}
