//! The firmware image's trust boundary, through the real firmware binary
//! (`--no-default-features --features firmware`, board `x86-release` fixed
//! at build time). `.ci/run` builds it and names it in `CXR_FIRMWARE_BIN`.
//!
//! The release profile keeps its trust store in `/etc/cxr-appliance/trust`
//! and its state in `/var/lib/cxr-appliance`, and the firmware refuses to be
//! pointed elsewhere, so the device tests run the binary in a private mount
//! namespace (`unshare -m`, root) with a copy-on-write `/etc` and an empty
//! `/var/lib`: the machine's own directories are never touched.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cxr_bundle::FAILPOINTS;
use cxr_tests::bundles::{locked, release_signer, write_trust_dir};
use cxr_tests::data::{missing, scratch_dir, workspace_root};

fn firmware_bin() -> Option<PathBuf> {
    match std::env::var_os("CXR_FIRMWARE_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None => missing(
            "the firmware binary (CXR_FIRMWARE_BIN)",
            "build it as .ci/run does: CXR_DEFAULT_BOARD=x86-release cargo build -p cxr-appliance --no-default-features --features firmware",
        ),
    }
}

fn firmware(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env_remove("CXR_BOARD")
        .env_remove("CXR_STATE_DIR")
        .env_remove("CXR_FAILPOINT")
        .env_remove("CXR_TEST_PANIC_STUDY");
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `key = "value"` from a TOML line.
fn toml_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap()
        .to_owned()
}

#[test]
fn the_firmware_carries_no_development_key_profile_or_test_command() {
    let Some(bin) = firmware_bin() else { return };
    let image = std::fs::read(&bin).unwrap();
    let root = workspace_root();
    let key_file =
        std::fs::read_to_string(root.join("board-config/dev-keys/dev-demo.pub.toml")).unwrap();
    let public_hex = toml_value(&key_file, "public_key");
    let key_id = toml_value(&key_file, "key_id");
    let public_raw = cxr_bundle::hex::decode::<32>(&public_hex).unwrap();
    let dev_profile =
        std::fs::read_to_string(root.join("board-config/boards/dev-x86.toml")).unwrap();
    let profile_line = dev_profile
        .lines()
        .find(|l| l.starts_with("description"))
        .unwrap();
    for (what, needle) in [
        ("the dev-demo public key (hex)", public_hex.as_bytes()),
        ("the dev-demo key id", key_id.as_bytes()),
        ("the dev-demo public key (bytes)", &public_raw[..]),
        ("the dev-x86 profile", profile_line.as_bytes()),
    ] {
        assert!(!contains(&image, needle), "the firmware contains {what}");
    }
    // The same scan finds them in the development build, so it can fail.
    let dev_image = std::fs::read(env!("CARGO_BIN_EXE_cxr-appliance")).unwrap();
    assert!(contains(&dev_image, public_hex.as_bytes()));
    assert!(contains(&dev_image, profile_line.as_bytes()));

    let out = firmware(&bin)
        .args([
            "dev-random-model",
            "--model",
            "m.onnx",
            "--params",
            "p.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("unrecognized subcommand"),
        "{out:?}"
    );
}

#[test]
fn the_firmware_refuses_every_board_and_state_override() {
    let Some(bin) = firmware_bin() else { return };
    let scratch = scratch_dir("firmware-overrides");
    let state = scratch.to_str().unwrap();
    // (what is refused, environment, extra arguments)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: [Case<'_>; 5] = [
        ("CXR_BOARD", vec![("CXR_BOARD", "dev-x86")], vec![]),
        ("--board", vec![], vec!["--board", "dev-x86"]),
        (
            "--board-file",
            vec![],
            vec!["--board-file", "board-config/boards/dev-x86.toml"],
        ),
        ("CXR_STATE_DIR", vec![("CXR_STATE_DIR", state)], vec![]),
        ("--state-dir", vec![], vec!["--state-dir", state]),
    ];
    for (what, env, extra) in cases {
        let mut cmd = firmware(&bin);
        cmd.current_dir(workspace_root())
            .args(["bundle", "status"])
            .args(&extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {out:?}");
        assert!(
            stderr.contains("BOARD_FIXED") && stderr.contains(&format!("; {what} is refused")),
            "{what}: {stderr}"
        );
    }
    // Nothing was written where the override pointed.
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

/// Run `script` as root in a private mount namespace where `/etc` is a
/// copy-on-write overlay holding `/etc/cxr-appliance/trust` (filled from
/// `trust`) and `/var/lib` is an empty tmpfs. `None` when namespaces are
/// not available here.
fn in_device_namespace(
    scratch: &Path,
    trust: &Path,
    script: &str,
    env: &[(&str, &Path)],
) -> Option<Output> {
    let (upper, work) = (scratch.join("etc-upper"), scratch.join("etc-work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let setup = format!(
        "set -e\n\
         mount -t overlay overlay -o lowerdir=/etc,upperdir={u},workdir={w} /etc\n\
         mkdir -p /etc/cxr-appliance/trust\n\
         cp {t}/* /etc/cxr-appliance/trust/\n\
         mount -t tmpfs tmpfs /var/lib\n\
         mkdir -p /var/lib/cxr-appliance\n\
         set +e\n{script}",
        u = upper.display(),
        w = work.display(),
        t = trust.display(),
    );
    let probe = Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        return missing(
            "a private mount namespace (unshare -m as root)",
            &format!("{probe:?}"),
        );
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &setup])
        .current_dir(workspace_root())
        .env_remove("CXR_BOARD")
        .env_remove("CXR_STATE_DIR")
        .env_remove("CXR_FAILPOINT")
        .env_remove("CXR_TEST_PANIC_STUDY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Some(cmd.output().unwrap())
}

/// `name.rc` and `name.out` as the script left them.
fn step(dir: &Path, name: &str) -> (i32, String) {
    let rc = std::fs::read_to_string(dir.join(format!("{name}.rc")))
        .unwrap_or_else(|e| panic!("{name}.rc: {e}"));
    let out = std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap_or_default();
    (rc.trim().parse().unwrap(), out)
}

#[test]
fn on_its_own_board_the_firmware_refuses_development_bundles_and_ignores_test_machinery() {
    let Some(bin) = firmware_bin() else { return };
    let scratch = scratch_dir("firmware-device");
    let trust = scratch.join("trust");
    let signer = release_signer();
    write_trust_dir(&trust, &[&signer], &[]);
    let release_bundle = scratch.join("release.cxrb");
    std::fs::write(
        &release_bundle,
        locked(&signer, "fw-test", 1, &["x86-release"]),
    )
    .unwrap();
    let out_dir = scratch.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    // Each step: `run NAME [VAR=VALUE ...] -- ARGS`, output and exit code kept.
    let script = format!(
        r#"run() {{ name=$1; shift; env "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"; echo $? > "$OUT/$name.rc"; }}
run verify-demo timeout 60 "$FW" bundle verify trainer/demo/demo-nih.cxrb
run install CXR_FAILPOINT={fp} timeout 100 "$FW" bundle install "$REL"
run classify CXR_FAILPOINT=audit:partial-record CXR_TEST_PANIC_STUDY=RG1_J2KI.dcm timeout 100 "$FW" classify appliance/samples/RG1_J2KI.dcm
run audit timeout 60 "$FW" audit verify
cp board-config/dev-keys/dev-demo.pub.toml /etc/cxr-appliance/trust/
run verify-demo-trusted timeout 60 "$FW" bundle verify trainer/demo/demo-nih.cxrb
"#,
        fp = FAILPOINTS[0],
    );
    let Some(result) = in_device_namespace(
        &scratch,
        &trust,
        &script,
        &[("FW", &bin), ("REL", &release_bundle), ("OUT", &out_dir)],
    ) else {
        return;
    };
    assert!(result.status.success(), "{result:?}");
    let (rc, out) = step(&out_dir, "verify-demo");
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("BUNDLE_UNKNOWN_KEY"), "{out}");
    let (rc, out) = step(&out_dir, "install");
    assert_eq!(
        rc, 0,
        "a failpoint variable stopped the firmware's install: {out}"
    );
    let (rc, out) = step(&out_dir, "classify");
    assert!(
        [0, 3, 5].contains(&rc) && !out.contains("\"failed\""),
        "the firmware honoured a failpoint or an injected panic (exit {rc}): {out}"
    );
    assert!(out.contains("fw-test"), "{out}");
    let (rc, out) = step(&out_dir, "audit");
    assert_eq!(rc, 0, "{out}");
    // Even with the development key in its trust store, a release board
    // refuses a development-signed bundle.
    let (rc, out) = step(&out_dir, "verify-demo-trusted");
    assert_eq!(rc, 2, "{out}");
    assert!(!out.contains("\"ok\":true"), "{out}");
}
