//! Fixed capacities: the decision path allocates nothing, so every buffer has
//! a compile-time bound.

/// Most labels a model may have (NIH ChestX-ray14 has 14, CheXpert 14).
pub const MAX_LABELS: usize = 32;
/// Most test-time views per study.
pub const MAX_VIEWS: usize = 8;
/// Widest pooled feature (ViT-B/16 is 768, ViT-L 1024).
pub const MAX_FEATURES: usize = 1024;
