use std::path::PathBuf;

/// Why the CUDA engine cannot run; each message ends with what to do. Any of
/// these makes engine selection fall back to tract, with the message as the
/// recorded reason.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver on this machine ({library} could not be loaded); fix: none needed on a CPU-only board (tract runs), on a GPU board install the NVIDIA driver / JetPack")]
    NoDriver { library: &'static str },
    #[error("no NVRTC library ({reason}); fix: install the CUDA runtime compiler (JetPack ships it; elsewhere the `nvidia-cuda-nvrtc-cu12` wheel's lib folder on LD_LIBRARY_PATH)")]
    NoNvrtc { reason: String },
    #[error("no usable CUDA device: {reason}; fix: check `nvidia-smi`/`tegrastats` and the device permissions")]
    NoDevice { reason: String },
    #[error("GPU compute capability {major}.{minor} is below 8.0 (the kernels use bf16 tensor cores); fix: use the tract engine on this board")]
    UnsupportedArch { major: i32, minor: i32 },
    #[error("NVRTC failed to compile {program} for {arch}: {log}; fix: report this with the log (the sources are built in)")]
    Compile {
        program: &'static str,
        arch: String,
        log: String,
    },
    #[error("kernel cache {path}: {reason}; fix: check the state partition (the cache is rebuilt when removed)")]
    Cache { path: PathBuf, reason: String },
    #[error("CUDA driver call `{call}` failed: {reason}; fix: check the GPU's health (`nvidia-smi`), then restart the appliance")]
    Driver { call: &'static str, reason: String },
    #[error("cuBLASLt `{call}` failed: {reason}; fix: check that libcublasLt matches the driver's CUDA version")]
    Blas { call: &'static str, reason: String },
    #[error("{what}: expected {expected} elements, got {got}; fix: report this bug")]
    Shape {
        what: String,
        expected: usize,
        got: usize,
    },
    #[error("launch of {kernel} refused: {problem}; fix: this model shape is not supported by the CUDA engine, use tract")]
    Launch {
        kernel: &'static str,
        problem: String,
    },
    #[error("weight `{name}` missing from the packed model; fix: report this bug")]
    MissingWeight { name: String },
    #[error("the model cannot run on the CUDA engine: {problem}; fix: use tract for this bundle")]
    Plan { problem: String },
}
