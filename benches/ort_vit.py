#!/usr/bin/env python3
"""Time ONNX Runtime on the same ViT-B/16 ONNX files the tract bench uses.

Usage: python3 benches/ort_vit.py MODEL_DIR  -> one JSON object of medians (seconds)
keyed "SIZEpx_THREADSthread/batchB". Needs onnxruntime and numpy from PyPI.
"""
import json
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

REPEATS = 10


def main():
    directory = sys.argv[1]
    sizes = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "224,512").split(",")]
    out = {"onnxruntime_version": ort.__version__}
    for size in sizes:
        path = f"{directory}/vit_b16_{size}.onnx"
        for threads in (1, 2):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            for batch in (1, 5):
                x = np.full((batch, 1, size, size), 0.1, dtype=np.float32)
                session.run(None, {"image": x})
                samples = []
                for _ in range(REPEATS):
                    start = time.perf_counter()
                    session.run(None, {"image": x})
                    samples.append(time.perf_counter() - start)
                out[f"{size}px_{threads}thread/batch{batch}"] = statistics.median(samples)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
