//! Counters and latency histograms of the service, rendered in the
//! Prometheus text format (version 0.0.4) for `GET /metrics`: instances and
//! studies by outcome, each study-path stage's latency, STOW-RS instances
//! stored and failed, and the gauges the caller reads at render time (queue
//! depth, associations, spool and disk, outbox). Counters start at zero
//! with the process, as Prometheus expects.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The study path's stages, as the study line's `timings_ms` names them.
pub const STAGES: [&str; 5] = [
    "decode",
    "content_gate",
    "preprocess",
    "inference_per_view",
    "decision",
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[derive(Debug, Default)]
struct Inner {
    instances: BTreeMap<String, u64>,
    studies: BTreeMap<String, u64>,
    stages: BTreeMap<&'static str, Histogram>,
    stow: BTreeMap<&'static str, u64>,
}

/// What is read fresh at each scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    pub queued_instances: u64,
    pub queued_studies: u64,
    pub open_associations: u64,
    pub spool_used_bytes: u64,
    pub spool_headroom_bytes: u64,
    pub disk_free_bytes: Option<u64>,
    pub outbox_pending: u64,
    pub outbox_dead: u64,
}

/// The service's counters; shared by the worker and the HTTP side.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// A label value with `\`, `"` and line ends escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An instance was processed: its outcome, and its stage timings from
    /// the study line (`timings_ms`).
    pub fn instance_processed(&self, outcome: &str, timings_ms: &serde_json::Value) {
        let mut inner = self.inner();
        *inner.instances.entry(outcome.to_owned()).or_default() += 1;
        for stage in STAGES {
            if let Some(ms) = timings_ms[stage].as_f64() {
                inner.stages.entry(stage).or_default().observe(ms / 1e3);
            }
        }
    }

    /// A study version was published with `outcome`.
    pub fn study_published(&self, outcome: &str) {
        *self.inner().studies.entry(outcome.to_owned()).or_default() += 1;
    }

    /// A STOW-RS request stored `stored` instances and failed `failed`.
    pub fn stow(&self, stored: usize, failed: usize) {
        let mut inner = self.inner();
        *inner.stow.entry("stored").or_default() += stored as u64;
        *inner.stow.entry("failed").or_default() += failed as u64;
    }

    /// The text exposition of every metric.
    pub fn render(&self, g: &Gauges) -> String {
        let inner = self.inner();
        let mut out = String::new();
        let owned =
            |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>();
        let stow: Vec<(String, u64)> = inner
            .stow
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        write_counter(
            &mut out,
            (
                "cxr_instances_processed_total",
                "Instances processed, by outcome.",
                "outcome",
            ),
            &owned(&inner.instances),
        );
        write_counter(
            &mut out,
            (
                "cxr_studies_published_total",
                "Study result versions published, by outcome.",
                "outcome",
            ),
            &owned(&inner.studies),
        );
        write_counter(
            &mut out,
            (
                "cxr_stow_instances_total",
                "STOW-RS instances, by result.",
                "result",
            ),
            &stow,
        );
        write_histograms(&mut out, &inner.stages);
        write_gauges(&mut out, g);
        out
    }
}

/// One counter family: (name, help, label) and its values by label value.
fn write_counter(
    out: &mut String,
    (name, help, label): (&str, &str, &str),
    values: &[(String, u64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (v, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(v));
    }
}

fn write_histograms(out: &mut String, stages: &BTreeMap<&'static str, Histogram>) {
    let name = "cxr_stage_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Study path stage latency (inference per view).\n# TYPE {name} histogram"
    );
    for (stage, h) in stages {
        for (bound, n) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "{name}_bucket{{stage=\"{stage}\",le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "{name}_sum{{stage=\"{stage}\"}} {}\n{name}_count{{stage=\"{stage}\"}} {}",
            h.sum, h.count
        );
    }
}

fn write_gauges(out: &mut String, g: &Gauges) {
    let gauges: [(&str, &str, Option<u64>); 8] = [
        (
            "cxr_queue_instances",
            "Instances waiting for the engine.",
            Some(g.queued_instances),
        ),
        (
            "cxr_queue_studies",
            "Studies waiting to complete or be processed.",
            Some(g.queued_studies),
        ),
        (
            "cxr_dicom_associations_open",
            "Open DICOM associations.",
            Some(g.open_associations),
        ),
        (
            "cxr_spool_used_bytes",
            "Bytes held in the spool.",
            Some(g.spool_used_bytes),
        ),
        (
            "cxr_spool_headroom_bytes",
            "Bytes the spool may still take before its quota.",
            Some(g.spool_headroom_bytes),
        ),
        (
            "cxr_disk_free_bytes",
            "Free bytes on the spool's file system.",
            g.disk_free_bytes,
        ),
        (
            "cxr_outbox_pending",
            "Outbox entries waiting for delivery.",
            Some(g.outbox_pending),
        ),
        (
            "cxr_outbox_dead",
            "Outbox entries given up on (dead letters).",
            Some(g.outbox_dead),
        ),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_gauges_render_as_prometheus_text() {
        let m = Metrics::default();
        m.instance_processed(
            "decision",
            &serde_json::json!({ "decode": 7.0, "inference_per_view": 120.0 }),
        );
        m.instance_processed("abstention", &serde_json::json!({}));
        m.study_published("decision");
        m.stow(2, 1);
        let text = m.render(&Gauges {
            queued_instances: 3,
            ..Gauges::default()
        });
        assert!(
            text.contains("cxr_instances_processed_total{outcome=\"decision\"} 1"),
            "{text}"
        );
        assert!(text.contains("cxr_stow_instances_total{result=\"failed\"} 1"));
        // 7 ms falls in the 10 ms bucket and every larger one, not the 5 ms one.
        assert!(text.contains("cxr_stage_seconds_bucket{stage=\"decode\",le=\"0.005\"} 0"));
        assert!(text.contains("cxr_stage_seconds_bucket{stage=\"decode\",le=\"0.01\"} 1"));
        assert!(text.contains("cxr_stage_seconds_count{stage=\"inference_per_view\"} 1"));
        assert!(text.contains("cxr_queue_instances 3"));
        assert!(
            !text.contains("cxr_disk_free_bytes"),
            "an unknown gauge is left out"
        );
    }
}
