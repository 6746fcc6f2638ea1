//! The web destinations of the outbox tests:
//!
//! - [`Orthanc`]: Debian's Orthanc with its DICOMweb plugin, a real
//!   DICOMweb server that takes STOW-RS.
//! - [`FhirPeer`]: a FHIR server of our own, as small as the test needs:
//!   transaction Bundles of updates (`PUT Kind/id`: a new version of the
//!   resource, the older ones kept as its history, `meta.versionId` counted
//!   by the server) or conditional creates (`ifNoneExist` on
//!   `identifier=system|value`, `urn:uuid:` references replaced by the ids
//!   it assigns), and faults on demand (a 503; a transaction committed whose
//!   answer is lost); over HTTP, or HTTPS (rustls) with a certificate from
//!   a CA made for the test. No FHIR server is packaged for Debian or PyPI,
//!   and a lost answer is the case idempotence is for.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use crate::data::missing;
use crate::dicom_net::{free_port, wait_until};

/// Orthanc listening on loopback with DICOMweb at `/dicom-web`.
#[derive(Debug)]
pub struct Orthanc {
    child: Child,
    pub http_port: u16,
}

const ORTHANC: &str = "/usr/sbin/Orthanc";
const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

impl Orthanc {
    /// Start one with its storage in `dir`; `None` (after [`missing`]) when
    /// it is not installed.
    pub fn start(dir: &Path) -> Option<Orthanc> {
        if !Path::new(ORTHANC).is_file() || !Path::new(DICOMWEB_PLUGIN).is_file() {
            return missing(
                "Orthanc with its DICOMweb plugin",
                "install the Debian packages orthanc and orthanc-dicomweb",
            );
        }
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let http_port = free_port();
        let config = json!({
            "Name": "CXR-TEST-PACS",
            "StorageDirectory": dir.join("storage"),
            "IndexDirectory": dir.join("index"),
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomServerEnabled": false,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
        });
        let config_path = dir.join("orthanc.json");
        std::fs::write(&config_path, config.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::File::create(dir.join("orthanc.log")).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(ORTHANC)
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning Orthanc: {e}"));
        let orthanc = Orthanc { child, http_port };
        let up = wait_until(Duration::from_secs(30), || {
            orthanc.get("/system").is_some_and(|(s, _)| s == 200)
        });
        assert!(up, "Orthanc did not answer on {http_port}");
        Some(orthanc)
    }

    /// GET `path`: the status and the body.
    pub fn get(&self, path: &str) -> Option<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/dicom+json, application/json\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).ok()?;
        let split = reply.windows(4).position(|w| w == b"\r\n\r\n")?;
        let status = std::str::from_utf8(&reply[..split])
            .ok()?
            .split(' ')
            .nth(1)?
            .parse()
            .ok()?;
        let head = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
        let body = reply[split + 4..].to_vec();
        let body = if head.contains("transfer-encoding: chunked") {
            dechunk(&body)
        } else {
            body
        };
        Some((status, body))
    }

    /// The SOP Instance UIDs Orthanc holds in `study` (by QIDO-RS).
    pub fn instances_of(&self, study: &str) -> Vec<String> {
        let Some((200, body)) = self.get(&format!("/dicom-web/studies/{study}/instances")) else {
            return Vec::new();
        };
        let list: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["00080018"]["Value"][0].as_str().map(str::to_owned))
            .collect()
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || body.len() < end + 2 + size {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = body.get(end + 4 + size..).unwrap_or_default();
    }
    out
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the FHIR peer does with the next transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 503 and store nothing.
    Unavailable,
    /// Store it, then close the connection without an answer.
    LoseAnswer,
}

#[derive(Debug, Default)]
struct FhirStore {
    /// Every resource stored, with the id this server gave it.
    resources: Vec<Value>,
    /// Every transaction Bundle received, as sent.
    received: Vec<Value>,
    /// Versions replaced by an update, oldest first.
    history: Vec<Value>,
    faults: VecDeque<Fault>,
}

/// A FHIR server at `http[s]://127.0.0.1:PORT/fhir`.
#[derive(Debug)]
pub struct FhirPeer {
    pub port: u16,
    /// Over HTTPS: the PEM of the CA its certificate chains to.
    pub ca_pem: Option<String>,
    store: Arc<Mutex<FhirStore>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A CA, and a server certificate for 127.0.0.1 that it signed.
fn test_pki() -> (String, Arc<rustls::ServerConfig>) {
    let fail = |e: &dyn std::fmt::Display| -> ! { panic!("test PKI: {e}") };
    let ca_key = rcgen::KeyPair::generate().unwrap_or_else(|e| fail(&e));
    let mut ca_params =
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| fail(&e));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cxr-tests FHIR CA");
    let ca = ca_params.self_signed(&ca_key).unwrap_or_else(|e| fail(&e));
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| fail(&e));
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap_or_else(|e| fail(&e))
        .signed_by(&key, &ca, &ca_key)
        .unwrap_or_else(|e| fail(&e));
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| fail(&e))
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], private)
        .unwrap_or_else(|e| fail(&e));
    (ca.pem(), Arc::new(config))
}

impl FhirPeer {
    /// Over plain HTTP.
    pub fn start(faults: &[Fault]) -> FhirPeer {
        FhirPeer::listen(faults, None)
    }

    /// Over HTTPS, with a certificate from a CA of its own ([`FhirPeer::ca_pem`]).
    pub fn start_tls(faults: &[Fault]) -> FhirPeer {
        let (ca_pem, config) = test_pki();
        let mut peer = FhirPeer::listen(faults, Some(config));
        peer.ca_pem = Some(ca_pem);
        peer
    }

    fn listen(faults: &[Fault], tls: Option<Arc<rustls::ServerConfig>>) -> FhirPeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let store = Arc::new(Mutex::new(FhirStore {
            faults: faults.iter().copied().collect(),
            ..FhirStore::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (Arc::clone(&store), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => connection(stream, tls.as_ref(), &s),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        FhirPeer {
            port,
            ca_pem: None,
            store,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}/fhir", self.port)
    }

    fn with<T>(&self, f: impl FnOnce(&FhirStore) -> T) -> T {
        f(&self.store.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The stored resources of `kind`.
    pub fn resources(&self, kind: &str) -> Vec<Value> {
        self.with(|s| {
            s.resources
                .iter()
                .filter(|r| r["resourceType"] == kind)
                .cloned()
                .collect()
        })
    }

    /// The earlier versions of every updated resource, oldest first.
    pub fn history(&self, kind: &str) -> Vec<Value> {
        self.with(|s| {
            s.history
                .iter()
                .filter(|r| r["resourceType"] == kind)
                .cloned()
                .collect()
        })
    }

    /// The transaction Bundles received so far.
    pub fn received(&self) -> Vec<Value> {
        self.with(|s| s.received.clone())
    }

    /// Write each received Bundle to `dir` (for the R4 validator).
    pub fn save_received(&self, dir: &Path) -> Vec<PathBuf> {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        self.received()
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let path = dir.join(format!("transaction-{i}.json"));
                std::fs::write(&path, b.to_string()).unwrap_or_else(|e| panic!("{e}"));
                path
            })
            .collect()
    }
}

impl Drop for FhirPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the peer does with one request.
enum Answer {
    Reply(&'static str, Value),
    /// Close without an answer.
    Hang,
}

fn write_reply(stream: &mut impl Write, status: &str, body: &Value) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

fn outcome(text: &str) -> Value {
    json!({ "resourceType": "OperationOutcome", "issue": [{ "severity": "error", "code": "processing", "diagnostics": text }] })
}

/// One connection, one request (`Connection: close`), over TLS or not.
fn connection(
    stream: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
    store: &Mutex<FhirStore>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    match tls {
        None => {
            let mut plain = stream;
            serve_one(&mut plain, store);
            let _ = plain.shutdown(Shutdown::Both);
        }
        Some(config) => {
            let Ok(session) = rustls::ServerConnection::new(Arc::clone(config)) else {
                return;
            };
            let mut secured = rustls::StreamOwned::new(session, stream);
            serve_one(&mut secured, store);
            secured.conn.send_close_notify();
            let _ = secured.flush();
            let _ = secured.sock.shutdown(Shutdown::Both);
        }
    }
}

fn serve_one<S: Read + Write>(stream: &mut S, store: &Mutex<FhirStore>) {
    let answer = match read_request(&mut *stream) {
        Some((line, body)) => answer(&line, &body, store),
        None => return,
    };
    match answer {
        Answer::Reply(status, body) => write_reply(stream, status, &body),
        Answer::Hang => {}
    }
}

fn answer(request_line: &str, body: &[u8], store: &Mutex<FhirStore>) -> Answer {
    if !request_line.starts_with("POST /fhir ") {
        return Answer::Reply("404 Not Found", outcome(request_line));
    }
    let Ok(bundle) = serde_json::from_slice::<Value>(body) else {
        return Answer::Reply("400 Bad Request", outcome("not JSON"));
    };
    let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
    s.received.push(bundle.clone());
    let fault = s.faults.pop_front();
    if fault == Some(Fault::Unavailable) {
        return Answer::Reply("503 Service Unavailable", outcome("down"));
    }
    match transaction(&mut s, &bundle) {
        Ok(_) if fault == Some(Fault::LoseAnswer) => Answer::Hang,
        Ok(a) => Answer::Reply("200 OK", a),
        Err(e) => Answer::Reply("400 Bad Request", outcome(&e)),
    }
}

fn read_request(stream: impl Read) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    if length > 16 << 20 {
        return None;
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((request_line.trim_end().to_owned(), body))
}

/// Process a transaction: every entry a PUT (an update, creating the
/// resource at its id the first time) or a POST, conditional when it says so.
fn transaction(store: &mut FhirStore, bundle: &Value) -> Result<Value, String> {
    if bundle["resourceType"] != "Bundle" || bundle["type"] != "transaction" {
        return Err("not a transaction Bundle".into());
    }
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    let mut assigned: Vec<(String, String)> = Vec::new();
    let mut created: Vec<usize> = Vec::new();
    let mut statuses = Vec::new();
    for e in &entries {
        if e["request"]["method"] == "PUT" {
            statuses.push(update(store, e)?);
            continue;
        }
        let kind = e["request"]["url"].as_str().unwrap_or_default().to_owned();
        if e["request"]["method"] != "POST" || e["resource"]["resourceType"] != kind.as_str() {
            return Err(format!("entry {e}: not a POST of its resource type"));
        }
        let found = e["request"]["ifNoneExist"]
            .as_str()
            .and_then(|c| find(&store.resources, &kind, c));
        let id = match found {
            Some(id) => {
                statuses.push(("200 OK", format!("{kind}/{id}")));
                id
            }
            None => {
                let id = (store.resources.len() + 1).to_string();
                let mut r = e["resource"].clone();
                r["id"] = json!(id);
                store.resources.push(r);
                created.push(store.resources.len() - 1);
                statuses.push(("201 Created", format!("{kind}/{id}")));
                id
            }
        };
        let full_url = e["fullUrl"].as_str().unwrap_or_default().to_owned();
        assigned.push((full_url, format!("{kind}/{id}")));
    }
    for i in created {
        resolve(&mut store.resources[i], &assigned);
    }
    let answers: Vec<Value> = statuses
        .into_iter()
        .map(|(status, location)| json!({ "response": { "status": status, "location": location } }))
        .collect();
    Ok(json!({ "resourceType": "Bundle", "type": "transaction-response", "entry": answers }))
}

/// `PUT Kind/id`: the resource's next version; the one it replaces goes to
/// the history. The server counts `meta.versionId` itself.
fn update(store: &mut FhirStore, e: &Value) -> Result<(&'static str, String), String> {
    let url = e["request"]["url"].as_str().unwrap_or_default();
    let (kind, id) = url
        .split_once('/')
        .ok_or_else(|| format!("PUT {url}: not Kind/id"))?;
    let r = &e["resource"];
    if r["resourceType"] != kind || r["id"] != id {
        return Err(format!(
            "PUT {url}: the resource's type and id differ from the URL"
        ));
    }
    let mut next = r.clone();
    let at = store
        .resources
        .iter()
        .position(|x| x["resourceType"] == kind && x["id"] == id);
    let status = match at {
        Some(i) => {
            let old = store.resources.remove(i);
            let version = old["meta"]["versionId"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
            next["meta"]["versionId"] = json!((version + 1).to_string());
            store.history.push(old);
            "200 OK"
        }
        None => {
            next["meta"]["versionId"] = json!("1");
            "201 Created"
        }
    };
    store.resources.push(next);
    Ok((status, url.to_owned()))
}

/// The id of the stored `kind` whose identifiers match `identifier=S|V`.
fn find(resources: &[Value], kind: &str, condition: &str) -> Option<String> {
    let (system, value) = condition.strip_prefix("identifier=")?.split_once('|')?;
    resources
        .iter()
        .filter(|r| r["resourceType"] == kind)
        .find(|r| {
            r["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| i["system"] == system && i["value"] == value)
        })
        .and_then(|r| r["id"].as_str().map(str::to_owned))
}

fn resolve(value: &mut Value, assigned: &[(String, String)]) {
    match value {
        Value::Object(o) => {
            for (key, v) in o.iter_mut() {
                let hit = assigned
                    .iter()
                    .find(|(u, _)| Some(u.as_str()) == v.as_str());
                match (key.as_str(), hit) {
                    ("reference", Some((_, local))) => *v = json!(local),
                    _ => resolve(v, assigned),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| resolve(v, assigned)),
        _ => {}
    }
}
