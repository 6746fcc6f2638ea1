//! `serve`'s HTTP side from outside, over real sockets: STOW-RS conformance
//! (every status it promises), the auth matrix (tokens, sessions, CSRF,
//! roles, revocation), the results API after a stored study is classified,
//! health, and clients that trickle headers or bodies. One service serves
//! the whole scenario (its start self-tests the demo bundle).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cxr_tests::data::scratch_dir;
use cxr_tests::dicom_net::{wait_until, Service};
use cxr_tests::http::{exchange, head, related, request, Reply};
use serde_json::Value;

mod serve_common;
use serve_common::{appliance, audit_records, demo};

const RG1_STUDY: &str = "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457";

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("samples")
            .join(name),
    )
    .unwrap()
}

/// The development board with the HTTP timeouts at 2 s, so that the slow
/// clients are cut off within the test.
fn board_file(dir: &Path, metrics_open: bool) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-config/boards/dev-x86.toml"),
    )
    .unwrap();
    let text = text.replace(
        "http_listen = \"127.0.0.1:8080\"",
        "http_listen = \"127.0.0.1:0\"\nhttp_header_timeout_s = 2\nhttp_body_timeout_s = 2\nsend_secondary_capture = true",
    );
    let text = text.replace(
        "http_metrics_open_to_loopback = true",
        &format!("http_metrics_open_to_loopback = {metrics_open}"),
    );
    assert!(
        text.contains("http_body_timeout_s = 2") && text.contains("http_metrics_open_to_loopback")
    );
    let path = dir.join("board.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Run `cxr-appliance ARGS` with `stdin`; (exit code, stdout).
fn cli(args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(appliance())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{text}{err}"))
}

/// A new token with `role`: the last line of `token create`.
fn token(state: &str, board: &str, role: &str) -> String {
    let (code, out) = cli(
        &[
            "token",
            "create",
            "--role",
            role,
            "--label",
            "test",
            "--state-dir",
            state,
            "--board-file",
            board,
        ],
        "",
    );
    assert_eq!(code, 0, "{out}");
    let token = out.lines().last().unwrap().trim().to_owned();
    assert!(token.starts_with("cxr_"), "{out}");
    token
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn stow(port: u16, auth: &str, parts: &[&[u8]]) -> Reply {
    let (content_type, body) = related(parts);
    request(
        port,
        "POST",
        "/dicomweb/studies",
        &[("authorization", auth), ("content-type", &content_type)],
        &body,
    )
}

/// The FailedSOPSequence's reasons (our codes) of a STOW-RS answer.
fn failure_codes(reply: &Reply) -> Vec<String> {
    let body = reply.json();
    body["00081198"]["Value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["00091001"]["Value"][0].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `serve` on the demo bundle with the test board (see [`board_file`]) and
/// its state in `dir/state`; (the service, the state and board arguments).
fn serve_demo(dir: &Path, metrics_open: bool) -> (Service, String, String) {
    let state_arg = dir.join("state").to_str().unwrap().to_owned();
    let board_arg = board_file(dir, metrics_open).to_str().unwrap().to_owned();
    let service = Service::start(
        &appliance(),
        &[
            "--bundle",
            &demo(),
            "--state-dir",
            &state_arg,
            "--board-file",
            &board_arg,
            "--listen",
            "127.0.0.1:0",
            "--stable-s",
            "1",
        ],
        &[],
        &dir.join("serve.err"),
    );
    (service, state_arg, board_arg)
}

#[test]
fn the_http_side_stores_answers_and_refuses_as_promised() {
    let dir = scratch_dir("serve-http");
    let (service, state_arg, board_arg) = serve_demo(&dir, true);
    let port = service.http_port.expect("the HTTP side listens");
    let operator = token(&state_arg, &board_arg, "operator");
    let viewer = token(&state_arg, &board_arg, "viewer");

    health_needs_no_credentials(port);
    stow_statuses(port, &bearer(&operator));
    // Before the login limit is tripped on purpose (it is per address).
    let admin = access_from_the_api(port, &state_arg, &board_arg, &operator);
    auth_matrix(port, &state_arg, &board_arg, &operator, &viewer);
    results_api(port, &bearer(&viewer), &service, &dir);
    own_results_are_refused(port, &bearer(&operator), &dir);
    crafted_patient_fields_stay_inside_their_values(
        port,
        &bearer(&operator),
        &bearer(&viewer),
        &service,
        &dir,
    );
    metrics_for_a_local_scraper(port);
    slow_clients_are_cut_off(port, &bearer(&operator));
    one_address_cannot_hold_every_connection(port);
    an_export_is_in_the_log_before_its_answer(port, &state_arg, &board_arg);
    assert_eq!(service.terminate(), Some(0));
    access_and_exports_are_audited(&state_arg, &board_arg, &admin);
}

fn health_needs_no_credentials(port: u16) {
    let live = request(port, "GET", "/healthz", &[], b"");
    assert_eq!(live.status, 200);
    let ready = request(port, "GET", "/readyz", &[], b"");
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    assert_eq!(ready.json()["ready"], true);
    assert_eq!(live.header("access-control-allow-origin"), None, "no CORS");
    assert_eq!(live.header("x-frame-options"), Some("DENY"));
}

fn stow_statuses(port: u16, auth: &str) {
    let chest = sample("RG1_J2KI.dcm");
    let all = stow(port, auth, &[&chest]);
    assert_eq!(all.status, 200, "{}", String::from_utf8_lossy(&all.body));
    assert_eq!(all.header("content-type"), Some("application/dicom+json"));
    let referenced = &all.json()["00081199"]["Value"];
    assert_eq!(referenced.as_array().unwrap().len(), 1);
    assert!(referenced[0]["00081155"]["Value"][0]
        .as_str()
        .unwrap()
        .starts_with("1.3.6.1.4.1.5962"));

    let mixed = stow(
        port,
        auth,
        &[&sample("RG3_J2KI.dcm"), b"not a DICOM file at all"],
    );
    assert_eq!(
        mixed.status,
        202,
        "{}",
        String::from_utf8_lossy(&mixed.body)
    );
    assert_eq!(failure_codes(&mixed).len(), 1);
    assert_eq!(
        mixed.json()["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xC000
    );

    let none = stow(port, auth, &[b"garbage one", b"garbage two"]);
    assert_eq!(none.status, 409);
    assert_eq!(failure_codes(&none).len(), 2);
    assert!(
        failure_codes(&none).iter().all(|c| c.starts_with("DICOM_")),
        "{:?}",
        failure_codes(&none)
    );

    // The study in the URL must be the instance's.
    let (content_type, body) = related(&[&chest]);
    let elsewhere = request(
        port,
        "POST",
        "/dicomweb/studies/1.2.3.4",
        &[("authorization", auth), ("content-type", &content_type)],
        &body,
    );
    assert_eq!(elsewhere.status, 409);
    assert!(failure_codes(&elsewhere)[0].starts_with("STOW_STUDY_MISMATCH"));
    let here = request(
        port,
        "POST",
        &format!("/dicomweb/studies/{RG1_STUDY}"),
        &[("authorization", auth), ("content-type", &content_type)],
        &body,
    );
    assert_eq!(
        here.status,
        200,
        "a duplicate is acknowledged: {}",
        String::from_utf8_lossy(&here.body)
    );

    syntax_and_size_refusals(port, auth, &body, &content_type);
}

fn syntax_and_size_refusals(port: u16, auth: &str, body: &[u8], content_type: &str) {
    let code = |r: &Reply| r.json()["error"]["code"].as_str().unwrap().to_owned();
    let form = request(
        port,
        "POST",
        "/dicomweb/studies",
        &[
            ("authorization", auth),
            ("content-type", "multipart/form-data; boundary=x"),
        ],
        body,
    );
    assert_eq!(
        (form.status, code(&form).as_str()),
        (415, "STOW_NOT_MULTIPART_RELATED")
    );
    let xml = request(
        port,
        "POST",
        "/dicomweb/studies",
        &[
            ("authorization", auth),
            (
                "content-type",
                "multipart/related; type=\"application/dicom+xml\"; boundary=x",
            ),
        ],
        body,
    );
    assert_eq!(xml.status, 415);
    let no_boundary = request(
        port,
        "POST",
        "/dicomweb/studies",
        &[
            ("authorization", auth),
            (
                "content-type",
                "multipart/related; type=\"application/dicom\"",
            ),
        ],
        body,
    );
    assert_eq!(
        (no_boundary.status, code(&no_boundary).as_str()),
        (400, "STOW_BAD_BOUNDARY")
    );
    let truncated = request(
        port,
        "POST",
        "/dicomweb/studies",
        &[("authorization", auth), ("content-type", content_type)],
        &body[..body.len() / 2],
    );
    assert_eq!(
        (truncated.status, code(&truncated).as_str()),
        (400, "STOW_TRUNCATED_BODY")
    );
    // Content-Length says more than is sent (half of one part), and the
    // client stops sending: nothing was stored, and the answer says why.
    let lying = exchange(
        port,
        &head(
            "POST",
            "/dicomweb/studies",
            &[("authorization", auth), ("content-type", content_type)],
            Some(body.len()),
        ),
        &body[..body.len() / 2],
    );
    assert_eq!(
        (lying.status, code(&lying).as_str()),
        (400, "STOW_BODY_BROKEN")
    );
    // A first part stored whole, then the body breaks off: the stored part
    // is durable and the answer says so (202), with the failure beside it.
    let cut = body.len() - 10;
    let mut two = body[..cut - "--cxr-test-boundary-7f3a--\r\n".len() + 10].to_vec();
    two.extend_from_slice(
        b"--cxr-test-boundary-7f3a\r\ncontent-type: application/dicom\r\n\r\nhalf a file",
    );
    let partial = request(
        port,
        "POST",
        "/dicomweb/studies",
        &[("authorization", auth), ("content-type", content_type)],
        &two,
    );
    assert_eq!(
        partial.status,
        202,
        "{}",
        String::from_utf8_lossy(&partial.body)
    );
    assert_eq!(
        partial.json()["00081199"]["Value"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(
        failure_codes(&partial)[0].starts_with("STOW_TRUNCATED_BODY"),
        "{:?}",
        failure_codes(&partial)
    );
    let huge = exchange(
        port,
        &head(
            "POST",
            "/dicomweb/studies",
            &[("authorization", auth), ("content-type", content_type)],
            Some(4 << 30),
        ),
        b"",
    );
    assert_eq!(
        (huge.status, code(&huge).as_str()),
        (413, "STOW_BODY_TOO_LARGE")
    );
}

fn auth_matrix(port: u16, state: &str, board: &str, operator: &str, viewer: &str) {
    let chest = sample("RG1_J2KI.dcm");
    let code = |r: &Reply| r.json()["error"]["code"].as_str().unwrap_or("").to_owned();
    let anonymous = request(port, "GET", "/api/v1/studies", &[], b"");
    assert_eq!(
        (anonymous.status, code(&anonymous).as_str()),
        (401, "AUTH_REQUIRED")
    );
    assert!(anonymous.header("www-authenticate").is_some());
    let viewer_stores = stow(port, &bearer(viewer), &[&chest]);
    assert_eq!(
        (viewer_stores.status, code(&viewer_stores).as_str()),
        (403, "AUTH_ROLE")
    );
    let forged = stow(port, &bearer(&format!("{operator}x")), &[&chest]);
    assert_eq!(forged.status, 401);

    // A revoked token is refused from the next request on.
    let doomed = token(state, board, "operator");
    let id = doomed.split('_').nth(1).unwrap().to_owned();
    assert_eq!(
        request(
            port,
            "GET",
            "/api/v1/studies",
            &[("authorization", &bearer(&doomed))],
            b""
        )
        .status,
        200
    );
    let (revoked, out) = cli(
        &[
            "token",
            "revoke",
            &id,
            "--state-dir",
            state,
            "--board-file",
            board,
        ],
        "",
    );
    assert_eq!(revoked, 0, "{out}");
    assert_eq!(
        request(
            port,
            "GET",
            "/api/v1/studies",
            &[("authorization", &bearer(&doomed))],
            b""
        )
        .status,
        401
    );

    sessions_and_csrf(port, state, board);
}

fn sessions_and_csrf(port: u16, state: &str, board: &str) {
    let (added, out) = cli(
        &[
            "user",
            "add",
            "ada",
            "--role",
            "operator",
            "--state-dir",
            state,
            "--board-file",
            board,
        ],
        "a long enough password\n",
    );
    assert_eq!(added, 0, "{out}");
    let json = [("content-type", "application/json")];
    let wrong = request(
        port,
        "POST",
        "/api/v1/login",
        &json,
        br#"{"user":"ada","password":"wrong password!!"}"#,
    );
    assert_eq!(wrong.status, 401);
    let login = request(
        port,
        "POST",
        "/api/v1/login",
        &json,
        br#"{"user":"ada","password":"a long enough password"}"#,
    );
    assert_eq!(
        login.status,
        200,
        "{}",
        String::from_utf8_lossy(&login.body)
    );
    let set_cookie = login.header("set-cookie").unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = login.json()["csrf"].as_str().unwrap().to_owned();
    let (content_type, body) = related(&[&sample("RG1_J2KI.dcm")]);
    let without = request(
        port,
        "POST",
        "/dicomweb/studies",
        &[("cookie", &cookie), ("content-type", &content_type)],
        &body,
    );
    assert_eq!(without.status, 403, "a cookie without its CSRF token");
    assert_eq!(without.json()["error"]["code"], "AUTH_CSRF");
    let with = request(
        port,
        "POST",
        "/dicomweb/studies",
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("content-type", &content_type),
        ],
        &body,
    );
    assert_eq!(with.status, 200, "{}", String::from_utf8_lossy(&with.body));
    assert_eq!(
        request(port, "GET", "/api/v1/session", &[("cookie", &cookie)], b"").json()["user"],
        "ada"
    );

    // Five failures from one address, then it must wait.
    for _ in 0..5 {
        request(
            port,
            "POST",
            "/api/v1/login",
            &json,
            br#"{"user":"ada","password":"not the password"}"#,
        );
    }
    let limited = request(
        port,
        "POST",
        "/api/v1/login",
        &json,
        br#"{"user":"ada","password":"a long enough password"}"#,
    );
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());

    // Removing the user ends the session.
    let (removed, out) = cli(
        &[
            "user",
            "remove",
            "ada",
            "--state-dir",
            state,
            "--board-file",
            board,
        ],
        "",
    );
    assert_eq!(removed, 0, "{out}");
    assert_eq!(
        request(port, "GET", "/api/v1/session", &[("cookie", &cookie)], b"").status,
        401
    );
}

/// An admin manages users and tokens over HTTP (the page's Access panel);
/// no one else may. Returns the admin's token id.
fn access_from_the_api(port: u16, state: &str, board: &str, operator: &str) -> String {
    let admin = token(state, board, "admin");
    let admin_id = admin.split('_').nth(1).unwrap().to_owned();
    let as_admin = |method: &str, path: &str, body: &str| {
        let auth = bearer(&admin);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        request(port, method, path, &headers, body.as_bytes())
    };
    access_is_for_admins_only(port, state, board, operator);
    users_from_the_api(port, &as_admin);
    tokens_from_the_api(port, &as_admin);
    admin_id
}

type AsAdmin<'a> = dyn Fn(&str, &str, &str) -> Reply + 'a;

fn login(port: u16, user: &str, password: &str) -> Reply {
    let body = serde_json::json!({ "user": user, "password": password }).to_string();
    request(
        port,
        "POST",
        "/api/v1/login",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
}

fn cookie_of(login: &Reply) -> String {
    let set = login.header("set-cookie").unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// An operator may not read or change access; an admin's cookie session
/// needs its CSRF token for a change.
fn access_is_for_admins_only(port: u16, state: &str, board: &str, operator: &str) {
    let by_operator = |method: &str, path: &str, body: &[u8]| {
        let auth = bearer(operator);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        request(port, method, path, &headers, body).status
    };
    assert_eq!(by_operator("GET", "/api/v1/access", b""), 403);
    let token_body = br#"{"role":"admin","label":"x"}"#;
    assert_eq!(
        by_operator("POST", "/api/v1/access/tokens", token_body),
        403
    );
    assert_eq!(
        by_operator("DELETE", "/api/v1/access/users/anyone", b""),
        403
    );
    let (added, out) = cli(
        &[
            "user",
            "add",
            "root",
            "--role",
            "admin",
            "--state-dir",
            state,
            "--board-file",
            board,
        ],
        "the admin's long password\n",
    );
    assert_eq!(added, 0, "{out}");
    let session = login(port, "root", "the admin's long password");
    assert_eq!(session.status, 200);
    let (cookie, csrf) = (
        cookie_of(&session),
        session.json()["csrf"].as_str().unwrap().to_owned(),
    );
    let mut headers = vec![
        ("cookie", cookie.as_str()),
        ("content-type", "application/json"),
    ];
    let without = request(port, "POST", "/api/v1/access/tokens", &headers, token_body);
    assert_eq!(
        (without.status, without.json()["error"]["code"].as_str()),
        (403, Some("AUTH_CSRF"))
    );
    headers.push(("x-csrf-token", csrf.as_str()));
    let with = request(port, "POST", "/api/v1/access/tokens", &headers, token_body);
    assert_eq!(with.status, 200, "{}", String::from_utf8_lossy(&with.body));
    let own = request(port, "DELETE", "/api/v1/access/users/root", &headers, b"");
    assert_eq!(
        (own.status, own.json()["error"]["code"].as_str()),
        (409, Some("ACCESS_OWN_ACCOUNT"))
    );
}

/// Add a user, refuse a weak password and a duplicate, set a password (which
/// ends the user's sessions), remove the user.
fn users_from_the_api(port: u16, as_admin: &AsAdmin<'_>) {
    let weak = as_admin(
        "POST",
        "/api/v1/access/users",
        r#"{"name":"grace","role":"viewer","password":"short"}"#,
    );
    assert_eq!(
        (weak.status, weak.json()["error"]["code"].as_str()),
        (400, Some("AUTH_WEAK_PASSWORD"))
    );
    let user = r#"{"name":"grace","role":"viewer","password":"grace's long password"}"#;
    assert_eq!(as_admin("POST", "/api/v1/access/users", user).status, 200);
    assert_eq!(
        as_admin("POST", "/api/v1/access/users", user).status,
        409,
        "no user twice"
    );
    let first = login(port, "grace", "grace's long password");
    assert_eq!(
        (first.status, first.json()["role"].as_str()),
        (200, Some("viewer"))
    );
    let session =
        |cookie: &str| request(port, "GET", "/api/v1/session", &[("cookie", cookie)], b"").status;
    let old_cookie = cookie_of(&first);
    assert_eq!(session(&old_cookie), 200);
    let changed = as_admin(
        "POST",
        "/api/v1/access/users/grace/password",
        r#"{"password":"grace's new long password"}"#,
    );
    assert_eq!(changed.status, 200);
    assert_eq!(
        session(&old_cookie),
        401,
        "a new password ends the old sessions"
    );
    let second = login(port, "grace", "grace's new long password");
    assert_eq!(second.status, 200, "the password set by the admin works");
    assert_eq!(
        as_admin("DELETE", "/api/v1/access/users/grace", "").status,
        200
    );
    assert_eq!(
        session(&cookie_of(&second)),
        401,
        "a removed user's session ends"
    );
}

/// Create a token (shown once, never listed), use it, revoke it.
fn tokens_from_the_api(port: u16, as_admin: &AsAdmin<'_>) {
    let created = as_admin(
        "POST",
        "/api/v1/access/tokens",
        r#"{"role":"operator","label":"ward 3 modality"}"#,
    );
    assert_eq!(
        created.status,
        200,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let new_token = created.json()["token"].as_str().unwrap().to_owned();
    let new_id = created.json()["subject"].as_str().unwrap().to_owned();
    let with_new = |t: &str| {
        request(
            port,
            "GET",
            "/api/v1/studies",
            &[("authorization", &bearer(t))],
            b"",
        )
        .status
    };
    assert_eq!(with_new(&new_token), 200);
    let listed = as_admin("GET", "/api/v1/access", "");
    let text = String::from_utf8_lossy(&listed.body).into_owned();
    assert!(
        text.contains(&new_id) && text.contains("ward 3 modality"),
        "{text}"
    );
    assert!(
        !text.contains("argon2") && !text.contains("sha256") && !text.contains(&new_token),
        "no secret is listed: {text}"
    );
    assert_eq!(
        as_admin("DELETE", &format!("/api/v1/access/tokens/{new_id}"), "").status,
        200
    );
    assert_eq!(
        with_new(&new_token),
        401,
        "a token revoked from the page is refused at once"
    );
    assert_eq!(
        as_admin("DELETE", "/api/v1/access/tokens/nosuch", "").status,
        404
    );
}

/// Once a read of a study is answered, its record is already in the log
/// (read while the service runs).
fn an_export_is_in_the_log_before_its_answer(port: u16, state: &str, board: &str) {
    let reader = token(state, board, "viewer");
    let id = reader.split('_').nth(1).unwrap().to_owned();
    let read = request(
        port,
        "GET",
        &format!("/api/v1/studies/{RG1_STUDY}"),
        &[("authorization", &bearer(&reader))],
        b"",
    );
    assert_eq!(read.status, 200);
    let records = audit_records(&["--state-dir", state, "--board-file", board]);
    let recorded = records.iter().any(|r| {
        r["event"]["type"] == "exported"
            && r["event"]["actor"] == format!("token:{id}").as_str()
            && r["event"]["what"] == "result"
    });
    assert!(
        recorded,
        "the read is in the log by the time it is answered"
    );
}

/// The audit log names the admin who changed access from the API, and
/// every reader of study data.
fn access_and_exports_are_audited(state: &str, board: &str, admin_id: &str) {
    let all = audit_records(&["--state-dir", state, "--board-file", board]);
    let records = |kind: &str| -> Vec<Value> {
        all.iter()
            .filter(|r| r["event"]["type"] == kind)
            .cloned()
            .collect()
    };
    let actor = format!("token:{admin_id}");
    let actions: Vec<String> = records("access_changed")
        .iter()
        .map(|r| r.to_string())
        .filter(|r| r.contains(&actor))
        .collect();
    // The start recorded the settings it applied (the first start: all).
    let applied = records("config_applied");
    assert_eq!(applied.len(), 1, "{applied:?}");
    let changed = applied[0]["event"]["changed"].to_string();
    assert!(
        changed.contains("serve.http_listen") && changed.contains("engine."),
        "{changed}"
    );
    // Every channel that read study data left export records, which name
    // who read and a study's digest, never its UID.
    let exports = records("exported");
    let seen: Vec<String> = exports
        .iter()
        .map(|e| format!("{} {}", e["event"]["channel"], e["event"]["what"]))
        .collect();
    // The page's channel is checked by the browser suite.
    for channel in ["api", "dicomweb", "fhir"] {
        assert!(
            exports.iter().any(|e| e["event"]["channel"] == channel
                && e["event"]["actor"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("token:"))),
            "no export through {channel}: {seen:?}"
        );
    }
    let one_study = exports
        .iter()
        .find(|e| e["event"]["what"] == "result")
        .expect("a result read");
    let key = one_study["event"]["study_key"].as_str().unwrap();
    // The keyed pseudonym the inference records use, not a plain digest
    // anyone could compute from the UID.
    assert!(
        records("study_result")
            .iter()
            .any(|r| r["event"]["study_key"].as_str() == Some(key)),
        "{key}"
    );
    assert_ne!(key, cxr_store::results::study_key(RG1_STUDY));
    assert!(!exports.iter().any(|e| e.to_string().contains(RG1_STUDY)));
    for action in [
        "user_add",
        "user_passwd",
        "token_create",
        "token_revoke",
        "user_remove",
    ] {
        assert!(
            actions.iter().any(|a| a.contains(action)),
            "{action} by {actor} not audited: {actions:?}"
        );
    }
}

fn results_api(port: u16, auth: &str, service: &Service, dir: &Path) {
    let headers = [("authorization", auth)];
    // Both studies (the chest film and the extremity film) are published.
    let listed = wait_until(Duration::from_secs(180), || {
        let r = request(port, "GET", "/api/v1/studies?limit=10", &headers, b"");
        let studies = r.json()["studies"].as_array().cloned().unwrap_or_default();
        r.status == 200
            && studies.len() >= 2
            && studies.iter().any(|s| s["study_instance_uid"] == RG1_STUDY)
    });
    assert!(
        listed,
        "the chest study was not published: {}",
        service.stderr_text()
    );
    let study = request(
        port,
        "GET",
        &format!("/api/v1/studies/{RG1_STUDY}"),
        &headers,
        b"",
    );
    assert_eq!(study.status, 200);
    let result: Value = study.json();
    assert_eq!(result["study_instance_uid"], RG1_STUDY);
    assert!(["decision", "abstention"].contains(&result["outcome"].as_str().unwrap()));
    let missing = request(port, "GET", "/api/v1/studies/1.2.3", &headers, b"");
    assert_eq!(missing.status, 404);
    let changes = request(port, "GET", "/api/v1/changes?since=0", &headers, b"").json();
    let next = changes["next"].as_u64().unwrap();
    assert!(changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["study_instance_uid"] == RG1_STUDY));
    let after = request(
        port,
        "GET",
        &format!("/api/v1/changes?since={next}"),
        &headers,
        b"",
    )
    .json();
    assert!(after["changes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["seq"].as_u64().unwrap() > next));
    // A cursor beyond the feed (an old completion-time cursor) is refused.
    let stale = request(
        port,
        "GET",
        "/api/v1/changes?since=1700000000000",
        &headers,
        b"",
    );
    assert_eq!(
        (stale.status, stale.json()["error"]["code"].as_str()),
        (400, Some("API_STALE_CURSOR"))
    );
    // The feed in publication order: each version once, sequence numbers
    // rising, however their studies' arrival times are ordered.
    let feed = changes["changes"].as_array().unwrap();
    let seqs: Vec<u64> = feed.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let versions: std::collections::BTreeSet<String> = feed
        .iter()
        .map(|c| format!("{} {}", c["study_instance_uid"], c["version"]))
        .collect();
    assert_eq!(versions.len(), feed.len(), "no version twice: {feed:?}");
    let bad = request(port, "GET", "/api/v1/studies?limit=many", &headers, b"");
    assert_eq!(bad.status, 400);
    qido_and_wado(port, auth, dir);
}

/// QIDO-RS finds the received study and our SR; WADO-RS returns the SR
/// whole and the received image only rendered.
fn qido_and_wado(port: u16, auth: &str, dir: &Path) {
    let headers = [("authorization", auth)];
    let get = |path: &str| request(port, "GET", path, &headers, b"");
    let studies = get("/dicomweb/studies?PatientName=*&unknownKey=1");
    assert_eq!(studies.status, 200);
    assert_eq!(
        studies.header("content-type"),
        Some("application/dicom+json")
    );
    assert!(studies
        .header("warning")
        .is_some_and(|w| w.contains("unknownKey")));
    let list = studies.json();
    let rg1 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["0020000D"]["Value"][0] == RG1_STUDY)
        .expect("the chest study is listed");
    assert!(
        rg1["00201208"]["Value"][0].as_u64().unwrap() >= 2,
        "input and SR: {rg1}"
    );
    assert_eq!(
        get("/dicomweb/studies?PatientID=nobody").json(),
        serde_json::json!([])
    );
    let instances = get(&format!("/dicomweb/studies/{RG1_STUDY}/instances")).json();
    let url_of = |modality: &str| -> String {
        let item = instances
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["00080060"]["Value"][0].as_str() == Some(modality))
            .unwrap_or_else(|| panic!("no {modality:?} instance in {instances}"));
        let uid = |tag: &str| item[tag]["Value"][0].as_str().unwrap().to_owned();
        let url = format!(
            "/dicomweb/studies/{}/series/{}/instances/{}",
            uid("0020000D"),
            uid("0020000E"),
            uid("00080018")
        );
        // Only our own objects advertise a RetrieveURL.
        assert_eq!(
            item["00081190"]["Value"][0].as_str().is_some(),
            modality != "CR",
            "{item}"
        );
        url
    };
    let sr = get(&url_of("SR"));
    assert_eq!(sr.status, 200);
    assert!(sr
        .header("content-type")
        .unwrap()
        .starts_with("multipart/related"));
    assert!(sr.body.windows(4).any(|w| w == b"DICM"));
    // The received film, with the Modality it was sent with.
    let input = url_of("CR");
    let whole = get(&input);
    assert_eq!(
        (whole.status, whole.json()["error"]["code"].as_str()),
        (404, Some("WADO_NOT_SERVED"))
    );
    let rendered = get(&format!("{input}/rendered"));
    assert_eq!(rendered.status, 200);
    assert_eq!(rendered.header("content-type"), Some("image/png"));
    assert!(rendered.body.starts_with(b"\x89PNG"));
    let study = get(&format!("/dicomweb/studies/{RG1_STUDY}"));
    assert_eq!(study.status, 200, "WADO-RS of the study: its SRs");
    result_picture_and_secondary_capture(&get, &url_of("OT"), &url_of("SR"), dir);
    searches_across_studies(&get);
    abstention_picture(&get, &list, dir);
    fhir_resources(&get, &list, dir);
}

/// FHIR R4: search by the study's identifier and by date, read by id, and
/// every resource valid against FHIR R4 (the `fhir.resources` 4.0.1 models
/// and the R4 JSON schema). The abstained study carries no probability.
fn fhir_resources(get: &dyn Fn(&str) -> Reply, studies: &Value, dir: &Path) {
    let mut files = Vec::new();
    for study in studies.as_array().unwrap() {
        let uid = study["0020000D"]["Value"][0].as_str().unwrap();
        let found = get(&format!("/fhir/DiagnosticReport?identifier={uid}"));
        assert_eq!(found.status, 200);
        assert_eq!(found.header("content-type"), Some("application/fhir+json"));
        let bundle = found.json();
        assert_eq!(bundle["total"], 1, "{bundle}");
        let report = &bundle["entry"][0]["resource"];
        assert_eq!(report["status"], "preliminary");
        let id = report["id"].as_str().unwrap();
        assert_eq!(get(&format!("/fhir/DiagnosticReport/{id}")).json(), *report);
        let text = bundle.to_string();
        if uid != RG1_STUDY {
            assert!(
                !text.contains("valueQuantity"),
                "an abstention publishes no probability"
            );
            assert!(report["conclusion"]
                .as_str()
                .unwrap()
                .contains("ABSTAIN_NOT_CHEST"));
        } else {
            assert!(text.contains("valueQuantity"));
        }
        let file = dir.join(format!("fhir-{}.json", files.len()));
        std::fs::write(&file, text).unwrap();
        files.push(file);
    }
    let ranged = get("/fhir/DiagnosticReport?date=ge2004-01-01&date=le2004-12-31").json();
    assert_eq!(ranged["total"].as_u64(), Some(files.len() as u64));
    assert_eq!(
        get("/fhir/DiagnosticReport?date=lt2004-01-01").json()["total"],
        0
    );
    // Unknown parameters are ignored, unless strict handling is asked for;
    // a patient parameter is never ignored (that would answer everyone's).
    assert_eq!(get("/fhir/DiagnosticReport?performer=x").status, 200);
    assert_eq!(get("/fhir/DiagnosticReport?subject=x").status, 400);
    assert_eq!(
        get("/fhir/DiagnosticReport?patient:identifier=x").status,
        400
    );
    let total = |q: &str| get(&format!("/fhir/DiagnosticReport?{q}")).json()["total"].clone();
    assert_eq!(total("status=preliminary"), files.len());
    assert_eq!(total("status=final"), 0);
    let rg1 = get(&format!("/fhir/DiagnosticReport?identifier={RG1_STUDY}")).json();
    let patient = rg1["entry"][0]["resource"]["subject"]["identifier"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = get(&format!(
        "/fhir/DiagnosticReport?subject:identifier={patient}"
    ))
    .json();
    assert!(mine["total"].as_u64().unwrap() >= 1, "{mine}");
    assert!(mine["entry"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["search"]["mode"] == "include"
            || e["resource"]["subject"]["identifier"]["value"] == patient.as_str()));
    assert_eq!(total("subject:identifier=NOBODY-HERE"), 0);
    let capability = get("/fhir/metadata");
    assert_eq!(capability.status, 200);
    let capability = capability.json();
    assert_eq!(capability["resourceType"], "CapabilityStatement");
    let capability_file = dir.join("fhir-capability.json");
    std::fs::write(&capability_file, capability.to_string()).unwrap();
    let Some(validator) = cxr_tests::data::fhir_validator() else {
        return;
    };
    let paths: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
    let (valid, report) = validator.check(&paths);
    assert!(valid, "FHIR R4 validation:\n{report}");
    // The R4 JSON schema's FHIRVersion list stops at 4.0.0 (an erratum of
    // 4.0.1, the version the models and this statement are); nothing else
    // may fail.
    let (valid, report) = validator.check(&[&capability_file]);
    let reasons: Vec<&str> = report
        .lines()
        .filter(|l| l.trim_start().starts_with("model:") || l.trim_start().starts_with("schema:"))
        .collect();
    assert!(
        valid
            || reasons
                .iter()
                .all(|r| r.contains("schema: fhirVersion: '4.0.1' is not one of")),
        "CapabilityStatement:\n{report}"
    );
    // The validator catches a broken resource (so its pass means something).
    let broken =
        std::fs::read_to_string(&files[0])
            .unwrap()
            .replacen("\"preliminary\"", "\"bogus\"", 1);
    let broken_file = dir.join("fhir-broken.json");
    std::fs::write(&broken_file, broken).unwrap();
    let (valid, report) = validator.check(&[&broken_file]);
    assert!(!valid && report.contains("bogus"), "{report}");
}

/// The extremity film's study abstains: its picture shows the reason and
/// no probability (kept to be looked at).
fn abstention_picture(get: &dyn Fn(&str) -> Reply, studies: &Value, dir: &Path) {
    let other = studies
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["0020000D"]["Value"][0].as_str())
        .find(|uid| *uid != RG1_STUDY)
        .expect("the extremity study is listed");
    let result = get(&format!("/api/v1/studies/{other}")).json();
    assert_eq!(result["outcome"], "abstention", "{result}");
    assert!(result["labels"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["probability"].is_null()));
    let instances = get(&format!("/dicomweb/studies/{other}/instances")).json();
    let sr = instances
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["00080060"]["Value"][0] == "SR")
        .map(|i| i["00081190"]["Value"][0].as_str().unwrap().to_owned())
        .unwrap();
    let picture = get(&format!("{sr}/rendered"));
    assert_eq!(picture.status, 200);
    std::fs::write(dir.join("result-picture-abstention.png"), &picture.body).unwrap();
}

/// The part of a one-part `multipart/related` body.
fn only_part(body: &[u8]) -> &[u8] {
    let start = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let end = body.windows(4).rposition(|w| w == b"\r\n--").unwrap();
    &body[start..end]
}

/// QIDO-RS at the series and instance levels across all studies, with
/// matching keys, the received films' Modality and `includefield`.
fn searches_across_studies(get: &dyn Fn(&str) -> Reply) {
    let series = get(&format!("/dicomweb/series?StudyInstanceUID={RG1_STUDY}"));
    assert_eq!(series.status, 200);
    let modalities: std::collections::BTreeSet<String> = series
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["00080060"]["Value"][0].as_str().map(str::to_owned))
        .collect();
    assert!(
        ["CR", "SR"].iter().all(|m| modalities.contains(*m)),
        "{modalities:?}"
    );
    let cr = get("/dicomweb/instances?Modality=CR&includefield=PatientID,00080020,Nonsense");
    assert_eq!(cr.status, 200);
    assert!(cr
        .header("warning")
        .is_some_and(|w| w.contains("includefield=Nonsense")));
    let items = cr.json();
    let items = items.as_array().unwrap();
    assert!(items.len() >= 2, "both received chest films: {items:?}");
    for item in items {
        assert_eq!(item["00080060"]["Value"][0], "CR", "{item}");
        assert!(
            item["00100020"]["vr"] == "LO" && item["00080020"]["vr"] == "DA",
            "{item}"
        );
    }
    let everything = get("/dicomweb/instances?includefield=all").json();
    assert!(everything
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i.get("00100040").is_some() && i.get("00200010").is_some()));
}

/// The appliance's own Secondary Capture, routed back to it by a PACS, is
/// refused as a result (not read as a film: that would loop).
fn own_results_are_refused(port: u16, auth: &str, dir: &Path) {
    let sc = std::fs::read(dir.join("result-sc.dcm")).unwrap();
    let back = stow(port, auth, &[&sc]);
    assert_eq!(back.status, 409, "{}", String::from_utf8_lossy(&back.body));
    let codes = failure_codes(&back);
    assert!(
        codes.len() == 1 && codes[0].starts_with("STORE_APPLIANCE_RESULT"),
        "{codes:?}"
    );
}

/// A PatientID crafted to break lines: the SR built from it validates,
/// and WADO-RS parts the study's objects with a boundary of its own, so no
/// other part (an injected `text/html`) appears.
fn crafted_patient_fields_stay_inside_their_values(
    port: u16,
    operator: &str,
    viewer: &str,
    service: &Service,
    dir: &Path,
) {
    let study = "1.2.826.0.1.3680043.10.99.7777";
    let crafted = "EVIL\r\n--cxr-\r\nContent-Type: text/html\r\n\r\n<script>x</script>";
    let film = sample("RG1_J2KI.dcm");
    let film = cxr_tests::hostile::set_text(&film, 0x0020, 0x000D, study).unwrap();
    let film =
        cxr_tests::hostile::set_text(&film, 0x0008, 0x0018, "1.2.826.0.1.3680043.10.99.7777.1")
            .unwrap();
    let film = cxr_tests::hostile::set_text(&film, 0x0010, 0x0020, crafted).unwrap();
    assert_eq!(stow(port, operator, &[&film]).status, 200);
    let headers = [("authorization", viewer)];
    let published = wait_until(Duration::from_secs(120), || {
        request(
            port,
            "GET",
            &format!("/api/v1/studies/{study}"),
            &headers,
            b"",
        )
        .status
            == 200
    });
    assert!(published, "{}", service.stderr_text());
    let accept = "multipart/related; type=\"application/dicom\"";
    let wado = |_: ()| {
        request(
            port,
            "GET",
            &format!("/dicomweb/studies/{study}"),
            &[("authorization", viewer), ("accept", accept)],
            b"",
        )
    };
    let (first, second) = (wado(()), wado(()));
    assert_eq!(first.status, 200);
    let boundary = |r: &Reply| {
        r.header("content-type")
            .and_then(|c| c.split("boundary=").nth(1))
            .unwrap()
            .to_owned()
    };
    assert_ne!(
        boundary(&first),
        boundary(&second),
        "a fresh boundary each time"
    );
    let marker = format!("--{}", boundary(&first));
    let body = first.body.as_slice();
    let cuts: Vec<usize> = body
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert!(cuts.len() >= 2, "at least one part and the closing line");
    for pair in cuts.windows(2) {
        let part = &body[pair[0] + marker.len()..pair[1]];
        assert!(
            part.starts_with(b"\r\nContent-Type: application/dicom\r\n\r\n"),
            "{}",
            String::from_utf8_lossy(&part[..part.len().min(80)])
        );
    }
    let sr = dir.join("crafted-sr.dcm");
    let first_part = &body[cuts[0] + marker.len()..cuts[1]];
    let payload =
        &first_part[b"\r\nContent-Type: application/dicom\r\n\r\n".len()..first_part.len() - 2];
    std::fs::write(&sr, payload).unwrap();
    if let Some(dciodvfy) = cxr_tests::dicom_net::tool("dciodvfy") {
        let out = Command::new(dciodvfy).arg(&sr).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
        assert!(errors.is_empty(), "dciodvfy:\n{text}");
    }
    let text = String::from_utf8_lossy(payload);
    assert!(
        text.contains("EVIL--cxr-Content-Type: text/html"),
        "the value kept, its line breaks gone"
    );
}

fn result_picture_and_secondary_capture(
    get: &dyn Fn(&str) -> Reply,
    sc_url: &str,
    sr_url: &str,
    dir: &Path,
) {
    let picture = get(&format!("{sr_url}/rendered"));
    assert_eq!(picture.status, 200);
    assert!(picture.body.starts_with(b"\x89PNG"));
    std::fs::write(dir.join("result-picture.png"), &picture.body).unwrap();
    eprintln!(
        "result picture: {}",
        dir.join("result-picture.png").display()
    );
    assert_eq!(get(&format!("{sc_url}/rendered")).body, picture.body);
    let sc = get(sc_url);
    assert_eq!(sc.status, 200);
    let file = dir.join("result-sc.dcm");
    std::fs::write(&file, only_part(&sc.body)).unwrap();
    let Some(dciodvfy) = cxr_tests::dicom_net::tool("dciodvfy") else {
        return;
    };
    let out = Command::new(dciodvfy).arg(&file).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.is_empty(), "dciodvfy:\n{text}");
    assert!(text.contains("SCImage"), "{text}");
}

/// `/metrics` in the Prometheus text format, open to a loopback scraper on
/// this board.
fn metrics_for_a_local_scraper(port: u16) {
    let m = request(port, "GET", "/metrics", &[], b"");
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8_lossy(&m.body);
    for needle in [
        "cxr_instances_processed_total{outcome=\"decision\"}",
        "cxr_studies_published_total{outcome=\"abstention\"}",
        "cxr_stow_instances_total{result=\"stored\"}",
        "cxr_stage_seconds_bucket{stage=\"inference_per_view\",le=\"+Inf\"}",
        "cxr_queue_instances ",
        "cxr_dicom_associations_open 0",
        "cxr_spool_used_bytes ",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

/// A client that sends its headers a byte a second, or stops in the middle
/// of a body, is cut off by the 2 s timeouts, not held forever.
/// A connection from `source` (a loopback address) to the service.
fn connect_from(source: &str, port: u16) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{source}:0").parse().unwrap())?;
        let stream = socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await?;
        // Tokio's socket is non-blocking; the test reads it blocking.
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(stream)
    })
}

/// 64 half-open connections from 127.0.0.2 (the whole cap) take only that
/// address's share: 127.0.0.1's health probe is still answered.
fn one_address_cannot_hold_every_connection(port: u16) {
    let held: Vec<TcpStream> = (0..64)
        .filter_map(|_| connect_from("127.0.0.2", port).ok())
        .collect();
    assert_eq!(held.len(), 64, "the kernel accepts the connections");
    std::thread::sleep(Duration::from_millis(200));
    let probe = request(port, "GET", "/healthz", &[], b"");
    assert_eq!(
        probe.status,
        200,
        "{}",
        String::from_utf8_lossy(&probe.body)
    );
    // Answered at once, before any request (sending one first could make
    // the close reset the connection and lose the answer).
    let mut one_more = connect_from("127.0.0.2", port).unwrap();
    let busy = cxr_tests::http::read_reply_or_closed(&mut one_more).expect("an answer");
    assert_eq!(busy.status, 503, "over its address's share");
    drop(held);
}

fn slow_clients_are_cut_off(port: u16, auth: &str) {
    let mut trickle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    trickle
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let start = Instant::now();
    let mut cut = false;
    for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\n" {
        if trickle.write_all(&[*byte]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        if start.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    let reply = cxr_tests::http::read_reply_or_closed(&mut trickle);
    assert!(
        cut || reply.is_none_or(|r| r.status == 408),
        "a trickled header was not cut off"
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );

    let (content_type, body) = related(&[&sample("RG1_J2KI.dcm")]);
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let start = Instant::now();
    stalled
        .write_all(&head(
            "POST",
            "/dicomweb/studies",
            &[("authorization", auth), ("content-type", &content_type)],
            Some(body.len()),
        ))
        .unwrap();
    stalled.write_all(&body[..100]).unwrap();
    let reply = cxr_tests::http::read_reply_or_closed(&mut stalled).expect("an answer");
    assert!(start.elapsed() < Duration::from_secs(15));
    assert_eq!(reply.status, 408);
    assert_eq!(reply.json()["error"]["code"], "STOW_BODY_STALLED");
}

/// RG1 with its SOP Instance UID's last four digits replaced by 1000 + `n`
/// (same length, so every element length stays right).
fn rg1_variant(n: usize) -> (String, Vec<u8>) {
    let original = "1.3.6.1.4.1.5962.1.1.9.1.3.20040826185059.5457";
    // A UID component has no leading zero.
    let uid = format!("{}{}", &original[..original.len() - 4], 1000 + n);
    let bytes = sample("RG1_J2KI.dcm");
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = &bytes[..];
    while let Some(at) = rest
        .windows(original.len())
        .position(|w| w == original.as_bytes())
    {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(uid.as_bytes());
        rest = &rest[at + original.len()..];
    }
    out.extend_from_slice(rest);
    (uid, out)
}

/// The SOP Instance UIDs the spool journal holds.
fn journalled(state: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(state.join("spool/journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["sop_instance_uid"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn every_acknowledged_stow_instance_survives_a_sigkill() {
    let dir = scratch_dir("serve-http-kill");
    let state = dir.join("state");
    let state_arg = state.to_str().unwrap().to_owned();
    let board = board_file(&dir, false);
    let board_arg = board.to_str().unwrap().to_owned();
    let args = [
        "--state-dir",
        &state_arg,
        "--board-file",
        &board_arg,
        "--listen",
        "127.0.0.1:0",
        "--stable-s",
        "3600",
    ];
    let service = Service::start(&appliance(), &args, &[], &dir.join("serve-1.err"));
    let port = service.http_port.unwrap();
    let auth = bearer(&token(&state_arg, &board_arg, "operator"));
    // This board keeps /metrics behind credentials, loopback or not.
    assert_eq!(request(port, "GET", "/metrics", &[], b"").status, 401);
    assert_eq!(
        request(port, "GET", "/metrics", &[("authorization", &auth)], b"").status,
        200
    );
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|k| {
            let (auth, acknowledged) = (auth.clone(), std::sync::Arc::clone(&acknowledged));
            std::thread::spawn(move || {
                for n in (k..400).step_by(4) {
                    let (uid, bytes) = rg1_variant(n);
                    let (content_type, body) = related(&[&bytes]);
                    let head = head(
                        "POST",
                        "/dicomweb/studies",
                        &[("authorization", &auth), ("content-type", &content_type)],
                        Some(body.len()),
                    );
                    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                        return;
                    };
                    if stream
                        .write_all(&head)
                        .and_then(|()| stream.write_all(&body))
                        .is_err()
                    {
                        return;
                    }
                    match cxr_tests::http::read_reply_or_closed(&mut stream) {
                        Some(r) if r.status == 200 || r.status == 202 => {
                            acknowledged.lock().unwrap().push(uid)
                        }
                        other => {
                            eprintln!(
                                "client {k} stops at {n}: {:?}",
                                other.map(|r| (
                                    r.status,
                                    String::from_utf8_lossy(&r.body).into_owned()
                                ))
                            );
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    let enough = wait_until(Duration::from_secs(60), || {
        acknowledged.lock().unwrap().len() >= 12
    });
    service.kill();
    for c in clients {
        c.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        enough,
        "only {} uploads were acknowledged",
        acknowledged.len()
    );
    // The spool recovers at start: what it holds then is what survived.
    let again = Service::start(&appliance(), &args, &[], &dir.join("serve-2.err"));
    let held = journalled(&state);
    let lost: Vec<&String> = acknowledged.iter().filter(|u| !held.contains(*u)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost after SIGKILL: {lost:?}"
    );
    eprintln!(
        "{} uploads acknowledged before the SIGKILL, {} instances held after restart",
        acknowledged.len(),
        held.len()
    );
    assert_eq!(again.terminate(), Some(0));
}

/// Run a program; (exit code, stdout and stderr).
fn run_tool(program: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// With `http_tls`, the port speaks HTTPS only, TLS 1.2 and 1.3 but not
/// 1.1, with the certificate whose fingerprint `tls fingerprint` prints,
/// and session cookies carry `Secure`.
#[test]
fn https_serves_tls_1_2_and_1_3_only_with_the_printed_certificate() {
    let (Some(curl), Some(openssl)) = (
        cxr_tests::dicom_net::tool("curl"),
        cxr_tests::dicom_net::tool("openssl"),
    ) else {
        return;
    };
    let dir = scratch_dir("serve-https");
    let state = dir.join("state");
    let state_arg = state.to_str().unwrap().to_owned();
    let board = board_file(&dir, false);
    let text = std::fs::read_to_string(&board)
        .unwrap()
        .replace("http_listen = ", "http_tls = true\nhttp_listen = ");
    std::fs::write(&board, text).unwrap();
    let board_arg = board.to_str().unwrap().to_owned();
    let (code, out) = cli(
        &[
            "tls",
            "fingerprint",
            "--state-dir",
            &state_arg,
            "--board-file",
            &board_arg,
        ],
        "",
    );
    assert_eq!(code, 0, "{out}");
    let printed: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let fingerprint = printed["fingerprint_sha256"].as_str().unwrap().to_owned();
    let args = [
        "--state-dir",
        &state_arg,
        "--board-file",
        &board_arg,
        "--listen",
        "127.0.0.1:0",
    ];
    let service = Service::start(&appliance(), &args, &[], &dir.join("serve.err"));
    assert_eq!(service.ready["https"], true);
    assert_eq!(
        service.ready["tls_fingerprint_sha256"],
        fingerprint.as_str(),
        "the certificate made before start is the one served"
    );
    let port = service.http_port.unwrap();
    let url = format!("https://127.0.0.1:{port}/healthz");
    let (code, out) = run_tool(&curl, &["-sk", "--tlsv1.2", &url]);
    assert_eq!(code, 0, "TLS 1.2 and up: {out}");
    assert!(out.contains("alive"), "{out}");
    let (code, _) = run_tool(&curl, &["-sk", "--tlsv1.3", &url]);
    assert_eq!(code, 0, "TLS 1.3");
    let (code, out) = run_tool(&curl, &["-sk", "--tlsv1.1", "--tls-max", "1.1", &url]);
    assert_ne!(code, 0, "TLS 1.1 must be refused: {out}");
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .write_all(&head("GET", "/healthz", &[], None))
        .unwrap();
    let answer = cxr_tests::http::read_reply_or_closed(&mut plain);
    assert!(
        answer.is_none(),
        "no plain HTTP on an HTTPS port: {answer:?}"
    );
    let connect = format!("127.0.0.1:{port}");
    let (_, chain) = run_tool(&openssl, &["s_client", "-connect", &connect, "-showcerts"]);
    let pem_start = chain
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let pem_end =
        chain.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let served = dir.join("served.pem");
    std::fs::write(&served, &chain[pem_start..pem_end]).unwrap();
    let (_, fp) = run_tool(
        &openssl,
        &[
            "x509",
            "-in",
            served.to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    assert!(
        fp.contains(&fingerprint),
        "served {fp}, printed {fingerprint}"
    );
    assert_eq!(service.terminate(), Some(0));
}

/// An audit log that cannot take one more record refuses every study, so
/// the service says it is not ready (and why) rather than take films in.
#[test]
fn readyz_says_not_ready_while_the_audit_log_cannot_take_a_record() {
    let dir = scratch_dir("serve-audit-full");
    let state = dir.join("state");
    let board = board_file(&dir, false);
    let text = std::fs::read_to_string(&board).unwrap();
    let small = text
        .replace("segment_bytes = 4_194_304", "segment_bytes = 65_536")
        .replace("max_total_bytes = 268_435_456", "max_total_bytes = 131_072");
    assert_ne!(small, text, "the board's audit limits are set");
    std::fs::write(&board, small).unwrap();
    let config = cxr_audit::AuditConfig {
        segment_bytes: 65_536,
        max_total_bytes: 131_072,
        fsync_every_record: false,
        lock_wait_ms: 0,
    };
    {
        // Filled to within one record of its cap by earlier use.
        let (mut log, _) = cxr_audit::AuditLog::open(&state.join("audit"), config, 0).unwrap();
        while log.used_bytes() < 70_000 {
            let event = cxr_audit::Event::Login {
                user: "filler".into(),
                peer: "127.0.0.1".into(),
                granted: false,
                detail: "x".repeat(1000),
            };
            log.append(0, event).unwrap();
        }
        assert!(log.ensure_room().is_err());
    }
    let service = Service::start(
        &appliance(),
        &[
            "--bundle",
            &demo(),
            "--state-dir",
            state.to_str().unwrap(),
            "--board-file",
            board.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
        &dir.join("serve.err"),
    );
    let port = service.http_port.expect("the HTTP side listens");
    let ready = request(port, "GET", "/readyz", &[], b"");
    assert_eq!(
        ready.status,
        503,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    assert_eq!(ready.json()["ready"], false);
    assert_eq!(ready.json()["code"], "AUDIT_FULL");
    assert_eq!(request(port, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(service.terminate(), Some(0));
}

/// SIGTERM while an upload is half sent: no new connection is taken, the
/// upload finishes and is answered, it is durable, and the service exits 0.
#[test]
fn sigterm_lets_an_upload_in_progress_finish() {
    let dir = scratch_dir("serve-http-drain");
    let (service, state_arg, board_arg) = serve_demo(&dir, false);
    let state = dir.join("state");
    let port = service.http_port.expect("the HTTP side listens");
    let operator = token(&state_arg, &board_arg, "operator");
    let (content_type, body) = related(&[&sample("RG1_J2KI.dcm")]);
    let mut upload = TcpStream::connect(("127.0.0.1", port)).unwrap();
    upload
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    upload
        .write_all(&head(
            "POST",
            "/dicomweb/studies",
            &[
                ("authorization", &bearer(&operator)),
                ("content-type", &content_type),
            ],
            Some(body.len()),
        ))
        .unwrap();
    let half = body.len() / 2;
    upload.write_all(&body[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Command::new("kill")
        .args(["-TERM", &service.child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    std::thread::sleep(Duration::from_millis(500));
    upload.write_all(&body[half..]).unwrap();
    let reply = cxr_tests::http::read_reply_or_closed(&mut upload).expect("an answer");
    assert_eq!(
        reply.status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&reply.body),
        service.stderr_text()
    );
    assert_eq!(service.terminate(), Some(0));
    assert_eq!(
        serve_common::journal_lines(&state),
        1,
        "the upload is durable"
    );
}
