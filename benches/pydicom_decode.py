#!/usr/bin/env python3
"""Time pydicom + pylibjpeg decoding of the files the Rust ingest bench reads.

Prints one JSON object: {"NAME/pydicom": median_seconds, ...}. Run by compare.sh
in the same session as the criterion bench, so the ratio is measured on one
machine at one time. Needs pydicom, numpy, pylibjpeg and pylibjpeg-openjpeg.
"""
import json
import statistics
import sys
import time

import pydicom
from pydicom.pixels import apply_modality_lut

REPEATS = 10


def time_decode(path):
    samples = []
    for _ in range(REPEATS + 1):
        start = time.perf_counter()
        ds = pydicom.dcmread(path)
        apply_modality_lut(ds.pixel_array, ds).astype("float32")
        samples.append(time.perf_counter() - start)
    return statistics.median(samples[1:])


def main():
    directory = sys.argv[1]
    out = {}
    for name in ["RG1_UNCR", "RG1_J2KR"]:
        out[f"{name}/pydicom"] = time_decode(f"{directory}/{name}.dcm")
    out["pydicom_version"] = pydicom.__version__
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
