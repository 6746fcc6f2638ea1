//! The outbox's web senders: STOW-RS of one DICOM object to a DICOMweb
//! server, and one FHIR transaction Bundle to a FHIR server. One HTTP/1.1
//! connection per attempt (like one association per C-STORE), every step
//! under the send's timeouts, the answer read to at most 1 MiB. HTTPS is
//! rustls, TLS 1.2 and 1.3, the server's certificate checked against the
//! board's trust anchors only (no system store: an appliance trusts what
//! its board says).

use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::http::{header, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::destination::HttpEndpoint;
use cxr_net::scu::SendLimits;

/// The most of an answer we read.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// What a server answered.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The start of the body, for an error message.
    fn excerpt(&self) -> String {
        clean(&String::from_utf8_lossy(
            &self.body[..self.body.len().min(300)],
        ))
    }
}

/// A peer's text as it may go into the journal, stderr and the audit log:
/// at most 300 characters, no control characters.
fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// The client side of HTTPS destinations: the CA certificates in `pem`
/// are the only trust anchors.
pub fn client_config(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in it".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// How one destination is reached: its endpoint, the TLS trust when it is
/// https, and the timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub endpoint: &'a HttpEndpoint,
    pub tls: Option<&'a Arc<rustls::ClientConfig>>,
    pub limits: SendLimits,
}

/// POST `body` to `endpoint.path + suffix`.
pub async fn post(
    route: Route<'_>,
    suffix: &str,
    content_type: &str,
    accept: &str,
    body: Vec<u8>,
) -> Result<Reply, String> {
    let (endpoint, limits) = (route.endpoint, route.limits);
    let url = format!("{}{suffix}", endpoint.url());
    let trust = match (endpoint.tls, route.tls) {
        (true, None) => {
            return Err(format!(
            "{url}: no trust anchors for HTTPS destinations (fix: the board's forward_trust_pem)"
        ))
        }
        (true, Some(config)) => Some(config),
        (false, _) => None,
    };
    let address = (endpoint.host.as_str(), endpoint.port);
    let stream = tokio::time::timeout(limits.connect, TcpStream::connect(address))
        .await
        .map_err(|_| format!("{url}: no connection within {:?}", limits.connect))?
        .map_err(|e| format!("{url}: {e}"))?;
    let target = format!("{}{suffix}", endpoint.path);
    let target = if target.is_empty() {
        "/".to_owned()
    } else {
        target
    };
    let request = Request::post(target)
        .header(header::HOST, endpoint.authority())
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT, accept)
        .header(header::USER_AGENT, "cxr-appliance")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("{url}: {e}"))?;
    let reply = if let Some(config) = trust {
        let name =
            ServerName::try_from(endpoint.host.clone()).map_err(|e| format!("{url}: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
        let secured = tokio::time::timeout(limits.connect, connector.connect(name, stream))
            .await
            .map_err(|_| format!("{url}: no TLS handshake within {:?}", limits.connect))?
            .map_err(|e| format!("{url}: TLS: {e}"))?;
        exchange(secured, request, limits).await
    } else {
        exchange(stream, request, limits).await
    };
    reply.map_err(|e| format!("{url}: {e}"))
}

/// One request and its bounded answer over `stream`.
async fn exchange<S>(
    stream: S,
    request: Request<Full<Bytes>>,
    limits: SendLimits,
) -> Result<Reply, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let exchange = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(connection);
        let response = sender.send_request(request).await;
        let outcome = match response {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = Limited::new(r.into_body(), MAX_REPLY_BYTES).collect().await;
                Ok((status, body))
            }
            Err(e) => Err(e),
        };
        driver.abort();
        outcome
    };
    let (status, body) = tokio::time::timeout(limits.response, exchange)
        .await
        .map_err(|_| format!("no answer within {:?}", limits.response))?
        .map_err(|e| e.to_string())?;
    let body = body
        .map_err(|e| format!("the answer's body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(Reply { status, body })
}

/// A boundary that does not occur in `content`.
fn boundary_for(content: &[u8]) -> String {
    let mut n = content.len();
    loop {
        let b = format!("cxr-appliance-{n:016x}");
        if !content.windows(b.len()).any(|w| w == b.as_bytes()) {
            return b;
        }
        n = n.wrapping_mul(31).wrapping_add(7);
    }
}

/// One Part 10 file as a STOW-RS `multipart/related` body.
pub fn stow_body(file: &[u8]) -> (String, Vec<u8>) {
    let boundary = boundary_for(file);
    let mut body = Vec::with_capacity(file.len() + 200);
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    (content_type, body)
}

/// STOW-RS one instance to `endpoint/studies`: Ok(HTTP status) when the
/// server lists it as stored. A 202 or 409 that lists it (a server that
/// already had it) is a delivery too; one that lists it as failed is not.
pub async fn stow(route: Route<'_>, sop_instance_uid: &str, file: Vec<u8>) -> Result<u16, String> {
    let (content_type, body) = stow_body(&file);
    drop(file);
    let reply = post(
        route,
        "/studies",
        &content_type,
        "application/dicom+json",
        body,
    )
    .await?;
    let endpoint = route.endpoint;
    let answer = serde_json::from_slice::<Value>(&reply.body).unwrap_or(Value::Null);
    // Only an answer that lists the instance as stored is a delivery: a
    // proxy's page or another service's 200 is not.
    // A server that already holds the instance (a retry after a lost
    // answer) may list it as failed with reason 0x0111, "duplicate".
    let stored = (stored_in_reply(&answer, sop_instance_uid)
        && !listed_in(&answer, "00081198", sop_instance_uid))
        || duplicate_in(&answer, sop_instance_uid);
    match reply.status {
        200 | 202 | 409 if stored => Ok(reply.status),
        s => Err(format!(
            "{} answered HTTP {s} to STOW-RS without storing the instance: {}",
            endpoint.url(),
            reply.excerpt()
        )),
    }
}

/// Whether a STOW-RS answer's ReferencedSOPSequence (0008,1199) names the
/// instance.
fn stored_in_reply(reply: &Value, sop_instance_uid: &str) -> bool {
    listed_in(reply, "00081199", sop_instance_uid)
}

/// Whether the answer's FailedSOPSequence lists the instance as a
/// duplicate (FailureReason 0x0111 = 273).
fn duplicate_in(reply: &Value, sop_instance_uid: &str) -> bool {
    reply["00081198"]["Value"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|item| {
            item["00081155"]["Value"][0].as_str() == Some(sop_instance_uid)
                && item["00081197"]["Value"][0].as_u64() == Some(0x0111)
        })
}

/// Whether the sequence `tag` of a STOW-RS answer names the instance.
fn listed_in(reply: &Value, tag: &str, sop_instance_uid: &str) -> bool {
    reply[tag]["Value"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|item| item["00081155"]["Value"][0].as_str() == Some(sop_instance_uid))
}

/// POST one transaction Bundle to the FHIR server's base: Ok(HTTP status)
/// when every entry was created or found (a conditional create's match).
pub async fn fhir_transaction(route: Route<'_>, bundle: &Value) -> Result<u16, String> {
    let reply = post(
        route,
        "",
        "application/fhir+json",
        "application/fhir+json",
        bundle.to_string().into_bytes(),
    )
    .await?;
    let endpoint = route.endpoint;
    let answer: Option<Value> = serde_json::from_slice(&reply.body).ok();
    if reply.status != 200 {
        let why = answer
            .as_ref()
            .and_then(|a| a["issue"][0]["diagnostics"].as_str().map(clean))
            .unwrap_or_else(|| reply.excerpt());
        return Err(format!(
            "{} answered HTTP {} to the transaction: {why}",
            endpoint.url(),
            reply.status
        ));
    }
    transaction_accepted(answer.as_ref(), bundle)
        .map(|()| 200)
        .map_err(|e| format!("{}: {e}", endpoint.url()))
}

/// A transaction-response with one 200 or 201 per entry sent.
fn transaction_accepted(answer: Option<&Value>, sent: &Value) -> Result<(), String> {
    let Some(answer) = answer.filter(|a| a["type"] == "transaction-response") else {
        return Err("the answer is not a transaction-response Bundle".into());
    };
    let statuses: Vec<String> = answer["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| clean(e["response"]["status"].as_str().unwrap_or_default()))
        .collect();
    let sent = sent["entry"].as_array().map_or(0, Vec::len);
    let all_ok = statuses
        .iter()
        .all(|s| s.starts_with("200") || s.starts_with("201"));
    if statuses.len() != sent || !all_ok {
        let shown: Vec<&String> = statuses.iter().take(20).collect();
        return Err(format!(
            "the transaction-response lists {} of {sent} entries, statuses {shown:?}",
            statuses.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_net::multipart::{dicom_boundary, Event, Limits, RelatedReader};
    use serde_json::json;

    #[test]
    fn the_stow_body_is_one_dicom_part_with_a_boundary_not_in_the_file() {
        let mut file = b"DICM...".to_vec();
        // A file that happens to hold the first boundary we would pick.
        file.extend_from_slice(format!("cxr-appliance-{:016x}", 7 + 7).as_bytes());
        let (content_type, body) = stow_body(&file);
        let boundary = dicom_boundary(&content_type).unwrap_or_else(|e| panic!("{e}"));
        assert!(!file
            .windows(boundary.len())
            .any(|w| w == boundary.as_bytes()));
        let mut reader = RelatedReader::new(&boundary, Limits::default());
        reader.push(&body);
        let (mut parts, mut data) = (0, Vec::new());
        while let Some(event) = reader.next_event().unwrap_or_else(|e| panic!("{e}")) {
            match event {
                Event::PartStart(_) => parts += 1,
                Event::Data(d) => data.extend_from_slice(&d),
                _ => {}
            }
        }
        assert!(reader.finished());
        assert_eq!((parts, data), (1, file));
    }

    fn server_config(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> rustls::ServerConfig {
        let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], private)
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn self_signed(name: &str) -> (String, rustls::ServerConfig) {
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .and_then(|p| p.self_signed(&key))
            .unwrap_or_else(|e| panic!("{e}"));
        (cert.pem(), server_config(&cert, &key))
    }

    /// A CA (its PEM) and a server config with a certificate it signed for
    /// `name`.
    fn ca_signed(name: &str) -> (String, rustls::ServerConfig) {
        let fail = |e: rcgen::Error| -> ! { panic!("{e}") };
        let ca_key = rcgen::KeyPair::generate().unwrap_or_else(|e| fail(e));
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| fail(e));
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap_or_else(|e| fail(e));
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| fail(e));
        let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
            .and_then(|p| p.signed_by(&key, &ca, &ca_key))
            .unwrap_or_else(|e| fail(e));
        (ca.pem(), server_config(&leaf, &key))
    }

    /// Send a transaction to a TLS server with `server`'s certificate,
    /// trusting `trust_pem`: what the sender said, and whether the server
    /// read any request bytes.
    fn send_to_tls_server(
        server: rustls::ServerConfig,
        trust_pem: &str,
    ) -> (Result<u16, String>, bool) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let trust = client_config(trust_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
            let received = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.ok()?;
                let mut tls = acceptor.accept(tcp).await.ok()?;
                let mut request = vec![0u8; 64];
                tokio::io::AsyncReadExt::read(&mut tls, &mut request)
                    .await
                    .ok()
                    .filter(|n| *n > 0)
            });
            let endpoint = HttpEndpoint::parse(&format!("https://127.0.0.1:{port}/fhir"))
                .unwrap_or_else(|e| panic!("{e}"));
            let route = Route {
                endpoint: &endpoint,
                tls: Some(&trust),
                limits: SendLimits::default(),
            };
            let sent = fhir_transaction(route, &json!({ "resourceType": "Bundle" })).await;
            (sent, received.await.ok().flatten().is_some())
        })
    }

    #[test]
    fn a_certificate_from_the_trusted_ca_for_another_host_gets_nothing() {
        let (ca, server) = ca_signed("someone-else.local");
        let (sent, read) = send_to_tls_server(server, &ca);
        let error = sent.unwrap_err();
        assert!(
            error.contains("TLS") && error.contains("certificate"),
            "{error}"
        );
        assert!(!read, "no request reached the server");
        // The same CA's certificate for the right address is accepted: the
        // request goes out (the server here answers nothing).
        let (ca, server) = ca_signed("127.0.0.1");
        let (_, read) = send_to_tls_server(server, &ca);
        assert!(
            read,
            "the request reached the server named in its certificate"
        );
    }

    #[test]
    fn trust_files_without_a_usable_certificate_are_refused() {
        assert!(client_config(b"").is_err());
        assert!(client_config(b"not pem at all").is_err());
        let (pem, _) = self_signed("ca.local");
        assert!(client_config(pem.as_bytes()).is_ok());
    }

    #[test]
    fn an_https_server_whose_certificate_is_not_trusted_gets_nothing() {
        let (_, server) = self_signed("127.0.0.1");
        let (other_ca, _) = self_signed("someone-else.local");
        let (sent, read) = send_to_tls_server(server, &other_ca);
        let error = sent.unwrap_err();
        assert!(
            error.contains("TLS") && error.contains("certificate"),
            "{error}"
        );
        assert!(!read, "no request reached the untrusted server");
        // Without trust anchors an https destination is not even tried.
        let endpoint =
            HttpEndpoint::parse("https://127.0.0.1:1/fhir").unwrap_or_else(|e| panic!("{e}"));
        let route = Route {
            endpoint: &endpoint,
            tls: None,
            limits: SendLimits::default(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let error = runtime
            .block_on(fhir_transaction(route, &json!({})))
            .unwrap_err();
        assert!(error.contains("forward_trust_pem"), "{error}");
    }

    #[test]
    fn a_stow_answer_counts_only_when_it_lists_the_instance_as_stored() {
        let answer = json!({ "00081199": { "vr": "SQ", "Value": [ { "00081155": { "vr": "UI", "Value": ["1.2.3"] } } ] } });
        assert!(stored_in_reply(&answer, "1.2.3"));
        assert!(!stored_in_reply(&answer, "1.2.4"));
        assert!(!stored_in_reply(&json!({}), "1.2.3"));
        let failed = json!({ "00081198": { "vr": "SQ", "Value": [ { "00081155": { "vr": "UI", "Value": ["1.2.3"] } } ] } });
        assert!(listed_in(&failed, "00081198", "1.2.3"));
        assert!(!duplicate_in(&failed, "1.2.3"), "no reason given");
        let duplicate = json!({ "00081198": { "vr": "SQ", "Value": [ {
            "00081155": { "vr": "UI", "Value": ["1.2.3"] }, "00081197": { "vr": "US", "Value": [273] } } ] } });
        assert!(duplicate_in(&duplicate, "1.2.3") && !duplicate_in(&duplicate, "1.2.4"));
        // A peer's text is cut and stripped before it is kept anywhere.
        let long = format!("a\u{1b}[31m{}\n", "x".repeat(5000));
        let kept = clean(&long);
        assert!(kept.chars().count() == 300 && !kept.chars().any(char::is_control));
    }

    #[test]
    fn a_transaction_is_delivered_only_when_every_entry_was_created_or_found() {
        let sent = json!({ "entry": [{}, {}] });
        let ok = json!({ "type": "transaction-response", "entry": [
            { "response": { "status": "201 Created" } }, { "response": { "status": "200 OK" } } ] });
        assert!(transaction_accepted(Some(&ok), &sent).is_ok());
        let short = json!({ "type": "transaction-response", "entry": [{ "response": { "status": "201" } }] });
        assert!(transaction_accepted(Some(&short), &sent).is_err());
        let failed = json!({ "type": "transaction-response", "entry": [
            { "response": { "status": "201" } }, { "response": { "status": "400 Bad Request" } } ] });
        assert!(transaction_accepted(Some(&failed), &sent).is_err());
        assert!(transaction_accepted(Some(&json!({ "type": "batch-response" })), &sent).is_err());
        assert!(transaction_accepted(None, &sent).is_err());
    }
}
