//! The outbox's web senders: STOW-RS of one DICOM object to a DICOMweb
//! server, and one FHIR transaction Bundle to a FHIR server. One HTTP/1.1
//! connection per attempt (like one association per C-STORE), every step
//! under the send's timeouts, the answer read to at most 1 MiB.

use axum::http::{header, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::destination::HttpEndpoint;
use crate::scu::SendLimits;

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
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]);
        text.chars().filter(|c| !c.is_control()).collect()
    }
}

/// POST `body` to `endpoint.path + suffix`.
pub async fn post(
    endpoint: &HttpEndpoint,
    suffix: &str,
    content_type: &str,
    accept: &str,
    body: Vec<u8>,
    limits: SendLimits,
) -> Result<Reply, String> {
    let url = format!("{}{suffix}", endpoint.url());
    let address = (endpoint.host.as_str(), endpoint.port);
    let stream = tokio::time::timeout(limits.connect, TcpStream::connect(address))
        .await
        .map_err(|_| format!("{url}: no connection within {:?}", limits.connect))?
        .map_err(|e| format!("{url}: {e}"))?;
    let request = Request::post(format!("{}{suffix}", endpoint.path))
        .header(header::HOST, endpoint.authority())
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT, accept)
        .header(header::USER_AGENT, "cxr-appliance")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("{url}: {e}"))?;
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
        .map_err(|_| format!("{url}: no answer within {:?}", limits.response))?
        .map_err(|e| format!("{url}: {e}"))?;
    let body = body
        .map_err(|e| format!("{url}: the answer's body: {e}"))?
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
pub async fn stow(
    endpoint: &HttpEndpoint,
    sop_instance_uid: &str,
    file: Vec<u8>,
    limits: SendLimits,
) -> Result<u16, String> {
    let (content_type, body) = stow_body(&file);
    drop(file);
    let reply = post(
        endpoint,
        "/studies",
        &content_type,
        "application/dicom+json",
        body,
        limits,
    )
    .await?;
    let listed = serde_json::from_slice::<Value>(&reply.body)
        .map(|v| stored_in_reply(&v, sop_instance_uid))
        .unwrap_or(false);
    match reply.status {
        200 => Ok(200),
        202 | 409 if listed => Ok(reply.status),
        s => Err(format!(
            "{} answered HTTP {s} to STOW-RS: {}",
            endpoint.url(),
            reply.excerpt()
        )),
    }
}

/// Whether a STOW-RS answer's ReferencedSOPSequence (0008,1199) names the
/// instance.
fn stored_in_reply(reply: &Value, sop_instance_uid: &str) -> bool {
    reply["00081199"]["Value"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|item| item["00081155"]["Value"][0].as_str() == Some(sop_instance_uid))
}

/// POST one transaction Bundle to the FHIR server's base: Ok(HTTP status)
/// when every entry was created or found (a conditional create's match).
pub async fn fhir_transaction(
    endpoint: &HttpEndpoint,
    bundle: &Value,
    limits: SendLimits,
) -> Result<u16, String> {
    let reply = post(
        endpoint,
        "",
        "application/fhir+json",
        "application/fhir+json",
        bundle.to_string().into_bytes(),
        limits,
    )
    .await?;
    let answer: Option<Value> = serde_json::from_slice(&reply.body).ok();
    if reply.status != 200 {
        let why = answer
            .as_ref()
            .and_then(|a| a["issue"][0]["diagnostics"].as_str().map(str::to_owned))
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
    let statuses: Vec<&str> = answer["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["response"]["status"].as_str().unwrap_or_default())
        .collect();
    let sent = sent["entry"].as_array().map_or(0, Vec::len);
    let all_ok = statuses
        .iter()
        .all(|s| s.starts_with("200") || s.starts_with("201"));
    if statuses.len() != sent || !all_ok {
        return Err(format!(
            "the transaction-response lists {} of {sent} entries, statuses {statuses:?}",
            statuses.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multipart::{dicom_boundary, Event, Limits, RelatedReader};
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

    #[test]
    fn a_stow_answer_counts_only_when_it_lists_the_instance_as_stored() {
        let answer = json!({ "00081199": { "vr": "SQ", "Value": [ { "00081155": { "vr": "UI", "Value": ["1.2.3"] } } ] } });
        assert!(stored_in_reply(&answer, "1.2.3"));
        assert!(!stored_in_reply(&answer, "1.2.4"));
        assert!(!stored_in_reply(&json!({}), "1.2.3"));
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
