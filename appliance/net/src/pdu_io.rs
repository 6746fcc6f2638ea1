//! Reading and writing whole PDUs on a TCP stream with `dicom-ul`'s codec,
//! bounded: a PDU's length is checked against the limit before a byte of
//! its body is read, and reading is under a timeout.

use std::time::Duration;

use dicom_ul::pdu::{read_pdu, write_pdu, AbortRQServiceProviderReason, AbortRQSource, Pdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a PDU could not be read.
#[derive(Debug)]
pub enum ReadFault {
    Closed,
    Timeout,
    TooLarge(u32),
    Malformed(String),
}

impl ReadFault {
    pub fn code(&self) -> &'static str {
        match self {
            ReadFault::Closed => "ASSOCIATION_DROPPED",
            ReadFault::Timeout => "ASSOCIATION_TIMEOUT",
            ReadFault::TooLarge(_) => "PDU_TOO_LARGE",
            ReadFault::Malformed(_) => "PDU_MALFORMED",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            ReadFault::Closed => "the peer closed the connection".into(),
            ReadFault::Timeout => "no PDU within the timeout".into(),
            ReadFault::TooLarge(n) => format!("a PDU of {n} bytes, over the negotiated maximum"),
            ReadFault::Malformed(m) => m.clone(),
        }
    }
}

/// Read one PDU of at most `max` body bytes within `timeout`. The body is
/// never allocated before its length is checked.
pub async fn read_one(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: u32,
    timeout: Duration,
) -> Result<Pdu, ReadFault> {
    let read = async {
        let mut head = [0u8; 6];
        stream
            .read_exact(&mut head)
            .await
            .map_err(|_| ReadFault::Closed)?;
        let length = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
        if length > max {
            return Err(ReadFault::TooLarge(length));
        }
        buf.clear();
        buf.extend_from_slice(&head);
        buf.resize(6 + length as usize, 0);
        stream
            .read_exact(&mut buf[6..])
            .await
            .map_err(|_| ReadFault::Closed)?;
        Ok(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ReadFault::Timeout)??;
    parse_pdu(buf, max)
}

/// Parse one whole PDU (its 6-byte header and body) of at most `max` body
/// bytes. The codec indexes past the end of some malformed items, so it
/// runs behind `catch_unwind`: a panic there is a malformed PDU.
pub fn parse_pdu(bytes: &[u8], max: u32) -> Result<Pdu, ReadFault> {
    let length = match bytes {
        [_, _, a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => return Err(ReadFault::Malformed("a PDU shorter than its header".into())),
    };
    if length > max {
        return Err(ReadFault::TooLarge(length));
    }
    if bytes.len() as u64 != 6 + u64::from(length) {
        return Err(ReadFault::Malformed(format!(
            "a PDU of {} bytes whose header says {}",
            bytes.len(),
            6 + u64::from(length)
        )));
    }
    let codec_max = max.clamp(
        dicom_ul::pdu::MINIMUM_PDU_SIZE,
        dicom_ul::pdu::MAXIMUM_PDU_SIZE,
    );
    let parsed = std::panic::catch_unwind(|| read_pdu(bytes, codec_max, true))
        .map_err(|_| ReadFault::Malformed("the PDU codec failed on this PDU".into()))?;
    match parsed {
        Ok(Some(pdu)) => Ok(pdu),
        Ok(None) => Err(ReadFault::Malformed("a truncated PDU".into())),
        Err(e) => Err(ReadFault::Malformed(e.to_string())),
    }
}

pub async fn send(stream: &mut TcpStream, pdu: &Pdu) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    write_pdu(&mut bytes, pdu).map_err(std::io::Error::other)?;
    stream.write_all(&bytes).await
}

pub async fn abort(stream: &mut TcpStream) {
    let pdu = Pdu::AbortRQ {
        source: AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::ReasonNotSpecified),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), send(stream, &pdu)).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed};

    fn associate_rq() -> Vec<u8> {
        let pdu = Pdu::AssociationRQ(AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "MODALITY".into(),
            called_ae_title: "CXR_APPLIANCE".into(),
            application_context_name: "1.2.840.10008.3.1.1.1".into(),
            presentation_contexts: vec![PresentationContextProposed {
                id: 1,
                abstract_syntax: "1.2.840.10008.1.1".into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into()],
            }],
            user_variables: vec![],
        });
        let mut bytes = Vec::new();
        write_pdu(&mut bytes, &pdu).unwrap_or_else(|e| panic!("{e}"));
        bytes
    }

    #[test]
    fn a_pdu_is_parsed_or_refused_with_a_typed_fault_never_a_panic() {
        let good = associate_rq();
        assert!(matches!(parse_pdu(&good, 65536), Ok(Pdu::AssociationRQ(_))));
        assert!(matches!(
            parse_pdu(&good[..5], 65536),
            Err(ReadFault::Malformed(_))
        ));
        assert!(matches!(
            parse_pdu(&good[..good.len() - 1], 65536),
            Err(ReadFault::Malformed(_))
        ));
        assert!(matches!(
            parse_pdu(&[1, 0, 0xFF, 0xFF, 0xFF, 0xFF], 65536),
            Err(ReadFault::TooLarge(_))
        ));
        // Every single-byte corruption and every truncation of a valid
        // request, with its header length kept consistent.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for at in 6..good.len() {
            for _ in 0..8 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let mut bad = good.clone();
                bad[at] = state as u8;
                let _ = parse_pdu(&bad, 65536);
            }
            let mut cut = good[..at].to_vec();
            let len = (at - 6) as u32;
            cut[2..6].copy_from_slice(&len.to_be_bytes());
            let _ = parse_pdu(&cut, 65536);
        }
    }
}
