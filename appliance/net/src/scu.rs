//! The DICOM sender: C-ECHO and C-STORE SCU to a configured destination
//! (a PACS), over `dicom-ul`'s PDU codec, every step under a timeout and
//! every PDU read bounded. One association per send: the outbox sends a
//! few results at a time, and a fresh association per attempt leaves no
//! half-open state between retries.

use std::time::Duration;

use dicom_ul::pdu::{
    AssociationAC, AssociationRQ, PDataValue, PDataValueType, Pdu, PresentationContextProposed,
    PresentationContextResultReason, UserVariableItem,
};
use tokio::net::TcpStream;

use crate::dimse::{decode_command, echo_request, status, store_request, VERIFICATION_SOP_CLASS};
use crate::pdu_io::{abort, read_one, send};

const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// The largest PDU we accept from a destination.
const MAX_RECEIVE: u32 = 64 * 1024;
/// The largest PDV we send when the destination sets no limit.
const DEFAULT_SEND: usize = 16 * 1024;

/// A C-STORE SCP to send results to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

impl Destination {
    /// `AE@HOST:PORT`.
    pub fn parse(text: &str) -> Result<Destination, String> {
        let (ae, address) = text
            .split_once('@')
            .ok_or_else(|| format!("{text:?}: write AE@HOST:PORT"))?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?}: the port is missing"))?;
        let port = port
            .parse()
            .map_err(|_| format!("{text:?}: {port:?} is not a port"))?;
        let ae_ok = !ae.is_empty()
            && ae.len() <= 16
            && ae.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
        if !ae_ok || host.is_empty() {
            return Err(format!(
                "{text:?}: the AE title must be 1-16 printable characters and the host non-empty"
            ));
        }
        Ok(Destination {
            ae_title: ae.to_owned(),
            host: host.to_owned(),
            port,
        })
    }

    /// The name it is shown and journalled under.
    pub fn name(&self) -> String {
        format!("{}@{}:{}", self.ae_title, self.host, self.port)
    }
}

/// Timeouts of one send.
#[derive(Debug, Clone, Copy)]
pub struct SendLimits {
    pub connect: Duration,
    pub response: Duration,
}

impl Default for SendLimits {
    fn default() -> Self {
        SendLimits {
            connect: Duration::from_secs(10),
            response: Duration::from_secs(60),
        }
    }
}

/// An open association to a destination.
struct Association {
    stream: TcpStream,
    buf: Vec<u8>,
    context: u8,
    max_pdv: usize,
    limits: SendLimits,
    /// The transfer syntax the peer accepted for the data set.
    transfer_syntax: String,
}

async fn associate(
    destination: &Destination,
    calling_ae: &str,
    abstract_syntax: &str,
    limits: SendLimits,
) -> Result<Association, String> {
    let address = format!("{}:{}", destination.host, destination.port);
    let mut stream = tokio::time::timeout(limits.connect, TcpStream::connect(&address))
        .await
        .map_err(|_| format!("connecting to {address}: timed out"))?
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let rq = association_request(destination, calling_ae, abstract_syntax);
    send(&mut stream, &rq)
        .await
        .map_err(|e| format!("sending A-ASSOCIATE-RQ: {e}"))?;
    let mut buf = Vec::new();
    let ac = match read_one(&mut stream, &mut buf, MAX_RECEIVE, limits.response).await {
        Ok(Pdu::AssociationAC(ac)) => ac,
        Ok(Pdu::AssociationRJ(rj)) => {
            return Err(format!(
                "{} rejected the association: {:?}, {:?}",
                destination.name(),
                rj.result,
                rj.source
            ))
        }
        Ok(other) => return Err(format!("unexpected {}", other.short_description())),
        Err(f) => return Err(f.detail()),
    };
    let accepted = ac
        .presentation_contexts
        .iter()
        .find(|pc| pc.id == 1 && pc.reason == PresentationContextResultReason::Acceptance);
    let Some(pc) = accepted else {
        abort(&mut stream).await;
        return Err(format!(
            "{} does not accept {abstract_syntax} in explicit or implicit VR little endian",
            destination.name()
        ));
    };
    // Either of the two proposed is one we can send; anything else breaks
    // the protocol.
    let transfer_syntax = pc.transfer_syntax.trim_end_matches('\0').to_owned();
    if transfer_syntax != EXPLICIT_VR_LE && transfer_syntax != IMPLICIT_VR_LE {
        abort(&mut stream).await;
        return Err(format!(
            "{} accepted {transfer_syntax}, which was not proposed",
            destination.name(),
        ));
    }
    let max_pdv = max_pdv(&ac);
    Ok(Association {
        stream,
        buf,
        context: 1,
        max_pdv,
        limits,
        transfer_syntax,
    })
}

/// The A-ASSOCIATE-RQ: one context for `abstract_syntax` in explicit or
/// implicit VR little endian, our maximum P-DATA length and identity.
fn association_request(destination: &Destination, calling_ae: &str, abstract_syntax: &str) -> Pdu {
    Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling_ae.to_owned(),
        called_ae_title: destination.ae_title.clone(),
        application_context_name: APPLICATION_CONTEXT.into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: abstract_syntax.to_owned(),
            transfer_syntaxes: vec![EXPLICIT_VR_LE.into(), IMPLICIT_VR_LE.into()],
        }],
        user_variables: vec![
            UserVariableItem::MaxLength(MAX_RECEIVE),
            UserVariableItem::ImplementationClassUID(
                crate::part10::IMPLEMENTATION_CLASS_UID.into(),
            ),
            UserVariableItem::ImplementationVersionName(
                crate::part10::IMPLEMENTATION_VERSION_NAME.into(),
            ),
        ],
    })
}

/// The largest PDV we send: what the peer's maximum length allows, within
/// our own bound.
fn max_pdv(ac: &AssociationAC) -> usize {
    let peer_max = ac.user_variables.iter().find_map(|u| match u {
        UserVariableItem::MaxLength(n) => Some(*n as usize),
        _ => None,
    });
    // A PDV item is the PDU's variable field less its 4-byte length, context
    // id and control header.
    match peer_max {
        Some(n) if n > 12 => (n - 6).min(DEFAULT_SEND * 4),
        _ => DEFAULT_SEND,
    }
}

impl Association {
    async fn pdv(&mut self, command: bool, last: bool, data: Vec<u8>) -> Result<(), String> {
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: self.context,
                value_type: if command {
                    PDataValueType::Command
                } else {
                    PDataValueType::Data
                },
                is_last: last,
                data,
            }],
        };
        tokio::time::timeout(self.limits.response, send(&mut self.stream, &pdu))
            .await
            .map_err(|_| "sending: timed out".to_owned())?
            .map_err(|e| format!("sending: {e}"))
    }

    /// Read the response command and return its status.
    async fn response(&mut self) -> Result<u16, String> {
        let mut command = Vec::new();
        loop {
            let pdu = read_one(
                &mut self.stream,
                &mut self.buf,
                MAX_RECEIVE,
                self.limits.response,
            )
            .await
            .map_err(|f| format!("waiting for the response: {}", f.detail()))?;
            let Pdu::PData { data } = pdu else {
                return Err(format!(
                    "unexpected {} instead of a response",
                    pdu.short_description()
                ));
            };
            for v in data {
                if v.value_type != PDataValueType::Command {
                    return Err("a data set instead of a response".into());
                }
                command.extend_from_slice(&v.data);
                if command.len() > crate::dimse::MAX_COMMAND_BYTES {
                    return Err("response command over 16 KiB".into());
                }
                if v.is_last {
                    let set = decode_command(&command).map_err(|e| e.to_string())?;
                    return set
                        .status
                        .ok_or_else(|| "response without a status".to_owned());
                }
            }
        }
    }

    async fn release(mut self) {
        if send(&mut self.stream, &Pdu::ReleaseRQ).await.is_ok() {
            let _ = read_one(
                &mut self.stream,
                &mut self.buf,
                MAX_RECEIVE,
                Duration::from_secs(5),
            )
            .await;
        }
    }
}

/// C-ECHO `destination`: Ok when it answers success.
pub async fn echo(
    destination: &Destination,
    calling_ae: &str,
    limits: SendLimits,
) -> Result<(), String> {
    let mut a = associate(destination, calling_ae, VERIFICATION_SOP_CLASS, limits).await?;
    a.pdv(true, true, echo_request(1)).await?;
    let s = a.response().await?;
    a.release().await;
    if s == status::SUCCESS {
        Ok(())
    } else {
        Err(format!("C-ECHO status {s:#06x}"))
    }
}

/// The data set of a Part 10 file (what follows its meta group).
pub fn data_set_of(part10: &[u8]) -> Result<&[u8], String> {
    if part10.get(128..132) != Some(b"DICM".as_slice()) {
        return Err("not a Part 10 file".into());
    }
    // (0002,0000) UL 4: the group length, explicit VR little endian.
    let length = part10
        .get(140..144)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .filter(|_| part10.get(132..138) == Some([2, 0, 0, 0, b'U', b'L'].as_slice()))
        .ok_or("the meta group does not start with its group length")?;
    part10
        .get(144 + length..)
        .ok_or_else(|| "the meta group runs past the end".into())
}

/// C-STORE one Part 10 instance (ours: Explicit VR Little Endian) to
/// `destination`, in whichever of Explicit or Implicit VR Little Endian it
/// accepts. Ok(status) when the destination answered; a success or warning
/// status means stored.
pub async fn store(
    destination: &Destination,
    calling_ae: &str,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    part10: &[u8],
    limits: SendLimits,
) -> Result<u16, String> {
    let explicit = data_set_of(part10)?;
    let mut a = associate(destination, calling_ae, sop_class_uid, limits).await?;
    let implicit;
    let data = if a.transfer_syntax == IMPLICIT_VR_LE {
        match cxr_dicom::data_set_in_implicit_vr_le(part10) {
            Ok(d) => {
                implicit = d;
                implicit.as_slice()
            }
            Err(e) => {
                abort(&mut a.stream).await;
                return Err(format!(
                    "{} accepts only implicit VR: {e}",
                    destination.name()
                ));
            }
        }
    } else {
        explicit
    };
    a.pdv(
        true,
        true,
        store_request(1, sop_class_uid, sop_instance_uid),
    )
    .await?;
    let chunks: Vec<&[u8]> = data.chunks(a.max_pdv.max(1)).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        a.pdv(false, i + 1 == chunks.len(), chunk.to_vec()).await?;
    }
    let s = a.response().await?;
    a.release().await;
    Ok(s)
}

/// Whether a C-STORE status means the destination stored the instance
/// (success, or a warning: coercion, elements discarded).
pub fn stored(status: u16) -> bool {
    status == status::SUCCESS || status == 0x0107 || status == 0x0116 || (status & 0xF000) == 0xB000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_bad_ones_are_refused() {
        let d = Destination::parse("PACS@127.0.0.1:104").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (d.ae_title.as_str(), d.host.as_str(), d.port),
            ("PACS", "127.0.0.1", 104)
        );
        assert_eq!(d.name(), "PACS@127.0.0.1:104");
        for bad in [
            "PACS",
            "@h:1",
            "P@h",
            "P@h:x",
            "P@:1",
            "WAY_TOO_LONG_AE_TITLE@h:1",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_data_set_follows_the_meta_group() {
        let mut file = crate::part10::file_meta("1.2.3", "1.2.3.4", EXPLICIT_VR_LE);
        file.extend_from_slice(b"DATASET!");
        assert_eq!(
            data_set_of(&file).unwrap_or_else(|e| panic!("{e}")),
            b"DATASET!"
        );
        assert!(data_set_of(b"short").is_err());
    }
}
