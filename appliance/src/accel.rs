//! The accelerators this build carries, configured from the board profile:
//! the CUDA engine with the `cuda` feature, then the OpenVINO CPU engine
//! when the board names its library (in the board's `cpu_precision`). Engine selection
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
        if let Some(cpu) = openvino_cpu(board) {
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

/// The OpenVINO engine a board asks for by naming its library (`None`
/// without one: tract is the CPU engine then).
fn openvino_cpu(board: &BoardProfile) -> Option<Box<dyn Accelerator>> {
    let library = board.engine.openvino_library.clone()?;
    Some(openvino_engine(
        board.engine.cpu_precision,
        library,
        board.engine.threads,
    ))
}

#[cfg(feature = "openvino")]
fn openvino_engine(
    precision: cxr_board::CpuPrecision,
    library: std::path::PathBuf,
    threads: usize,
) -> Box<dyn Accelerator> {
    use cxr_board::CpuPrecision as Board;
    use cxr_engine::CpuPrecision;
    Box::new(cxr_engine::OpenVinoCpu {
        library,
        precision: match precision {
            Board::Bf16 => CpuPrecision::Bf16,
            Board::F16 => CpuPrecision::F16,
            Board::F32 => CpuPrecision::F32,
        },
        threads,
    })
}

/// Without the feature the board's request still shows: the accelerator is
/// listed, and its reason for not loading says what the build lacks.
#[cfg(not(feature = "openvino"))]
fn openvino_engine(
    precision: cxr_board::CpuPrecision,
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
    Box::new(Absent(match precision {
        cxr_board::CpuPrecision::Bf16 => "openvino-bf16",
        cxr_board::CpuPrecision::F16 => "openvino-f16",
        cxr_board::CpuPrecision::F32 => "openvino-f32",
    }))
}
