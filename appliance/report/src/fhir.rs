//! The study result as FHIR R4 (4.0.1) resources: one DiagnosticReport
//! (status `preliminary`, category RAD, LOINC 36554-4 "XR Chest Single
//! view", the conclusion with any abstention, the study's identifiers), one
//! Observation per label (SNOMED CT where the finding has a code, the label
//! as text; Present, Absent or Indeterminate; the calibrated probability as
//! a component, never for an abstained study) and a Device for the
//! algorithm (bundle id, version and digest).
//!
//! Ids are derived like the SR's UIDs, so the same result always gives the
//! same resources; the report's identifier is what a FHIR server's
//! conditional create (`If-None-Exist`) matches on.

use serde_json::{json, Value};

use crate::codes::{self, Code};
use crate::result::{Finding, StudyResult};
use crate::sr::{sr_uids, SrDevice};
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

/// The parts every id of this result derives from.
fn parts(result: &StudyResult) -> Vec<String> {
    let model = result
        .model
        .as_ref()
        .map_or("none".to_owned(), |m| m.digest.clone());
    vec![
        result.study_instance_uid.clone(),
        result.version.to_string(),
        model,
    ]
}

fn id(kind: &str, result: &StudyResult, extra: &str) -> String {
    let mut p = parts(result);
    p.push(extra.to_owned());
    let refs: Vec<&str> = p.iter().map(String::as_str).collect();
    derived_uid(kind, &refs)
}

/// The DiagnosticReport's id.
pub fn report_id(result: &StudyResult) -> String {
    id("fhir-report", result, "")
}

/// The algorithm Device's id: one per model and appliance.
pub fn device_id(result: &StudyResult, device: &SrDevice) -> String {
    let model = result.model.as_ref().map_or("none", |m| m.digest.as_str());
    derived_uid("fhir-device", &[model, &device.serial_number])
}

fn observation_id(result: &StudyResult, label: &str) -> String {
    id("fhir-observation", result, label)
}

/// The identifier a FHIR server's conditional create matches: the result
/// SR's instance UID (one per result version).
pub fn result_identifier(result: &StudyResult) -> Value {
    uid_identifier(&sr_uids(result).1)
}

fn subject(result: &StudyResult) -> Option<Value> {
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
    if result.outcome != "decision" {
        let why = result
            .reason
            .as_ref()
            .map_or("no reason recorded".to_owned(), |r| {
                format!("{}: {}", r.code, r.message)
            });
        return format!(
            "No AI decision ({}): {why}. No finding is reported. {WARNING}",
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
        "Present: {}. Absent: {}. Indeterminate: {}. {WARNING}",
        named(Finding::Present),
        named(Finding::Absent),
        named(Finding::Indeterminate)
    )
}

/// One Observation per label.
pub fn observations(result: &StudyResult, device: &SrDevice) -> Vec<Value> {
    let abstained = result.outcome != "decision";
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
                "id": observation_id(result, &l.label),
                "identifier": [uid_identifier(&observation_id(result, &l.label))],
                "status": "preliminary",
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
pub fn diagnostic_report(result: &StudyResult) -> Value {
    let h = &result.header;
    let mut identifiers = vec![result_identifier(result)];
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
            |l| json!({ "reference": format!("Observation/{}", observation_id(result, &l.label)) }),
        )
        .collect();
    let mut report = json!({
        "resourceType": "DiagnosticReport",
        "id": report_id(result),
        "identifier": identifiers,
        "status": "preliminary",
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
    let mut all = vec![diagnostic_report(result)];
    all.extend(observations(result, device));
    all.push(device_resource(result, device));
    all
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
/// Every entry is a conditional create (`ifNoneExist`, the transaction form
/// of `If-None-Exist`) on the resource's first identifier, so a retry after
/// a lost answer creates nothing twice; the report's is the result
/// identifier, the others' their derived UIDs.
/// References between the entries go by their `urn:uuid:` full URLs, which
/// the server replaces with the ids it assigns.
pub fn transaction_bundle(result: &StudyResult, device: &SrDevice) -> Value {
    let all = resources(result, device);
    let urls: Vec<(String, String)> = all
        .iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap_or_default();
            let kind = r["resourceType"].as_str().unwrap_or_default();
            (format!("{kind}/{id}"), entry_url(id))
        })
        .collect();
    let entries: Vec<Value> = all
        .into_iter()
        .map(|mut r| {
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            let kind = r["resourceType"].as_str().unwrap_or_default().to_owned();
            if let Some(o) = r.as_object_mut() {
                o.remove("id");
            }
            rewrite_references(&mut r, &urls);
            let own = &r["identifier"][0];
            let condition = format!(
                "identifier={}|{}",
                own["system"].as_str().unwrap_or_default(),
                own["value"].as_str().unwrap_or_default()
            );
            json!({
                "fullUrl": entry_url(&id),
                "resource": r,
                "request": {
                    "method": "POST",
                    "url": kind,
                    "ifNoneExist": condition,
                },
            })
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

fn rewrite_references(value: &mut Value, urls: &[(String, String)]) {
    match value {
        Value::Object(o) => {
            for (key, v) in o.iter_mut() {
                let local = urls.iter().find(|(r, _)| Some(r.as_str()) == v.as_str());
                match (key.as_str(), local) {
                    ("reference", Some((_, url))) => *v = json!(url),
                    _ => rewrite_references(v, urls),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| rewrite_references(v, urls)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{LabelResult, ModelRef, Reason, StudyHeader, RESULT_SCHEMA};

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

    fn result(outcome: &str) -> StudyResult {
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
            outcome: outcome.into(),
            labels: vec![LabelResult {
                label: "Effusion".into(),
                finding: Finding::Present,
                probability: Some(0.75),
            }],
            reason: (outcome != "decision").then(|| Reason {
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
        let decided = observations(&result("decision"), &device());
        assert_eq!(decided[0]["component"][0]["valueQuantity"]["value"], 0.75);
        assert_eq!(decided[0]["code"]["coding"][0]["code"], "60046008");
        let abstained = result("abstention");
        let text = serde_json::to_string(&resources(&abstained, &device())).expect("JSON");
        assert!(
            !text.contains("0.75") && !text.contains("valueQuantity"),
            "{text}"
        );
        assert!(conclusion(&abstained).contains("ABSTAIN_OOD"));
    }

    #[test]
    fn the_same_result_gives_the_same_ids_and_dates_are_fhir_dates() {
        let a = diagnostic_report(&result("decision"));
        assert_eq!(a, diagnostic_report(&result("decision")));
        assert_eq!(a["effectiveDateTime"], "2004-08-26");
        assert_eq!(a["issued"], "2024-02-29T13:45:07Z");
        assert_eq!(a["status"], "preliminary");
        assert_eq!(date_time(Some(&"2004".into()), None), None);
        assert_eq!(date_time(Some(&"20041399".into()), None), None);
    }

    #[test]
    fn the_transaction_creates_each_resource_once_and_links_them_by_full_url() {
        let r = result("decision");
        let bundle = transaction_bundle(&r, &device());
        assert_eq!(
            bundle,
            transaction_bundle(&r, &device()),
            "retries send the same"
        );
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        assert_eq!(entries.len(), resources(&r, &device()).len());
        let urls: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["fullUrl"].as_str())
            .collect();
        let text = bundle.to_string();
        for e in &entries {
            let kind = e["resource"]["resourceType"].as_str().unwrap_or_default();
            assert_eq!(e["request"]["method"], "POST");
            assert_eq!(e["request"]["url"], kind);
            assert!(e["resource"].get("id").is_none(), "a create carries no id");
            // The condition names the resource's own identifier.
            let own = &e["resource"]["identifier"][0];
            let want = format!(
                "identifier={}|{}",
                own["system"].as_str().unwrap_or_default(),
                own["value"].as_str().unwrap_or_default()
            );
            assert_eq!(e["request"]["ifNoneExist"], want.as_str());
            let url = e["fullUrl"].as_str().unwrap_or_default();
            assert!(url.starts_with("urn:uuid:") && url.len() == 45, "{url}");
        }
        let report = &entries[0]["resource"];
        assert_eq!(report["identifier"][0], result_identifier(&r));
        // Every reference is to an entry of the bundle: none is left local.
        assert!(!text.contains("\"Observation/") && !text.contains("\"Device/"));
        for reference in report["result"].as_array().into_iter().flatten() {
            assert!(urls.contains(&reference["reference"].as_str().unwrap_or_default()));
        }
        let device_url = entries.last().and_then(|e| e["fullUrl"].as_str());
        assert_eq!(
            entries[1]["resource"]["device"]["reference"].as_str(),
            device_url
        );
    }
}
