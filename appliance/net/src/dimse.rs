//! The DIMSE layer `dicom-ul` lacks: the command set of PS3.7 §9.3 and
//! §9.1.1/9.1.5 (C-STORE, C-ECHO), always implicit VR little endian.
//!
//! [`MessageReader`] takes the P-DATA values of one association in order and
//! yields the command, then the data set's bytes as they arrive (for the
//! receiver's sink to stream to disk: a data set is never held whole). Decoding is
//! strict and bounded: the command set is capped ([`MAX_COMMAND_BYTES`]),
//! only group 0000 is allowed, elements must ascend, every length must fit,
//! and the group length must agree with what follows it.

use crate::uid::{is_valid_uid, trim_uid};
use crate::DimseError;

/// The largest command set accepted (real ones are a few hundred bytes).
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// Command Field values served here, and their responses.
pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;
/// The Verification SOP Class (C-ECHO).
pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";

/// Statuses this node answers with (PS3.4 Annex B.2.3, PS3.7 Annex C).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources (the store is full).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: cannot understand (a data set that cannot be parsed).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Refused: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: processing failure (the store could not write).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// STOW-RS (PS3.18 Table 10.5.3-1 uses 0xA900 for a data set that does
    /// not match): the instance is not of the study the URL names.
    pub const STUDY_MISMATCH: u16 = 0xA900;
}

const GROUP_LENGTH: u16 = 0x0000;
const AFFECTED_SOP_CLASS_UID: u16 = 0x0002;
const COMMAND_FIELD: u16 = 0x0100;
const MESSAGE_ID: u16 = 0x0110;
const MESSAGE_ID_RESPONDED_TO: u16 = 0x0120;
const PRIORITY: u16 = 0x0700;
const DATA_SET_TYPE: u16 = 0x0800;
const STATUS: u16 = 0x0900;
const ERROR_COMMENT: u16 = 0x0902;
const AFFECTED_SOP_INSTANCE_UID: u16 = 0x1000;

/// The elements of a received command set this node reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandSet {
    pub command_field: Option<u16>,
    pub message_id: Option<u16>,
    pub affected_sop_class_uid: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    pub priority: Option<u16>,
    pub data_set_type: Option<u16>,
    /// In a response: the request's Message ID, and the status.
    pub message_id_responded_to: Option<u16>,
    pub status: Option<u16>,
}

/// A request this node serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Echo {
        message_id: u16,
    },
    Store {
        message_id: u16,
        sop_class_uid: String,
        sop_instance_uid: String,
        priority: u16,
    },
}

fn malformed(offset: usize, reason: impl Into<String>) -> DimseError {
    DimseError::Malformed {
        offset,
        reason: reason.into(),
    }
}

fn read_u16(value: &[u8], offset: usize) -> Result<u16, DimseError> {
    match value {
        [a, b] => Ok(u16::from_le_bytes([*a, *b])),
        _ => Err(malformed(
            offset,
            format!("US value of {} bytes", value.len()),
        )),
    }
}

fn read_uid(value: &[u8], offset: usize) -> Result<String, DimseError> {
    trim_uid(value)
        .map(str::to_owned)
        .ok_or_else(|| malformed(offset, "UI value is not text"))
}

/// Decode one whole command set.
pub fn decode_command(bytes: &[u8]) -> Result<CommandSet, DimseError> {
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(DimseError::CommandTooLarge {
            size: bytes.len(),
            limit: MAX_COMMAND_BYTES,
        });
    }
    let mut set = CommandSet::default();
    let mut offset = 0usize;
    let mut last_element: Option<u16> = None;
    while offset < bytes.len() {
        let header = bytes
            .get(offset..offset + 8)
            .ok_or_else(|| malformed(offset, "element header cut short"))?;
        let group = u16::from_le_bytes([header[0], header[1]]);
        let element = u16::from_le_bytes([header[2], header[3]]);
        let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if group != 0x0000 {
            return Err(malformed(
                offset,
                format!("element of group {group:#06x} in a command set"),
            ));
        }
        if last_element.is_some_and(|last| element <= last) {
            return Err(malformed(
                offset,
                format!("element {element:#06x} out of order"),
            ));
        }
        last_element = Some(element);
        let start = offset + 8;
        if length % 2 == 1 {
            return Err(malformed(offset, format!("odd value length {length}")));
        }
        if offset == 0 && element != GROUP_LENGTH {
            return Err(malformed(
                0,
                "the command set does not start with its group length",
            ));
        }
        let value = start
            .checked_add(length)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| {
                malformed(offset, format!("value of {length} bytes runs past the end"))
            })?;
        match element {
            GROUP_LENGTH => {
                let declared = match value {
                    [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]) as usize,
                    _ => return Err(malformed(offset, "group length is not a UL")),
                };
                if declared != bytes.len() - start - length {
                    return Err(malformed(
                        offset,
                        format!(
                            "group length {declared} but {} bytes follow",
                            bytes.len() - start - length
                        ),
                    ));
                }
            }
            AFFECTED_SOP_CLASS_UID => set.affected_sop_class_uid = Some(read_uid(value, offset)?),
            COMMAND_FIELD => set.command_field = Some(read_u16(value, offset)?),
            MESSAGE_ID => set.message_id = Some(read_u16(value, offset)?),
            PRIORITY => set.priority = Some(read_u16(value, offset)?),
            DATA_SET_TYPE => set.data_set_type = Some(read_u16(value, offset)?),
            MESSAGE_ID_RESPONDED_TO => set.message_id_responded_to = Some(read_u16(value, offset)?),
            STATUS => set.status = Some(read_u16(value, offset)?),
            AFFECTED_SOP_INSTANCE_UID => {
                set.affected_sop_instance_uid = Some(read_uid(value, offset)?)
            }
            _ => {}
        }
        offset = start + length;
    }
    Ok(set)
}

impl CommandSet {
    /// Whether a data set follows the command.
    pub fn has_data_set(&self) -> bool {
        self.data_set_type.is_some_and(|t| t != NO_DATA_SET)
    }

    /// The request, with every element it needs.
    pub fn request(&self) -> Result<Request, DimseError> {
        let need = |v: Option<u16>, element| v.ok_or(DimseError::MissingElement { element });
        let field = need(self.command_field, "Command Field (0000,0100)")?;
        let message_id = need(self.message_id, "Message ID (0000,0110)")?;
        need(self.data_set_type, "Command Data Set Type (0000,0800)")?;
        match field {
            C_ECHO_RQ if !self.has_data_set() => Ok(Request::Echo { message_id }),
            C_STORE_RQ if self.has_data_set() => Ok(Request::Store {
                message_id,
                sop_class_uid: self.affected_sop_class_uid.clone().ok_or(
                    DimseError::MissingElement {
                        element: "Affected SOP Class UID (0000,0002)",
                    },
                )?,
                sop_instance_uid: self.affected_sop_instance_uid.clone().ok_or(
                    DimseError::MissingElement {
                        element: "Affected SOP Instance UID (0000,1000)",
                    },
                )?,
                priority: need(self.priority, "Priority (0000,0700)")?,
            }),
            C_ECHO_RQ | C_STORE_RQ => Err(DimseError::OutOfOrder {
                reason: format!(
                    "command {field:#06x} with data set type {:#06x}",
                    self.data_set_type.unwrap_or(0)
                ),
            }),
            other => Err(DimseError::UnknownCommand { field: other }),
        }
    }
}

/// Builds a command set: elements in ascending order, group length first.
struct Encoder(Vec<u8>);

impl Encoder {
    fn element(&mut self, element: u16, value: &[u8]) {
        self.0.extend_from_slice(&0u16.to_le_bytes());
        self.0.extend_from_slice(&element.to_le_bytes());
        self.0
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.0.extend_from_slice(value);
    }

    fn us(&mut self, element: u16, v: u16) {
        self.element(element, &v.to_le_bytes());
    }

    /// Text padded to even length (UI with NUL, others with a space).
    fn text(&mut self, element: u16, s: &str, pad: u8) {
        let mut v = s.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(pad);
        }
        self.element(element, &v);
    }

    fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() + 12);
        let mut head = Encoder(Vec::new());
        head.element(GROUP_LENGTH, &(self.0.len() as u32).to_le_bytes());
        out.extend_from_slice(&head.0);
        out.extend_from_slice(&self.0);
        out
    }
}

/// A C-ECHO-RQ (for checking a destination).
pub fn echo_request(message_id: u16) -> Vec<u8> {
    let mut e = Encoder(Vec::new());
    e.text(AFFECTED_SOP_CLASS_UID, VERIFICATION_SOP_CLASS, 0);
    e.us(COMMAND_FIELD, C_ECHO_RQ);
    e.us(MESSAGE_ID, message_id);
    e.us(DATA_SET_TYPE, NO_DATA_SET);
    e.finish()
}

/// A C-STORE-RQ at medium priority; a data set follows.
pub fn store_request(message_id: u16, sop_class_uid: &str, sop_instance_uid: &str) -> Vec<u8> {
    let mut e = Encoder(Vec::new());
    e.text(AFFECTED_SOP_CLASS_UID, sop_class_uid, 0);
    e.us(COMMAND_FIELD, C_STORE_RQ);
    e.us(MESSAGE_ID, message_id);
    e.us(PRIORITY, 0);
    e.us(DATA_SET_TYPE, 0x0000);
    e.text(AFFECTED_SOP_INSTANCE_UID, sop_instance_uid, 0);
    e.finish()
}

/// The C-ECHO-RSP to message `message_id`.
pub fn echo_response(message_id: u16, status: u16) -> Vec<u8> {
    let mut e = Encoder(Vec::new());
    e.text(AFFECTED_SOP_CLASS_UID, VERIFICATION_SOP_CLASS, 0);
    e.us(COMMAND_FIELD, C_ECHO_RSP);
    e.us(MESSAGE_ID_RESPONDED_TO, message_id);
    e.us(DATA_SET_TYPE, NO_DATA_SET);
    e.us(STATUS, status);
    e.finish()
}

/// The C-STORE-RSP to message `message_id`, with an error comment (at most
/// 64 characters, LO) for a failure.
pub fn store_response(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    status: u16,
    error_comment: Option<&str>,
) -> Vec<u8> {
    // The UIDs echo the request's; one that is not a UID (the reason for
    // a refusal, perhaps) is left out rather than sent back.
    let mut e = Encoder(Vec::new());
    if is_valid_uid(sop_class_uid) {
        e.text(AFFECTED_SOP_CLASS_UID, sop_class_uid, 0);
    }
    e.us(COMMAND_FIELD, C_STORE_RSP);
    e.us(MESSAGE_ID_RESPONDED_TO, message_id);
    e.us(DATA_SET_TYPE, NO_DATA_SET);
    e.us(STATUS, status);
    if let Some(comment) = error_comment {
        let lo: String = comment
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '\\')
            .take(64)
            .collect();
        e.text(ERROR_COMMENT, &lo, b' ');
    }
    if is_valid_uid(sop_instance_uid) {
        e.text(AFFECTED_SOP_INSTANCE_UID, sop_instance_uid, 0);
    }
    e.finish()
}

/// What one P-DATA value carried, as the reader sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The command is complete.
    Command(CommandSet),
    /// A piece of the data set; `last` ends the message.
    Data { chunk: &'a [u8], last: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Command,
    Data { context: u8 },
}

/// Reassembles one message at a time from the PDVs of an association.
#[derive(Debug)]
pub struct MessageReader {
    command: Vec<u8>,
    context: Option<u8>,
    stage: Stage,
}

impl Default for MessageReader {
    fn default() -> Self {
        MessageReader {
            command: Vec::new(),
            context: None,
            stage: Stage::Command,
        }
    }
}

impl MessageReader {
    /// Take one PDV: its presentation context, whether it is a command
    /// fragment (message control header bit 0), whether it is the last
    /// fragment (bit 1), and its bytes.
    pub fn push<'a>(
        &mut self,
        context: u8,
        is_command: bool,
        is_last: bool,
        data: &'a [u8],
    ) -> Result<Option<Event<'a>>, DimseError> {
        let order = |reason: String| Err(DimseError::OutOfOrder { reason });
        match (self.stage, is_command) {
            (Stage::Command, false) => order("a data fragment before its command".into()),
            (Stage::Data { .. }, true) => order("a command fragment inside a data set".into()),
            (Stage::Data { context: c }, false) if c != context => order(format!(
                "data on presentation context {context}, its command on {c}"
            )),
            (Stage::Data { .. }, false) => {
                if is_last {
                    self.stage = Stage::Command;
                }
                Ok(Some(Event::Data {
                    chunk: data,
                    last: is_last,
                }))
            }
            (Stage::Command, true) => self.command_fragment(context, is_last, data),
        }
    }

    fn command_fragment<'a>(
        &mut self,
        context: u8,
        is_last: bool,
        data: &[u8],
    ) -> Result<Option<Event<'a>>, DimseError> {
        if self.context.is_some_and(|c| c != context) {
            return Err(DimseError::OutOfOrder {
                reason: "command fragments on two presentation contexts".into(),
            });
        }
        self.context = Some(context);
        let size = self.command.len() + data.len();
        if size > MAX_COMMAND_BYTES {
            return Err(DimseError::CommandTooLarge {
                size,
                limit: MAX_COMMAND_BYTES,
            });
        }
        self.command.extend_from_slice(data);
        if !is_last {
            return Ok(None);
        }
        self.context = None;
        let set = decode_command(&std::mem::take(&mut self.command))?;
        if set.has_data_set() {
            self.stage = Stage::Data { context };
        }
        Ok(Some(Event::Command(set)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.1";

    /// The value of `element` in an encoded command set.
    fn value_of(bytes: &[u8], element: u16) -> Vec<u8> {
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let el = u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]);
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            if el == element {
                return bytes[at + 8..at + 8 + len].to_vec();
            }
            at += 8 + len;
        }
        panic!("no element {element:#06x}");
    }

    fn echo_rq(message_id: u16) -> Vec<u8> {
        echo_request(message_id)
    }

    fn store_rq(message_id: u16, sop: &str) -> Vec<u8> {
        store_request(message_id, CT, sop)
    }

    #[test]
    fn an_echo_request_decodes_and_its_response_names_its_message_id() {
        let set = decode_command(&echo_rq(7)).unwrap();
        assert_eq!(set.request().unwrap(), Request::Echo { message_id: 7 });
        let rsp = decode_command(&echo_response(7, status::SUCCESS)).unwrap();
        // UI values are padded to even length with NUL.
        assert_eq!(
            value_of(&echo_response(7, 0), AFFECTED_SOP_CLASS_UID),
            b"1.2.840.10008.1.1\0"
        );
        assert_eq!(rsp.command_field, Some(C_ECHO_RSP));
        assert_eq!(
            rsp.affected_sop_class_uid.as_deref(),
            Some(VERIFICATION_SOP_CLASS)
        );
        assert!(!rsp.has_data_set());
        // The responded-to ID and status, read back from the bytes.
        let bytes = echo_response(7, 0xA700);
        assert_eq!(
            value_of(&bytes, MESSAGE_ID_RESPONDED_TO),
            7u16.to_le_bytes()
        );
        assert_eq!(value_of(&bytes, STATUS), 0xA700u16.to_le_bytes());
    }

    #[test]
    fn a_fragmented_store_yields_its_command_then_its_data_as_it_arrives() {
        let cmd = store_rq(3, "1.2.3.4");
        let mut reader = MessageReader::default();
        let (a, rest) = cmd.split_at(5);
        let (b, c) = rest.split_at(20);
        assert_eq!(reader.push(1, true, false, a).unwrap(), None);
        assert_eq!(reader.push(1, true, false, b).unwrap(), None);
        let Some(Event::Command(set)) = reader.push(1, true, true, c).unwrap() else {
            panic!("no command");
        };
        assert_eq!(
            set.request().unwrap(),
            Request::Store {
                message_id: 3,
                sop_class_uid: CT.into(),
                sop_instance_uid: "1.2.3.4".into(),
                priority: 0
            }
        );
        assert_eq!(
            reader.push(1, false, false, b"DI").unwrap(),
            Some(Event::Data {
                chunk: b"DI",
                last: false
            })
        );
        assert_eq!(
            reader.push(1, false, true, b"CM").unwrap(),
            Some(Event::Data {
                chunk: b"CM",
                last: true
            })
        );
        // The next message starts with a command again.
        assert!(matches!(
            reader.push(1, true, true, &echo_rq(4)).unwrap(),
            Some(Event::Command(_))
        ));
    }

    #[test]
    fn pdvs_out_of_sequence_are_refused() {
        let mut r = MessageReader::default();
        assert_eq!(
            r.push(1, false, true, b"x").unwrap_err().code(),
            "DIMSE_OUT_OF_ORDER"
        );
        let mut r = MessageReader::default();
        r.push(1, true, true, &store_rq(1, "1.2.3")).unwrap();
        assert_eq!(
            r.push(1, true, true, &echo_rq(2)).unwrap_err().code(),
            "DIMSE_OUT_OF_ORDER"
        );
        assert_eq!(
            r.push(3, false, true, b"x").unwrap_err().code(),
            "DIMSE_OUT_OF_ORDER"
        );
        let mut r = MessageReader::default();
        r.push(1, true, false, &[0; 4]).unwrap();
        assert_eq!(
            r.push(3, true, true, &[0; 4]).unwrap_err().code(),
            "DIMSE_OUT_OF_ORDER"
        );
    }

    #[test]
    fn hostile_command_sets_are_refused_without_allocating_their_claims() {
        // A value length of 4 GiB.
        let mut huge = Vec::new();
        huge.extend_from_slice(&[0, 0, 0x00, 0x01]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_command(&huge).unwrap_err().code(), "DIMSE_MALFORMED");
        // A command fragment stream that never ends.
        let mut r = MessageReader::default();
        let chunk = vec![0u8; 4096];
        let e = (0..8)
            .find_map(|_| r.push(1, true, false, &chunk).err())
            .unwrap();
        assert_eq!(e.code(), "DIMSE_COMMAND_TOO_LARGE");
        // Another group, elements out of order, a lying group length, a
        // header cut short, a US of the wrong size.
        let mut other_group = echo_rq(1);
        other_group[12] = 0x08;
        assert_eq!(
            decode_command(&other_group).unwrap_err().code(),
            "DIMSE_MALFORMED"
        );
        let mut e = Encoder(Vec::new());
        e.us(MESSAGE_ID, 1);
        e.us(COMMAND_FIELD, C_ECHO_RQ);
        assert_eq!(
            decode_command(&e.finish()).unwrap_err().code(),
            "DIMSE_MALFORMED"
        );
        let mut lying = echo_rq(1);
        lying[8] = lying[8].wrapping_add(2);
        assert_eq!(
            decode_command(&lying).unwrap_err().code(),
            "DIMSE_MALFORMED"
        );
        let cut = echo_rq(1);
        assert_eq!(
            decode_command(&cut[..cut.len() - 3]).unwrap_err().code(),
            "DIMSE_MALFORMED"
        );
        let mut e = Encoder(Vec::new());
        e.element(COMMAND_FIELD, &[1, 0, 0, 0]);
        assert_eq!(
            decode_command(&e.finish()).unwrap_err().code(),
            "DIMSE_MALFORMED"
        );
        // No group length first, and an odd value length.
        let mut e = Encoder(Vec::new());
        e.us(COMMAND_FIELD, C_ECHO_RQ);
        assert_eq!(decode_command(&e.0).unwrap_err().code(), "DIMSE_MALFORMED");
        let mut e = Encoder(Vec::new());
        e.element(AFFECTED_SOP_CLASS_UID, b"1.2");
        assert_eq!(
            decode_command(&e.finish()).unwrap_err().code(),
            "DIMSE_MALFORMED"
        );
    }

    #[test]
    fn requests_need_their_elements_and_only_echo_and_store_are_served() {
        let mut e = Encoder(Vec::new());
        e.us(COMMAND_FIELD, C_STORE_RQ);
        e.us(MESSAGE_ID, 1);
        e.us(DATA_SET_TYPE, 0);
        let set = decode_command(&e.finish()).unwrap();
        assert_eq!(set.request().unwrap_err().code(), "DIMSE_MISSING_ELEMENT");
        // A C-STORE-RQ must say its priority.
        let mut e = Encoder(Vec::new());
        e.text(AFFECTED_SOP_CLASS_UID, CT, 0);
        e.us(COMMAND_FIELD, C_STORE_RQ);
        e.us(MESSAGE_ID, 1);
        e.us(DATA_SET_TYPE, 0);
        e.text(AFFECTED_SOP_INSTANCE_UID, "1.2.3", 0);
        let e = decode_command(&e.finish()).unwrap().request().unwrap_err();
        assert_eq!(
            e,
            DimseError::MissingElement {
                element: "Priority (0000,0700)"
            }
        );
        let mut e = Encoder(Vec::new());
        e.us(COMMAND_FIELD, 0x0020); // C-FIND-RQ
        e.us(MESSAGE_ID, 1);
        e.us(DATA_SET_TYPE, 0);
        let set = decode_command(&e.finish()).unwrap();
        assert_eq!(
            set.request().unwrap_err(),
            DimseError::UnknownCommand { field: 0x0020 }
        );
        // An echo that claims a data set is not an echo.
        let mut e = Encoder(Vec::new());
        e.us(COMMAND_FIELD, C_ECHO_RQ);
        e.us(MESSAGE_ID, 1);
        e.us(DATA_SET_TYPE, 0);
        let set = decode_command(&e.finish()).unwrap();
        assert_eq!(set.request().unwrap_err().code(), "DIMSE_OUT_OF_ORDER");
    }

    #[test]
    fn a_store_response_carries_a_clean_error_comment() {
        let bytes = store_response(
            9,
            CT,
            "1.2.3",
            status::OUT_OF_RESOURCES,
            Some("spool is full\\\n"),
        );
        let set = decode_command(&bytes).unwrap();
        assert_eq!(set.command_field, Some(C_STORE_RSP));
        assert_eq!(set.affected_sop_instance_uid.as_deref(), Some("1.2.3"));
        // Backslash and control characters dropped, padded to even length.
        assert_eq!(value_of(&bytes, ERROR_COMMENT), b"spool is full ");
        assert_eq!(value_of(&bytes, AFFECTED_SOP_INSTANCE_UID), b"1.2.3\0");
        // A peer string that is no UID is not sent back.
        let unnamed = store_response(9, CT, "../x", status::CANNOT_UNDERSTAND, None);
        let set = decode_command(&unnamed).unwrap();
        assert_eq!(set.affected_sop_instance_uid, None);
        assert_eq!(set.affected_sop_class_uid.as_deref(), Some(CT));
        assert_eq!(value_of(&bytes, STATUS), 0xA700u16.to_le_bytes());
        assert_eq!(bytes.len() % 2, 0);
    }
}
