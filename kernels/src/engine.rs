//! `CudaVit`: the plan run on the GPU. Our kernels for everything but the
//! GEMMs, cuBLASLt for those (16-bit in and out, f32 accumulation, bias
//! epilogues), the classification head on the host in f32.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
use cudarc::driver::CudaSlice;
use cxr_engine::{Engine, EngineError, EngineOutput, EngineShape};
use cxr_model::{VitSpec, Weights};

use crate::gpu::{Elem, Gpu};
use crate::launch;
use crate::pack::PackedWeights;
use crate::params::{
    AssembleParams, AttentionParams, BiasGeluParams, Im2colParams, ResidualNormParams,
};
use crate::plan::{head, Buffer, Gemm, Plan, Precision, Step, LN_EPS};
use crate::CudaError;

/// What the board configuration decides for the CUDA engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaOptions {
    pub precision: Precision,
    /// Where compiled kernels are kept between starts, and the key that
    /// authenticates them (`None`: compile every start).
    pub cache: Option<crate::nvrtc::KernelCache>,
    pub ordinal: usize,
    /// Largest batch run at once (working buffers are sized per batch).
    pub max_batch: usize,
}

struct Work<E> {
    plan: Plan,
    half: BTreeMap<Buffer, CudaSlice<E>>,
    full: BTreeMap<Buffer, CudaSlice<f32>>,
}

struct DeviceVit<E> {
    half_w: BTreeMap<String, CudaSlice<E>>,
    full_w: BTreeMap<String, CudaSlice<f32>>,
    head_w: Vec<f32>,
    head_b: Vec<f32>,
    spec: VitSpec,
    work: Option<Work<E>>,
}

fn u32_of(what: &'static str, v: usize) -> Result<u32, CudaError> {
    u32::try_from(v).map_err(|_| CudaError::Launch {
        kernel: what,
        problem: format!("{v} does not fit 32 bits"),
    })
}

impl<E: Elem> DeviceVit<E>
where
    CudaBlasLT: Matmul<E>,
{
    fn load(gpu: &Gpu, weights: &Weights, precision: Precision) -> Result<Self, CudaError> {
        let packed = PackedWeights::pack(weights, &Plan::new(weights.spec, 1), precision);
        let mut half_w = BTreeMap::new();
        for (n, bits) in &packed.half {
            half_w.insert(n.clone(), gpu.upload_bits::<E>(bits)?);
        }
        let mut full_w = BTreeMap::new();
        for (n, v) in &packed.full {
            full_w.insert(n.clone(), gpu.upload_f32(v)?);
        }
        Ok(DeviceVit {
            half_w,
            full_w,
            head_w: packed.full.get("head.weight").cloned().unwrap_or_default(),
            head_b: packed.full.get("head.bias").cloned().unwrap_or_default(),
            spec: weights.spec,
            work: None,
        })
    }

    fn buffer_ptr(gpu: &Gpu, work: &Work<E>, b: Buffer) -> Result<u64, CudaError> {
        let missing = || CudaError::Plan {
            problem: format!("buffer {b:?} not allocated"),
        };
        Ok(if b.is_f32() {
            gpu.ptr(work.full.get(&b).ok_or_else(missing)?)
        } else {
            gpu.ptr(work.half.get(&b).ok_or_else(missing)?)
        })
    }

    fn weight_f32(&self, gpu: &Gpu, name: &str) -> Result<u64, CudaError> {
        self.full_w
            .get(name)
            .map(|s| gpu.ptr(s))
            .ok_or_else(|| CudaError::MissingWeight { name: name.into() })
    }

    fn ensure_work(&mut self, gpu: &Gpu, batch: usize) -> Result<(), CudaError> {
        if self.work.as_ref().is_some_and(|w| w.plan.batch == batch) {
            return Ok(());
        }
        self.work = None; // free the old buffers first
        let plan = Plan::new(self.spec, batch);
        let (mut half, mut full) = (BTreeMap::new(), BTreeMap::new());
        for b in Buffer::ALL {
            if b.is_f32() {
                full.insert(b, gpu.zeros::<f32>(plan.len(b))?);
            } else {
                half.insert(b, gpu.zeros::<E>(plan.len(b))?);
            }
        }
        self.work = Some(Work { plan, half, full });
        Ok(())
    }

    fn gemm(&self, gpu: &Gpu, work: &mut Work<E>, g: &Gemm) -> Result<(), CudaError> {
        let missing = |n: &str| CudaError::MissingWeight { name: n.into() };
        let w = self
            .half_w
            .get(&g.weight)
            .ok_or_else(|| missing(&g.weight))?;
        let bias = match &g.bias {
            Some(b) => Some(self.half_w.get(b).ok_or_else(|| missing(b))?),
            None => None,
        };
        let mut out = work.half.remove(&g.output).ok_or(CudaError::Plan {
            problem: format!("GEMM output {:?} is not a 16-bit buffer", g.output),
        })?;
        let result = match work.half.get(&g.input) {
            Some(input) => gemm_into(&gpu.blas, g, w, input, &mut out, bias),
            None => Err(CudaError::Plan {
                problem: format!("GEMM input {:?} is not a 16-bit buffer", g.input),
            }),
        };
        work.half.insert(g.output, out);
        result
    }

    fn run(&mut self, gpu: &Gpu, images: &[f32], batch: usize) -> Result<Vec<f32>, CudaError> {
        self.ensure_work(gpu, batch)?;
        let mut work = self.work.take().ok_or(CudaError::Plan {
            problem: "no working buffers".into(),
        })?;
        let result = self.run_plan(gpu, &mut work, images);
        self.work = Some(work);
        result
    }

    fn run_plan(
        &self,
        gpu: &Gpu,
        work: &mut Work<E>,
        images: &[f32],
    ) -> Result<Vec<f32>, CudaError> {
        let (s, p) = (self.spec, E::PRECISION);
        let plan = work.plan.clone();
        if images.len() != plan.len(Buffer::Image) {
            return Err(CudaError::Shape {
                what: "images".into(),
                expected: plan.len(Buffer::Image),
                got: images.len(),
            });
        }
        // Into the buffer allocated with the plan: no allocation per study.
        let image = work.full.get_mut(&Buffer::Image).ok_or(CudaError::Plan {
            problem: "no image buffer".into(),
        })?;
        gpu.copy_into(images, image)?;
        let ptr = |work: &Work<E>, b| Self::buffer_ptr(gpu, work, b);
        for step in &plan.steps {
            match step {
                Step::Im2col => gpu.launch(
                    "im2col",
                    p,
                    launch::elementwise("im2col", plan.len(Buffer::Patches), gpu.sms)?,
                    Im2colParams {
                        image: ptr(work, Buffer::Image)?,
                        patches: ptr(work, Buffer::Patches)?,
                        batch: u32_of("im2col", plan.batch)?,
                        channels: u32_of("im2col", s.in_channels)?,
                        size: u32_of("im2col", s.image_size)?,
                        patch: u32_of("im2col", s.patch)?,
                    },
                )?,
                Step::Gemm(g) => self.gemm(gpu, work, g)?,
                Step::Assemble => gpu.launch(
                    "assemble_tokens",
                    p,
                    launch::elementwise("assemble_tokens", plan.len(Buffer::Resid), gpu.sms)?,
                    AssembleParams {
                        patch_out: ptr(work, Buffer::PatchOut)?,
                        patch_bias: self.weight_f32(gpu, "patch_embed.proj.bias")?,
                        cls: self.weight_f32(gpu, "cls_token")?,
                        pos: self.weight_f32(gpu, "pos_embed")?,
                        resid: ptr(work, Buffer::Resid)?,
                        batch: u32_of("assemble_tokens", plan.batch)?,
                        tokens: u32_of("assemble_tokens", s.tokens())?,
                        width: u32_of("assemble_tokens", s.width)?,
                        pad0: 0,
                    },
                )?,
                Step::ResidualNorm {
                    add_delta,
                    gamma,
                    beta,
                    output,
                    rows,
                    row_stride,
                } => gpu.launch(
                    if output.is_f32() {
                        "residual_norm_out_f32"
                    } else {
                        "residual_norm_elem"
                    },
                    p,
                    launch::residual_norm(*rows, s.width)?,
                    ResidualNormParams {
                        resid: ptr(work, Buffer::Resid)?,
                        delta: if *add_delta {
                            ptr(work, Buffer::Delta)?
                        } else {
                            0
                        },
                        gamma: self.weight_f32(gpu, gamma)?,
                        beta: self.weight_f32(gpu, beta)?,
                        out: ptr(work, *output)?,
                        rows: u32_of("residual_norm", *rows)?,
                        row_stride: u32_of("residual_norm", *row_stride)?,
                        width: u32_of("residual_norm", s.width)?,
                        eps: LN_EPS,
                    },
                )?,
                Step::Attention => gpu.launch(
                    "flash_attention",
                    p,
                    launch::attention(plan.batch, s.heads, s.tokens(), s.head_dim())?,
                    AttentionParams {
                        qkv: ptr(work, Buffer::Qkv)?,
                        out: ptr(work, Buffer::Attended)?,
                        batch: u32_of("flash_attention", plan.batch)?,
                        heads: u32_of("flash_attention", s.heads)?,
                        tokens: u32_of("flash_attention", s.tokens())?,
                        scale_log2: launch::attention_scale_log2(s.head_dim()),
                    },
                )?,
                Step::BiasGelu { bias } => gpu.launch(
                    "bias_gelu",
                    p,
                    launch::elementwise("bias_gelu", plan.len(Buffer::Hidden), gpu.sms)?,
                    BiasGeluParams {
                        x: ptr(work, Buffer::Hidden)?,
                        bias: self.weight_f32(gpu, bias)?,
                        rows: u32_of("bias_gelu", plan.batch * s.tokens())?,
                        cols: u32_of("bias_gelu", s.hidden())?,
                    },
                )?,
            }
        }
        let features = work.full.get(&Buffer::Features).ok_or(CudaError::Plan {
            problem: "no feature buffer".into(),
        })?;
        let out = gpu.download_f32(features)?;
        gpu.synchronize()?;
        Ok(out)
    }
}

/// Row-major `out[m, n] = x[m, k] w[n, k]^T (+ bias[n])` through cuBLASLt,
/// which is column-major: `out^T (n x m) = op(w) (n x k) * x^T (k x m)` with
/// `w` read transposed.
pub(crate) fn gemm_into<E: Elem>(
    blas: &CudaBlasLT,
    g: &Gemm,
    w: &CudaSlice<E>,
    input: &CudaSlice<E>,
    out: &mut CudaSlice<E>,
    bias: Option<&CudaSlice<E>>,
) -> Result<(), CudaError>
where
    CudaBlasLT: Matmul<E>,
{
    let sizes = [
        ("weight", w.len(), g.n * g.k),
        ("input", input.len(), g.m * g.k),
        ("output", out.len(), g.m * g.n),
        ("bias", bias.map_or(g.n, |b| b.len()), g.n),
    ];
    for (what, got, expected) in sizes {
        if got < expected {
            return Err(CudaError::Shape {
                what: format!("GEMM {what} of {}", g.weight),
                expected,
                got,
            });
        }
    }
    let cfg = MatmulConfig {
        transa: true,
        transb: false,
        transc: false,
        m: g.n as u64,
        n: g.m as u64,
        k: g.k as u64,
        alpha: 1.0,
        lda: g.k as i64,
        ldb: g.k as i64,
        beta: 0.0,
        ldc: g.n as i64,
        stride_a: None,
        stride_b: None,
        stride_c: None,
        stride_bias: None,
        batch_size: None,
    };
    // SAFETY: the sizes were checked above against the shapes cuBLASLt is
    // given (w [n, k], input [m, k], out [m, n], bias [n]); one stream
    // orders every access.
    unsafe { blas.matmul(cfg, w, input, out, bias, None) }.map_err(|e| CudaError::Blas {
        call: "cublasLtMatmul",
        reason: format!("{e:?}"),
    })
}

enum Flavour {
    F16(DeviceVit<half::f16>),
    Bf16(DeviceVit<half::bf16>),
}

/// The CUDA engine for one model.
pub struct CudaVit {
    gpu: Gpu,
    inner: Mutex<Flavour>,
    spec: VitSpec,
    precision: Precision,
    max_batch: usize,
}

impl std::fmt::Debug for CudaVit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaVit")
            .field("gpu", &self.gpu.description)
            .field("precision", &self.precision)
            .finish()
    }
}

impl CudaVit {
    /// Open the GPU and upload `weights`. Never panics: a missing driver,
    /// device or library is an error.
    pub fn load(weights: &Weights, options: &CudaOptions) -> Result<CudaVit, CudaError> {
        let spec = weights.spec;
        // Shapes the kernels cannot take are refused before touching a GPU.
        launch::attention(1, spec.heads, spec.tokens(), spec.head_dim())?;
        launch::residual_norm(1, spec.width)?;
        let gpu = Gpu::open(options.ordinal, options.cache.as_ref())?;
        let inner = match options.precision {
            Precision::F16 => Flavour::F16(DeviceVit::load(&gpu, weights, options.precision)?),
            Precision::Bf16 => Flavour::Bf16(DeviceVit::load(&gpu, weights, options.precision)?),
        };
        Ok(CudaVit {
            gpu,
            inner: Mutex::new(inner),
            spec,
            precision: options.precision,
            max_batch: options.max_batch.max(1),
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

impl Engine for CudaVit {
    fn name(&self) -> &'static str {
        match self.precision {
            Precision::F16 => "cuda-f16",
            Precision::Bf16 => "cuda-bf16",
        }
    }

    fn shape(&self) -> EngineShape {
        EngineShape::of(&self.spec)
    }

    fn reduced_precision(&self) -> bool {
        true
    }

    fn precision(&self) -> &'static str {
        self.precision.suffix()
    }

    fn notes(&self) -> Vec<String> {
        self.gpu.notes.clone()
    }

    fn preferred_batch(&self) -> usize {
        self.max_batch
    }

    fn infer(&self, images: &[f32], batch: usize) -> Result<EngineOutput, EngineError> {
        let fail = |e: CudaError| EngineError::Run {
            engine: "cuda",
            reason: e.to_string(),
        };
        if batch == 0 || batch > self.max_batch {
            return Err(fail(CudaError::Launch {
                kernel: "forward",
                problem: format!("batch {batch}, allowed 1..={}", self.max_batch),
            }));
        }
        let mut guard = self.inner.lock().map_err(|_| {
            fail(CudaError::Plan {
                problem: "a previous inference panicked; restart the appliance".into(),
            })
        })?;
        let (features, head_w, head_b) = match &mut *guard {
            Flavour::F16(d) => (d.run(&self.gpu, images, batch), &d.head_w, &d.head_b),
            Flavour::Bf16(d) => (d.run(&self.gpu, images, batch), &d.head_w, &d.head_b),
        };
        let features = features.map_err(fail)?;
        let logits = head(&features, head_w, head_b, self.spec.width);
        Ok(EngineOutput {
            batch,
            logits,
            features,
        })
    }
}

/// The CUDA engine as an accelerator for engine selection: loads the
/// bundle's weights from its ONNX initializers through `cxr-model`.
#[derive(Debug, Clone)]
pub struct CudaAccelerator {
    pub options: CudaOptions,
}

impl cxr_engine::Accelerator for CudaAccelerator {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn load(&self, onnx: &[u8], spec: VitSpec) -> Result<Box<dyn Engine>, String> {
        let weights = cxr_model::onnx::read_weights(onnx, &spec).map_err(|e| e.to_string())?;
        let engine = CudaVit::load(&weights, &self.options).map_err(|e| e.to_string())?;
        Ok(Box::new(engine))
    }
}
