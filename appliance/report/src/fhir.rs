//! The study result as FHIR R4 (4.0.1) resources: one DiagnosticReport
//! (status `preliminary`, category RAD, LOINC 36554-4 "XR Chest Single
//! view", the conclusion with any abstention, the study's identifiers), one
//! Observation per label (SNOMED CT where the finding has a code, the label
//! as text; Present, Absent or Indeterminate; the calibrated probability as
//! a component, never for an abstained study) and a Device for the
//! algorithm (bundle id, version and digest).
//!
//! One DiagnosticReport per study and appliance: its id and identifier
//! derive from the appliance's Device Observer UID and the Study Instance
//! UID only, so each new result version updates the same logical resource
//! (a new `meta.versionId`, the older ones in the server's `_history`)
//! instead of standing beside it. Each Observation is one per study and
//! label in the same way. A version that withdraws an earlier result (a
//! patient conflict found late) is `entered-in-error`.

use serde_json::{json, Value};

use crate::codes::{self, Code};
use crate::result::{Finding, Flag, StudyResult};
use crate::sr::SrDevice;
use crate::uid::derived_uid;

/// The FHIR system for DICOM UIDs (RFC 3001 OIDs).
pub const DICOM_UID_SYSTEM: &str = "urn:dicom:uid";
/// Our local code system (the `99CXR` concepts, and the probability).
pub const LOCAL_SYSTEM: &str = "urn:cxr-appliance:codes";
const WARNING: &str = "AI result, unverified: not for diagnosis without review.";

fn system(c: &Code) -> &'static str {
    match c.scheme {
        "SCT" => "http://snomed.info/sct",
        "DCM" => "http://dicom.nema.org/resources/ontology/DCM",
        "UCUM" => "http://unitsofmeasure.org",
        _ => LOCAL_SYSTEM,
    }
}

fn coding(c: &Code) -> Value {
    json!({ "system": system(c), "code": c.value, "display": c.meaning })
}

fn uid_identifier(uid: &str) -> Value {
    json!({ "system": DICOM_UID_SYSTEM, "value": format!("urn:oid:{uid}") })
}

/// The DiagnosticReport's id: one per study and appliance, whatever the
/// version.
pub fn report_id(result: &StudyResult, device: &SrDevice) -> String {
    derived_uid(
        "fhir-report",
        &[&device.device_uid, &result.study_instance_uid],
    )
}

/// The algorithm Device's id: one per model and appliance.
pub fn device_id(result: &StudyResult, device: &SrDevice) -> String {
    let model = result.model.as_ref().map_or("none", |m| m.digest.as_str());
    derived_uid("fhir-device", &[model, &device.serial_number])
}

fn observation_id(result: &StudyResult, device: &SrDevice, label: &str) -> String {
    derived_uid(
        "fhir-observation",
        &[&device.device_uid, &result.study_instance_uid, label],
    )
}

/// The report's identifier: the same for every version of a study's result.
pub fn result_identifier(result: &StudyResult, device: &SrDevice) -> Value {
    uid_identifier(&report_id(result, device))
}

/// `preliminary` until a reader signs off; `entered-in-error` for a version
/// that withdraws what an earlier one said (the study's instances turned
/// out to name more than one patient).
pub fn report_status(result: &StudyResult) -> &'static str {
    if result.flags.contains(&Flag::PatientConflict) && result.supersedes.is_some() {
        "entered-in-error"
    } else {
        "preliminary"
    }
}

fn meta(result: &StudyResult) -> Value {
    json!({ "versionId": result.version.to_string(), "lastUpdated": instant(result.completed_unix_ms) })
}

/// The patient, unless the study's instances name more than one.
fn subject(result: &StudyResult) -> Option<Value> {
    if result.flags.contains(&Flag::PatientConflict) {
        return None;
    }
    let h = &result.header;
    let id = h.patient_id.as_ref()?;
    let mut reference = json!({ "type": "Patient", "identifier": { "value": id } });
    if let Some(name) = &h.patient_name {
        let display = name.replace('^', " ");
        if !display.trim().is_empty() {
            reference["display"] = json!(display.trim());
        }
    }
    Some(reference)
}

/// `YYYYMMDD` as a FHIR date, if well formed. The study's time is left
/// out: DICOM gives it in the site's local time, with no offset a FHIR
/// dateTime could carry honestly.
fn date_time(date: Option<&String>, _time: Option<&String>) -> Option<String> {
    let d = date?;
    if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (month, day) = (d[4..6].parse::<u8>().ok()?, d[6..8].parse::<u8>().ok()?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..8]))
}

/// Unix milliseconds as a FHIR instant (UTC).
fn instant(unix_ms: u64) -> String {
    let (date, time) = crate::sr::date_time(unix_ms);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &date[..4],
        &date[4..6],
        &date[6..8],
        &time[..2],
        &time[2..4],
        &time[4..6]
    )
}

fn presence(f: Finding) -> Code {
    match f {
        Finding::Present => codes::PRESENT,
        Finding::Absent => codes::ABSENT,
        Finding::Indeterminate => codes::INDETERMINATE,
    }
}

/// The conclusion: the calls, or the abstention and its reason.
pub fn conclusion(result: &StudyResult) -> String {
    let flags: String = result
        .flags
        .iter()
        .map(|f| format!("Flag: {}. ", f.as_str()))
        .collect();
    if !result.outcome.carries_calls() {
        let why = result
            .reason
            .as_ref()
            .map_or("no reason recorded".to_owned(), |r| {
                format!("{}: {}", r.code, r.message)
            });
        return format!(
            "No AI decision ({}): {why}. No finding is reported. {flags}{WARNING}",
            result.outcome
        );
    }
    let named = |f: Finding| {
        let names: Vec<&str> = result
            .labels
            .iter()
            .filter(|l| l.finding == f)
            .map(|l| l.label.as_str())
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    format!(
        "{} ({}). Present: {}. Absent: {}. Indeterminate: {}. {flags}{WARNING}",
        result.findings_summary(),
        result.outcome,
        named(Finding::Present),
        named(Finding::Absent),
        named(Finding::Indeterminate)
    )
}

/// One Observation per label.
pub fn observations(result: &StudyResult, device: &SrDevice) -> Vec<Value> {
    let abstained = !result.outcome.carries_calls();
    let status = report_status(result);
    let device_ref = json!({ "reference": format!("Device/{}", device_id(result, device)) });
    result
        .labels
        .iter()
        .map(|l| {
            let mut code = json!({ "text": l.label });
            if let Some(c) = codes::finding_code(&l.label) {
                code["coding"] = json!([coding(&c)]);
            }
            let mut o = json!({
                "resourceType": "Observation",
                "id": observation_id(result, device, &l.label),
                "meta": meta(result),
                "identifier": [uid_identifier(&observation_id(result, device, &l.label))],
                "status": status,
                "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging", "display": "Imaging" }] }],
                "code": code,
                "issued": instant(result.completed_unix_ms),
                "valueCodeableConcept": { "coding": [coding(&presence(l.finding))], "text": presence(l.finding).meaning },
                "device": device_ref,
            });
            if let Some(s) = subject(result) {
                o["subject"] = s;
            }
            if let Some(t) = date_time(result.header.study_date.as_ref(), result.header.study_time.as_ref()) {
                o["effectiveDateTime"] = json!(t);
            }
            // An abstained study publishes no per-label probability anywhere.
            if let (false, Some(p)) = (abstained, l.probability.filter(|p| p.is_finite())) {
                o["component"] = json!([{
                    "code": { "coding": [{ "system": LOCAL_SYSTEM, "code": "calibrated-probability", "display": "Calibrated probability" }], "text": "calibrated probability" },
                    "valueQuantity": { "value": (f64::from(p) * 1e6).round() / 1e6, "unit": "1", "system": "http://unitsofmeasure.org", "code": "1" },
                }]);
            }
            o
        })
        .collect()
}

/// The DiagnosticReport of `result`.
pub fn diagnostic_report(result: &StudyResult, device: &SrDevice) -> Value {
    let h = &result.header;
    let mut identifiers = vec![result_identifier(result, device)];
    if let Some(a) = &h.accession_number {
        identifiers.push(json!({
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN", "display": "Accession ID" }] },
            "value": a,
        }));
    }
    let results: Vec<Value> = result
        .labels
        .iter()
        .map(
            |l| json!({ "reference": format!("Observation/{}", observation_id(result, device, &l.label)) }),
        )
        .collect();
    let mut report = json!({
        "resourceType": "DiagnosticReport",
        "id": report_id(result, device),
        "meta": meta(result),
        "identifier": identifiers,
        "status": report_status(result),
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology" }] }],
        "code": { "coding": [{ "system": "http://loinc.org", "code": "36554-4", "display": "XR Chest Single view" }], "text": "Chest X-ray, AI classification" },
        "issued": instant(result.completed_unix_ms),
        "imagingStudy": [{ "type": "ImagingStudy", "identifier": uid_identifier(&result.study_instance_uid) }],
        "result": results,
        "conclusion": conclusion(result),
    });
    if let Some(s) = subject(result) {
        report["subject"] = s;
    }
    if let Some(t) = date_time(h.study_date.as_ref(), h.study_time.as_ref()) {
        report["effectiveDateTime"] = json!(t);
    }
    report
}

/// The algorithm as a Device: the bundle's id, version and digest.
pub fn device_resource(result: &StudyResult, device: &SrDevice) -> Value {
    let (model_id, version, digest) = result.model.as_ref().map_or(("none", 0, "none"), |m| {
        (m.model_id.as_str(), m.version, m.digest.as_str())
    });
    json!({
        "resourceType": "Device",
        "id": device_id(result, device),
        "identifier": [
            uid_identifier(&device_id(result, device)),
            { "system": "urn:cxr-appliance:bundle-digest", "value": digest },
            { "system": "urn:cxr-appliance:device-serial", "value": device.serial_number },
        ],
        "status": "active",
        "manufacturer": device.manufacturer,
        "serialNumber": device.serial_number,
        "deviceName": [
            { "name": model_id, "type": "model-name" },
            { "name": device.model_name, "type": "user-friendly-name" },
        ],
        "version": [
            { "type": { "text": "model bundle version" }, "value": version.to_string() },
            { "type": { "text": "software" }, "value": device.software_version },
        ],
    })
}

/// Every resource of `result`: the report, its Observations, the Device.
pub fn resources(result: &StudyResult, device: &SrDevice) -> Vec<Value> {
    let mut all = vec![diagnostic_report(result, device)];
    all.extend(observations(result, device));
    all.push(device_resource(result, device));
    all
}

/// The Observations of `previous` whose labels `result` no longer has,
/// cancelled as of `result`'s version.
fn dropped_observations(
    result: &StudyResult,
    previous: Option<&StudyResult>,
    device: &SrDevice,
) -> Vec<Value> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    observations(previous, device)
        .into_iter()
        .filter(|o| {
            let label = o["code"]["text"].as_str().unwrap_or_default();
            !result.labels.iter().any(|l| l.label == label)
        })
        .map(|mut o| {
            if let Some(fields) = o.as_object_mut() {
                fields.remove("component");
                fields.remove("valueCodeableConcept");
            }
            o["status"] = json!("cancelled");
            o["meta"] = meta(result);
            o["note"] =
                json!([{ "text": format!("Not reported by result version {}.", result.version) }]);
            o
        })
        .collect()
}

/// The `urn:uuid:` a transaction entry goes by: our ids are `2.25.N`
/// UIDs, and N is a 128-bit number, which is what a UUID is.
fn entry_url(id: &str) -> String {
    let n = id
        .strip_prefix("2.25.")
        .and_then(|n| n.parse::<u128>().ok())
        .unwrap_or(0);
    let h = format!("{n:032x}");
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The result as one FHIR transaction Bundle, for a FHIR server destination.
/// Every entry is an update (`PUT Kind/id`) of a resource whose id we
/// derive, so a retry after a lost answer creates nothing twice, and a new
/// version of the study's result becomes a new version of the same
/// resources, with the older ones kept in the server's history.
///
/// `previous` is the version this one replaces: an Observation of a label
/// it had and this one has not (another model, or no model) is updated to
/// `cancelled`, without a value, so no stale call stays current.
pub fn transaction_bundle(
    result: &StudyResult,
    previous: Option<&StudyResult>,
    device: &SrDevice,
) -> Value {
    let mut all = resources(result, device);
    all.extend(dropped_observations(result, previous, device));
    let entries: Vec<Value> = all
        .into_iter()
        .map(|r| {
            let url = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            );
            json!({
                "fullUrl": entry_url(r["id"].as_str().unwrap_or_default()),
                "resource": r,
                "request": { "method": "PUT", "url": url },
            })
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{
        LabelResult, ModelRef, Reason, StudyHeader, StudyOutcome, Superseded, RESULT_SCHEMA,
    };

    fn device() -> SrDevice {
        SrDevice {
            manufacturer: "m".into(),
            model_name: "n".into(),
            serial_number: "S1".into(),
            software_version: "v".into(),
            device_uid: "1.2".into(),
            implementation_class_uid: "1.2".into(),
            implementation_version_name: "x".into(),
        }
    }

    fn result(outcome: StudyOutcome) -> StudyResult {
        StudyResult {
            schema: RESULT_SCHEMA.into(),
            study_instance_uid: "1.2.3".into(),
            header: StudyHeader {
                patient_id: Some("P1".into()),
                study_date: Some("20040826".into()),
                study_time: Some("120000".into()),
                ..StudyHeader::default()
            },
            version: 1,
            previous: None,
            completed_unix_ms: 1_709_214_307_000,
            outcome,
            flags: Vec::new(),
            supersedes: None,
            sr: None,
            labels: vec![LabelResult {
                label: "Effusion".into(),
                finding: Finding::Present,
                probability: Some(0.75),
                threshold: Some(0.5),
            }],
            reason: (outcome != StudyOutcome::Decision).then(|| Reason {
                code: "ABSTAIN_OOD".into(),
                message: "unlike the training data".into(),
            }),
            decided_by: Vec::new(),
            instances: Vec::new(),
            model: Some(ModelRef {
                model_id: "demo".into(),
                version: 3,
                digest: "ab".into(),
            }),
        }
    }

    #[test]
    fn a_decision_carries_probabilities_and_an_abstention_none() {
        let decided = observations(&result(StudyOutcome::Decision), &device());
        assert_eq!(decided[0]["component"][0]["valueQuantity"]["value"], 0.75);
        assert_eq!(decided[0]["code"]["coding"][0]["code"], "60046008");
        let abstained = result(StudyOutcome::Abstention);
        let text = serde_json::to_string(&resources(&abstained, &device())).expect("JSON");
        assert!(
            !text.contains("0.75") && !text.contains("valueQuantity"),
            "{text}"
        );
        assert!(conclusion(&abstained).contains("ABSTAIN_OOD"));
    }

    #[test]
    fn the_same_result_gives_the_same_ids_and_dates_are_fhir_dates() {
        let a = diagnostic_report(&result(StudyOutcome::Decision), &device());
        assert_eq!(
            a,
            diagnostic_report(&result(StudyOutcome::Decision), &device())
        );
        assert_eq!(a["effectiveDateTime"], "2004-08-26");
        assert_eq!(a["issued"], "2024-02-29T13:45:07Z");
        assert_eq!(a["status"], "preliminary");
        assert_eq!(date_time(Some(&"2004".into()), None), None);
        assert_eq!(date_time(Some(&"20041399".into()), None), None);
    }

    #[test]
    fn every_version_updates_the_same_report_and_a_withdrawal_is_entered_in_error() {
        let v1 = result(StudyOutcome::Decision);
        let bundle = transaction_bundle(&v1, None, &device());
        assert_eq!(
            bundle,
            transaction_bundle(&v1, None, &device()),
            "retries send the same"
        );
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        assert_eq!(entries.len(), resources(&v1, &device()).len());
        for e in &entries {
            let r = &e["resource"];
            let url = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            );
            assert_eq!(e["request"]["method"], "PUT");
            assert_eq!(e["request"]["url"], url.as_str());
            assert!(e["fullUrl"]
                .as_str()
                .is_some_and(|u| u.starts_with("urn:uuid:") && u.len() == 45));
        }
        let mut v2 = v1.clone();
        v2.version = 2;
        v2.outcome = StudyOutcome::Abstention;
        v2.flags = vec![Flag::PatientConflict];
        v2.supersedes = Some(Superseded {
            version: 1,
            sr: crate::result::SrUids {
                series_instance_uid: "2.25.1".into(),
                sop_instance_uid: "2.25.2".into(),
            },
        });
        let (r1, r2) = (
            diagnostic_report(&v1, &device()),
            diagnostic_report(&v2, &device()),
        );
        assert_eq!(r1["id"], r2["id"], "one report per study");
        assert_eq!(r1["identifier"][0], r2["identifier"][0]);
        assert_eq!(
            (
                r1["meta"]["versionId"].as_str(),
                r2["meta"]["versionId"].as_str()
            ),
            (Some("1"), Some("2"))
        );
        assert_eq!(r1["status"], "preliminary");
        assert_eq!(r2["status"], "entered-in-error");
        assert!(
            r2.get("subject").is_none(),
            "a conflicted study names no patient"
        );
        assert!(r2["conclusion"]
            .as_str()
            .unwrap_or_default()
            .contains("patient_conflict"));
        // A version without the label cancels its Observation.
        let mut v3 = v2.clone();
        v3.version = 3;
        v3.labels.clear();
        let b3 = transaction_bundle(&v3, Some(&v2), &device());
        let cancelled: Vec<&Value> = b3["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["resource"])
            .filter(|r| r["resourceType"] == "Observation")
            .collect();
        assert_eq!(cancelled.len(), 1);
        assert_eq!(cancelled[0]["status"], "cancelled");
        assert!(
            cancelled[0].get("valueCodeableConcept").is_none()
                && cancelled[0].get("component").is_none()
        );
        assert_eq!(cancelled[0]["id"], observations(&v1, &device())[0]["id"]);
        let mut other = device();
        other.device_uid = "2.25.77".into();
        assert_ne!(
            r1["id"],
            diagnostic_report(&v1, &other)["id"],
            "another appliance, another report"
        );
    }
}
