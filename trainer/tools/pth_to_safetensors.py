#!/usr/bin/env python3
"""Convert a PyTorch `.pth` checkpoint to safetensors for `init = { from = "safetensors" }`.

The trainer never unpickles files itself (a pickle can run code). Run this
once, offline, on a machine with torch and safetensors installed, on a file
you trust:

    python3 trainer/tools/pth_to_safetensors.py mae_pretrain_vit_base.pth vit_b16.safetensors

A nested state dict (`{"model": ...}`, `{"state_dict": ...}`) is unwrapped;
non-tensor entries are dropped. Names are kept (timm's), and the trainer maps
them: `module.`/`model.` prefixes, 3-to-1 channel patch kernels, and position
grids are adapted; a head of another size is replaced by a fresh one.
"""
import sys

import torch
from safetensors.torch import save_file


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    state = torch.load(src, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    tensors = {k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        print(f"{src}: no tensors found", file=sys.stderr)
        return 1
    save_file(tensors, dst)
    print(f"{dst}: {len(tensors)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
