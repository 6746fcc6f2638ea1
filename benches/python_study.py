#!/usr/bin/env python3
"""The Python stack a user would otherwise run, timed per whole study.

From DICOM bytes in memory to the averaged probabilities: pydicom with
pylibjpeg-openjpeg (full decode), the modality LUT, MONOCHROME1 inversion,
an antialiased letterbox resize, the 0.5-99.5 percentile clip and mean/std in
numpy, the five TTA views of the appliance's parameters (bilinear, numpy),
then the five views one at a time through ONNX Runtime (f32) or OpenVINO
(f32, and bf16 where the CPU has it), sigmoid and mean.

Usage: python3 benches/python_study.py DICOM MODEL_DIR SIZES REPEATS
Prints one JSON object of medians (seconds): "decode/pydicom",
"study/RUNTIME/SIZEpx/THREADSthread" and "view/RUNTIME/SIZEpx/THREADSthread"
(inference of one view alone), plus the runtime versions.
"""
import io
import json
import math
import statistics
import sys
import time

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

# The appliance's TTA views (dev-random-model parameters): (degrees, scale).
VIEWS = [(0.0, 1.0), (-5.0, 1.0), (5.0, 1.0), (0.0, 0.95), (0.0, 1.05)]


def decode(data):
    ds = pydicom.dcmread(io.BytesIO(data))
    image = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        bits = int(ds.BitsStored)
        low, high = apply_modality_lut(np.array([0, (1 << bits) - 1]), ds).astype(np.float32)
        image = low + high - image
    return image


def resize_weights(n_in, n_out):
    """Antialiased linear resampling as a matrix (triangle filter widened by the scale)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale - 0.5
    taps = np.arange(n_in)
    w = np.maximum(0.0, 1.0 - np.abs(taps[None, :] - centres[:, None]) / support)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def prepare(image, size):
    rows, cols = image.shape
    scale = size / max(rows, cols)
    ch, cw = max(1, round(rows * scale)), max(1, round(cols * scale))
    content = resize_weights(rows, ch) @ image @ resize_weights(cols, cw).T
    low, high = np.percentile(content, [0.5, 99.5])
    content = np.clip((content - low) / max(high - low, 1e-6), 0.0, 1.0)
    plane = np.zeros((size, size), np.float32)
    top, left = (size - ch) // 2, (size - cw) // 2
    plane[top:top + ch, left:left + cw] = content
    return (plane - 0.5) / 0.25


def view(plane, degrees, scale):
    if degrees == 0.0 and scale == 1.0:
        return plane
    h, w = plane.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    s, c = math.sin(math.radians(degrees)), math.cos(math.radians(degrees))
    dy, dx = (y - cy) / scale, (x - cx) / scale
    sy, sx = cy + c * dy - s * dx, cx + s * dy + c * dx
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    fy, fx = sy - y0, sx - x0
    fill = (0.0 - 0.5) / 0.25
    padded = np.pad(plane, 1, constant_values=fill)

    def at(yy, xx):
        return padded[np.clip(yy + 1, 0, h + 1), np.clip(xx + 1, 0, w + 1)]

    return ((1 - fy) * (1 - fx) * at(y0, x0) + (1 - fy) * fx * at(y0, x0 + 1)
            + fy * (1 - fx) * at(y0 + 1, x0) + fy * fx * at(y0 + 1, x0 + 1)).astype(np.float32)


def onnxruntime_runner(path, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x})[0]


def openvino_runner(path, threads, precision):
    import openvino as ov
    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": precision,
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = core.compile_model(core.read_model(path), "CPU", config)
    output = compiled.outputs[0]
    return lambda x: compiled(x)[output]


def runtimes():
    found = [("onnxruntime-f32", lambda p, t: onnxruntime_runner(p, t))]
    try:
        import openvino as ov
        capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        found.append(("openvino-f32", lambda p, t: openvino_runner(p, t, "f32")))
        if "BF16" in capabilities:
            found.append(("openvino-bf16", lambda p, t: openvino_runner(p, t, "bf16")))
    except ImportError:
        pass
    return found


def study(data, size, infer):
    plane = prepare(decode(data), size)
    logits = [infer(view(plane, d, s)[None, None]) for d, s in VIEWS]
    return (1 / (1 + np.exp(-np.concatenate(logits)))).mean(axis=0)


def median_time(fn, repeats):
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main():
    dicom, models, sizes, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    data = open(dicom, "rb").read()
    out = {"pydicom_version": pydicom.__version__,
           "decode/pydicom": median_time(lambda: decode(data), 5)}
    for size in [int(s) for s in sizes.split(",")]:
        path = f"{models}/vit_b16_{size}.onnx"
        x = np.full((1, 1, size, size), 0.1, np.float32)
        for name, make in runtimes():
            for threads in (1, 2):
                infer = make(path, threads)
                key = f"{name}/{size}px/{threads}thread"
                out[f"view/{key}"] = median_time(lambda: infer(x), repeats)
                out[f"study/{key}"] = median_time(lambda: study(data, size, infer), repeats)
    import onnxruntime
    out["onnxruntime_version"] = onnxruntime.__version__
    try:
        import openvino
        out["openvino_version"] = openvino.__version__
    except ImportError:
        pass
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
