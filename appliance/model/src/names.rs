//! Canonical weight names and shapes: timm's, so that public ViT-B/16
//! checkpoints map one-to-one. Linear weights are `[out, in]` (PyTorch
//! layout); a square `[D, D]` matrix loaded in the other layout would go
//! unnoticed by a shape check, so every consumer must use `x W^T`.

use crate::VitSpec;

/// Every parameter of a spec, in a fixed order: `(name, shape)`.
pub fn parameters(spec: &VitSpec) -> Vec<(String, Vec<usize>)> {
    let (d, p, c, h) = (spec.width, spec.patch, spec.in_channels, spec.hidden());
    let mut out = vec![
        ("patch_embed.proj.weight".to_owned(), vec![d, c, p, p]),
        ("patch_embed.proj.bias".to_owned(), vec![d]),
        ("cls_token".to_owned(), vec![1, 1, d]),
        ("pos_embed".to_owned(), vec![1, spec.tokens(), d]),
    ];
    for i in 0..spec.depth {
        let b = |n: &str| format!("blocks.{i}.{n}");
        out.extend([
            (b("norm1.weight"), vec![d]),
            (b("norm1.bias"), vec![d]),
            (b("attn.qkv.weight"), vec![3 * d, d]),
            (b("attn.qkv.bias"), vec![3 * d]),
            (b("attn.proj.weight"), vec![d, d]),
            (b("attn.proj.bias"), vec![d]),
            (b("norm2.weight"), vec![d]),
            (b("norm2.bias"), vec![d]),
            (b("mlp.fc1.weight"), vec![h, d]),
            (b("mlp.fc1.bias"), vec![h]),
            (b("mlp.fc2.weight"), vec![d, h]),
            (b("mlp.fc2.bias"), vec![d]),
        ]);
    }
    out.extend([
        ("norm.weight".to_owned(), vec![d]),
        ("norm.bias".to_owned(), vec![d]),
        ("head.weight".to_owned(), vec![spec.labels, d]),
        ("head.bias".to_owned(), vec![spec.labels]),
    ]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vit_b16_has_86m_parameters() {
        let total: usize = parameters(&VitSpec::vit_b16(224, 1000))
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        // timm's vit_base_patch16_224 (3 input channels, 1000 classes) has 86,567,656.
        let three = VitSpec {
            in_channels: 3,
            ..VitSpec::vit_b16(224, 1000)
        };
        let total3: usize = parameters(&three)
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(total3, 86_567_656);
        assert_eq!(total3 - total, 2 * 768 * 16 * 16);
    }
}
