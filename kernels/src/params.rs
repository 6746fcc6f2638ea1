//! Kernel parameter blocks, `#[repr(C)]` mirrors of `cu/params.cuh`, passed
//! by value to the kernels. A test parses the header and checks that every
//! struct has the same fields, in the same order, with the same types.

/// A device address, as the kernels take it (`unsigned long long`).
pub type DevicePtr = u64;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Im2colParams {
    pub image: DevicePtr,
    pub patches: DevicePtr,
    pub batch: u32,
    pub channels: u32,
    pub size: u32,
    pub patch: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AssembleParams {
    pub patch_out: DevicePtr,
    pub patch_bias: DevicePtr,
    pub cls: DevicePtr,
    pub pos: DevicePtr,
    pub resid: DevicePtr,
    pub batch: u32,
    pub tokens: u32,
    pub width: u32,
    pub pad0: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ResidualNormParams {
    pub resid: DevicePtr,
    /// 0: no residual add.
    pub delta: DevicePtr,
    pub gamma: DevicePtr,
    pub beta: DevicePtr,
    pub out: DevicePtr,
    pub rows: u32,
    pub row_stride: u32,
    pub width: u32,
    pub eps: f32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BiasGeluParams {
    pub x: DevicePtr,
    pub bias: DevicePtr,
    pub rows: u32,
    pub cols: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AttentionParams {
    pub qkv: DevicePtr,
    pub out: DevicePtr,
    pub batch: u32,
    pub heads: u32,
    pub tokens: u32,
    pub scale_log2: f32,
}

/// `(struct, [(field, C type)])` for every block, in declaration order: what
/// the header must say.
pub const MIRRORS: &[(&str, &[(&str, &str)])] = &[
    (
        "Im2colParams",
        &[
            ("image", "unsigned long long"),
            ("patches", "unsigned long long"),
            ("batch", "unsigned int"),
            ("channels", "unsigned int"),
            ("size", "unsigned int"),
            ("patch", "unsigned int"),
        ],
    ),
    (
        "AssembleParams",
        &[
            ("patch_out", "unsigned long long"),
            ("patch_bias", "unsigned long long"),
            ("cls", "unsigned long long"),
            ("pos", "unsigned long long"),
            ("resid", "unsigned long long"),
            ("batch", "unsigned int"),
            ("tokens", "unsigned int"),
            ("width", "unsigned int"),
            ("pad0", "unsigned int"),
        ],
    ),
    (
        "ResidualNormParams",
        &[
            ("resid", "unsigned long long"),
            ("delta", "unsigned long long"),
            ("gamma", "unsigned long long"),
            ("beta", "unsigned long long"),
            ("out", "unsigned long long"),
            ("rows", "unsigned int"),
            ("row_stride", "unsigned int"),
            ("width", "unsigned int"),
            ("eps", "float"),
        ],
    ),
    (
        "BiasGeluParams",
        &[
            ("x", "unsigned long long"),
            ("bias", "unsigned long long"),
            ("rows", "unsigned int"),
            ("cols", "unsigned int"),
        ],
    ),
    (
        "AttentionParams",
        &[
            ("qkv", "unsigned long long"),
            ("out", "unsigned long long"),
            ("batch", "unsigned int"),
            ("heads", "unsigned int"),
            ("tokens", "unsigned int"),
            ("scale_log2", "float"),
        ],
    ),
];

/// The structs the header declares: `(name, [(field, C type)])`.
pub fn parse_header(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut current: Option<(String, Vec<(String, String)>)> = None;
    for raw in text.lines() {
        let line = raw.split("//").next().unwrap_or("").trim();
        if let Some(rest) = line.strip_prefix("struct ") {
            let name = rest.trim_end_matches('{').trim().to_owned();
            current = Some((name, Vec::new()));
        } else if line.starts_with("};") {
            if let Some(done) = current.take() {
                out.push(done);
            }
        } else if let (Some((_, fields)), Some(decl)) = (current.as_mut(), line.strip_suffix(';')) {
            if let Some((ty, name)) = decl.rsplit_once(' ') {
                fields.push((name.trim().to_owned(), ty.trim().to_owned()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, size_of};

    use super::*;

    fn size_of_c(ty: &str) -> usize {
        match ty {
            "unsigned long long" => 8,
            "unsigned int" | "float" => 4,
            other => panic!("params.cuh uses `{other}`: only fixed-width types may cross"),
        }
    }

    #[test]
    fn rust_blocks_mirror_the_header_field_for_field() {
        let header = parse_header(crate::sources::PARAMS_CUH);
        let want: Vec<(String, Vec<(String, String)>)> = MIRRORS
            .iter()
            .map(|(n, f)| {
                (
                    (*n).to_owned(),
                    f.iter()
                        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(header, want);
        // The Rust structs lay every field where the C compiler puts it:
        // natural alignment, in header order, padded to 8 bytes.
        macro_rules! offsets {
            ($ty:ty; $($field:ident),*) => {
                (size_of::<$ty>(), vec![$((stringify!($field), std::mem::offset_of!($ty, $field))),*])
            };
        }
        let rust = [
            offsets!(Im2colParams; image, patches, batch, channels, size, patch),
            offsets!(AssembleParams; patch_out, patch_bias, cls, pos, resid, batch, tokens, width, pad0),
            offsets!(ResidualNormParams; resid, delta, gamma, beta, out, rows, row_stride, width, eps),
            offsets!(BiasGeluParams; x, bias, rows, cols),
            offsets!(AttentionParams; qkv, out, batch, heads, tokens, scale_log2),
        ];
        for ((name, fields), (size, rust_fields)) in header.iter().zip(&rust) {
            let mut at = 0usize;
            let mut c_fields = Vec::new();
            for (field, ty) in fields {
                let width = size_of_c(ty);
                at = at.next_multiple_of(width);
                c_fields.push((field.as_str(), at));
                at += width;
            }
            assert_eq!(&c_fields, rust_fields, "{name}: field offsets");
            assert_eq!(*size, at.next_multiple_of(8), "{name}: size");
        }
        assert_eq!(align_of::<AttentionParams>(), 8);
    }

    #[test]
    fn the_parser_sees_a_drifted_header() {
        let drifted = crate::sources::PARAMS_CUH.replace(
            "unsigned int tokens;\n    float scale_log2;",
            "float scale_log2;\n    unsigned int tokens;",
        );
        assert_ne!(drifted, crate::sources::PARAMS_CUH);
        let parsed = parse_header(&drifted);
        let attention = parsed.iter().find(|(n, _)| n == "AttentionParams");
        assert_eq!(
            attention.map(|(_, f)| f[4].0.as_str()),
            Some("scale_log2"),
            "the swap must be visible to the mirror test"
        );
    }
}
