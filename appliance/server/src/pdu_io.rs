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
    let codec_max = max.max(dicom_ul::pdu::MINIMUM_PDU_SIZE);
    let parsed = std::panic::catch_unwind(|| read_pdu(&buf[..], codec_max, true))
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
