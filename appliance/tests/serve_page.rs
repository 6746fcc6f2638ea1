//! The operator's page in a real browser: Debian's headless `chromium`
//! driven through `chromedriver` (WebDriver). It logs in, uploads two
//! studies through the page, waits for their results, opens the chest
//! film's study page (findings table) and the extremity film's (its
//! abstention, no probability), verifies the audit log from the system
//! page, installs a bundle from the bundles page (one whose labels have no
//! operating point: it decides nothing), runs the chest study again from
//! its page (an undecided second version, the version history), uploads a
//! second patient's film under the extremity's Study UID (a patient
//! conflict), and adds a user and creates an API token from the access
//! page, taking a screenshot at each step (`target/page-screenshots/`).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cxr_tests::bundles::{dev_signer, draft, write_trust_dir};
use cxr_tests::data::scratch_dir;
use cxr_tests::dicom_net::{tool, Service};
use cxr_tests::webdriver::Browser;

mod serve_common;
use serve_common::{appliance, audit_records, demo};

const WAIT: Duration = Duration::from_secs(120);

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/page-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn add_admin(state: &str) {
    let mut child = Command::new(appliance())
        .args([
            "user",
            "add",
            "ada",
            "--role",
            "admin",
            "--state-dir",
            state,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery staple\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_operator_works_the_page_in_a_real_browser() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let dir = scratch_dir("serve-page");
    let state = dir.join("state");
    let state_arg = state.to_str().unwrap().to_owned();
    let args = [
        "--bundle",
        &demo(),
        "--state-dir",
        &state_arg,
        "--listen",
        "127.0.0.1:0",
        "--stable-s",
        "1",
    ];
    // The test key signs the bundle installed from the page.
    write_trust_dir(&state.join("trust"), &[&dev_signer()], &[]);
    let service = Service::start(&appliance(), &args, &[], &dir.join("serve.err"));
    let port = service.http_port.unwrap();
    add_admin(&state_arg);
    let shots = screenshots();
    let base = format!("http://127.0.0.1:{port}/");

    browser.goto(&base);
    browser.find("#login", WAIT).expect("the login form");
    browser.screenshot(&shots.join("01-login.png"));
    browser.type_into("#user", "ada");
    browser.type_into("#password", "correct horse battery staple");
    browser.click("#login-submit");
    if browser.find("#worklist", WAIT).is_none() {
        panic!(
            "no worklist after logging in; the page says: {}",
            browser.text("body")
        );
    }

    upload_and_wait(&browser, &shots);
    study_pages(&browser, &base, &shots);
    system_page(&browser, &base, &shots);
    install_from_page(&browser, &base, &shots, &dir);
    rerun_from_page(&browser, &base, &shots);
    conflict_from_page(&browser, &base, &shots, &dir);
    access_from_page(&browser, &base, &shots, port);
    eprintln!("screenshots in {}", shots.display());
    drop(browser);
    assert_eq!(
        service.terminate(),
        Some(0),
        "{}",
        "the service stops cleanly"
    );
    page_reads_are_audited_under_the_user(&state_arg);
}

/// What the page showed of the studies is in the audit log as exports by
/// the logged-in user (the study view and its picture).
fn page_reads_are_audited_under_the_user(state: &str) {
    let page_reads: Vec<serde_json::Value> = audit_records(&["--state-dir", state])
        .into_iter()
        .filter(|r| r["event"]["type"] == "exported" && r["event"]["channel"] == "page")
        .collect();
    for what in ["study view", "result picture", "worklist"] {
        assert!(
            page_reads.iter().any(|r| r["event"]["what"]
                .as_str()
                .is_some_and(|w| w.starts_with(what))
                && r["event"]["actor"] == "ada"),
            "no page export `{what}` by ada: {page_reads:?}"
        );
    }
}

fn upload_and_wait(browser: &Browser, shots: &Path) {
    let files = format!(
        "{}\n{}",
        std::fs::canonicalize(sample("RG1_J2KI.dcm"))
            .unwrap()
            .display(),
        std::fs::canonicalize(sample("RG3_J2KI.dcm"))
            .unwrap()
            .display()
    );
    browser.type_into("#study-files", &files);
    browser.click("#upload");
    let (stored, text) = browser.wait_for_text("#upload-result", WAIT, |t| t.contains("2 stored"));
    assert!(stored, "the page's upload: {text}");
    let (done, text) = browser.wait_for_text("#worklist", WAIT, |t| {
        t.contains("decision") && t.contains("abstention")
    });
    assert!(done, "the worklist did not show both results:\n{text}");
    assert!(
        text.contains("token:") || text.contains("ada@"),
        "the source is shown: {text}"
    );
    browser.screenshot(&shots.join("02-worklist.png"));
}

const RG1_STUDY: &str = "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457";

fn study_pages(browser: &Browser, base: &str, shots: &Path) {
    browser.goto(&format!("{base}#/study/{RG1_STUDY}"));
    browser
        .find("#findings", WAIT)
        .expect("the chest study's findings");
    let findings = browser.text("#findings");
    for label in ["Atelectasis", "Effusion", "Pneumothorax"] {
        assert!(findings.contains(label), "{findings}");
    }
    assert!(
        findings.contains("0."),
        "probabilities are shown for a decision: {findings}"
    );
    assert!(browser.text("#engine").contains("tract"));
    assert!(browser.text("#ood").contains("cut-off"));
    let loaded = cxr_tests::dicom_net::wait_until(WAIT, || {
        let width = browser.script(
            "const i = document.getElementById('picture'); return i && i.complete ? i.naturalWidth : 0;",
            &[],
        );
        width.as_u64().unwrap_or(0) > 0
    });
    assert!(loaded, "the result picture loads");
    browser.screenshot(&shots.join("03-study-chest.png"));

    // The extremity film: the worklist row leads to its abstention.
    browser.goto(&format!("{base}#/worklist"));
    browser
        .find("#worklist tbody tr", WAIT)
        .expect("worklist rows");
    let other = browser.script(
        "const r = [...document.querySelectorAll('#worklist tbody tr')].find(r => r.innerText.includes('abstention')); return r ? r.dataset.study : null;",
        &[],
    );
    let other = other.as_str().expect("an abstained row").to_owned();
    browser.goto(&format!("{base}#/study/{other}"));
    let (shown, text) =
        browser.wait_for_text("#abstention", WAIT, |t| t.contains("ABSTAIN_NOT_CHEST"));
    assert!(shown, "the extremity film's abstention: {text}");
    let findings = browser.text("#findings");
    assert!(
        findings.contains("Pneumothorax") && !findings.contains("0."),
        "no probability for an abstained study: {findings}"
    );
    browser.screenshot(&shots.join("04-study-extremity.png"));
}

fn system_page(browser: &Browser, base: &str, shots: &Path) {
    browser.goto(&format!("{base}#/system"));
    let (shown, text) = browser.wait_for_text("#system", WAIT, |t| t.contains("cxr-demo-nih"));
    assert!(shown, "the system page names the bundle: {text}");
    browser.click("#verify-audit");
    let (verified, text) =
        browser.wait_for_text("#audit-verify-output", WAIT, |t| t.contains("\"ok\": true"));
    assert!(verified, "verify now: {text}");
    browser.screenshot(&shots.join("05-system.png"));
}

/// A tiny test model whose labels all have no operating point (an
/// infinite Uncertain band): every study it runs is undecided.
fn undecided_bundle(dir: &Path) -> PathBuf {
    let mut d = draft("cxr-test-undecided", 1, &["dev-x86"], 11);
    d.params.bands = vec![f32::INFINITY; d.params.labels.len()];
    let bytes = d.lock(&dev_signer()).unwrap();
    let path = dir.join("undecided.cxrb");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn install_from_page(browser: &Browser, base: &str, shots: &Path, dir: &Path) {
    browser.goto(&format!("{base}#/bundles"));
    // The browser takes a file by its canonical path.
    let bundle = std::fs::canonicalize(undecided_bundle(dir)).unwrap();
    browser.type_into("#bundle-file", bundle.to_str().unwrap());
    browser.click("#bundle-install");
    let (done, stage) = browser.wait_for_text("#bundle-progress", Duration::from_secs(600), |t| {
        ["installed", "refused", "Refused", "Choose"]
            .iter()
            .any(|w| t.contains(w))
    });
    let output = browser.text("#bundle-output");
    browser.screenshot(&shots.join("06-bundle-install.png"));
    assert!(done && stage.contains("installed"), "{stage}\n{output}");
    assert!(output.contains("\"ok\": true"), "{output}");
}

/// The chest study runs again from its page under the installed model: a
/// second version, undecided (no label has an operating point), shown as
/// such, with the version history naming both models.
fn rerun_from_page(browser: &Browser, base: &str, shots: &Path) {
    browser.goto(&format!("{base}#/study/{RG1_STUDY}"));
    browser.find("#rerun", WAIT).expect("the re-run button");
    browser.click("#rerun");
    let (queued, text) = browser.wait_for_text("#rerun-output", WAIT, |t| !t.is_empty());
    assert!(queued && text.contains("queued"), "{text}");
    let shown = cxr_tests::dicom_net::wait_until(WAIT, || {
        // The same hash does not route again: through the worklist.
        browser.goto(&format!("{base}#/worklist"));
        browser.goto(&format!("{base}#/study/{RG1_STUDY}"));
        browser.find("#history", Duration::from_secs(10)).is_some()
            && browser.text("#history").contains("undecided")
    });
    assert!(shown, "the second version: {}", browser.text("body"));
    let history = browser.text("#history");
    assert!(
        history.contains("cxr-demo-nih") && history.contains("cxr-test-undecided"),
        "{history}"
    );
    assert!(
        history.contains("version 1"),
        "version 2 names the one it replaces: {history}"
    );
    let outcome = browser.text("#outcome");
    assert!(
        outcome.contains("undecided") && !outcome.contains("decision ("),
        "{outcome}"
    );
    assert!(
        browser.text("#summary").contains("indeterminate"),
        "never 'none present'"
    );
    assert!(browser.text("#findings").contains("no operating point"));
    browser.screenshot(&shots.join("07-study-undecided.png"));
    browser.script("document.getElementById('history').scrollIntoView();", &[]);
    browser.screenshot(&shots.join("08-study-version-history.png"));
    browser.goto(&format!("{base}#/worklist"));
    let (listed, text) = browser.wait_for_text("#worklist", WAIT, |t| t.contains("undecided"));
    assert!(listed && !text.contains("none present"), "{text}");
}

/// A second patient's film under the extremity's Study Instance UID: the
/// study abstains with the conflict flagged, on the worklist and its page.
fn conflict_from_page(browser: &Browser, base: &str, shots: &Path, dir: &Path) {
    let Some(dcmodify) = tool("dcmodify") else {
        return;
    };
    let copy = dir.join("rg3-pat-b.dcm");
    std::fs::copy(sample("RG3_J2KI.dcm"), &copy).unwrap();
    let out = Command::new(dcmodify)
        .args(["-nb", "-gin", "-m", "(0010,0020)=PAT-B"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    browser.goto(&format!("{base}#/worklist"));
    browser.find("#study-files", WAIT).expect("the upload form");
    browser.type_into(
        "#study-files",
        std::fs::canonicalize(&copy).unwrap().to_str().unwrap(),
    );
    browser.click("#upload");
    let (listed, text) =
        browser.wait_for_text("#worklist", WAIT, |t| t.contains("patient_conflict"));
    assert!(listed, "the worklist shows the conflict: {text}");
    let study = browser.script(
        "const r = [...document.querySelectorAll('#worklist tbody tr')].find(r => r.innerText.includes('patient_conflict')); return r ? r.dataset.study : null;",
        &[],
    );
    browser.goto(&format!("{base}#/study/{}", study.as_str().unwrap()));
    let (shown, text) = browser.wait_for_text("#abstention", WAIT, |t| {
        t.contains("ABSTAIN_PATIENT_CONFLICT")
    });
    assert!(shown, "{text}");
    assert!(browser.text("body").contains("Flag: patient_conflict"));
    browser.screenshot(&shots.join("09-study-patient-conflict.png"));
}

/// The admin adds a viewer and creates a token from the access page; the
/// token works, and is shown once.
fn access_from_page(browser: &Browser, base: &str, shots: &Path, port: u16) {
    browser.goto(&format!("{base}#/access"));
    browser.find("#users", WAIT).expect("the users table");
    browser.type_into("#new-user-name", "grace");
    browser.type_into("#new-user-password", "grace's long password");
    browser.click("#add-user");
    let (added, text) = browser.wait_for_text("#users", WAIT, |t| t.contains("grace"));
    assert!(added, "the new user is listed: {text}");
    browser.type_into("#new-token-label", "ward 3 modality");
    browser.click("#create-token");
    let (created, token) = browser.wait_for_text("#new-token", WAIT, |t| t.starts_with("cxr_"));
    assert!(created, "the new token is shown: {token}");
    assert!(browser.text("#tokens").contains("ward 3 modality"));
    browser.screenshot(&shots.join("10-access.png"));
    let auth = format!("Bearer {}", token.trim());
    let reply = cxr_tests::http::request(
        port,
        "GET",
        "/api/v1/studies",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(reply.status, 200, "the token made on the page works");
    browser.goto(&format!("{base}#/worklist"));
    browser.goto(&format!("{base}#/access"));
    browser.find("#users", WAIT).expect("the users table");
    assert!(
        browser.text("#new-token").is_empty(),
        "a token is shown only once"
    );
}
