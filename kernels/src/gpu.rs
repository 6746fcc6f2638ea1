//! One GPU, ready to run our kernels: the context's stream, cuBLASLt, every
//! kernel compiled (or read from the cache) and loaded, in both precisions.
//! Opening checks, in order: the driver library, cuBLASLt, a device, its
//! compute capability, NVRTC; cudarc's panics on missing symbols are caught
//! and become errors.

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::cublaslt::CudaBlasLT;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};

use crate::launch::LaunchShape;
use crate::nvrtc::{self, CacheOutcome, KernelCache, Target};
use crate::params::{
    AssembleParams, AttentionParams, BiasGeluParams, Im2colParams, ResidualNormParams,
};
use crate::plan::Precision;
use crate::sources::PROGRAMS;
use crate::CudaError;

// SAFETY: `#[repr(C)]` plain-old-data (u64 addresses, u32, f32) whose layout
// the `params` test checks against `cu/params.cuh`; kernels take it by value.
unsafe impl DeviceRepr for Im2colParams {}
// SAFETY: as for Im2colParams.
unsafe impl DeviceRepr for AssembleParams {}
// SAFETY: as for Im2colParams.
unsafe impl DeviceRepr for ResidualNormParams {}
// SAFETY: as for Im2colParams.
unsafe impl DeviceRepr for BiasGeluParams {}
// SAFETY: as for Im2colParams.
unsafe impl DeviceRepr for AttentionParams {}

/// The 16-bit element types cuBLASLt and our kernels share (`half::f16`,
/// `half::bf16`).
pub trait Elem: DeviceRepr + ValidAsZeroBits + Copy + Send + Sync + 'static {
    const PRECISION: Precision;
    fn from_bits(b: u16) -> Self;
    fn to_bits(self) -> u16;
}

impl Elem for half::f16 {
    const PRECISION: Precision = Precision::F16;
    fn from_bits(b: u16) -> Self {
        half::f16::from_bits(b)
    }
    fn to_bits(self) -> u16 {
        half::f16::to_bits(self)
    }
}

impl Elem for half::bf16 {
    const PRECISION: Precision = Precision::Bf16;
    fn from_bits(b: u16) -> Self {
        half::bf16::from_bits(b)
    }
    fn to_bits(self) -> u16 {
        half::bf16::to_bits(self)
    }
}

pub(crate) fn driver(call: &'static str) -> impl Fn(cudarc::driver::DriverError) -> CudaError {
    move |e| CudaError::Driver {
        call,
        reason: format!("{e:?}"),
    }
}

/// Whether the driver library can be loaded at all.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

pub struct Gpu {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlasLT,
    kernels: BTreeMap<String, CudaFunction>,
    /// Streaming multiprocessors (grid sizing of the elementwise kernels).
    pub sms: usize,
    /// Name, architecture, NVRTC version, whether the kernels came from the
    /// cache: for the log.
    pub description: String,
    /// Events of the start worth an audit record (a cache entry that failed
    /// its authentication).
    pub notes: Vec<String>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("description", &self.description)
            .finish()
    }
}

impl Gpu {
    /// Open device `ordinal` and load every kernel; `cache` keeps the
    /// compiled kernels between starts, each entry authenticated.
    pub fn open(ordinal: usize, cache: Option<&KernelCache>) -> Result<Gpu, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver {
                library: "libcuda.so",
            });
        }
        // SAFETY: dlopen probe only.
        if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
            return Err(CudaError::Blas {
                call: "load",
                reason: "libcublasLt.so not found on the library path".into(),
            });
        }
        let cache = cache.cloned();
        std::panic::catch_unwind(move || Self::open_inner(ordinal, cache.as_ref()))
            .unwrap_or_else(|_| {
                Err(CudaError::NoDevice {
                    reason: "the CUDA libraries panicked while loading (missing symbol or version mismatch)".into(),
                })
            })
    }

    fn open_inner(ordinal: usize, cache: Option<&KernelCache>) -> Result<Gpu, CudaError> {
        let ctx = CudaContext::new(ordinal).map_err(|e| CudaError::NoDevice {
            reason: format!("device {ordinal}: {e:?}"),
        })?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("cuDeviceGetAttribute"))?;
        let target = nvrtc::target_for(major, minor)?;
        let version = nvrtc::version()?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let sms = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(driver("cuDeviceGetAttribute"))?;
        let mut kernels = BTreeMap::new();
        let mut all_cached = true;
        let mut notes = Vec::new();
        for program in PROGRAMS {
            let (code, outcome) =
                nvrtc::compile_cached(program, target, cache, nvrtc::compile, version)?;
            all_cached &= outcome == CacheOutcome::Hit;
            if outcome == CacheOutcome::Replaced {
                notes.push(format!(
                    "kernel cache: the entry for {} failed its authentication (forged or damaged) and was recompiled",
                    program.name
                ));
            }
            let image = match target {
                Target::Cubin(_) => cudarc::nvrtc::Ptx::from_binary(code),
                Target::Ptx(_) => cudarc::nvrtc::Ptx::from_src(String::from_utf8_lossy(&code)),
            };
            let module = ctx.load_module(image).map_err(driver("cuModuleLoadData"))?;
            for k in program.kernels {
                for suffix in ["f16", "bf16"] {
                    let full = format!("{k}_{suffix}");
                    let f = module
                        .load_function(&full)
                        .map_err(driver("cuModuleGetFunction"))?;
                    kernels.insert(full, f);
                }
            }
        }
        let stream = ctx.default_stream();
        let blas = CudaBlasLT::new(stream.clone()).map_err(|e| CudaError::Blas {
            call: "cublasLtCreate",
            reason: format!("{e:?}"),
        })?;
        let description = format!(
            "{name} (sm_{major}{minor}, {sms} SMs, {}, NVRTC {}.{}, {})",
            target.arch(),
            version.0,
            version.1,
            if all_cached {
                "kernels from cache"
            } else {
                "kernels compiled"
            }
        );
        Ok(Gpu {
            stream,
            blas,
            kernels,
            sms: usize::try_from(sms).unwrap_or(1),
            description,
            notes,
        })
    }

    pub(crate) fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        // One stream: the guard's event bookkeeping has nothing to order.
        let (p, _guard) = s.device_ptr(&self.stream);
        p
    }

    /// Launch `name` (its `precision` flavour) with one parameter block.
    pub(crate) fn launch<P: DeviceRepr>(
        &self,
        name: &'static str,
        precision: Precision,
        shape: LaunchShape,
        params: P,
    ) -> Result<(), CudaError> {
        let full = format!("{name}_{}", precision.suffix());
        let f = self.kernels.get(&full).ok_or(CudaError::Plan {
            problem: format!("kernel {full} not loaded"),
        })?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&params);
        let cfg = LaunchConfig {
            grid_dim: shape.grid,
            block_dim: shape.block,
            shared_mem_bytes: shape.shared_bytes,
        };
        // SAFETY: every address in `params` is a live allocation of this
        // context sized for the shapes in `params` (the callers size them
        // from the same numbers, and `launch::*` checked the launch shape),
        // and the kernel's signature is one by-value block of this layout.
        unsafe { b.launch(cfg) }.map_err(driver("cuLaunchKernel"))?;
        Ok(())
    }

    pub fn upload_f32(&self, v: &[f32]) -> Result<CudaSlice<f32>, CudaError> {
        self.stream.clone_htod(v).map_err(driver("cuMemcpyHtoD"))
    }

    /// Copy `v` into an existing buffer of exactly its length.
    pub(crate) fn copy_into(&self, v: &[f32], dst: &mut CudaSlice<f32>) -> Result<(), CudaError> {
        if dst.len() != v.len() {
            return Err(CudaError::Shape {
                what: "host-to-device copy".into(),
                expected: dst.len(),
                got: v.len(),
            });
        }
        self.stream
            .memcpy_htod(v, dst)
            .map_err(driver("cuMemcpyHtoD"))
    }

    pub(crate) fn upload_elem<E: Elem>(&self, v: &[f32]) -> Result<CudaSlice<E>, CudaError> {
        let bits: Vec<E> = v
            .iter()
            .map(|x| E::from_bits(E::PRECISION.to_bits(*x)))
            .collect();
        self.stream
            .clone_htod(&bits)
            .map_err(driver("cuMemcpyHtoD"))
    }

    pub(crate) fn upload_bits<E: Elem>(&self, bits: &[u16]) -> Result<CudaSlice<E>, CudaError> {
        let v: Vec<E> = bits.iter().map(|b| E::from_bits(*b)).collect();
        self.stream.clone_htod(&v).map_err(driver("cuMemcpyHtoD"))
    }

    pub(crate) fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        self.stream
            .alloc_zeros::<T>(n)
            .map_err(driver("cuMemAlloc"))
    }

    pub fn download_f32(&self, s: &CudaSlice<f32>) -> Result<Vec<f32>, CudaError> {
        self.stream.clone_dtoh(s).map_err(driver("cuMemcpyDtoH"))
    }

    pub(crate) fn download_elem<E: Elem>(&self, s: &CudaSlice<E>) -> Result<Vec<f32>, CudaError> {
        let v = self.stream.clone_dtoh(s).map_err(driver("cuMemcpyDtoH"))?;
        Ok(v.into_iter()
            .map(|e| E::PRECISION.from_bits(e.to_bits()))
            .collect())
    }

    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream
            .synchronize()
            .map_err(driver("cuStreamSynchronize"))
    }
}
