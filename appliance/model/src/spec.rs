use serde::{Deserialize, Serialize};

use crate::ModelError;

/// A Vision Transformer: pre-norm blocks, exact (erf) GELU, LayerNorm
/// (eps 1e-6, as timm), learned position embeddings, a CLS token, and a linear
/// head on the final-normed CLS feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VitSpec {
    pub patch: usize,
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    /// MLP hidden size = width * mlp_ratio.
    pub mlp_ratio: usize,
    /// 1 (grey) or 3 (grey repeated, for ImageNet-initialised weights).
    pub in_channels: usize,
    pub image_size: usize,
    pub labels: usize,
}

impl VitSpec {
    /// ViT-B/16 (86M parameters) at 512, the product's default.
    pub const fn vit_b16(image_size: usize, labels: usize) -> Self {
        VitSpec {
            patch: 16,
            width: 768,
            depth: 12,
            heads: 12,
            mlp_ratio: 4,
            in_channels: 1,
            image_size,
            labels,
        }
    }

    pub const fn vit_s16(image_size: usize, labels: usize) -> Self {
        VitSpec {
            patch: 16,
            width: 384,
            depth: 12,
            heads: 6,
            mlp_ratio: 4,
            in_channels: 1,
            image_size,
            labels,
        }
    }

    pub const fn vit_ti16(image_size: usize, labels: usize) -> Self {
        VitSpec {
            patch: 16,
            width: 192,
            depth: 12,
            heads: 3,
            mlp_ratio: 4,
            in_channels: 1,
            image_size,
            labels,
        }
    }

    /// A tiny configuration for tests: 32 px, patch 8, width 32, 2 blocks.
    pub const fn tiny() -> Self {
        VitSpec {
            patch: 8,
            width: 32,
            depth: 2,
            heads: 4,
            mlp_ratio: 2,
            in_channels: 1,
            image_size: 32,
            labels: 5,
        }
    }

    pub fn grid(&self) -> usize {
        self.image_size / self.patch
    }

    /// Tokens: patches plus the CLS token.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }

    pub fn hidden(&self) -> usize {
        self.width * self.mlp_ratio
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |reason: String| Err(ModelError::BadSpec { reason });
        if self.patch == 0 || self.image_size == 0 || !self.image_size.is_multiple_of(self.patch) {
            return bad(format!(
                "image size {} is not a multiple of patch {}",
                self.image_size, self.patch
            ));
        }
        if self.heads == 0 || !self.width.is_multiple_of(self.heads) {
            return bad(format!(
                "width {} is not a multiple of heads {}",
                self.width, self.heads
            ));
        }
        if self.depth == 0 || self.mlp_ratio == 0 || self.labels == 0 {
            return bad("depth, MLP ratio and labels must be at least 1".into());
        }
        if self.in_channels != 1 && self.in_channels != 3 {
            return bad(format!(
                "{} input channels, expected 1 or 3",
                self.in_channels
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_sized_as_published() {
        let b = VitSpec::vit_b16(224, 14);
        b.validate().unwrap();
        assert_eq!((b.tokens(), b.head_dim(), b.hidden()), (197, 64, 3072));
        assert_eq!(VitSpec::vit_b16(512, 14).tokens(), 1025);
        VitSpec::tiny().validate().unwrap();
        assert!(VitSpec {
            image_size: 30,
            ..VitSpec::tiny()
        }
        .validate()
        .is_err());
        assert!(VitSpec {
            heads: 5,
            ..VitSpec::tiny()
        }
        .validate()
        .is_err());
    }
}
