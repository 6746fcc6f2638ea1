//! The accelerators this build carries, configured from the board profile:
//! the CUDA engine with the `cuda` feature, then the OpenVINO CPU engine
//! when the board asks for a reduced `cpu_precision`. Engine selection
//! tries them in that order and records why it fell back to tract.

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
    pub fn for_board(board: &BoardProfile, cache_key: [u8; 32]) -> Self {
        let mut found = Self::gpu(board, cache_key);
        if let Some(cpu) = reduced_precision_cpu(board) {
            found.push(cpu);
        }
        Accelerators(found)
    }

    #[cfg(feature = "cuda")]
    fn gpu(board: &BoardProfile, cache_key: [u8; 32]) -> Vec<Box<dyn Accelerator>> {
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
        vec![Box::new(cxr_cuda::CudaAccelerator { options })]
    }

    #[cfg(not(feature = "cuda"))]
    fn gpu(_board: &BoardProfile, _cache_key: [u8; 32]) -> Vec<Box<dyn Accelerator>> {
        Vec::new()
    }

    pub fn refs(&self) -> Vec<&dyn Accelerator> {
        self.0.iter().map(|a| a.as_ref()).collect()
    }
}

/// The OpenVINO engine the board asks for with a reduced `cpu_precision`
/// (`None` for f32: tract is the CPU engine then).
fn reduced_precision_cpu(board: &BoardProfile) -> Option<Box<dyn Accelerator>> {
    use cxr_board::CpuPrecision;
    let precision = match board.engine.cpu_precision {
        CpuPrecision::F32 => return None,
        CpuPrecision::Bf16 => "bf16",
        CpuPrecision::F16 => "f16",
    };
    let library = board.engine.openvino_library.clone()?;
    Some(openvino_engine(precision, library, board.engine.threads))
}

#[cfg(feature = "openvino")]
fn openvino_engine(
    precision: &'static str,
    library: std::path::PathBuf,
    threads: usize,
) -> Box<dyn Accelerator> {
    use cxr_engine::CpuPrecision;
    Box::new(cxr_engine::OpenVinoCpu {
        library,
        precision: if precision == "bf16" {
            CpuPrecision::Bf16
        } else {
            CpuPrecision::F16
        },
        threads,
    })
}

/// Without the feature the board's request still shows: the accelerator is
/// listed, and its reason for not loading says what the build lacks.
#[cfg(not(feature = "openvino"))]
fn openvino_engine(
    precision: &'static str,
    _library: std::path::PathBuf,
    _threads: usize,
) -> Box<dyn Accelerator> {
    struct Absent(&'static str);
    impl Accelerator for Absent {
        fn name(&self) -> &'static str {
            self.0
        }
        fn load(
            &self,
            _onnx: &[u8],
            _spec: cxr_model::VitSpec,
        ) -> Result<Box<dyn cxr_engine::Engine>, String> {
            Err("this build has no OpenVINO engine (cargo feature `openvino`)".to_owned())
        }
    }
    Box::new(Absent(if precision == "bf16" {
        "openvino-bf16"
    } else {
        "openvino-f16"
    }))
}
