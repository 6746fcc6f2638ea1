use core::fmt;

/// Why the decision core could not produce a decision. These are wiring or
/// bundle faults (the engine and the bundle disagree), not properties of the
/// study: a study that cannot be trusted gets an `Abstention`, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreError {
    /// Logits do not have the shape `[views, labels]`.
    Shape {
        expected_labels: usize,
        got_values: usize,
        views: usize,
    },
    /// A logit is NaN or infinite.
    NonFinite,
    /// The pooled feature, the mean and the Cholesky factor disagree in size.
    FeatureShape {
        features: usize,
        mean: usize,
        factor: usize,
    },
    /// The Cholesky factor has a non-positive diagonal entry.
    SingularCovariance { index: usize },
    /// The parameters have a different number of labels than the logits.
    ParamsMismatch {
        labels: usize,
        temperatures: usize,
        thresholds: usize,
    },
    /// A temperature is not a positive finite number.
    BadTemperature { label: usize },
    /// A decision parameter is NaN, infinite or out of its range (`index`:
    /// the label, for per-label parameters). Such a parameter could switch
    /// its gate off, so the study is refused instead.
    InvalidParameter {
        name: &'static str,
        index: Option<usize>,
    },
    /// The output buffer is too small for the encoded record.
    Encode,
}

impl CoreError {
    /// A stable, machine-readable code.
    pub const fn code(&self) -> &'static str {
        match self {
            CoreError::Shape { .. } => "CORE_LOGIT_SHAPE",
            CoreError::NonFinite => "CORE_NON_FINITE_LOGIT",
            CoreError::FeatureShape { .. } => "CORE_FEATURE_SHAPE",
            CoreError::SingularCovariance { .. } => "CORE_SINGULAR_COVARIANCE",
            CoreError::ParamsMismatch { .. } => "CORE_PARAMS_MISMATCH",
            CoreError::BadTemperature { .. } => "CORE_BAD_TEMPERATURE",
            CoreError::InvalidParameter { .. } => "CORE_INVALID_PARAMETER",
            CoreError::Encode => "CORE_ENCODE",
        }
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Shape { expected_labels, got_values, views } => write!(
                f,
                "logits: {got_values} values for {views} views of {expected_labels} labels; fix: the engine's output does not match the bundle's label list"
            ),
            CoreError::NonFinite => write!(f, "a logit is not finite; fix: run the install self-test, the engine is producing invalid output"),
            CoreError::FeatureShape { features, mean, factor } => write!(
                f,
                "pooled feature has {features} values, mean {mean}, Cholesky factor {factor}; fix: the bundle's OOD statistics do not match the model"
            ),
            CoreError::SingularCovariance { index } => write!(
                f,
                "Cholesky factor diagonal {index} is not positive; fix: refit the OOD statistics with shrinkage"
            ),
            CoreError::ParamsMismatch { labels, temperatures, thresholds } => write!(
                f,
                "{labels} labels but {temperatures} temperatures and {thresholds} thresholds; fix: the bundle's decision parameters are inconsistent"
            ),
            CoreError::BadTemperature { label } => write!(f, "temperature of label {label} is not positive; fix: refit calibration"),
            CoreError::InvalidParameter { name, index: Some(i) } => write!(
                f,
                "decision parameter `{name}` of label {i} is not finite or out of range; fix: the bundle's parameters are corrupt, re-lock it"
            ),
            CoreError::InvalidParameter { name, index: None } => write!(
                f,
                "decision parameter `{name}` is not finite or out of range; fix: the bundle's parameters are corrupt, re-lock it"
            ),
            CoreError::Encode => write!(f, "record does not fit the buffer; fix: pass a larger buffer"),
        }
    }
}

impl core::error::Error for CoreError {}
