//! QIDO-RS and WADO-RS (PS3.18 §10.4, §10.6) over what the appliance holds:
//! the received instances still in the spool and the objects it wrote (each
//! study version's SR). Only the appliance's own objects are retrieved
//! whole; received images are served rendered (the model input's PNG).
//!
//! Query matching: exact for UIDs, PatientID and AccessionNumber; `*` and
//! `?` wildcards for PatientName (case-insensitive); StudyDate exact or as
//! a `FROM-TO` range. Other query keys are ignored and named in a
//! `Warning` header, as PS3.18 allows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::auth::authorize;
use super::credentials::Role;
use super::{ApiError, HttpService};
use cxr_store::results::StudyHeader;

/// Where an instance's bytes are.
#[derive(Debug, Clone)]
enum Held {
    /// A received instance, by spool id.
    Received(u64),
    /// An object the appliance wrote (a file under `results/`).
    Written(PathBuf),
}

/// One instance as QIDO-RS describes it.
#[derive(Debug, Clone)]
struct Entry {
    study: String,
    series: String,
    sop_class: String,
    sop_instance: String,
    modality: Option<String>,
    header: StudyHeader,
    held: Held,
}

const SR_STORAGE_PREFIX: &str = "1.2.840.10008.5.1.4.1.1.88.";

/// The identities of the objects the appliance wrote, read once per file
/// (by path, length and modification time) rather than on every query.
#[derive(Debug, Default)]
pub struct IdentityCache {
    known: std::sync::Mutex<std::collections::HashMap<PathBuf, Known>>,
}

/// A file's length and modification time when read, and its identity.
type Known = (
    u64,
    Option<std::time::SystemTime>,
    cxr_dicom::InstanceIdentity,
);

impl IdentityCache {
    fn get(&self, path: &std::path::Path) -> Option<cxr_dicom::InstanceIdentity> {
        let meta = std::fs::metadata(path).ok()?;
        let stamp = (meta.len(), meta.modified().ok());
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((len, modified, id)) = known.get(path) {
            if (*len, *modified) == stamp {
                return Some(id.clone());
            }
        }
        let bytes = std::fs::read(path).ok()?;
        let id = cxr_dicom::read_identity(&bytes, &cxr_dicom::ReadLimits::default()).ok()?;
        if known.len() >= 100_000 {
            known.clear();
        }
        known.insert(path.to_owned(), (stamp.0, stamp.1, id.clone()));
        Some(id)
    }
}

/// Everything held now: received instances not yet retired, and every
/// object written. Blocking (reads the written objects' headers).
fn catalogue(service: &HttpService) -> Vec<Entry> {
    let received: Vec<Entry> = {
        let spool = service.intake.spool();
        spool
            .records()
            .iter()
            .filter(|r| !spool.is_retired(r.id))
            .map(|r| Entry {
                study: r.study_instance_uid.clone(),
                series: r.series_instance_uid.clone().unwrap_or_default(),
                sop_class: r.sop_class_uid.clone(),
                sop_instance: r.sop_instance_uid.clone(),
                modality: r.modality.clone(),
                header: r.header.clone(),
                held: Held::Received(r.id),
            })
            .collect()
    };
    let written = service
        .results
        .derived_files()
        .into_iter()
        .filter_map(|path| {
            let id = service.identities.get(&path)?;
            let modality = id
                .sop_class_uid
                .starts_with(SR_STORAGE_PREFIX)
                .then(|| "SR".to_owned())
                .or_else(|| Some("OT".to_owned()));
            Some(Entry {
                study: id.study_instance_uid,
                series: id.series_instance_uid.unwrap_or_default(),
                sop_class: id.sop_class_uid,
                sop_instance: id.sop_instance_uid,
                modality,
                header: id.study,
                held: Held::Written(path),
            })
        });
    received.into_iter().chain(written).collect()
}

/// Whether `value` matches a DICOM wildcard pattern (`*`, `?`), ignoring case.
fn wildcard(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let v: Vec<char> = value.to_lowercase().chars().collect();
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < v.len() {
        if i < p.len() && (p[i] == '?' || p[i] == v[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// A StudyDate matcher: `YYYYMMDD`, `FROM-TO`, `FROM-` or `-TO`.
fn date_matches(query: &str, value: Option<&str>) -> bool {
    let Some(value) = value else {
        return false;
    };
    match query.split_once('-') {
        None => query == value,
        Some((from, to)) => (from.is_empty() || value >= from) && (to.is_empty() || value <= to),
    }
}

/// The query keys understood, by keyword and by tag.
const KEYS: &[(&str, &str)] = &[
    ("StudyInstanceUID", "0020000D"),
    ("SeriesInstanceUID", "0020000E"),
    ("SOPInstanceUID", "00080018"),
    ("PatientID", "00100020"),
    ("PatientName", "00100010"),
    ("AccessionNumber", "00080050"),
    ("StudyDate", "00080020"),
    ("Modality", "00080060"),
];
/// Keys accepted and not used for matching.
const IGNORED_QUIETLY: &[&str] = &["limit", "offset", "includefield", "fuzzymatching"];

/// An attribute `includefield` may add: keyword, tag, VR.
type Includable = (&'static str, &'static str, &'static str);

/// The attributes `includefield` may add to any level.
const INCLUDABLE: &[Includable] = &[
    ("StudyDate", "00080020", "DA"),
    ("StudyTime", "00080030", "TM"),
    ("AccessionNumber", "00080050", "SH"),
    ("Modality", "00080060", "CS"),
    ("ReferringPhysicianName", "00080090", "PN"),
    ("SOPClassUID", "00080016", "UI"),
    ("PatientName", "00100010", "PN"),
    ("PatientID", "00100020", "LO"),
    ("PatientBirthDate", "00100030", "DA"),
    ("PatientSex", "00100040", "CS"),
    ("StudyID", "00200010", "SH"),
];

/// An includable attribute's value for one entry.
fn included_value<'a>(e: &'a Entry, keyword: &str) -> Option<&'a str> {
    let h = &e.header;
    match keyword {
        "StudyDate" => h.study_date.as_deref(),
        "StudyTime" => h.study_time.as_deref(),
        "AccessionNumber" => h.accession_number.as_deref(),
        "Modality" => e.modality.as_deref(),
        "ReferringPhysicianName" => h.referring_physician_name.as_deref(),
        "SOPClassUID" => Some(e.sop_class.as_str()),
        "PatientName" => h.patient_name.as_deref(),
        "PatientID" => h.patient_id.as_deref(),
        "PatientBirthDate" => h.patient_birth_date.as_deref(),
        "PatientSex" => h.patient_sex.as_deref(),
        "StudyID" => h.study_id.as_deref(),
        _ => None,
    }
}

/// `includefield` (comma-separated keywords or tags, or `all`): the
/// attributes to add, and the names not known here.
fn includes(raw: &BTreeMap<String, String>) -> (Vec<&'static Includable>, Vec<String>) {
    let Some(list) = raw.get("includefield") else {
        return (Vec::new(), Vec::new());
    };
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name.eq_ignore_ascii_case("all") {
            return (INCLUDABLE.iter().collect(), Vec::new());
        }
        match INCLUDABLE
            .iter()
            .find(|(kw, tag, _)| name == *kw || name.eq_ignore_ascii_case(tag))
        {
            Some(a) => out.push(a),
            None => unknown.push(format!("includefield={name}")),
        }
    }
    (out, unknown)
}

/// Add the included attributes an item does not carry already.
fn add_included(item: &mut Value, e: &Entry, include: &[&Includable]) {
    for (keyword, tag, vr) in include {
        if item.get(*tag).is_none() {
            item[*tag] = text(vr, included_value(e, keyword));
        }
    }
}

/// The matching keys by keyword, and the names of the keys ignored.
fn parse_query(raw: &BTreeMap<String, String>) -> (BTreeMap<&'static str, String>, Vec<String>) {
    let mut keys = BTreeMap::new();
    let mut ignored = Vec::new();
    for (k, v) in raw {
        match KEYS
            .iter()
            .find(|(name, tag)| k == name || k.eq_ignore_ascii_case(tag))
        {
            Some((name, _)) => {
                keys.insert(*name, v.clone());
            }
            None if IGNORED_QUIETLY.contains(&k.as_str()) => {}
            None => ignored.push(k.clone()),
        }
    }
    (keys, ignored)
}

fn entry_matches(e: &Entry, keys: &BTreeMap<&'static str, String>) -> bool {
    let h = &e.header;
    let exact =
        |want: Option<&String>, have: Option<&str>| want.is_none_or(|w| have == Some(w.as_str()));
    exact(keys.get("StudyInstanceUID"), Some(&e.study))
        && exact(keys.get("SeriesInstanceUID"), Some(&e.series))
        && exact(keys.get("SOPInstanceUID"), Some(&e.sop_instance))
        && exact(keys.get("PatientID"), h.patient_id.as_deref())
        && exact(keys.get("AccessionNumber"), h.accession_number.as_deref())
        && exact(keys.get("Modality"), e.modality.as_deref())
        && keys
            .get("PatientName")
            .is_none_or(|p| h.patient_name.as_deref().is_some_and(|n| wildcard(p, n)))
        && keys
            .get("StudyDate")
            .is_none_or(|d| date_matches(d, h.study_date.as_deref()))
}

fn text(vr: &str, value: Option<&str>) -> Value {
    match value {
        Some(v) if vr == "PN" => json!({ "vr": "PN", "Value": [{ "Alphabetic": v }] }),
        Some(v) => json!({ "vr": vr, "Value": [v] }),
        None => json!({ "vr": vr }),
    }
}

fn study_attributes(first: &Entry, members: &[&Entry]) -> Value {
    let h = &first.header;
    let mut series: Vec<&str> = members.iter().map(|e| e.series.as_str()).collect();
    series.sort_unstable();
    series.dedup();
    let mut modalities: Vec<&str> = members
        .iter()
        .filter_map(|e| e.modality.as_deref())
        .collect();
    modalities.sort_unstable();
    modalities.dedup();
    json!({
        "0020000D": text("UI", Some(&first.study)),
        "00080020": text("DA", h.study_date.as_deref()),
        "00080030": text("TM", h.study_time.as_deref()),
        "00080050": text("SH", h.accession_number.as_deref()),
        "00100010": text("PN", h.patient_name.as_deref()),
        "00100020": text("LO", h.patient_id.as_deref()),
        "00100030": text("DA", h.patient_birth_date.as_deref()),
        "00100040": text("CS", h.patient_sex.as_deref()),
        "00200010": text("SH", h.study_id.as_deref()),
        "00080061": if modalities.is_empty() { json!({ "vr": "CS" }) } else { json!({ "vr": "CS", "Value": modalities }) },
        "00201206": { "vr": "IS", "Value": [series.len()] },
        "00201208": { "vr": "IS", "Value": [members.len()] },
        "00081190": text("UR", Some(&format!("/dicomweb/studies/{}", first.study))),
    })
}

fn series_attributes(first: &Entry, count: usize) -> Value {
    json!({
        "0020000D": text("UI", Some(&first.study)),
        "0020000E": text("UI", Some(&first.series)),
        "00080060": text("CS", first.modality.as_deref()),
        "00201209": { "vr": "IS", "Value": [count] },
    })
}

fn instance_attributes(e: &Entry) -> Value {
    let url = format!(
        "/dicomweb/studies/{}/series/{}/instances/{}",
        e.study, e.series, e.sop_instance
    );
    let mut item = json!({
        "0020000D": text("UI", Some(&e.study)),
        "0020000E": text("UI", Some(&e.series)),
        "00080016": text("UI", Some(&e.sop_class)),
        "00080018": text("UI", Some(&e.sop_instance)),
        "00080060": text("CS", e.modality.as_deref()),
    });
    // Only the appliance's own objects are retrievable whole.
    if matches!(e.held, Held::Written(_)) {
        item["00081190"] = text("UR", Some(&url));
    }
    item
}

/// The level a query lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Studies,
    Series,
    Instances,
}

fn page(raw: &BTreeMap<String, String>) -> Result<(usize, usize), ApiError> {
    let number = |key: &str, default: usize| {
        raw.get(key).map_or(Ok(default), |v| {
            v.parse::<usize>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "QIDO_BAD_QUERY",
                    format!("{key}={v:?} is not a number"),
                )
            })
        })
    };
    Ok((number("offset", 0)?, number("limit", 100)?.min(1000)))
}

/// List one level, grouped and paged, as `application/dicom+json`.
async fn query(
    service: Arc<HttpService>,
    headers: HeaderMap,
    mut raw: BTreeMap<String, String>,
    level: Level,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    let (offset, limit) = page(&raw)?;
    raw.retain(|_, v| !v.is_empty());
    let (keys, mut ignored) = parse_query(&raw);
    let (include, unknown) = includes(&raw);
    ignored.extend(unknown);
    let all = super::off_task(move || catalogue(&service)).await?;
    let matching: Vec<&Entry> = all.iter().filter(|e| entry_matches(e, &keys)).collect();
    let mut groups: BTreeMap<(String, String), Vec<&Entry>> = BTreeMap::new();
    for e in &matching {
        let key = match level {
            Level::Studies => (e.study.clone(), String::new()),
            Level::Series => (e.study.clone(), e.series.clone()),
            Level::Instances => (e.study.clone(), e.sop_instance.clone()),
        };
        groups.entry(key).or_default().push(e);
    }
    let more = groups.len() > offset.saturating_add(limit);
    let items: Vec<Value> = groups
        .values()
        .skip(offset)
        .take(limit)
        .map(|members| {
            let mut item = match level {
                Level::Studies => study_attributes(members[0], members),
                Level::Series => series_attributes(members[0], members.len()),
                Level::Instances => instance_attributes(members[0]),
            };
            add_included(&mut item, members[0], &include);
            item
        })
        .collect();
    let mut response = Value::Array(items).to_string().into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    let mut warnings = Vec::new();
    if !ignored.is_empty() {
        warnings.push(format!(
            "299 cxr-appliance \"The following query parameters were ignored: {}\"",
            ignored.join(", ")
        ));
    }
    if more {
        warnings.push(
            "299 cxr-appliance \"There are additional results that can be requested\"".to_owned(),
        );
    }
    if !warnings.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&warnings.join(", ")) {
            h.insert(header::WARNING, v);
        }
    }
    Ok(response)
}

type Params = Query<BTreeMap<String, String>>;

pub(super) async fn studies(
    State(s): State<Arc<HttpService>>,
    headers: HeaderMap,
    Query(raw): Params,
) -> Result<Response, ApiError> {
    query(s, headers, raw, Level::Studies).await
}

/// `GET /dicomweb/series`: series across all studies.
pub(super) async fn all_series(
    State(s): State<Arc<HttpService>>,
    headers: HeaderMap,
    Query(raw): Params,
) -> Result<Response, ApiError> {
    query(s, headers, raw, Level::Series).await
}

/// `GET /dicomweb/instances`: instances across all studies.
pub(super) async fn all_instances(
    State(s): State<Arc<HttpService>>,
    headers: HeaderMap,
    Query(raw): Params,
) -> Result<Response, ApiError> {
    query(s, headers, raw, Level::Instances).await
}

pub(super) async fn study_series(
    State(s): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path(study): Path<String>,
    Query(mut raw): Params,
) -> Result<Response, ApiError> {
    raw.insert("StudyInstanceUID".into(), study);
    query(s, headers, raw, Level::Series).await
}

pub(super) async fn study_instances(
    State(s): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path(study): Path<String>,
    Query(mut raw): Params,
) -> Result<Response, ApiError> {
    raw.insert("StudyInstanceUID".into(), study);
    query(s, headers, raw, Level::Instances).await
}

pub(super) async fn series_instances(
    State(s): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path((study, series)): Path<(String, String)>,
    Query(mut raw): Params,
) -> Result<Response, ApiError> {
    raw.insert("StudyInstanceUID".into(), study);
    raw.insert("SeriesInstanceUID".into(), series);
    query(s, headers, raw, Level::Instances).await
}

/// The one entry named by the path, if held.
async fn find(
    service: &Arc<HttpService>,
    study: String,
    series: String,
    instance: String,
) -> Result<Entry, ApiError> {
    let service = Arc::clone(service);
    let all = super::off_task(move || catalogue(&service)).await?;
    all.into_iter()
        .find(|e| e.study == study && e.series == series && e.sop_instance == instance)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "WADO_NO_INSTANCE",
                "no such instance here",
            )
        })
}

/// A boundary drawn afresh for each response, never found in its parts
/// (a value copied from a modality cannot end a part early).
fn fresh_boundary(files: &[Vec<u8>]) -> String {
    let mut seed = [0u8; 16];
    let mut attempt = 0u64;
    loop {
        attempt = attempt.wrapping_add(1);
        if getrandom::fill(&mut seed).is_err() {
            // No entropy: a digest of the content and the attempt still
            // gives a boundary the check below accepts or replaces.
            let mut h = Sha256::new();
            h.update(attempt.to_le_bytes());
            files.iter().for_each(|f| h.update(f));
            seed.copy_from_slice(&h.finalize()[..16]);
        }
        let boundary = format!("cxr-{}", cxr_fsio::hex(&seed));
        let marker = format!("--{boundary}");
        if !files
            .iter()
            .any(|f| f.windows(marker.len()).any(|w| w == marker.as_bytes()))
        {
            return boundary;
        }
    }
}

fn multipart_dicom(files: &[Vec<u8>]) -> Response {
    let boundary = fresh_boundary(files);
    let mut body = Vec::new();
    for f in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(f);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut response = body.into_response();
    let value = format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

/// WADO-RS of one instance: the appliance's own objects only.
pub(super) async fn retrieve_instance(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    match find(&service, study, series, instance).await?.held {
        Held::Written(path) => {
            let bytes = std::fs::read(&path)
                .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "WADO_NO_INSTANCE", e.to_string()))?;
            Ok(multipart_dicom(&[bytes]))
        }
        Held::Received(_) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "WADO_NOT_SERVED",
            "received images are not served whole; ask for …/rendered (fix: retrieve the original from the modality or PACS)",
        )),
    }
}

/// WADO-RS of a study: every object the appliance wrote for it.
pub(super) async fn retrieve_study(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path(study): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    let s = Arc::clone(&service);
    let files: Vec<Vec<u8>> = super::off_task(move || {
        catalogue(&s)
            .into_iter()
            .filter(|e| e.study == study)
            .filter_map(|e| match e.held {
                Held::Written(path) => std::fs::read(path).ok(),
                Held::Received(_) => None,
            })
            .collect()
    })
    .await?;
    if files.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "WADO_NO_STUDY",
            "no objects of this study here",
        ));
    }
    Ok(multipart_dicom(&files))
}

fn png(bytes: Vec<u8>) -> Response {
    let mut response = bytes.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    response
}

/// `…/rendered`: a received image as the model input saw it; a written
/// object as the study's result picture.
pub(super) async fn rendered_instance(
    State(service): State<Arc<HttpService>>,
    headers: HeaderMap,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    authorize(&service, &headers, &Method::GET, Role::Viewer)?;
    let entry = find(&service, study, series, instance).await?;
    let picture = match entry.held {
        Held::Received(id) => service.results.instance_preview(id),
        Held::Written(path) => service.results.picture_for(&path),
    };
    picture.map(png).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "WADO_NOT_RENDERED_YET",
            "this instance has not been processed yet (fix: retry once its study has a result)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_response_has_its_own_boundary_absent_from_its_parts() {
        let parts = vec![
            b"--cxr-\r\nContent-Type: text/html\r\n".to_vec(),
            vec![0u8; 64],
        ];
        let a = fresh_boundary(&parts);
        let b = fresh_boundary(&parts);
        assert_ne!(a, b);
        assert!(a.len() > 20);
        let response = multipart_dicom(&parts);
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default();
        assert!(content_type
            .starts_with("multipart/related; type=\"application/dicom\"; boundary=cxr-"));
    }

    #[test]
    fn wildcards_and_date_ranges_match_as_qido_says() {
        assert!(wildcard("doe*", "DOE^JOHN"));
        assert!(wildcard("*john", "Doe^John"));
        assert!(wildcard("d?e^*", "Doe^John"));
        assert!(!wildcard("smith*", "Doe^John"));
        assert!(wildcard("*", ""));
        assert!(date_matches("20040826", Some("20040826")));
        assert!(date_matches("20040101-20041231", Some("20040826")));
        assert!(date_matches("-20040826", Some("20040826")));
        assert!(!date_matches("20050101-", Some("20040826")));
        assert!(!date_matches("20040826", None));
    }

    #[test]
    fn unknown_query_keys_are_named_and_known_ones_read_by_tag_too() {
        let raw: BTreeMap<String, String> =
            [("0010,0020", "x"), ("00100020", "P1"), ("limit", "5")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let (keys, ignored) = parse_query(&raw);
        assert_eq!(keys.get("PatientID").map(String::as_str), Some("P1"));
        assert_eq!(ignored, vec!["0010,0020".to_owned()]);
    }
}
