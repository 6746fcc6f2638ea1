#!/usr/bin/env python3
"""Record reference pixel values with pydicom, for tests/tests/real_dicom.rs.

The values are what cxr-dicom must produce: stored values through pydicom's
modality LUT (rescale or LUT sequence), MONOCHROME1 inverted over the range the
stored values can map to (low + high - v), then flipped to standard display per
Patient Orientation (rows towards L, columns towards F).

Usage (pydicom, numpy, pylibjpeg, pylibjpeg-openjpeg and pylibjpeg-libjpeg from PyPI):
    python3 tests/pydicom_reference.py PYDICOM_DATA_DIR CXR_DATA_DIR > tests/fixtures/pydicom_reference.json
"""
import json
import os
import sys

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

PYDICOM_FILES = ["RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_UNCR.dcm", "RG3_J2KR.dcm", "mlut_18.dcm", "vlut_04.dcm"]
SHARED_FILES = [
    "torchxrayvision-test-samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
    "torchxrayvision-test-samples/Fake_MONOHR1.dcm",
]


def reference(path):
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array
    if stored.ndim == 3:
        stored = stored[0]
    linear = apply_modality_lut(stored, ds).astype(np.float64)
    pi = str(ds.PhotometricInterpretation)
    shape = str(ds.get("PresentationLUTShape", "")).upper()
    if pi == "MONOCHROME1" or shape == "INVERSE":
        assert "ModalityLUTSequence" not in ds, "inversion range of a LUT is not mirrored here"
        bits = int(ds.BitsStored)
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(ds.PixelRepresentation) == 1 else (0, 2**bits - 1)
        slope = float(ds.get("RescaleSlope", 1.0))
        intercept = float(ds.get("RescaleIntercept", 0.0))
        a, b = lo * slope + intercept, hi * slope + intercept
        linear = min(a, b) + max(a, b) - linear
    orientation = [str(v).strip()[:1].upper() for v in ds.get("PatientOrientation", [])]
    if len(orientation) == 2:
        row, col = orientation
        if row in "HF" and col in "LR":
            linear = linear.T
            row, col = col, row
        if row in "LR" and col in "HF":
            if row == "R":
                linear = linear[:, ::-1]
            if col == "H":
                linear = linear[::-1, :]
    rows, cols = linear.shape
    # Baseline/extended JPEG decoders differ by up to a grey level or two (IDCT
    # rounding); every other syntax here must match exactly (float rounding aside).
    lossy_jpeg = str(ds.file_meta.TransferSyntaxUID) in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
    positions = [(0, 0), (rows - 1, cols - 1), (rows // 2, cols // 2), (rows // 3, cols // 4), (rows * 3 // 4, cols * 2 // 3), (10, cols - 11)]
    return {
        "rows": rows,
        "cols": cols,
        "values": [[r, c, float(linear[r, c])] for r, c in positions],
        "mean": float(linear.mean()),
        "tolerance": 2.0 if lossy_jpeg else 1e-3,
    }


def main():
    pydicom_dir, shared_dir = sys.argv[1], sys.argv[2]
    out = {"pydicom_version": pydicom.__version__, "files": {}}
    for name in PYDICOM_FILES:
        out["files"]["pydicom-data/" + name] = reference(os.path.join(pydicom_dir, name))
    for name in SHARED_FILES:
        out["files"]["shared/" + name] = reference(os.path.join(shared_dir, name))
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
