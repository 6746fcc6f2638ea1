//! Import of timm-named safetensors checkpoints (public ViT-B/16 weights,
//! CXR-MAE, our own): F32, F16 and BF16 tensors, bounds-checked.
//!
//! Adapting a checkpoint to a spec: a 3-channel patch embedding becomes a
//! 1-channel one by summing over channels (a grey image repeated three times
//! gives the same response), and position embeddings are resampled to the
//! spec's grid ([`crate::resample_pos_embed`]). Linear weights keep PyTorch's
//! `[out, in]` layout, as in the checkpoint.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::names::parameters;
use crate::pos_embed::resample_pos_embed;
use crate::{ModelError, VitSpec, Weights};

type Named = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn malformed(offset: usize, reason: impl Into<String>) -> ModelError {
    ModelError::CheckpointMalformed {
        offset,
        reason: reason.into(),
    }
}

/// The JSON header of a safetensors file and where its data starts.
fn header(bytes: &[u8]) -> Result<(BTreeMap<String, Value>, usize), ModelError> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed(0, "shorter than its header length"))?;
    let header_len = usize::try_from(u64::from_le_bytes(len_bytes))
        .map_err(|_| malformed(0, "header length too large"))?;
    let data_start = 8usize
        .checked_add(header_len)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| malformed(0, "header past the end"))?;
    let header: BTreeMap<String, Value> = serde_json::from_slice(&bytes[8..data_start])
        .map_err(|e| malformed(8, format!("header is not JSON: {e}")))?;
    Ok((header, data_start))
}

/// The `__metadata__` strings of a safetensors file (empty when it has
/// none); a value that is not a string is refused.
pub fn safetensors_metadata(bytes: &[u8]) -> Result<BTreeMap<String, String>, ModelError> {
    let (mut header, _) = header(bytes)?;
    match header.remove("__metadata__") {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(v) => Ok((k, v)),
                _ => Err(malformed(8, format!("metadata {k} is not a string"))),
            })
            .collect(),
        Some(_) => Err(malformed(8, "__metadata__ is not an object")),
    }
}

/// A safetensors file of F32 tensors `(name, shape, data)` with string
/// metadata. A tensor whose data does not fill its shape is refused.
pub fn write_safetensors<'t>(
    tensors: impl IntoIterator<Item = (&'t str, &'t [usize], &'t [f32])>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, ModelError> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        if shape.iter().product::<usize>() != values.len() || name == "__metadata__" {
            return Err(malformed(
                0,
                format!("{name}: {} values for shape {shape:?}", values.len()),
            ));
        }
        let begin = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.to_owned(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [begin, data.len()] }),
        );
    }
    let mut text = serde_json::to_vec(&header).map_err(|e| malformed(8, e.to_string()))?;
    // The data starts 8-byte aligned, as the format recommends.
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Every tensor of a safetensors file, converted to f32.
pub fn read_safetensors(bytes: &[u8]) -> Result<Named, ModelError> {
    let (header, data_start) = header(bytes)?;
    let data = &bytes[data_start..];
    let mut out = BTreeMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info["dtype"]
            .as_str()
            .ok_or_else(|| malformed(8, format!("{name}: no dtype")))?;
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .ok_or_else(|| malformed(8, format!("{name}: no shape")))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| malformed(8, format!("{name}: bad shape")))?;
        let offsets = info["data_offsets"]
            .as_array()
            .ok_or_else(|| malformed(8, format!("{name}: no offsets")))?;
        let (begin, end) = match offsets[..] {
            [Value::Number(ref a), Value::Number(ref b)] => (a.as_u64(), b.as_u64()),
            _ => (None, None),
        };
        let (begin, end) = begin
            .zip(end)
            .and_then(|(a, b)| Some((usize::try_from(a).ok()?, usize::try_from(b).ok()?)))
            .filter(|(a, b)| a <= b && *b <= data.len())
            .ok_or_else(|| malformed(data_start, format!("{name}: offsets outside the data")))?;
        let raw = &data[begin..end];
        let count = shape
            .iter()
            .try_fold(1usize, |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| malformed(8, format!("{name}: shape overflows")))?;
        let values: Vec<f32> = match dtype {
            "F32" if Some(raw.len()) == count.checked_mul(4) => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            "F16" if Some(raw.len()) == count.checked_mul(2) => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            "BF16" if Some(raw.len()) == count.checked_mul(2) => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            "F32" | "F16" | "BF16" => {
                return Err(malformed(
                    data_start + begin,
                    format!("{name}: {} bytes for {count} {dtype} values", raw.len()),
                ))
            }
            // Integer buffers (e.g. step counters) are not weights.
            _ => continue,
        };
        out.insert(name, (shape, values));
    }
    Ok(out)
}

/// Weights for `spec` from a timm-named checkpoint: the names must match;
/// the patch embedding's channels and the position grid are adapted; a head
/// of another size is refused (the trainer re-initialises it instead).
pub fn weights_from_checkpoint(spec: &VitSpec, mut named: Named) -> Result<Weights, ModelError> {
    // Some exports prefix names (e.g. "model." or "module.").
    if !named.contains_key("cls_token") {
        named = named
            .into_iter()
            .map(|(k, v)| {
                (
                    k.strip_prefix("module.")
                        .or_else(|| k.strip_prefix("model."))
                        .map(str::to_owned)
                        .unwrap_or(k),
                    v,
                )
            })
            .collect();
    }
    if let Some((shape, data)) = named.get_mut("patch_embed.proj.weight") {
        if shape.len() == 4 && shape[1] == 3 && spec.in_channels == 1 {
            let (d, p) = (shape[0], shape[2] * shape[3]);
            let mut grey = vec![0.0f32; d * p];
            for o in 0..d {
                for c in 0..3 {
                    for k in 0..p {
                        grey[o * p + k] += data[(o * 3 + c) * p + k];
                    }
                }
            }
            *shape = vec![d, 1, shape[2], shape[3]];
            *data = grey;
        }
    }
    if let Some((shape, data)) = named.get_mut("pos_embed") {
        let want = parameters(spec)
            .into_iter()
            .find(|(n, _)| n == "pos_embed")
            .map(|(_, s)| s)
            .unwrap_or_default();
        if shape.len() == 3 && *shape != want {
            let (resampled, new_shape) = resample_pos_embed(data, shape, spec.grid())?;
            *shape = new_shape;
            *data = resampled;
        }
    }
    Weights::from_tensors(spec, named)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file from `(name, dtype, shape, raw bytes)`.
    pub(crate) fn file(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, raw) in tensors {
            let begin = data.len();
            data.extend_from_slice(raw);
            header.insert((*name).to_owned(), serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()] }));
        }
        let header = serde_json::to_vec(&header).unwrap();
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn reads_f32_f16_bf16_and_skips_integers() {
        let f = file(&[
            (
                "a",
                "F32",
                vec![2],
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            (
                "b",
                "F16",
                vec![1],
                half::f16::from_f32(0.25).to_le_bytes().to_vec(),
            ),
            (
                "c",
                "BF16",
                vec![1],
                half::bf16::from_f32(3.0).to_le_bytes().to_vec(),
            ),
            ("n", "I64", vec![1], 7i64.to_le_bytes().to_vec()),
        ]);
        let t = read_safetensors(&f).unwrap();
        assert_eq!(t["a"], (vec![2], vec![1.5, -2.0]));
        assert_eq!(t["b"].1, vec![0.25]);
        assert_eq!(t["c"].1, vec![3.0]);
        assert!(!t.contains_key("n"));
    }

    #[test]
    fn written_files_read_back_with_their_metadata() {
        let meta = BTreeMap::from([("format".to_owned(), "cxr-mae".to_owned())]);
        let (a, b) = ([1.0f32, -2.5, 3.25, 0.0], [7.5f32]);
        let bytes = write_safetensors(
            [
                ("a", &[2usize, 2][..], &a[..]),
                ("b", &[1usize][..], &b[..]),
            ],
            &meta,
        )
        .unwrap();
        assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);
        let t = read_safetensors(&bytes).unwrap();
        assert_eq!(t["a"], (vec![2, 2], a.to_vec()));
        assert_eq!(t["b"], (vec![1], b.to_vec()));
        assert_eq!(safetensors_metadata(&bytes).unwrap(), meta);
        assert!(safetensors_metadata(&file(&[])).unwrap().is_empty());
        let short = write_safetensors([("a", &[3usize][..], &a[..])], &meta);
        assert!(short.is_err());
    }

    #[test]
    fn hostile_headers_are_refused() {
        assert!(read_safetensors(&[1, 2, 3]).is_err());
        assert!(read_safetensors(&u64::MAX.to_le_bytes()).is_err());
        let mut f = file(&[("a", "F32", vec![4], vec![0; 16])]);
        f.truncate(f.len() - 4);
        assert!(
            read_safetensors(&f).is_err(),
            "data shorter than the offsets"
        );
        let f = file(&[("a", "F32", vec![5], vec![0; 16])]);
        assert!(
            read_safetensors(&f).is_err(),
            "shape disagrees with the bytes"
        );
    }

    #[test]
    fn a_three_channel_224_checkpoint_loads_into_a_grey_spec_at_another_size() {
        let source = VitSpec {
            in_channels: 3,
            image_size: 32,
            ..VitSpec::tiny()
        };
        let w = Weights::random(&source, 5).unwrap();
        let tensors: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = w
            .iter()
            .map(|(n, s, d)| {
                (
                    n,
                    "F32",
                    s.to_vec(),
                    d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let named = read_safetensors(&file(&tensors)).unwrap();
        let target = VitSpec {
            in_channels: 1,
            image_size: 48,
            ..VitSpec::tiny()
        };
        let loaded = weights_from_checkpoint(&target, named).unwrap();
        // Channel sum: the grey kernel equals the sum of the three colour kernels.
        let (src, dst) = (
            w.get("patch_embed.proj.weight").unwrap(),
            loaded.get("patch_embed.proj.weight").unwrap(),
        );
        let p2 = 8 * 8;
        assert!((dst[3] - (src[3] + src[p2 + 3] + src[2 * p2 + 3])).abs() < 1e-7);
        assert_eq!(
            loaded.get("pos_embed").unwrap().len(),
            target.tokens() * target.width
        );
        assert_eq!(
            loaded.get("blocks.1.attn.qkv.weight").unwrap(),
            w.get("blocks.1.attn.qkv.weight").unwrap()
        );
    }
}
