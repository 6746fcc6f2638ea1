//! Numerically careful scalar functions, `no_std` through `libm`.

/// `log(1 + exp(z))` without overflow for large `z` or loss for very negative `z`.
pub fn softplus(z: f32) -> f32 {
    if z > 20.0 {
        z + libm::log1pf(libm::expf(-z))
    } else {
        libm::log1pf(libm::expf(z))
    }
}

/// `v >= min`, false when either is NaN: a gate written with it fails closed.
pub fn at_least(v: f32, min: f32) -> bool {
    matches!(
        v.partial_cmp(&min),
        Some(core::cmp::Ordering::Greater | core::cmp::Ordering::Equal)
    )
}

/// `v <= max`, false when either is NaN.
pub fn at_most(v: f32, max: f32) -> bool {
    matches!(
        v.partial_cmp(&max),
        Some(core::cmp::Ordering::Less | core::cmp::Ordering::Equal)
    )
}

/// The logistic function, stable on both tails.
pub fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + libm::expf(-z))
    } else {
        let e = libm::expf(z);
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_are_finite_and_exact_enough() {
        assert!((softplus(0.0) - core::f32::consts::LN_2).abs() < 1e-7);
        assert_eq!(softplus(100.0), 100.0);
        assert!(softplus(-100.0) >= 0.0 && softplus(-100.0) < 1e-40);
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(100.0) <= 1.0);
        assert!((sigmoid(2.0) + sigmoid(-2.0) - 1.0).abs() < 1e-7);
    }
}
