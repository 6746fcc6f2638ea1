//! The CUDA C sources, embedded in the binary (the board compiles them at
//! start with NVRTC), and what each program exports.

use sha2::{Digest, Sha256};

pub const PARAMS_CUH: &str = include_str!("../cu/params.cuh");
pub const COMMON_CUH: &str = include_str!("../cu/common.cuh");

/// Headers the programs include, by the name they include them as.
pub const HEADERS: &[(&str, &str)] = &[("params.cuh", PARAMS_CUH), ("common.cuh", COMMON_CUH)];

/// One NVRTC program: a `.cu` file and the kernels it exports (each in an
/// `_f16` and a `_bf16` flavour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    pub name: &'static str,
    pub source: &'static str,
    pub kernels: &'static [&'static str],
}

pub const PROGRAMS: &[Program] = &[
    Program {
        name: "elementwise.cu",
        source: include_str!("../cu/elementwise.cu"),
        kernels: &[
            "im2col",
            "assemble_tokens",
            "residual_norm_elem",
            "residual_norm_out_f32",
            "bias_gelu",
        ],
    },
    Program {
        name: "attention.cu",
        source: include_str!("../cu/attention.cu"),
        kernels: &["flash_attention"],
    },
];

/// SHA-256 over every header and program (names and texts): the cache key's
/// source part.
pub fn source_hash() -> [u8; 32] {
    let mut h = Sha256::new();
    for (name, text) in HEADERS
        .iter()
        .copied()
        .chain(PROGRAMS.iter().map(|p| (p.name, p.source)))
    {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kernel_is_exported_in_both_precisions() {
        for p in PROGRAMS {
            for k in p.kernels {
                assert!(
                    p.source.contains(&format!("EXPORT_F16_BF16({k},")),
                    "{}: {k}",
                    p.name
                );
            }
            // Only headers we ship: NVRTC has no CUDA headers on the board.
            for line in p.source.lines().filter(|l| l.starts_with("#include")) {
                assert!(
                    HEADERS
                        .iter()
                        .any(|(h, _)| line.contains(&format!("\"{h}\""))),
                    "{}: {line}",
                    p.name
                );
            }
        }
    }
}
