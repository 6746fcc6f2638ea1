//! The install-time (and start-time) self-test: every golden input of the
//! bundle through this board's engine, compared with the reference outputs
//! recorded when the bundle was locked.

use cxr_bundle::{rel_l2, GoldenSet, GoldenTolerance};

use crate::{Engine, EngineError};

#[derive(Debug, Clone, PartialEq)]
pub struct SelfTestReport {
    pub engine: &'static str,
    pub cases: usize,
    /// The production batch the cases were also run at (the TTA views of
    /// one study), besides batch 1.
    pub batch: usize,
    /// Worst relative L2 over the cases.
    pub worst_logits: f32,
    pub worst_features: f32,
    pub tolerance: f32,
}

impl SelfTestReport {
    pub fn summary(&self) -> String {
        format!(
            "self-test passed on {}: {} golden case(s) at batch 1 and {}, worst rel L2 logits {:.2e}, features {:.2e} (tolerance {:.1e})",
            self.engine, self.cases, self.batch, self.worst_logits, self.worst_features, self.tolerance
        )
    }
}

/// Run every golden case at batch 1, then all of them again in one batch of
/// `production_batch` images (the cases repeated in turn) through
/// `infer_chunked`, the call a study makes: a kernel or layout fault that
/// shows only at the production batch size fails here, not on a patient.
/// Fails on the first output outside the tolerance.
pub fn self_test(
    engine: &dyn Engine,
    golden: &GoldenSet,
    tolerance: &GoldenTolerance,
    production_batch: usize,
) -> Result<SelfTestReport, EngineError> {
    let tol = if engine.reduced_precision() {
        tolerance.reduced_rel_l2
    } else {
        tolerance.f32_rel_l2
    };
    let mut report = SelfTestReport {
        engine: engine.name(),
        cases: 0,
        batch: production_batch.max(1),
        worst_logits: 0.0,
        worst_features: 0.0,
        tolerance: tol,
    };
    let mut check = |case: &cxr_bundle::GoldenCase, logits: &[f32], features: &[f32], at: &str| {
        let l = rel_l2(logits, &case.logits);
        let f = rel_l2(features, &case.features);
        // NaN compares false: `!(x <= tol)` refuses it. So does a short output.
        if !(l <= tol && f <= tol)
            || logits.len() != case.logits.len()
            || features.len() != case.features.len()
        {
            return Err(EngineError::SelfTest {
                engine: engine.name(),
                problem: format!(
                    "golden case `{}` {at}: rel L2 logits {l:.3e}, features {f:.3e}, tolerance {tol:.1e}",
                    case.name
                ),
            });
        }
        report.worst_logits = report.worst_logits.max(l);
        report.worst_features = report.worst_features.max(f);
        Ok(())
    };
    for case in &golden.cases {
        let out = engine.infer(&case.image, 1)?;
        check(case, &out.logits, &out.features, "at batch 1")?;
    }
    let batch = production_batch.max(1);
    if batch > 1 && !golden.cases.is_empty() {
        let picks: Vec<&cxr_bundle::GoldenCase> = (0..batch)
            .map(|i| &golden.cases[i % golden.cases.len()])
            .collect();
        let images: Vec<f32> = picks.iter().flat_map(|c| c.image.iter().copied()).collect();
        let out = engine.infer_chunked(&images, batch)?;
        let (nl, nf) = (out.logits.len() / batch, out.features.len() / batch);
        for (i, case) in picks.iter().enumerate() {
            let at = format!("at position {i} of a batch of {batch}");
            check(
                case,
                out.logits.get(i * nl..(i + 1) * nl).unwrap_or(&[]),
                out.features.get(i * nf..(i + 1) * nf).unwrap_or(&[]),
                &at,
            )?;
        }
    }
    report.cases = golden.cases.len();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineOutput, EngineShape};
    use cxr_bundle::GoldenCase;

    /// Two-pixel images; logit = sum, feature = first pixel. With `batch_bug`
    /// it answers batches of more than one image shifted by one row, a
    /// fault that batch 1 cannot show.
    #[derive(Debug)]
    struct Fake {
        batch_bug: bool,
    }

    impl Engine for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn precision(&self) -> &'static str {
            "f32"
        }
        fn shape(&self) -> EngineShape {
            EngineShape {
                channels: 1,
                image_size: 1,
                labels: 1,
                features: 1,
            }
        }
        fn infer(&self, images: &[f32], batch: usize) -> Result<EngineOutput, EngineError> {
            let mut rows: Vec<&[f32]> = images.chunks(2).collect();
            if self.batch_bug && batch > 1 {
                rows.rotate_left(1);
            }
            Ok(EngineOutput {
                batch,
                logits: rows.iter().map(|r| r[0] + r[1]).collect(),
                features: rows.iter().map(|r| r[0]).collect(),
            })
        }
    }

    fn golden() -> GoldenSet {
        let case = |name: &str, a: f32, b: f32| GoldenCase {
            name: name.into(),
            image: vec![a, b],
            logits: vec![a + b],
            features: vec![a],
        };
        GoldenSet {
            cases: vec![case("one", 1.0, 2.0), case("two", 5.0, -1.0)],
        }
    }

    #[test]
    fn a_fault_that_shows_only_at_the_production_batch_fails_the_self_test() {
        let tol = GoldenTolerance::default();
        let good = self_test(&Fake { batch_bug: false }, &golden(), &tol, 5).unwrap();
        assert_eq!((good.cases, good.batch), (2, 5));
        let bad = Fake { batch_bug: true };
        assert!(self_test(&bad, &golden(), &tol, 1).is_ok());
        let err = self_test(&bad, &golden(), &tol, 5).unwrap_err();
        assert!(err.to_string().contains("batch of 5"), "{err}");
    }
}
