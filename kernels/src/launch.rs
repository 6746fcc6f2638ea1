//! Launch configurations, computed from shapes with every limit checked
//! before a kernel sees them (grid and block limits, the kernels' own
//! assumptions: head dimension 64, LayerNorm width at most 4096).

use crate::CudaError;

/// Grid, block and dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchShape {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

/// The attention kernel's fixed geometry (see `cu/attention.cu`).
pub const ATTENTION_HEAD_DIM: usize = 64;
pub const ATTENTION_TILE: usize = 64;
pub const ATTENTION_THREADS: u32 = 128;
/// `residual_norm` holds 16 values per thread of a 256-thread block.
pub const NORM_THREADS: u32 = 256;
pub const NORM_MAX_WIDTH: usize = 16 * NORM_THREADS as usize;
pub const ELEMENTWISE_THREADS: u32 = 256;

fn fits(kernel: &'static str, what: &str, v: usize, max: usize) -> Result<u32, CudaError> {
    if v == 0 || v > max {
        return Err(CudaError::Launch {
            kernel,
            problem: format!("{what} = {v}, allowed 1..={max}"),
        });
    }
    u32::try_from(v).map_err(|_| CudaError::Launch {
        kernel,
        problem: format!("{what} = {v} does not fit 32 bits"),
    })
}

/// Grid-stride kernels over `total` elements: enough blocks to fill the
/// device (`sms` multiprocessors, 8 blocks each), no more than needed.
pub fn elementwise(
    kernel: &'static str,
    total: usize,
    sms: usize,
) -> Result<LaunchShape, CudaError> {
    fits(kernel, "elements", total, u64::MAX as usize)?;
    let needed = total.div_ceil(ELEMENTWISE_THREADS as usize);
    let blocks = needed.min(sms.max(1) * 8);
    Ok(LaunchShape {
        grid: (fits(kernel, "blocks", blocks, i32::MAX as usize)?, 1, 1),
        block: (ELEMENTWISE_THREADS, 1, 1),
        shared_bytes: 0,
    })
}

pub fn residual_norm(rows: usize, width: usize) -> Result<LaunchShape, CudaError> {
    fits("residual_norm", "width", width, NORM_MAX_WIDTH)?;
    Ok(LaunchShape {
        grid: (
            fits("residual_norm", "rows", rows, i32::MAX as usize)?,
            1,
            1,
        ),
        block: (NORM_THREADS, 1, 1),
        shared_bytes: 0,
    })
}

pub fn attention(
    batch: usize,
    heads: usize,
    tokens: usize,
    head_dim: usize,
) -> Result<LaunchShape, CudaError> {
    if head_dim != ATTENTION_HEAD_DIM {
        return Err(CudaError::Launch {
            kernel: "flash_attention",
            problem: format!("head dimension {head_dim}; the kernel is built for 64"),
        });
    }
    Ok(LaunchShape {
        grid: (
            fits(
                "flash_attention",
                "query tiles",
                tokens.div_ceil(ATTENTION_TILE),
                i32::MAX as usize,
            )?,
            fits("flash_attention", "heads", heads, 65_535)?,
            fits("flash_attention", "batch", batch, 65_535)?,
        ),
        block: (ATTENTION_THREADS, 1, 1),
        shared_bytes: 0,
    })
}

/// `log2(e) / sqrt(head_dim)`: the kernel's softmax runs in base 2.
pub fn attention_scale_log2(head_dim: usize) -> f32 {
    std::f32::consts::LOG2_E / (head_dim as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_grid_covers_ragged_sequences() {
        let s = attention(5, 12, 1025, 64).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.grid, (17, 12, 5));
        assert_eq!(attention(1, 12, 197, 64).map(|s| s.grid.0).ok(), Some(4));
        assert!(attention(1, 12, 197, 32).is_err());
        assert!(attention(0, 12, 197, 64).is_err());
        assert!(attention(1, 70_000, 197, 64).is_err());
        assert!((attention_scale_log2(64) - 0.180_337_5).abs() < 1e-6);
    }

    #[test]
    fn elementwise_and_norm_limits() {
        let e = elementwise("bias_gelu", 5 * 1025 * 3072, 132).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.grid.0, 132 * 8);
        assert_eq!(elementwise("x", 100, 132).map(|s| s.grid.0).ok(), Some(1));
        assert!(elementwise("x", 0, 132).is_err());
        assert_eq!(residual_norm(5125, 768).map(|s| s.grid.0).ok(), Some(5125));
        assert!(residual_norm(1, 4097).is_err());
    }
}
