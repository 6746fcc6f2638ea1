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
    let staging = cache.join(format!("staging-openvino-{}", std::process::id()));
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
        .arg(format!("openvino=={OPENVINO_VERSION}"))
        .status()
        .map_err(|e| format!("running python3 -m pip: {e}"))?;
    if !status.success() {
        return Err(format!(
            "pip install openvino=={OPENVINO_VERSION} failed ({status})"
        ));
    }
    if std::fs::rename(&staging, dir).is_err() && find_openvino_c(dir).is_none() {
        return Err(format!("could not move the wheel into {}", dir.display()));
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
