//! A second CPU engine, for reduced precision: OpenVINO, loaded at run time.
//!
//! Why not tract: tract 0.23 has no bf16 kernels, and its f16 path on x86 is
//! emulated (slower than f32). OpenVINO runs bf16 on AVX512-BF16 and AMX
//! and f16 on ARMv8.2, which is what clinic mini-PCs and the Jetson's CPU
//! cores have. The library is not linked: the board names the
//! `libopenvino_c` file, loaded only when this engine is tried, so a build
//! with it still runs where OpenVINO is absent (tract runs, and the reasons
//! say why). Like the GPU engine it is an [`Accelerator`]: it is used only
//! after the bundle's golden self-test passes at the reduced-precision
//! tolerance.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cxr_model::VitSpec;
use openvino::{
    CompiledModel, Core, DeviceType, ElementType, InferRequest, PartialShape, PropertyKey,
    RwPropertyKey, Shape, Tensor,
};

use crate::{Accelerator, Engine, EngineError, EngineOutput, EngineShape};

/// The arithmetic OpenVINO is told to use on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuPrecision {
    Bf16,
    F16,
    /// Full precision (the f32 golden tolerance applies).
    F32,
}

impl CpuPrecision {
    /// The value of OpenVINO's `INFERENCE_PRECISION_HINT`.
    pub fn hint(self) -> &'static str {
        match self {
            CpuPrecision::Bf16 => "bf16",
            CpuPrecision::F16 => "f16",
            CpuPrecision::F32 => "f32",
        }
    }

    /// The CPU capability OpenVINO must report for the hint to mean native
    /// arithmetic rather than a silent fallback.
    fn capability(self) -> Option<&'static str> {
        match self {
            CpuPrecision::Bf16 => Some("BF16"),
            CpuPrecision::F16 => Some("FP16"),
            CpuPrecision::F32 => None,
        }
    }

    fn engine_name(self) -> &'static str {
        match self {
            CpuPrecision::Bf16 => "openvino-bf16",
            CpuPrecision::F16 => "openvino-f16",
            CpuPrecision::F32 => "openvino-f32",
        }
    }
}

/// The board's OpenVINO settings, tried as an accelerator.
#[derive(Debug, Clone)]
pub struct OpenVinoCpu {
    /// The `libopenvino_c` shared library (its plugins beside it).
    pub library: PathBuf,
    pub precision: CpuPrecision,
    pub threads: usize,
}

impl Accelerator for OpenVinoCpu {
    fn name(&self) -> &'static str {
        self.precision.engine_name()
    }

    fn load(&self, onnx: &[u8], spec: VitSpec) -> Result<Box<dyn Engine>, String> {
        // The bindings assert on a few impossible states; keep a fault there
        // a reason for falling back, not a crash.
        let loaded = std::panic::catch_unwind(|| OpenVinoVit::load(self, onnx, spec));
        match loaded {
            Ok(Ok(engine)) => Ok(Box::new(engine)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the OpenVINO bindings panicked while loading the model".to_owned()),
        }
    }
}

/// The library this process loaded: the bindings keep one for the life of
/// the process and make a second load a silent no-op, so a request for
/// another file is refused here rather than served by the first.
static LOADED_FROM: Mutex<Option<PathBuf>> = Mutex::new(None);

fn load_library(path: &Path) -> Result<(), String> {
    let mut loaded = LOADED_FROM.lock().unwrap_or_else(|p| p.into_inner());
    match loaded.as_deref() {
        Some(first) if first == path => Ok(()),
        Some(first) => Err(format!(
            "OpenVINO is already loaded from {} in this process, so {} cannot be (restart to change the library)",
            first.display(),
            path.display()
        )),
        None => {
            openvino_sys::library::load_from(path)
                .map_err(|e| format!("OpenVINO library {}: {e}", path.display()))?;
            *loaded = Some(path.to_owned());
            Ok(())
        }
    }
}

/// The compiled model and its one request, dropped in this order.
struct Session {
    request: InferRequest,
    _compiled: CompiledModel,
    _core: Core,
}

/// ViT inference through OpenVINO on the CPU, one image per request.
pub struct OpenVinoVit {
    session: Mutex<Session>,
    spec: VitSpec,
    precision: CpuPrecision,
    notes: Vec<String>,
}

impl std::fmt::Debug for OpenVinoVit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenVinoVit")
            .field("spec", &self.spec)
            .field("precision", &self.precision)
            .finish()
    }
}

fn ov_error<'a>(
    engine: &'static str,
    what: &'a str,
) -> impl Fn(openvino::InferenceError) -> EngineError + 'a {
    move |e| EngineError::Load {
        engine,
        reason: format!("{what}: {e}"),
    }
}

fn load_error(engine: &'static str, reason: String) -> EngineError {
    EngineError::Load { engine, reason }
}

/// A core for the CPU with the board's threads and precision, after
/// checking that the CPU does the precision natively (OpenVINO would
/// otherwise fall back to f32 and still pass the self-test, running
/// something the board did not ask for).
fn configured_core(settings: &OpenVinoCpu) -> Result<Core, EngineError> {
    let name = settings.precision.engine_name();
    let mut core = Core::new().map_err(|e| load_error(name, format!("OpenVINO core: {e}")))?;
    let cpu = DeviceType::CPU;
    let capabilities = core
        .get_property(
            &cpu,
            &PropertyKey::Other("OPTIMIZATION_CAPABILITIES".into()),
        )
        .map_err(ov_error(name, "reading the CPU's capabilities"))?;
    if let Some(needed) = settings.precision.capability() {
        if !capabilities
            .split(|c: char| c.is_whitespace() || c == ',')
            .any(|c| c == needed)
        {
            return Err(load_error(
                name,
                format!(
                    "this CPU has no native {needed} arithmetic (OpenVINO reports: {capabilities})"
                ),
            ));
        }
    }
    let threads = settings.threads.max(1).to_string();
    core.set_property(&cpu, &RwPropertyKey::InferenceNumThreads, &threads)
        .map_err(ov_error(name, "setting the thread count"))?;
    for (key, value) in [
        ("INFERENCE_PRECISION_HINT", settings.precision.hint()),
        ("PERFORMANCE_HINT", "LATENCY"),
    ] {
        core.set_property(&cpu, &RwPropertyKey::Other(key.into()), value)
            .map_err(ov_error(name, key))?;
    }
    Ok(core)
}

impl OpenVinoVit {
    /// Load the library, check the CPU can do the precision natively, and
    /// compile the model for one `[1, C, S, S]` image at a time.
    pub fn load(settings: &OpenVinoCpu, onnx: &[u8], spec: VitSpec) -> Result<Self, EngineError> {
        let name = settings.precision.engine_name();
        spec.validate()
            .map_err(|e| load_error(name, e.to_string()))?;
        load_library(&settings.library).map_err(|e| load_error(name, e))?;
        let mut core = configured_core(settings)?;
        let mut model = core
            .read_model_from_buffer(onnx, None)
            .map_err(ov_error(name, "reading the ONNX graph"))?;
        let (c, s) = (spec.in_channels as i64, spec.image_size as i64);
        let one_image =
            PartialShape::new_static(4, &[1, c, s, s]).map_err(ov_error(name, "input shape"))?;
        model
            .reshape_single_input(&one_image)
            .map_err(ov_error(name, "fixing the input shape"))?;
        let mut compiled = core
            .compile_model(&model, DeviceType::CPU)
            .map_err(ov_error(name, "compiling for the CPU"))?;
        let hint = settings.precision.hint();
        let ran = compiled
            .get_property(&PropertyKey::Other("INFERENCE_PRECISION_HINT".into()))
            .map_err(ov_error(name, "reading the compiled precision"))?
            .into_owned();
        if ran != hint {
            return Err(load_error(
                name,
                format!("OpenVINO compiled the model for {ran}, not the {hint} the board asks for"),
            ));
        }
        let request = compiled
            .create_infer_request()
            .map_err(ov_error(name, "creating the inference request"))?;
        let version = openvino::version();
        let notes = vec![format!(
            "OpenVINO {} {} from {}, {} thread(s), precision {ran}",
            version.build_number,
            version.description,
            settings.library.display(),
            settings.threads.max(1)
        )];
        Ok(OpenVinoVit {
            session: Mutex::new(Session {
                request,
                _compiled: compiled,
                _core: core,
            }),
            spec,
            precision: settings.precision,
            notes,
        })
    }

    /// One image through the request: its logits and features.
    fn run_one(
        &self,
        session: &mut Session,
        image: &[f32],
    ) -> Result<(Vec<f32>, Vec<f32>), EngineError> {
        let name = self.name();
        let run = |what: &'static str| {
            move |e: openvino::InferenceError| EngineError::Run {
                engine: name,
                reason: format!("{what}: {e}"),
            }
        };
        let (c, s) = (self.spec.in_channels as i64, self.spec.image_size as i64);
        let shape = Shape::new(&[1, c, s, s]).map_err(run("input shape"))?;
        let mut tensor = Tensor::new(ElementType::F32, &shape).map_err(run("input tensor"))?;
        let bytes = tensor.get_raw_data_mut().map_err(run("input tensor"))?;
        if bytes.len() != image.len() * 4 {
            return Err(EngineError::InputShape {
                batch: 1,
                expected: bytes.len() / 4,
                got: image.len(),
            });
        }
        for (dst, v) in bytes.chunks_exact_mut(4).zip(image) {
            dst.copy_from_slice(&v.to_ne_bytes());
        }
        let request = &mut session.request;
        request
            .set_input_tensor(&tensor)
            .map_err(run("setting the input"))?;
        request.infer().map_err(run("inference"))?;
        let output = |index: usize, width: usize| -> Result<Vec<f32>, EngineError> {
            let tensor = request
                .get_output_tensor_by_index(index)
                .map_err(run("reading an output"))?;
            let bytes = tensor.get_raw_data().map_err(run("reading an output"))?;
            if bytes.len() != width * 4 {
                return Err(EngineError::OutputShape {
                    expected: vec![1, width],
                    got: vec![bytes.len() / 4],
                });
            }
            Ok(bytes
                .chunks_exact(4)
                .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        Ok((output(0, self.spec.labels)?, output(1, self.spec.width)?))
    }
}

impl Engine for OpenVinoVit {
    fn name(&self) -> &'static str {
        self.precision.engine_name()
    }

    fn shape(&self) -> EngineShape {
        EngineShape::of(&self.spec)
    }

    fn reduced_precision(&self) -> bool {
        self.precision != CpuPrecision::F32
    }

    fn precision(&self) -> &'static str {
        self.precision.hint()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn preferred_batch(&self) -> usize {
        1
    }

    fn infer(&self, images: &[f32], batch: usize) -> Result<EngineOutput, EngineError> {
        let per_image = self.spec.in_channels * self.spec.image_size * self.spec.image_size;
        if batch == 0 || images.len() != batch * per_image {
            return Err(EngineError::InputShape {
                batch,
                expected: batch * per_image,
                got: images.len(),
            });
        }
        let mut session = self.session.lock().map_err(|_| EngineError::Run {
            engine: self.name(),
            reason: "an earlier inference on this engine panicked".to_owned(),
        })?;
        let mut out = EngineOutput {
            batch,
            logits: Vec::with_capacity(batch * self.spec.labels),
            features: Vec::with_capacity(batch * self.spec.width),
        };
        for image in images.chunks_exact(per_image) {
            let (logits, features) = self.run_one(&mut session, image)?;
            out.logits.extend(logits);
            out.features.extend(features);
        }
        Ok(out)
    }
}
