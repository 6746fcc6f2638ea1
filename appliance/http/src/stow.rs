//! STOW-RS (PS3.18 §10.5): a `multipart/related` body of Part 10 instances,
//! each streamed to the spool and committed through the same [`Intake`] as
//! a C-STORE. The answer is sent only after every part is durable or
//! refused: acknowledged means durable, exactly as for C-STORE.
//!
//! - 200: every instance stored; 202: some failed; 409: none stored.
//! - 400: the body's syntax; 415: not `multipart/related` of DICOM;
//!   413: over the body limit; 507: the spool is at its watermark;
//!   408: the body stalled.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};

use super::credentials::Role;
use super::{auth, ApiError, HttpService, Peer};
use cxr_net::dimse::status;
use cxr_net::multipart::{dicom_boundary, Event, MultipartError, RelatedReader};
use cxr_net::uid::is_valid_uid;
use cxr_store::intake::{spool_refusal, StoreReply, StudyScope};
use cxr_store::spool::Incoming;

pub(super) async fn store_any(
    State(service): State<Arc<HttpService>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    store(service, peer, headers, None, body).await
}

pub(super) async fn store_in_study(
    State(service): State<Arc<HttpService>>,
    Extension(peer): Extension<Peer>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    store(service, peer, headers, Some(study), body).await
}

async fn store(
    service: Arc<HttpService>,
    Peer(peer): Peer,
    headers: HeaderMap,
    study: Option<String>,
    body: Body,
) -> Response {
    let principal = match auth::authorize(&service, &headers, &Method::POST, Role::Operator) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Some(s) = &study {
        if !is_valid_uid(s) {
            return bad_request(
                "STOW_BAD_STUDY_UID",
                "the URL's Study Instance UID is not a UID",
            );
        }
    }
    let boundary = match precheck(&service, &headers) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let source = format!("{}@{}", principal.name, peer.ip());
    let scope = study.as_deref().map_or(StudyScope::Any, StudyScope::Only);
    match receive(&service, body, &boundary, &source, scope).await {
        Ok(replies) => {
            let stored = replies.iter().filter(|r| r.durable).count();
            service.metrics.stow(stored, replies.len() - stored);
            answer(&replies)
        }
        Err(e) => e.into_response(),
    }
}

fn bad_request(code: &str, message: &str) -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, code, message).into_response()
}

/// What can be refused before a byte of the body is read.
fn precheck(service: &HttpService, headers: &HeaderMap) -> Result<String, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = dicom_boundary(content_type).map_err(multipart_error)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > service.config.max_body_bytes) {
        return Err(too_large(service.config.max_body_bytes));
    }
    if service.below_watermark() {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "SPOOL_WATERMARK",
            "the spool or its disk is at the watermark; nothing is taken until the backlog is processed (fix: retry later)",
        ));
    }
    Ok(boundary)
}

fn multipart_error(e: MultipartError) -> ApiError {
    let status = if e.is_media_type() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::new(status, e.code(), e.to_string())
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "STOW_BODY_TOO_LARGE",
        format!("the body exceeds {limit} bytes (fix: send fewer instances per request)"),
    )
}

/// The part being received: streaming to the spool, or already refused
/// (its content is read and dropped).
enum Sink {
    Writing(Incoming),
    Refused(StoreReply),
}

/// Read the body, part by part, into the spool; every part's reply.
async fn receive(
    service: &Arc<HttpService>,
    body: Body,
    boundary: &str,
    source: &str,
    scope: StudyScope<'_>,
) -> Result<Vec<StoreReply>, ApiError> {
    let mut replies = Vec::new();
    match read_parts(service, body, boundary, source, scope, &mut replies).await {
        Ok(()) if replies.is_empty() => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "STOW_NO_PARTS",
            "the body has no instances (fix: one part per DICOM instance)",
        )),
        Ok(()) => Ok(replies),
        // Parts committed before the body failed are durable and will be
        // processed: the answer says so (202), with the failure beside them.
        Err(e) if replies.iter().any(|r| r.durable) => {
            replies.push(StoreReply::refused(
                status::CANNOT_UNDERSTAND,
                &e.code,
                e.message,
            ));
            Ok(replies)
        }
        Err(e) => Err(e),
    }
}

/// Read the body part by part into the spool, each part's reply into `replies`.
async fn read_parts(
    service: &Arc<HttpService>,
    mut body: Body,
    boundary: &str,
    source: &str,
    scope: StudyScope<'_>,
    replies: &mut Vec<StoreReply>,
) -> Result<(), ApiError> {
    let config = &service.config;
    let mut reader = RelatedReader::new(boundary, config.multipart);
    let mut sink: Option<Sink> = None;
    let mut received: u64 = 0;
    loop {
        let frame = tokio::time::timeout(config.body_idle_timeout, body.frame())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "STOW_BODY_STALLED",
                    "the body stopped arriving (fix: send it without long pauses)",
                )
            })?;
        let Some(frame) = frame else {
            break;
        };
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "STOW_BODY_BROKEN",
                format!("the body could not be read whole: {e} (fix: check Content-Length against the body sent)"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > config.max_body_bytes {
            return Err(too_large(config.max_body_bytes));
        }
        reader.push(&data);
        while let Some(event) = reader.next_event().map_err(multipart_error)? {
            if let Some(reply) = step(service, &mut sink, event, source, scope).await {
                replies.push(reply);
            }
        }
    }
    reader.finish().map_err(multipart_error)
}

/// One reader event; a part's reply when it ends.
async fn step(
    service: &Arc<HttpService>,
    sink: &mut Option<Sink>,
    event: Event,
    source: &str,
    scope: StudyScope<'_>,
) -> Option<StoreReply> {
    match event {
        Event::PartStart(headers) => {
            let dicom = headers
                .content_type
                .as_deref()
                .is_none_or(|t| t == "application/dicom");
            *sink = Some(if !dicom {
                Sink::Refused(StoreReply::refused(
                    status::CANNOT_UNDERSTAND,
                    "STOW_PART_NOT_DICOM",
                    "a part's Content-Type is not application/dicom",
                ))
            } else {
                match service.intake.begin_file() {
                    Ok(incoming) => Sink::Writing(incoming),
                    Err(reply) => Sink::Refused(reply),
                }
            });
            None
        }
        Event::Data(data) => {
            if let Some(Sink::Writing(incoming)) = sink {
                if let Err(e) = incoming.write(&data) {
                    *sink = Some(Sink::Refused(spool_refusal(e)));
                }
            }
            None
        }
        Event::PartEnd { .. } => match sink.take() {
            Some(Sink::Writing(incoming)) => Some(commit(service, incoming, source, scope).await),
            Some(Sink::Refused(reply)) => Some(reply),
            None => None,
        },
        Event::Finished => None,
    }
}

async fn commit(
    service: &Arc<HttpService>,
    incoming: Incoming,
    source: &str,
    scope: StudyScope<'_>,
) -> StoreReply {
    let service = Arc::clone(service);
    let source = source.to_owned();
    let study = match scope {
        StudyScope::Any => None,
        StudyScope::Only(s) => Some(s.to_owned()),
    };
    tokio::task::spawn_blocking(move || {
        let scope = study.as_deref().map_or(StudyScope::Any, StudyScope::Only);
        service.intake.finish_file(incoming, &source, scope)
    })
    .await
    .unwrap_or_else(|_| StoreReply::internal_fault())
}

fn ui(value: &str) -> Value {
    json!({ "vr": "UI", "Value": [value] })
}

/// The PS3.18 response: ReferencedSOPSequence and FailedSOPSequence, each
/// failure with its FailureReason and our stable code and message in a
/// private element (creator `CXR APPLIANCE`).
fn answer(replies: &[StoreReply]) -> Response {
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    for reply in replies {
        let mut item = Map::new();
        if let Some((class, instance)) = &reply.instance {
            item.insert("00081150".into(), ui(class));
            item.insert("00081155".into(), ui(instance));
        }
        if reply.durable {
            referenced.push(Value::Object(item));
        } else {
            item.insert(
                "00081197".into(),
                json!({ "vr": "US", "Value": [reply.status] }),
            );
            item.insert(
                "00090010".into(),
                json!({ "vr": "LO", "Value": ["CXR APPLIANCE"] }),
            );
            if let Some(comment) = &reply.comment {
                item.insert("00091001".into(), json!({ "vr": "LT", "Value": [comment] }));
            }
            failed.push(Value::Object(item));
        }
    }
    let status = match (referenced.is_empty(), failed.is_empty()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, _) => StatusCode::CONFLICT,
    };
    let mut body = Map::new();
    if !failed.is_empty() {
        body.insert("00081198".into(), json!({ "vr": "SQ", "Value": failed }));
    }
    if !referenced.is_empty() {
        body.insert(
            "00081199".into(),
            json!({ "vr": "SQ", "Value": referenced }),
        );
    }
    let mut response = (status, Value::Object(body).to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    response
}
