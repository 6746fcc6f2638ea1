//! The ViT as an ONNX graph (opset 17), built node by node.

use super::proto::Message;
use super::OPSET;
use crate::{ModelError, Weights};

pub(super) const FLOAT: i64 = 1;
const INT64: i64 = 7;

/// A graph under construction. Node and constant names come from a counter,
/// so the same weights always give the same bytes.
#[derive(Debug, Default)]
pub(super) struct Graph {
    pub(super) nodes: Vec<Message>,
    pub(super) initializers: Vec<Message>,
    counter: usize,
}

pub(super) enum Attr<'a> {
    Int(&'a str, i64),
    Ints(&'a str, &'a [i64]),
    Float(&'a str, f32),
}

fn attribute(a: &Attr<'_>) -> Message {
    let mut m = Message::new();
    match a {
        Attr::Int(name, v) => {
            m.string(1, name).int(3, *v).int(20, 2);
        }
        Attr::Ints(name, vs) => {
            m.string(1, name);
            for v in *vs {
                m.int(8, *v);
            }
            m.int(20, 7);
        }
        Attr::Float(name, v) => {
            m.string(1, name).float(2, *v).int(20, 1);
        }
    }
    m
}

pub(super) fn tensor(name: &str, dims: &[usize], data_type: i64, raw: &[u8]) -> Message {
    let mut t = Message::new();
    for d in dims {
        t.int(1, *d as i64);
    }
    t.int(2, data_type).string(8, name).bytes(9, raw);
    t
}

impl Graph {
    pub(super) fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    pub(super) fn node_to(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[Attr<'_>],
    ) {
        let mut n = Message::new();
        for i in inputs {
            n.string(1, i);
        }
        for o in outputs {
            n.string(2, o);
        }
        let name = self.fresh(op);
        n.string(3, &name).string(4, op);
        for a in attrs {
            n.message(5, &attribute(a));
        }
        self.nodes.push(n);
    }

    pub(super) fn node(&mut self, op: &str, inputs: &[&str], attrs: &[Attr<'_>]) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.node_to(op, inputs, &[&out], attrs);
        out
    }

    pub(super) fn ints(&mut self, values: &[i64]) -> String {
        let name = self.fresh("const_i64");
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers
            .push(tensor(&name, &[values.len()], INT64, &raw));
        name
    }

    fn scalar_i64(&mut self, value: i64) -> String {
        let name = self.fresh("const_i64");
        self.initializers
            .push(tensor(&name, &[], INT64, &value.to_le_bytes()));
        name
    }

    pub(super) fn scalar_f32(&mut self, value: f32) -> String {
        let name = self.fresh("const_f32");
        self.initializers
            .push(tensor(&name, &[], FLOAT, &value.to_le_bytes()));
        name
    }

    /// `x W^T + b` with `W` a canonical `[out, in]` initializer.
    pub(super) fn linear(&mut self, x: &str, prefix: &str) -> String {
        let wt = self.node(
            "Transpose",
            &[&format!("{prefix}.weight")],
            &[Attr::Ints("perm", &[1, 0])],
        );
        let mm = self.node("MatMul", &[x, &wt], &[]);
        self.node("Add", &[&mm, &format!("{prefix}.bias")], &[])
    }

    fn layer_norm(&mut self, x: &str, prefix: &str) -> String {
        self.node(
            "LayerNormalization",
            &[x, &format!("{prefix}.weight"), &format!("{prefix}.bias")],
            &[Attr::Int("axis", -1), Attr::Float("epsilon", 1e-6)],
        )
    }
}

pub(super) fn value_info(name: &str, dims: &[Result<i64, &str>]) -> Message {
    let mut shape = Message::new();
    for d in dims {
        let mut dim = Message::new();
        match d {
            Ok(v) => dim.int(1, *v),
            Err(param) => dim.string(2, param),
        };
        shape.message(1, &dim);
    }
    let mut tensor_type = Message::new();
    tensor_type.int(1, FLOAT).message(2, &shape);
    let mut ty = Message::new();
    ty.message(1, &tensor_type);
    let mut vi = Message::new();
    vi.string(1, name).message(2, &ty);
    vi
}

/// Write the model as ONNX bytes. Deterministic: same weights, same bytes.
pub fn write(weights: &Weights) -> Result<Vec<u8>, ModelError> {
    let s = weights.spec;
    s.validate()?;
    let (d, p, heads, hd) = (
        s.width as i64,
        s.patch as i64,
        s.heads as i64,
        s.head_dim() as i64,
    );
    let mut g = Graph::default();
    for (name, shape, data) in weights.iter() {
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        g.initializers.push(tensor(name, shape, FLOAT, &raw));
    }

    // Patch embedding and tokens.
    let conv = g.node(
        "Conv",
        &["image", "patch_embed.proj.weight", "patch_embed.proj.bias"],
        &[
            Attr::Ints("kernel_shape", &[p, p]),
            Attr::Ints("strides", &[p, p]),
        ],
    );
    let flat_shape = g.ints(&[0, d, -1]);
    let flat = g.node("Reshape", &[&conv, &flat_shape], &[]);
    let patches = g.node("Transpose", &[&flat], &[Attr::Ints("perm", &[0, 2, 1])]);
    let shape = g.node("Shape", &[&patches], &[]);
    let (zero, one) = (g.ints(&[0]), g.ints(&[1]));
    let batch = g.node("Slice", &[&shape, &zero, &one], &[]);
    let rest = g.ints(&[1, d]);
    let cls_shape = g.node("Concat", &[&batch, &rest], &[Attr::Int("axis", 0)]);
    let cls = g.node("Expand", &["cls_token", &cls_shape], &[]);
    let tokens = g.node("Concat", &[&cls, &patches], &[Attr::Int("axis", 1)]);
    let mut x = g.node("Add", &[&tokens, "pos_embed"], &[]);

    let scale = g.scalar_f32(1.0 / (hd as f32).sqrt());
    let (half, one_f, sqrt2) = (
        g.scalar_f32(0.5),
        g.scalar_f32(1.0),
        g.scalar_f32(std::f32::consts::SQRT_2),
    );
    let qkv_shape = g.ints(&[0, 0, 3, heads, hd]);
    let merge_shape = g.ints(&[0, 0, d]);
    let split_sizes = g.ints(&[1, 1, 1]);
    let axis0 = g.ints(&[0]);
    for i in 0..s.depth {
        let b = |n: &str| format!("blocks.{i}.{n}");
        let h = g.layer_norm(&x, &b("norm1"));
        let qkv = g.linear(&h, &b("attn.qkv"));
        let r = g.node("Reshape", &[&qkv, &qkv_shape], &[]);
        let r = g.node("Transpose", &[&r], &[Attr::Ints("perm", &[2, 0, 3, 1, 4])]);
        let (q5, k5, v5) = (g.fresh("q"), g.fresh("k"), g.fresh("v"));
        g.node_to(
            "Split",
            &[&r, &split_sizes],
            &[&q5, &k5, &v5],
            &[Attr::Int("axis", 0)],
        );
        let q = g.node("Squeeze", &[&q5, &axis0], &[]);
        let k = g.node("Squeeze", &[&k5, &axis0], &[]);
        let v = g.node("Squeeze", &[&v5, &axis0], &[]);
        let kt = g.node("Transpose", &[&k], &[Attr::Ints("perm", &[0, 1, 3, 2])]);
        let scores = g.node("MatMul", &[&q, &kt], &[]);
        let scores = g.node("Mul", &[&scores, &scale], &[]);
        let attn = g.node("Softmax", &[&scores], &[Attr::Int("axis", -1)]);
        let o = g.node("MatMul", &[&attn, &v], &[]);
        let o = g.node("Transpose", &[&o], &[Attr::Ints("perm", &[0, 2, 1, 3])]);
        let o = g.node("Reshape", &[&o, &merge_shape], &[]);
        let proj = g.linear(&o, &b("attn.proj"));
        x = g.node("Add", &[&x, &proj], &[]);

        let h = g.layer_norm(&x, &b("norm2"));
        let f1 = g.linear(&h, &b("mlp.fc1"));
        // Exact GELU: 0.5 x (1 + erf(x / sqrt 2)); opset 17 has no Gelu op.
        let scaled = g.node("Div", &[&f1, &sqrt2], &[]);
        let erf = g.node("Erf", &[&scaled], &[]);
        let erf1 = g.node("Add", &[&erf, &one_f], &[]);
        let halfx = g.node("Mul", &[&f1, &half], &[]);
        let gelu = g.node("Mul", &[&halfx, &erf1], &[]);
        let f2 = g.linear(&gelu, &b("mlp.fc2"));
        x = g.node("Add", &[&x, &f2], &[]);
    }
    let y = g.layer_norm(&x, "norm");
    let cls_index = g.scalar_i64(0);
    g.node_to(
        "Gather",
        &[&y, &cls_index],
        &["features"],
        &[Attr::Int("axis", 1)],
    );
    let wt = g.node(
        "Transpose",
        &["head.weight"],
        &[Attr::Ints("perm", &[1, 0])],
    );
    let mm = g.node("MatMul", &["features", &wt], &[]);
    g.node_to("Add", &[&mm, "head.bias"], &["logits"], &[]);

    let (c, size) = (s.in_channels as i64, s.image_size as i64);
    Ok(g.assemble(
        "cxr_vit",
        &[value_info("image", &[Err("N"), Ok(c), Ok(size), Ok(size)])],
        &[
            value_info("logits", &[Err("N"), Ok(s.labels as i64)]),
            value_info("features", &[Err("N"), Ok(d)]),
        ],
    ))
}

impl Graph {
    /// The model bytes: nodes, initializers, the graph's inputs and outputs.
    pub(super) fn assemble(&self, name: &str, inputs: &[Message], outputs: &[Message]) -> Vec<u8> {
        let mut graph = Message::new();
        for n in &self.nodes {
            graph.message(1, n);
        }
        graph.string(2, name);
        for t in &self.initializers {
            graph.message(5, t);
        }
        for i in inputs {
            graph.message(11, i);
        }
        for o in outputs {
            graph.message(12, o);
        }
        let mut opset = Message::new();
        opset.string(1, "").int(2, OPSET);
        let mut model = Message::new();
        model
            .int(1, 8)
            .string(2, "cxr-model")
            .message(7, &graph)
            .message(8, &opset);
        model.0
    }
}
