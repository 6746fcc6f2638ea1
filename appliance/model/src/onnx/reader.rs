//! Reading float initializers back out of an ONNX file (ours or any other),
//! bounds-checked: the file may come from a USB stick.

use std::collections::BTreeMap;

use super::proto::{Fields, Value};
use crate::gate::{GateSpec, GateWeights};
use crate::{ModelError, VitSpec, Weights};

const FLOAT: u64 = 1;

type Named = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn malformed(offset: usize, reason: impl Into<String>) -> ModelError {
    ModelError::OnnxMalformed {
        offset,
        reason: reason.into(),
    }
}

/// Every FLOAT initializer of the model's graph: `name -> (shape, data)`.
pub fn read_initializers(bytes: &[u8]) -> Result<Named, ModelError> {
    let mut out = BTreeMap::new();
    let mut model = Fields::new(bytes, 0);
    while let Some((field, value, at)) = model.next_field()? {
        if let (7, Value::Bytes(graph)) = (field, value) {
            let mut g = Fields::new(graph, at);
            while let Some((gf, gv, gat)) = g.next_field()? {
                if let (5, Value::Bytes(t)) = (gf, gv) {
                    if let Some((name, tensor)) = read_tensor(t, gat)? {
                        if out.insert(name.clone(), tensor).is_some() {
                            return Err(malformed(
                                gat,
                                format!("initializer {name} appears twice"),
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The canonical weights of `spec` from an ONNX file.
pub fn read_weights(bytes: &[u8], spec: &VitSpec) -> Result<Weights, ModelError> {
    Weights::from_tensors(spec, read_initializers(bytes)?)
}

/// The content gate's weights from an ONNX file written by [`super::write_gate`]
/// (the derived mirror matrix is not a weight).
pub fn read_gate(bytes: &[u8], spec: &GateSpec) -> Result<GateWeights, ModelError> {
    let mut named = read_initializers(bytes)?;
    named.remove("gate.mirror");
    GateWeights::from_tensors(spec, named)
}

#[allow(clippy::type_complexity)]
fn read_tensor(
    t: &[u8],
    base: usize,
) -> Result<Option<(String, (Vec<usize>, Vec<f32>))>, ModelError> {
    let mut dims = Vec::new();
    let (mut data_type, mut name, mut raw, mut floats) = (None, None, None, Vec::new());
    let mut f = Fields::new(t, base);
    while let Some((field, value, at)) = f.next_field()? {
        match (field, value) {
            (1, Value::Varint(d)) => {
                dims.push(usize::try_from(d).map_err(|_| malformed(at, "dimension too large"))?)
            }
            (1, Value::Bytes(packed)) => {
                // Packed varints: read them as a sequence of bare varints.
                let mut pos = 0;
                while pos < packed.len() {
                    let (v, used) = packed_varint(&packed[pos..])
                        .ok_or_else(|| malformed(at + pos, "packed dims"))?;
                    dims.push(
                        usize::try_from(v).map_err(|_| malformed(at, "dimension too large"))?,
                    );
                    pos += used;
                }
            }
            (2, Value::Varint(dt)) => data_type = Some(dt),
            (8, Value::Bytes(n)) => name = Some(String::from_utf8_lossy(n).into_owned()),
            (9, Value::Bytes(r)) => raw = Some(r),
            (4, Value::Bytes(packed)) => {
                floats.extend(
                    packed
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
            (4, Value::Fixed32(bits)) => floats.push(f32::from_bits(bits)),
            _ => {}
        }
    }
    let Some(name) = name else { return Ok(None) };
    if data_type != Some(FLOAT) {
        return Ok(None);
    }
    let count = dims
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| malformed(base, format!("{name}: shape overflows")))?;
    let data: Vec<f32> = match raw {
        Some(r) => {
            if r.len() != count.saturating_mul(4) {
                return Err(malformed(
                    base,
                    format!("{name}: {} raw bytes for {count} floats", r.len()),
                ));
            }
            r.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        None if floats.len() == count => floats,
        None => {
            return Err(malformed(
                base,
                format!("{name}: {} values for {count} floats", floats.len()),
            ))
        }
    };
    Ok(Some((name, (dims, data))))
}

fn packed_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::write;

    #[test]
    fn writer_output_reads_back_bit_exact_and_deterministically() {
        let spec = VitSpec::tiny();
        let w = Weights::random(&spec, 11).unwrap();
        let bytes = write(&w).unwrap();
        assert_eq!(bytes, write(&w).unwrap(), "writing is deterministic");
        assert_eq!(read_weights(&bytes, &spec).unwrap(), w);
        // Other specs do not fit these weights.
        let wider = VitSpec {
            width: 64,
            heads: 4,
            ..spec
        };
        assert!(read_weights(&bytes, &wider).is_err());
    }

    #[test]
    fn truncated_and_garbage_files_are_typed_errors() {
        let bytes = write(&Weights::random(&VitSpec::tiny(), 1).unwrap()).unwrap();
        for cut in [1usize, 10, 100, bytes.len() / 2, bytes.len() - 1] {
            let r = read_initializers(&bytes[..cut]);
            assert!(r.is_err() || r.is_ok_and(|m| m.len() < 40), "cut {cut}");
        }
        assert_eq!(
            read_initializers(&[0xFF; 16]).unwrap_err().code(),
            "MODEL_ONNX_MALFORMED"
        );
    }
}
