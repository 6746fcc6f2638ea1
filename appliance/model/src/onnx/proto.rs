//! The few protobuf wire-format pieces ONNX needs: varints, length-delimited
//! fields and fixed32 floats, written deterministically, and a bounds-checked
//! reader for untrusted files.

use crate::ModelError;

/// A protobuf message under construction.
#[derive(Debug, Default, Clone)]
pub(crate) struct Message(pub Vec<u8>);

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Message {
    pub fn new() -> Self {
        Message(Vec::new())
    }

    fn key(&mut self, field: u32, wire: u8) {
        varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
    }

    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, 0);
        varint(&mut self.0, v as u64);
        self
    }

    pub fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, 2);
        varint(&mut self.0, b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    pub fn string(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    pub fn message(&mut self, field: u32, m: &Message) -> &mut Self {
        self.bytes(field, &m.0)
    }

    pub fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
}

/// One decoded field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Iterate the fields of a message, refusing anything out of bounds.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the whole file, for error messages.
    base: usize,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Fields { buf, pos: 0, base }
    }

    fn err(&self, reason: &str) -> ModelError {
        ModelError::OnnxMalformed {
            offset: self.base + self.pos,
            reason: reason.to_owned(),
        }
    }

    fn read_varint(&mut self) -> Result<u64, ModelError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    /// The offset (in the file) of the next field's payload.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// The next `(field number, value)`, or `None` at the end.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>, usize)>, ModelError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.read_varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| self.err("field number too large"))?;
        let start = self.offset();
        let value = match key & 7 {
            0 => Value::Varint(self.read_varint()?),
            1 => {
                let b = self
                    .buf
                    .get(self.pos..self.pos + 8)
                    .ok_or_else(|| self.err("truncated fixed64"))?;
                self.pos += 8;
                Value::Fixed64(u64::from_le_bytes(
                    b.try_into().map_err(|_| self.err("fixed64"))?,
                ))
            }
            2 => {
                let len = usize::try_from(self.read_varint()?)
                    .map_err(|_| self.err("length too large"))?;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|e| *e <= self.buf.len())
                    .ok_or_else(|| self.err("length past the end"))?;
                let b = &self.buf[self.pos..end];
                self.pos = end;
                Value::Bytes(b)
            }
            5 => {
                let b = self
                    .buf
                    .get(self.pos..self.pos + 4)
                    .ok_or_else(|| self.err("truncated fixed32"))?;
                self.pos += 4;
                Value::Fixed32(u32::from_le_bytes(
                    b.try_into().map_err(|_| self.err("fixed32"))?,
                ))
            }
            other => return Err(self.err(&format!("unsupported wire type {other}"))),
        };
        Ok(Some((field, value, start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut inner = Message::new();
        inner.string(1, "x");
        let mut m = Message::new();
        m.int(1, 300)
            .string(2, "hello")
            .float(3, 1.5)
            .message(4, &inner)
            .int(5, -1);
        let mut f = Fields::new(&m.0, 0);
        assert_eq!(
            f.next_field().unwrap().map(|(n, v, _)| (n, v)),
            Some((1, Value::Varint(300)))
        );
        assert_eq!(
            f.next_field().unwrap().map(|(n, v, _)| (n, v)),
            Some((2, Value::Bytes(b"hello")))
        );
        assert_eq!(
            f.next_field().unwrap().map(|(n, v, _)| (n, v)),
            Some((3, Value::Fixed32(1.5f32.to_bits())))
        );
        assert_eq!(
            f.next_field().unwrap().map(|(n, v, _)| (n, v)),
            Some((4, Value::Bytes(&inner.0)))
        );
        assert_eq!(
            f.next_field().unwrap().map(|(n, v, _)| (n, v)),
            Some((5, Value::Varint(u64::MAX)))
        );
        assert_eq!(f.next_field().unwrap(), None);
    }

    #[test]
    fn hostile_lengths_are_refused() {
        // Field 1, wire type 2, length 2^60: past the end.
        let bad = [0x0A, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10];
        assert!(Fields::new(&bad, 0).next_field().is_err());
        assert!(
            Fields::new(&[0x08], 0).next_field().is_err(),
            "truncated varint"
        );
        assert!(Fields::new(&[0x0B], 0).next_field().is_err(), "wire type 3");
    }
}
