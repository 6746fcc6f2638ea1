//! Run-time compilation of the kernels with NVRTC, for one architecture,
//! with an on-disk cache keyed by the sources' hash, the architecture and
//! the NVRTC version. A corrupt or stale cache entry is recompiled, never
//! trusted: each file carries the SHA-256 of its PTX.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::sources::{source_hash, Program, HEADERS};
use crate::CudaError;

/// Architectures the kernels are built and tested for: Jetson Orin, Ada,
/// Hopper (and Ampere datacenter, the oldest with bf16 tensor cores).
pub const ARCHES: &[&str] = &["compute_80", "compute_87", "compute_89", "compute_90"];

/// The PTX architecture for a compute capability, or why not.
pub fn arch_for(major: i32, minor: i32) -> Result<&'static str, CudaError> {
    if major < 8 {
        return Err(CudaError::UnsupportedArch { major, minor });
    }
    let exact = format!("compute_{major}{minor}");
    // A newer device runs the newest PTX we build (the driver JITs it).
    Ok(ARCHES
        .iter()
        .copied()
        .find(|a| *a == exact)
        .unwrap_or(ARCHES[ARCHES.len() - 1]))
}

/// The program's source with our headers inlined (each once, in place of
/// its `#include`): NVRTC gets one self-contained text, no include paths.
pub fn flatten(program: &Program) -> String {
    fn expand(text: &str, seen: &mut Vec<&'static str>, out: &mut String) {
        for line in text.lines() {
            let included = line
                .trim()
                .strip_prefix("#include")
                .map(|r| r.trim().trim_matches('"'));
            match included.and_then(|name| HEADERS.iter().find(|(h, _)| *h == name)) {
                Some((name, body)) => {
                    if !seen.contains(name) {
                        seen.push(name);
                        expand(body, seen, out);
                    }
                }
                None if line.trim() == "#pragma once" => {}
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    let mut out = String::new();
    expand(program.source, &mut Vec::new(), &mut out);
    out
}

fn nvrtc_present() -> Result<(), CudaError> {
    // SAFETY: only tries to dlopen the library by its candidate names; no
    // symbol of it is called.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaError::NoNvrtc {
            reason: "libnvrtc.so not found on the library path".into(),
        })
    }
}

/// NVRTC's `(major, minor)`.
pub fn version() -> Result<(i32, i32), CudaError> {
    nvrtc_present()?;
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: the library is present (checked above); nvrtcVersion writes
    // two ints through valid, exclusive pointers to locals.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(CudaError::NoNvrtc {
            reason: format!("nvrtcVersion returned {status:?}"),
        });
    }
    Ok((major, minor))
}

/// Compile one program to PTX for `arch` (e.g. `compute_87`).
pub fn compile(program: &Program, arch: &'static str) -> Result<String, CudaError> {
    nvrtc_present()?;
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(arch),
        name: Some(program.name.to_owned()),
        // IEEE division and square root, no flush-to-zero: the references
        // are plain f32.
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    let source = flatten(program);
    // cudarc unwraps some NVRTC results; a panic there must not take the
    // appliance down, only this engine.
    let result = std::panic::catch_unwind(|| cudarc::nvrtc::compile_ptx_with_opts(source, opts));
    let compile_error = |log: String| CudaError::Compile {
        program: program.name,
        arch: arch.to_owned(),
        log,
    };
    match result {
        Ok(Ok(ptx)) => Ok(ptx.to_src()),
        Ok(Err(cudarc::nvrtc::CompileError::CompileError { log, .. })) => {
            Err(compile_error(log.to_string_lossy().into_owned()))
        }
        Ok(Err(e)) => Err(compile_error(format!("{e:?}"))),
        Err(_) => Err(compile_error("NVRTC panicked".into())),
    }
}

/// Whether a compile came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    /// Compiled and stored (or no cache folder was given).
    Compiled,
    /// The cached file failed its check and was replaced.
    Replaced,
}

/// The cache file of a program for an architecture and NVRTC version.
pub fn cache_path(dir: &Path, program: &Program, arch: &str, nvrtc: (i32, i32)) -> PathBuf {
    let mut h = Sha256::new();
    h.update(source_hash());
    h.update(program.name.as_bytes());
    h.update(arch.as_bytes());
    h.update(format!("{}.{}", nvrtc.0, nvrtc.1).as_bytes());
    let key: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join(format!(
        "{}-{arch}-nvrtc{}.{}-{key}.ptx",
        program.name.trim_end_matches(".cu"),
        nvrtc.0,
        nvrtc.1
    ))
}

const CHECK_PREFIX: &str = "// cxr-cuda ptx sha256 ";

/// Larger cache files are ignored (and replaced).
pub const MAX_CACHED_PTX_BYTES: u64 = 16 << 20;

fn read_bounded(path: &Path, max: u64) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    // One byte over the cap tells an oversized file from one at the cap.
    file.take(max + 1).read_to_string(&mut text).ok()?;
    (text.len() as u64 <= max).then_some(text)
}

fn seal(ptx: &str) -> String {
    let digest: String = Sha256::digest(ptx.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{CHECK_PREFIX}{digest}\n{ptx}")
}

fn unseal(text: &str) -> Option<&str> {
    let (first, ptx) = text.split_once('\n')?;
    let digest = first.strip_prefix(CHECK_PREFIX)?;
    let actual: String = Sha256::digest(ptx.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (digest == actual).then_some(ptx)
}

/// Compile through the cache: a valid cached PTX is used as is; a missing
/// or corrupt one is (re)compiled and written atomically.
pub fn compile_cached(
    program: &Program,
    arch: &'static str,
    cache_dir: Option<&Path>,
    compiler: impl Fn(&Program, &'static str) -> Result<String, CudaError>,
    nvrtc: (i32, i32),
) -> Result<(String, CacheOutcome), CudaError> {
    let Some(dir) = cache_dir else {
        return Ok((compiler(program, arch)?, CacheOutcome::Compiled));
    };
    let path = cache_path(dir, program, arch, nvrtc);
    // A cache file is ours, but the partition may be damaged: never read
    // more than a PTX can be (ours are about 150 KB).
    let present = path.exists();
    let existing = read_bounded(&path, MAX_CACHED_PTX_BYTES);
    if let Some(ptx) = existing.as_deref().and_then(unseal) {
        return Ok((ptx.to_owned(), CacheOutcome::Hit));
    }
    let ptx = compiler(program, arch)?;
    let cache_error = |e: std::io::Error| CudaError::Cache {
        path: path.clone(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(cache_error)?;
    let tmp = path.with_extension("ptx.tmp");
    std::fs::write(&tmp, seal(&ptx))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(cache_error)?;
    let outcome = if present {
        CacheOutcome::Replaced
    } else {
        CacheOutcome::Compiled
    };
    Ok((ptx, outcome))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::sources::PROGRAMS;

    #[test]
    fn flattening_inlines_each_header_once_and_nothing_else() {
        for p in PROGRAMS {
            let flat = flatten(p);
            assert!(!flat.contains("#include"), "{}", p.name);
            assert_eq!(flat.matches("struct AttentionParams {").count(), 1);
            assert_eq!(flat.matches("struct F16 {").count(), 1);
        }
    }

    #[test]
    fn architectures_map_from_compute_capability() {
        assert_eq!(arch_for(8, 7).ok(), Some("compute_87"));
        assert_eq!(arch_for(9, 0).ok(), Some("compute_90"));
        assert_eq!(arch_for(12, 0).ok(), Some("compute_90"));
        assert!(matches!(
            arch_for(7, 5),
            Err(CudaError::UnsupportedArch { major: 7, minor: 5 })
        ));
    }

    #[test]
    fn the_cache_hits_misses_by_key_and_replaces_corrupt_entries() {
        let dir = std::env::temp_dir().join(format!("cxr-cuda-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let calls = Cell::new(0);
        let fake = |p: &Program, arch: &'static str| -> Result<String, CudaError> {
            calls.set(calls.get() + 1);
            Ok(format!("// ptx of {} for {arch}\n", p.name))
        };
        let p = &PROGRAMS[0];
        let run = |arch, v| compile_cached(p, arch, Some(&dir), fake, v);
        let first = run("compute_87", (12, 9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.1, CacheOutcome::Compiled);
        let again = run("compute_87", (12, 9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((again.1, calls.get()), (CacheOutcome::Hit, 1));
        assert_eq!(again.0, first.0);
        // Another architecture or NVRTC version is another entry.
        assert_eq!(
            run("compute_90", (12, 9)).map(|r| r.1).ok(),
            Some(CacheOutcome::Compiled)
        );
        assert_eq!(
            run("compute_87", (12, 8)).map(|r| r.1).ok(),
            Some(CacheOutcome::Compiled)
        );
        assert_eq!(calls.get(), 3);
        // A flipped byte is caught and recompiled.
        let path = cache_path(&dir, p, "compute_87", (12, 9));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, text.replace("ptx of", "ptx 0f")).unwrap_or_else(|e| panic!("{e}"));
        let fixed = run("compute_87", (12, 9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (fixed.1, fixed.0),
            (CacheOutcome::Replaced, first.0.clone())
        );
        // An oversized file is not read, only replaced.
        let big = "x".repeat(MAX_CACHED_PTX_BYTES as usize + 1);
        std::fs::write(&path, big).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_bounded(&path, MAX_CACHED_PTX_BYTES), None);
        let fixed = run("compute_87", (12, 9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((fixed.1, fixed.0), (CacheOutcome::Replaced, first.0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
