//! `cxr-cuda`: the CUDA engine. Our kernels (`cu/`: fused FlashAttention-2
//! style attention on tensor cores, residual + LayerNorm, bias + GELU, patch
//! extraction, token assembly) compiled at start with NVRTC for the device's
//! architecture and cached on disk; GEMMs through cuBLASLt in f16/bf16 with
//! f32 accumulation; [`CudaVit`] implements `cxr_engine::Engine`.
//!
//! The forward is a [`plan::Plan`] of steps run by the device and, here on
//! the CPU, by [`emulate`]: the plan is tested against the `cxr-model`
//! reference without a GPU, and the emulator's step functions are the
//! references each kernel is checked against on the GPU machine.
//!
//! Everything reaches the driver through cudarc's dynamic loading: the build
//! needs no CUDA toolkit, and a machine without a driver gets a
//! [`CudaError::NoDriver`] (the appliance then runs tract and says why).

pub mod check;
pub mod emulate;
mod engine;
mod error;
mod gpu;
pub mod launch;
pub mod nvrtc;
pub mod pack;
pub mod params;
pub mod plan;
pub mod sources;

pub use engine::{CudaAccelerator, CudaOptions, CudaVit};
pub use error::CudaError;
pub use gpu::{driver_present, Elem, Gpu};
