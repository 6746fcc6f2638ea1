//! The operator's page in a real browser: Debian's headless `chromium`
//! driven through `chromedriver` (WebDriver). It logs in, uploads two
//! studies through the page, waits for their results, opens the chest
//! film's study page (findings table) and the extremity film's (its
//! abstention, no probability), verifies the audit log from the system
//! page, installs a bundle from the bundles page, and adds a user and
//! creates an API token from the access page, taking a screenshot at each
//! step (`target/page-screenshots/`).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cxr_tests::data::scratch_dir;
use cxr_tests::dicom_net::Service;
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
    install_from_page(&browser, &base, &shots);
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
        t.contains("decision") && t.contains("abstained")
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
        "const r = [...document.querySelectorAll('#worklist tbody tr')].find(r => r.innerText.includes('abstained')); return r ? r.dataset.study : null;",
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

fn install_from_page(browser: &Browser, base: &str, shots: &Path) {
    browser.goto(&format!("{base}#/bundles"));
    // The browser takes a file by its canonical path.
    let bundle = std::fs::canonicalize(demo()).unwrap();
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
    browser.screenshot(&shots.join("07-access.png"));
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
