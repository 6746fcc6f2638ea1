//! The content gate as an ONNX graph (opset 17); see [`crate::gate`].

use super::writer::{tensor, value_info, Attr, Graph, FLOAT};
use crate::gate::{GateWeights, LOG_EPS};
use crate::ModelError;

fn raw(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Write the gate as ONNX bytes: input `image [N, 1, S, S]`, outputs
/// `logits [N, 4]` and `distance [N, 1]`. Deterministic.
pub fn write_gate(weights: &GateWeights) -> Result<Vec<u8>, ModelError> {
    let s = weights.spec;
    s.validate()?;
    let t = s.thumb() as i64;
    let mut g = Graph::default();
    for (name, shape, data) in weights.iter() {
        g.initializers.push(tensor(name, &shape, FLOAT, &raw(data)));
    }
    // The mirror: right-multiplying a row by the reversal matrix flips it.
    let side = s.thumb();
    let mirror: Vec<f32> = (0..side * side)
        .map(|i| f32::from(u8::from(i / side + i % side == side - 1)))
        .collect();
    g.initializers
        .push(tensor("gate.mirror", &[side, side], FLOAT, &raw(&mirror)));

    let pool = s.pool as i64;
    let thumb = g.node(
        "AveragePool",
        &["image"],
        &[
            Attr::Ints("kernel_shape", &[pool, pool]),
            Attr::Ints("strides", &[pool, pool]),
        ],
    );
    let flat_shape = g.ints(&[0, -1]);
    let mean_axis1 = [Attr::Ints("axes", &[1]), Attr::Int("keepdims", 1)];

    let mirrored = g.node("MatMul", &[&thumb, "gate.mirror"], &[]);
    let diff = g.node("Sub", &[&thumb, &mirrored], &[]);
    let sq = g.node("Mul", &[&diff, &diff], &[]);
    let sq = g.node("Reshape", &[&sq, &flat_shape], &[]);
    let asym = g.node("ReduceMean", &[&sq], &mean_axis1);

    let flat = g.node("Reshape", &[&thumb, &flat_shape], &[]);
    let centred = g.node("Sub", &[&flat, "pca.mean"], &[]);
    let basis_t = g.node("Transpose", &["pca.basis"], &[Attr::Ints("perm", &[1, 0])]);
    let coefficients = g.node("MatMul", &[&centred, &basis_t], &[]);
    let recon = g.node("MatMul", &[&coefficients, "pca.basis"], &[]);
    let res = g.node("Sub", &[&centred, &recon], &[]);
    let res = g.node("Mul", &[&res, &res], &[]);
    let residual = g.node("ReduceMean", &[&res], &mean_axis1);
    let scaled_residual = g.node("Mul", &[&residual, "pca.inv_residual"], &[]);

    let whitened = g.node("Mul", &[&coefficients, "pca.inv_sd"], &[]);
    let w2 = g.node("Mul", &[&whitened, &whitened], &[]);
    let mean_sq = g.node("ReduceMean", &[&w2], &mean_axis1);
    let sum = g.node("Add", &[&mean_sq, &scaled_residual], &[]);
    let half = g.scalar_f32(0.5);
    g.node_to("Mul", &[&sum, &half], &["distance"], &[]);

    let eps = g.scalar_f32(LOG_EPS);
    let r = g.node("Add", &[&scaled_residual, &eps], &[]);
    let log_residual = g.node("Log", &[&r], &[]);
    let a = g.node("Add", &[&asym, &eps], &[]);
    let log_asym = g.node("Log", &[&a], &[]);
    let k = (t as usize / s.coarse) as i64;
    let coarse = g.node(
        "AveragePool",
        &[&thumb],
        &[
            Attr::Ints("kernel_shape", &[k, k]),
            Attr::Ints("strides", &[k, k]),
        ],
    );
    let coarse = g.node("Reshape", &[&coarse, &flat_shape], &[]);
    let raw_features = g.node(
        "Concat",
        &[&whitened, &log_residual, &log_asym, &coarse],
        &[Attr::Int("axis", 1)],
    );
    let c = g.node("Sub", &[&raw_features, "feat.mean"], &[]);
    let standard = g.node("Mul", &[&c, "feat.inv_sd"], &[]);
    let h = g.linear(&standard, "fc1");
    let h = g.node("Relu", &[&h], &[]);
    let out = g.linear(&h, "fc2");
    g.node_to("Identity", &[&out], &["logits"], &[]);

    let size = s.image_size as i64;
    Ok(g.assemble(
        "cxr_content_gate",
        &[value_info("image", &[Err("N"), Ok(1), Ok(size), Ok(size)])],
        &[
            value_info("logits", &[Err("N"), Ok(4)]),
            value_info("distance", &[Err("N"), Ok(1)]),
        ],
    ))
}
