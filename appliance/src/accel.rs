//! The accelerators this build carries, configured from the board profile:
//! the CUDA engine with the `cuda` feature, none otherwise. Engine selection
//! tries them first and records why it fell back to tract.

use cxr_board::BoardProfile;
use cxr_engine::Accelerator;

pub struct Accelerators(Vec<Box<dyn Accelerator>>);

impl std::fmt::Debug for Accelerators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|a| a.name()))
            .finish()
    }
}

impl Accelerators {
    /// `cache_key` authenticates the compiled-kernel cache (derived from the
    /// device secret).
    #[cfg(feature = "cuda")]
    pub fn for_board(board: &BoardProfile, cache_key: [u8; 32]) -> Self {
        use cxr_board::GpuPrecision;
        use cxr_cuda::plan::Precision;
        let options = cxr_cuda::CudaOptions {
            precision: match board.engine.gpu_precision {
                GpuPrecision::Bf16 => Precision::Bf16,
                GpuPrecision::F16 => Precision::F16,
            },
            // Compiled kernels survive restarts on the data partition,
            // each entry under an HMAC that only this device can make.
            cache: Some(cxr_cuda::nvrtc::KernelCache {
                dir: board.state_dir.join("kernel-cache"),
                key: cache_key,
            }),
            ordinal: 0,
            max_batch: board.engine.gpu_max_batch,
        };
        Accelerators(vec![Box::new(cxr_cuda::CudaAccelerator { options })])
    }

    #[cfg(not(feature = "cuda"))]
    pub fn for_board(_board: &BoardProfile, _cache_key: [u8; 32]) -> Self {
        Accelerators(Vec::new())
    }

    pub fn refs(&self) -> Vec<&dyn Accelerator> {
        self.0.iter().map(|a| a.as_ref()).collect()
    }
}
