//! What the result picture shows besides the study result, read from the
//! deciding instance's study-path line (the line `classify` prints) and its
//! stored model-input preview.

use cxr_report::PictureFacts;
use serde_json::Value;

use crate::results::{InstanceResult, StudyResult};

fn number(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// One line per gate, as the study path reported it.
fn gate_lines(line: &Value) -> Vec<String> {
    let decision = &line["decision"];
    let gates = &decision["gates"];
    let mut lines = Vec::new();
    if let Some(class) = line["input_class"].as_str() {
        let verdict = gates["input"].as_str().unwrap_or("passed");
        lines.push(format!("input: {class} ({verdict})"));
    }
    if let Some(class) = line["content"]["class"].as_str() {
        let looks = line["content"]["looks_like"].as_str().unwrap_or_default();
        lines.push(format!("content: {class} ({looks})"));
    }
    let ood = &decision["ood"];
    if let (Some(score), Some(cut)) = (number(&ood["combined"]), number(&ood["max_combined"])) {
        let verdict = if gates["ood"] == true {
            "tripped"
        } else {
            "passed"
        };
        lines.push(format!(
            "out-of-distribution: {score:.2} / cut-off {cut:.2} ({verdict})"
        ));
    }
    if let Some(missed) = gates["deadline"].as_bool() {
        lines.push(format!(
            "deadline: {}",
            if missed { "missed" } else { "met" }
        ));
    }
    if let Some(code) = line["error"]["code"].as_str() {
        lines.push(format!("refused: {code}"));
    }
    lines
}

/// The facts for `result`'s picture: the deciding instance (the first
/// arrival when none decided) gives the image, gates and engine.
pub fn picture_facts(
    result: &StudyResult,
    instances: &[&InstanceResult],
    preview: impl Fn(u64) -> Option<Vec<u8>>,
) -> PictureFacts {
    let chosen = result
        .decided_by
        .first()
        .and_then(|id| instances.iter().find(|i| i.instance == *id))
        .or_else(|| instances.first());
    let Some(chosen) = chosen else {
        return PictureFacts::default();
    };
    let line = &chosen.detail;
    let engine = line["engine"]["name"].as_str().map(|name| {
        let precision = line["engine"]["precision"].as_str().unwrap_or("?");
        let why = line["engine"]["reasons"][0].as_str().unwrap_or_default();
        format!("{name} {precision}: {why}")
    });
    PictureFacts {
        image: preview(chosen.instance).and_then(|png| cxr_report::picture::grey_rows(&png)),
        gates: gate_lines(line),
        engine,
        // The engine ran when inference was timed (an OOD or deadline
        // abstention comes after it; a gate's, before).
        model_ran: line["timings_ms"]["inference_per_view"]
            .as_f64()
            .is_some_and(|t| t > 0.0),
    }
}
