//! The install-time (and start-time) self-test: every golden input of the
//! bundle through this board's engine, compared with the reference outputs
//! recorded when the bundle was locked.

use cxr_bundle::{rel_l2, GoldenSet, GoldenTolerance};

use crate::{Engine, EngineError};

#[derive(Debug, Clone, PartialEq)]
pub struct SelfTestReport {
    pub engine: &'static str,
    pub cases: usize,
    /// Worst relative L2 over the cases.
    pub worst_logits: f32,
    pub worst_features: f32,
    pub tolerance: f32,
}

impl SelfTestReport {
    pub fn summary(&self) -> String {
        format!(
            "self-test passed on {}: {} golden case(s), worst rel L2 logits {:.2e}, features {:.2e} (tolerance {:.1e})",
            self.engine, self.cases, self.worst_logits, self.worst_features, self.tolerance
        )
    }
}

/// Run every golden case; fail on the first output outside the tolerance.
pub fn self_test(
    engine: &dyn Engine,
    golden: &GoldenSet,
    tolerance: &GoldenTolerance,
) -> Result<SelfTestReport, EngineError> {
    let tol = if engine.reduced_precision() {
        tolerance.reduced_rel_l2
    } else {
        tolerance.f32_rel_l2
    };
    let mut report = SelfTestReport {
        engine: engine.name(),
        cases: 0,
        worst_logits: 0.0,
        worst_features: 0.0,
        tolerance: tol,
    };
    for case in &golden.cases {
        let out = engine.infer(&case.image, 1)?;
        let l = rel_l2(&out.logits, &case.logits);
        let f = rel_l2(&out.features, &case.features);
        // NaN compares false: `!(x <= tol)` refuses it.
        if !(l <= tol && f <= tol) {
            return Err(EngineError::SelfTest {
                engine: engine.name(),
                problem: format!(
                    "golden case `{}`: rel L2 logits {l:.3e}, features {f:.3e}, tolerance {tol:.1e}",
                    case.name
                ),
            });
        }
        report.cases += 1;
        report.worst_logits = report.worst_logits.max(l);
        report.worst_features = report.worst_features.max(f);
    }
    Ok(report)
}
