//! What the operator's page reads and does, beyond the results API: the
//! worklist (every received study, processed or not, with its delivery),
//! a study's detail and picture, retrying a delivery, the system page,
//! verifying the audit log, and installing or rolling back a bundle as a
//! job whose progress the page polls. Actions that belong to the binary
//! (the audit log, bundles, the model) go through [`Operations`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::authorize;
use super::credentials::Role;
use super::{ApiError, HttpService};
use cxr_store::outbox::{Entry, EntryState};
use cxr_store::results::{study_key, InstanceResult, StudyResult};
use cxr_store::spool::JournalRecord;

/// The binary's side of the page's actions. Each returns the JSON the page
/// shows (`ok`, and an `error` with a code when refused) and audits what it
/// changed, naming `actor`.
pub trait Operations: Send + Sync {
    /// Board, active and previous bundle, engine and self-test, audit head,
    /// certificate: what only the binary knows.
    fn system(&self) -> Value;
    fn verify_audit(&self, actor: &str) -> Value;
    fn retry_delivery(&self, entry: u64, actor: &str) -> Value;
    /// Verify, self-test and install the bundle in `file`, then serve it;
    /// `progress` is told each stage as it starts.
    fn install_bundle(&self, file: &std::path::Path, actor: &str, progress: &dyn Fn(&str))
        -> Value;
    fn rollback_bundle(&self, actor: &str) -> Value;
    /// Run every instance of a study again on the model served now.
    fn rerun_study(&self, study_instance_uid: &str, actor: &str) -> Value;
    /// One user or token request (`access_list`, `access_user_add`, ...),
    /// as `cxr-appliance user|token` makes it, audited with `actor`.
    fn access(&self, request: &Value, actor: &str) -> Value;
}

/// A bundle install in progress or done, as the page polls it.
#[derive(Debug, Clone, Default)]
pub struct Job {
    pub stage: String,
    pub done: bool,
    pub result: Option<Value>,
}

/// Jobs by id (only the latest few are kept); one install at a time.
#[derive(Debug, Default)]
pub struct Jobs {
    next: Mutex<u64>,
    jobs: Mutex<BTreeMap<u64, Job>>,
    busy: std::sync::atomic::AtomicBool,
}

impl Jobs {
    fn start(&self) -> u64 {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        *next += 1;
        let id = *next;
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        while jobs.len() >= 16 {
            let first = jobs.keys().next().copied().unwrap_or(id);
            jobs.remove(&first);
        }
        jobs.insert(
            id,
            Job {
                stage: "receiving".into(),
                ..Job::default()
            },
        );
        id
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Job)) {
        if let Some(job) = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
            change(job);
        }
    }

    fn get(&self, id: u64) -> Option<Job> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "HTTP_INTERNAL",
        e.to_string(),
    )
}

/// What the worklist is made from, read in one go.
struct Snapshot {
    records: Vec<JournalRecord>,
    pending: std::collections::HashSet<u64>,
    studies: BTreeMap<String, StudyResult>,
    instances: BTreeMap<u64, InstanceResult>,
    outbox: Vec<Entry>,
}

fn snapshot(service: &HttpService) -> Result<Snapshot, ApiError> {
    let records = service.results.held_records(&service.intake.spool());
    let pending = service.intake.board().pending_ids();
    let studies = service.results.latest_studies().map_err(internal)?;
    let instances = records
        .iter()
        .filter_map(|r| {
            service
                .results
                .instance(r.id)
                .ok()
                .flatten()
                .map(|i| (r.id, i))
        })
        .collect();
    let outbox = service
        .outbox
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entries()
        .cloned()
        .collect();
    Ok(Snapshot {
        records,
        pending,
        studies,
        instances,
        outbox,
    })
}

fn delivery_state(entries: &[&Entry]) -> &'static str {
    if entries.is_empty() {
        "no destination"
    } else if entries.iter().any(|e| e.state == EntryState::Dead) {
        "dead letter"
    } else if entries.iter().any(|e| e.state == EntryState::Pending) {
        "pending"
    } else {
        "delivered"
    }
}

/// A worklist row's status: the study outcome's own word once published
/// (the one vocabulary of every channel), or where it waits.
fn study_status(result: Option<&StudyResult>, queued: bool) -> &'static str {
    match result {
        None if queued => "queued",
        None => "processing",
        Some(r) => r.outcome.as_str(),
    }
}

/// One worklist row per study.
fn rows(s: &Snapshot) -> Vec<Value> {
    let mut by_study: BTreeMap<&str, Vec<&JournalRecord>> = BTreeMap::new();
    for r in &s.records {
        by_study
            .entry(r.study_instance_uid.as_str())
            .or_default()
            .push(r);
    }
    let mut rows: Vec<Value> = by_study
        .into_iter()
        .map(|(uid, records)| {
            let result = s.studies.get(uid);
            let instances: Vec<&InstanceResult> = records
                .iter()
                .filter_map(|r| s.instances.get(&r.id))
                .collect();
            let queued = records.iter().any(|r| s.pending.contains(&r.id));
            let key = study_key(uid);
            let entries: Vec<&Entry> = s.outbox.iter().filter(|e| e.study_key == key).collect();
            let deciding = result
                .and_then(|r| r.decided_by.first())
                .and_then(|id| s.instances.get(id))
                .or_else(|| instances.first().copied());
            let line = deciding.map(|i| &i.detail);
            let mut top: Vec<(&str, f32)> = result
                .filter(|r| r.outcome.carries_calls())
                .map(|r| {
                    r.labels
                        .iter()
                        .filter(|l| l.finding == cxr_store::results::Finding::Present)
                        .map(|l| (l.label.as_str(), l.probability.unwrap_or(0.0)))
                        .collect()
                })
                .unwrap_or_default();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            let first = records[0];
            json!({
                "study_instance_uid": uid,
                "received_unix_ms": records.iter().map(|r| r.received_unix_ms).min(),
                "source": first.source,
                "accession_number": first.header.accession_number,
                "patient_id": first.header.patient_id,
                "instances": records.len(),
                "input_class": line.and_then(|l| l["input_class"].as_str()),
                "content_class": line.and_then(|l| l["content"]["class"].as_str()),
                "status": study_status(result, queued),
                "summary": result.map(|r| r.findings_summary()),
                "flags": result.map(|r| r.flags.clone()).unwrap_or_default(),
                "reason": result.and_then(|r| r.reason.as_ref()).map(|r| &r.code),
                "top_findings": top.iter().take(3).map(|(l, _)| l).collect::<Vec<_>>(),
                "delivery": delivery_state(&entries),
                "version": result.map(|r| r.version),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        b["received_unix_ms"]
            .as_u64()
            .cmp(&a["received_unix_ms"].as_u64())
    });
    rows
}

#[derive(Debug, Deserialize)]
pub(super) struct WorklistQuery {
    status: Option<String>,
    /// Accession number, patient ID or Study Instance UID contains this.
    q: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn worklist(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    query: Result<Query<WorklistQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "API_BAD_QUERY", e.to_string()))?;
    let s = Arc::clone(&service);
    let all = super::off_task(move || snapshot(&s).map(|snap| rows(&snap))).await??;
    let needle = q.q.as_deref().map(str::to_lowercase);
    let matching: Vec<Value> = all
        .into_iter()
        .filter(|r| {
            q.status
                .as_deref()
                .is_none_or(|st| st.is_empty() || r["status"] == st)
        })
        .filter(|r| {
            needle.as_deref().is_none_or(|n| {
                ["accession_number", "patient_id", "study_instance_uid"]
                    .iter()
                    .any(|k| r[*k].as_str().is_some_and(|v| v.to_lowercase().contains(n)))
            })
        })
        .take(q.limit.unwrap_or(200).min(1000))
        .collect();
    Ok(Json(json!({ "studies": matching })))
}

/// A study's result, its instances (with the study line: gates, OOD scores,
/// engine, timings) and its delivery per destination.
pub(super) async fn study_detail(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path(study): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    let s = Arc::clone(&service);
    let detail = super::off_task(move || -> Result<Value, ApiError> {
        let snap = snapshot(&s)?;
        let records: Vec<&JournalRecord> = snap.records.iter().filter(|r| r.study_instance_uid == study).collect();
        if records.is_empty() && !snap.studies.contains_key(&study) {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "API_NO_STUDY", "no such study here"));
        }
        let key = study_key(&study);
        let instances: Vec<Value> = records
            .iter()
            .map(|r| {
                let result = snap.instances.get(&r.id);
                json!({
                    "instance": r.id, "sop_instance_uid": r.sop_instance_uid, "source": r.source,
                    "received_unix_ms": r.received_unix_ms, "queued": snap.pending.contains(&r.id),
                    "result": result,
                })
            })
            .collect();
        let delivery: Vec<Value> = snap
            .outbox
            .iter()
            .filter(|e| e.study_key == key)
            .map(|e| json!({ "id": e.id, "destination": e.destination, "state": e.state, "attempts": e.attempts, "version": e.version, "sop_class_uid": e.sop_class_uid, "last_error": e.last_error }))
            .collect();
        let versions: Vec<Value> = s
            .results
            .study_versions(&study)
            .iter()
            .map(|v| json!({ "version": v.version, "outcome": v.outcome, "summary": v.findings_summary(), "flags": v.flags, "reason": v.reason.as_ref().map(|r| &r.code), "completed_unix_ms": v.completed_unix_ms, "model": v.model, "supersedes": v.supersedes }))
            .collect();
        let result = snap.studies.get(&study);
        Ok(json!({ "study_instance_uid": study, "result": result, "summary": result.map(|r| r.findings_summary()), "versions": versions, "instances": instances, "delivery": delivery }))
    }).await??;
    Ok(Json(detail))
}

/// The latest version's result picture.
pub(super) async fn study_picture(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path(study): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    let (version, _) = service.results.latest_study_file(&study).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "API_NO_STUDY",
            "no published result for this study",
        )
    })?;
    let sr = service
        .results
        .study_dir(&study)
        .join(format!("v{version}.dcm"));
    let png = service.results.picture_for(&sr).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "API_NO_PICTURE",
            "this version has no picture",
        )
    })?;
    let mut response = png.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    Ok(response)
}

/// Run a blocking operation for `principal`.
async fn act(
    service: &Arc<HttpService>,
    headers: &HeaderMap,
    need: Role,
    f: impl FnOnce(&dyn Operations, &str) -> Value + Send + 'static,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(service, headers, &Method::POST, need)?;
    let ops = Arc::clone(&service.operations);
    let reply = super::off_task(move || f(ops.as_ref(), &principal.name)).await?;
    Ok(Json(reply))
}

pub(super) async fn retry_delivery(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path(entry): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    act(&service, &headers, Role::Operator, move |ops, actor| {
        ops.retry_delivery(entry, actor)
    })
    .await
}

pub(super) async fn rerun_study(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path(study): Path<String>,
) -> Result<Json<Value>, ApiError> {
    act(&service, &headers, Role::Admin, move |ops, actor| {
        ops.rerun_study(&study, actor)
    })
    .await
}

pub(super) async fn system(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    let s = Arc::clone(&service);
    let value = super::off_task(move || {
        let mut value = s.operations.system();
        let g = (s.gauges)();
        value["spool"] = json!({
            "queued_instances": g.queued_instances, "queued_studies": g.queued_studies,
            "used_bytes": g.spool_used_bytes, "headroom_bytes": g.spool_headroom_bytes,
            "disk_free_bytes": g.disk_free_bytes,
            "watermarks": { "spool_headroom_bytes": s.watermarks.spool_headroom, "free_disk_bytes": s.watermarks.free_disk },
            "below_watermark": s.below_watermark(),
        });
        value["associations_open"] = json!(g.open_associations);
        value["outbox"] = json!({ "pending": g.outbox_pending, "dead": g.outbox_dead });
        value
    }).await?;
    Ok(Json(value))
}

pub(super) async fn verify_audit(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    act(&service, &headers, Role::Operator, |ops, actor| {
        ops.verify_audit(actor)
    })
    .await
}

pub(super) async fn rollback_bundle(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    act(&service, &headers, Role::Admin, |ops, actor| {
        ops.rollback_bundle(actor)
    })
    .await
}

/// Receive a bundle file (the raw body, bounded), then install it as a job.
pub(super) async fn upload_bundle(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = authorize(&service, &headers, &Method::POST, Role::Admin)?;
    if service.below_watermark() {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "SPOOL_WATERMARK",
            "the disk is at its watermark: no room for a bundle (fix: let the backlog drain first)",
        ));
    }
    if service
        .jobs
        .busy
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "UPLOAD_BUSY",
            "another bundle is being installed (fix: wait for it to finish)",
        ));
    }
    let installing = Installing(Arc::clone(&service));
    let dir = service.upload_dir.clone();
    std::fs::create_dir_all(&dir).map_err(internal)?;
    let id = service.jobs.start();
    let file = dir.join(format!("bundle-{id}.cxrb"));
    if let Err(e) = receive_file(&service, body, &file).await {
        let _ = std::fs::remove_file(&file);
        service.jobs.update(id, |j| {
            j.stage = "refused".into();
            j.done = true;
            j.result =
                Some(json!({ "ok": false, "error": { "code": e.code, "message": e.message } }));
        });
        return Err(e);
    }
    let s = Arc::clone(&service);
    std::thread::Builder::new()
        .name("cxr-bundle-install".into())
        .spawn(move || {
            let _installing = installing;
            let progress = |stage: &str| s.jobs.update(id, |j| j.stage = stage.to_owned());
            let reply = s
                .operations
                .install_bundle(&file, &principal.name, &progress);
            let _ = std::fs::remove_file(&file);
            s.jobs.update(id, |j| {
                j.stage = if reply["ok"] == true {
                    "installed".into()
                } else {
                    "refused".into()
                };
                j.done = true;
                j.result = Some(reply);
            });
        })
        .map_err(internal)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job": id }))).into_response())
}

/// Marks the one install in progress; cleared when dropped (also on a panic).
struct Installing(Arc<HttpService>);

impl Drop for Installing {
    fn drop(&mut self) {
        self.0
            .jobs
            .busy
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn receive_file(
    service: &HttpService,
    mut body: Body,
    file: &std::path::Path,
) -> Result<(), ApiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let limit = service.config.max_bundle_bytes;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(internal)?;
    let mut received: u64 = 0;
    loop {
        let frame = tokio::time::timeout(service.config.body_idle_timeout, body.frame())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "UPLOAD_STALLED",
                    "the upload stopped arriving",
                )
            })?;
        let Some(frame) = frame else { break };
        let frame = frame
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "UPLOAD_BROKEN", e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "UPLOAD_TOO_LARGE",
                format!("a bundle is at most {limit} bytes"),
            ));
        }
        out.write_all(&data).map_err(internal)?;
    }
    out.sync_all().map_err(internal)?;
    Ok(())
}

pub(super) async fn job(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    let job = service
        .jobs
        .get(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "API_NO_JOB", "no such job"))?;
    Ok(Json(
        json!({ "job": id, "stage": job.stage, "done": job.done, "result": job.result }),
    ))
}

/// Where uploads wait for their install.
pub fn upload_dir(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("http").join("uploads")
}
