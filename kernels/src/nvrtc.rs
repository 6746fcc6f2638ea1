//! Run-time compilation of the kernels with NVRTC for the device's
//! architecture, with an on-disk cache keyed by the sources' hash, the
//! target and the NVRTC version. A corrupt, oversized or stale cache entry
//! is recompiled, never trusted: each file carries the SHA-256 of its
//! contents.
//!
//! Known architectures get machine code (CUBIN): no JIT in the driver at
//! start, and a CUBIN from a newer NVRTC still loads on an older driver of
//! the same major version, where PTX would not. A device newer than our
//! list gets PTX for the newest one, which its driver JIT-compiles.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result, sys};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::sources::{source_hash, Program, HEADERS};
use crate::CudaError;

/// Architectures the kernels are built and tested for: Ampere datacenter
/// (the oldest with bf16 tensor cores), Jetson Orin, Ada, Hopper.
pub const ARCHES: &[u32] = &[80, 87, 89, 90];

/// What NVRTC produces for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Machine code for exactly this architecture (`sm_87`).
    Cubin(u32),
    /// PTX for this virtual architecture (`compute_90`).
    Ptx(u32),
}

impl Target {
    /// NVRTC's `--gpu-architecture` value, also the cache key's part.
    pub fn arch(self) -> String {
        match self {
            Target::Cubin(n) => format!("sm_{n}"),
            Target::Ptx(n) => format!("compute_{n}"),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Target::Cubin(_) => "cubin",
            Target::Ptx(_) => "ptx",
        }
    }
}

/// The target for a compute capability, or why the device cannot run the
/// kernels.
pub fn target_for(major: i32, minor: i32) -> Result<Target, CudaError> {
    if major < 8 {
        return Err(CudaError::UnsupportedArch { major, minor });
    }
    let cc = u32::try_from(major * 10 + minor).unwrap_or(0);
    Ok(if ARCHES.contains(&cc) {
        Target::Cubin(cc)
    } else {
        Target::Ptx(ARCHES[ARCHES.len() - 1])
    })
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

/// Destroys the NVRTC program however compilation ends.
struct ProgramGuard(sys::nvrtcProgram);

impl Drop for ProgramGuard {
    fn drop(&mut self) {
        // SAFETY: the program was created by nvrtcCreateProgram and is
        // destroyed once, here.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

/// Compile one program for `target`: CUBIN bytes, or PTX text as bytes.
pub fn compile(program: &Program, target: Target) -> Result<Vec<u8>, CudaError> {
    nvrtc_present()?;
    let arch = target.arch();
    let fail = |log: String| CudaError::Compile {
        program: program.name,
        arch: arch.clone(),
        log,
    };
    let source = CString::new(flatten(program)).map_err(|e| fail(e.to_string()))?;
    let name = CString::new(program.name).map_err(|e| fail(e.to_string()))?;
    let prog = result::create_program(&source, Some(&name))
        .map_err(|e| fail(format!("nvrtcCreateProgram: {e:?}")))?;
    let guard = ProgramGuard(prog);
    // IEEE division and square root, no flush-to-zero: the references are
    // plain f32.
    let options = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_owned(),
        "--ftz=false".to_owned(),
        "--prec-div=true".to_owned(),
        "--prec-sqrt=true".to_owned(),
    ];
    // SAFETY: `guard.0` is a live program (destroyed only by the guard);
    // the options are NUL-free strings that outlive the call.
    if let Err(e) = unsafe { result::compile_program(guard.0, &options) } {
        // SAFETY: as above; the log is a NUL-terminated buffer NVRTC sized.
        let log = unsafe { result::get_program_log(guard.0) }
            .map(|raw| {
                let bytes: Vec<u8> = raw
                    .iter()
                    .map(|c| *c as u8)
                    .take_while(|b| *b != 0)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .unwrap_or_default();
        return Err(fail(format!("{e:?}: {log}")));
    }
    match target {
        Target::Cubin(_) => {
            let mut size = 0usize;
            // SAFETY: live compiled program; NVRTC writes one usize.
            unsafe { sys::nvrtcGetCUBINSize(guard.0, &mut size) }
                .result()
                .map_err(|e| fail(format!("nvrtcGetCUBINSize: {e:?}")))?;
            let mut cubin = vec![0u8; size];
            // SAFETY: the buffer holds exactly the size NVRTC reported.
            unsafe { sys::nvrtcGetCUBIN(guard.0, cubin.as_mut_ptr().cast()) }
                .result()
                .map_err(|e| fail(format!("nvrtcGetCUBIN: {e:?}")))?;
            Ok(cubin)
        }
        Target::Ptx(_) => {
            // SAFETY: live compiled program.
            let raw = unsafe { result::get_ptx(guard.0) }
                .map_err(|e| fail(format!("nvrtcGetPTX: {e:?}")))?;
            Ok(raw
                .iter()
                .map(|c| *c as u8)
                .take_while(|b| *b != 0)
                .collect())
        }
    }
}

/// PTX text for a virtual architecture (what ptxas checks in the tests).
pub fn compile_ptx(program: &Program, arch: u32) -> Result<String, CudaError> {
    let bytes = compile(program, Target::Ptx(arch))?;
    String::from_utf8(bytes).map_err(|e| CudaError::Compile {
        program: program.name,
        arch: format!("compute_{arch}"),
        log: format!("PTX is not UTF-8: {e}"),
    })
}

/// Whether a compile came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    /// Compiled and stored (or no cache folder was given).
    Compiled,
    /// The cached file failed its authentication (forged, damaged, written
    /// by another device or an older format) and was recompiled and replaced.
    Replaced,
}

/// The on-disk kernel cache: compiled kernels are code that runs on every
/// study, so each entry carries an HMAC-SHA256 under a key derived from the
/// device secret. An entry this device did not write is never loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct KernelCache {
    pub dir: PathBuf,
    pub key: [u8; 32],
}

impl std::fmt::Debug for KernelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelCache")
            .field("dir", &self.dir)
            .field("key", &"<device key>")
            .finish()
    }
}

/// The cache file of a program for a target and NVRTC version.
pub fn cache_path(dir: &Path, program: &Program, target: Target, nvrtc: (i32, i32)) -> PathBuf {
    let arch = target.arch();
    let mut h = Sha256::new();
    h.update(source_hash());
    h.update(program.name.as_bytes());
    h.update(arch.as_bytes());
    h.update(format!("{}.{}", nvrtc.0, nvrtc.1).as_bytes());
    let key = cxr_fsio::hex(&h.finalize()[..12]);
    dir.join(format!(
        "{}-{arch}-nvrtc{}.{}-{key}.{}",
        program.name.trim_end_matches(".cu"),
        nvrtc.0,
        nvrtc.1,
        target.extension()
    ))
}

const MAGIC: &[u8; 8] = b"CXRKRNL2";

/// Larger cache files are ignored (and replaced).
pub const MAX_CACHED_BYTES: u64 = 16 << 20;

/// The MAC binds the entry to what it is for (`entry`: the cache file name,
/// which names the program, target, NVRTC version and source hash), so a
/// genuine entry of another program or an older firmware cannot be renamed
/// into place.
fn mac(key: &[u8; 32], entry: &str, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(MAGIC);
    mac.update(&(entry.len() as u64).to_le_bytes());
    mac.update(entry.as_bytes());
    mac.update(payload);
    mac
}

fn seal(key: &[u8; 32], entry: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&mac(key, entry, payload).finalize().into_bytes());
    out.extend_from_slice(payload);
    out
}

fn unseal<'a>(key: &[u8; 32], entry: &str, file: &'a [u8]) -> Option<&'a [u8]> {
    let rest = file.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (tag, payload) = rest.split_at(32);
    // Constant-time comparison.
    mac(key, entry, payload)
        .verify_slice(tag)
        .ok()
        .map(|()| payload)
}

fn read_bounded(path: &Path, max: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    // One byte over the cap tells an oversized file from one at the cap.
    file.take(max + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= max).then_some(bytes)
}

/// Compile through the cache: an authentic cached artifact is used as is; a
/// missing, forged, corrupt or oversized one is (re)compiled and written
/// atomically.
pub fn compile_cached(
    program: &Program,
    target: Target,
    cache: Option<&KernelCache>,
    compiler: impl Fn(&Program, Target) -> Result<Vec<u8>, CudaError>,
    nvrtc: (i32, i32),
) -> Result<(Vec<u8>, CacheOutcome), CudaError> {
    let Some(KernelCache { dir, key }) = cache else {
        return Ok((compiler(program, target)?, CacheOutcome::Compiled));
    };
    let path = cache_path(dir, program, target, nvrtc);
    let entry = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let present = path.exists();
    // A cache file is ours, but the partition may be damaged: never read
    // more than an artifact can be (ours are about 150 KB).
    if let Some(payload) = read_bounded(&path, MAX_CACHED_BYTES)
        .as_deref()
        .and_then(|bytes| unseal(key, &entry, bytes))
    {
        return Ok((payload.to_vec(), CacheOutcome::Hit));
    }
    let artifact = compiler(program, target)?;
    let cache_error = |e: std::io::Error| CudaError::Cache {
        path: path.clone(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(cache_error)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, seal(key, &entry, &artifact))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(cache_error)?;
    let outcome = if present {
        CacheOutcome::Replaced
    } else {
        CacheOutcome::Compiled
    };
    Ok((artifact, outcome))
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
    fn targets_follow_the_compute_capability() {
        assert_eq!(target_for(8, 7).ok(), Some(Target::Cubin(87)));
        assert_eq!(target_for(9, 0).ok(), Some(Target::Cubin(90)));
        assert_eq!(target_for(8, 6).ok(), Some(Target::Ptx(90)));
        assert_eq!(target_for(12, 0).ok(), Some(Target::Ptx(90)));
        assert_eq!(Target::Cubin(87).arch(), "sm_87");
        assert_eq!(Target::Ptx(90).arch(), "compute_90");
        assert!(matches!(
            target_for(7, 5),
            Err(CudaError::UnsupportedArch { major: 7, minor: 5 })
        ));
    }

    #[test]
    fn the_cache_hits_misses_by_key_and_replaces_bad_entries() {
        let dir = std::env::temp_dir().join(format!("cxr-cuda-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let calls = Cell::new(0);
        let fake = |p: &Program, t: Target| -> Result<Vec<u8>, CudaError> {
            calls.set(calls.get() + 1);
            Ok(format!("code of {} for {}", p.name, t.arch()).into_bytes())
        };
        let p = &PROGRAMS[0];
        let cache = KernelCache {
            dir: dir.clone(),
            key: [7; 32],
        };
        let run = |t, v| compile_cached(p, t, Some(&cache), fake, v);
        let first = run(Target::Cubin(87), (12, 9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.1, CacheOutcome::Compiled);
        let again = run(Target::Cubin(87), (12, 9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((again.1, calls.get()), (CacheOutcome::Hit, 1));
        assert_eq!(again.0, first.0);
        // Another target or NVRTC version is another entry.
        let other = |t, v| run(t, v).map(|r| r.1).ok();
        assert_eq!(
            other(Target::Cubin(90), (12, 9)),
            Some(CacheOutcome::Compiled)
        );
        assert_eq!(
            other(Target::Ptx(90), (12, 9)),
            Some(CacheOutcome::Compiled)
        );
        assert_eq!(
            other(Target::Cubin(87), (12, 8)),
            Some(CacheOutcome::Compiled)
        );
        assert_eq!(calls.get(), 4);
        // A flipped byte is caught and recompiled.
        let path = cache_path(&dir, p, Target::Cubin(87), (12, 9));
        let mut bytes = std::fs::read(&path).unwrap_or_default();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
        let fixed = run(Target::Cubin(87), (12, 9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((fixed.1, &fixed.0), (CacheOutcome::Replaced, &first.0));
        // A forged entry (well formed, sealed under another key, as an
        // attacker without the device secret could write it) is not loaded.
        let evil = b"code an attacker wants to run".to_vec();
        let entry = path.file_name().unwrap().to_str().unwrap().to_owned();
        std::fs::write(&path, seal(&[8; 32], &entry, &evil)).unwrap_or_else(|e| panic!("{e}"));
        let fixed = run(Target::Cubin(87), (12, 9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((fixed.1, &fixed.0), (CacheOutcome::Replaced, &first.0));
        // A genuine entry of another target, renamed into place, is not
        // loaded either: the MAC names what the entry is for.
        let other = cache_path(&dir, p, Target::Cubin(90), (12, 9));
        std::fs::copy(&other, &path).unwrap_or_else(|e| panic!("{e}"));
        let fixed = run(Target::Cubin(87), (12, 9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((fixed.1, &fixed.0), (CacheOutcome::Replaced, &first.0));
        // Nor is the old format, sealed with a bare SHA-256 anyone can compute.
        let mut old = b"CXRKRNL1".to_vec();
        old.extend_from_slice(&Sha256::digest(&evil));
        old.extend_from_slice(&evil);
        std::fs::write(&path, old).unwrap_or_else(|e| panic!("{e}"));
        let fixed = run(Target::Cubin(87), (12, 9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((fixed.1, &fixed.0), (CacheOutcome::Replaced, &first.0));
        // An oversized file is not read, only replaced.
        let big = vec![b'x'; MAX_CACHED_BYTES as usize + 1];
        std::fs::write(&path, big).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_bounded(&path, MAX_CACHED_BYTES), None);
        let fixed = run(Target::Cubin(87), (12, 9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((fixed.1, fixed.0), (CacheOutcome::Replaced, first.0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
