#!/usr/bin/env python3
"""PyTorch reference timings for benches/gpu/check.sh, on the same GPU:

- ViT-B/16 (timm layout, CLS pooling) with the weights `cxr-cuda-check`
  wrote (raw f32 + JSON index), bf16, eager with SDPA, batch 1 and 5 at 224
  and 512; torch.compile too unless CXR_SKIP_COMPILE=1 (it is skipped when
  compiling takes over 90 s for one shape);
- scaled_dot_product_attention alone (flash backend) at 197 and 1025 tokens,
  batch 5, 12 heads, bf16 and f16.

Also checks the PyTorch forward against ours: it must give the logits the
Rust check reported (`--expect` is not needed: the table compares timings).
One JSON object per line.
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

DIR = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
dev = "cuda"


def load(size):
    index = json.load(open(os.path.join(DIR, f"vit_b16_{size}.json")))
    raw = np.fromfile(os.path.join(DIR, f"vit_b16_{size}.bin"), dtype="<f4")
    return {e["name"]: torch.from_numpy(raw[e["offset"]:e["offset"] + int(np.prod(e["shape"]))].reshape(e["shape"]).copy()) for e in index}


def forward(w, x, depth=12, heads=12):
    b = x.shape[0]
    t = F.conv2d(x, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=16)
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([w["cls_token"].expand(b, -1, -1), t], 1) + w["pos_embed"]
    d = t.shape[-1]
    for i in range(depth):
        p = lambda n: w[f"blocks.{i}.{n}"]
        h = F.layer_norm(t, (d,), p("norm1.weight"), p("norm1.bias"), 1e-6)
        qkv = F.linear(h, p("attn.qkv.weight"), p("attn.qkv.bias")).reshape(b, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(b, -1, d)
        t = t + F.linear(a, p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(t, (d,), p("norm2.weight"), p("norm2.bias"), 1e-6)
        t = t + F.linear(F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
    f = F.layer_norm(t[:, 0], (d,), w["norm.weight"], w["norm.bias"], 1e-6)
    return F.linear(f.float(), w["head.weight"].float(), w["head.bias"].float()), f


def timed(fn, iters=20, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ms.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ms)


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    print(json.dumps({"event": "torch", "version": torch.__version__, "gpu": torch.cuda.get_device_name()}), flush=True)
    compile_ok = os.environ.get("CXR_SKIP_COMPILE") != "1"
    for size in (224, 512):
        w = {k: v.to(dev, torch.bfloat16) for k, v in load(size).items()}
        for batch in (1, 5):
            x = torch.randn(batch, 1, size, size, device=dev)
            with torch.no_grad():
                # Host-to-device copy and feature download included, as in ours.
                xh = x.cpu()
                eager = timed(lambda: forward(w, xh.to(dev, torch.bfloat16))[1].float().cpu())
                print(json.dumps({"event": "vit", "engine": "torch-eager-sdpa", "precision": "Bf16", "size": size, "batch": batch, "ms": eager}), flush=True)
                if compile_ok:
                    try:
                        c = torch.compile(forward)
                        t0 = time.perf_counter()
                        c(w, x.to(torch.bfloat16))
                        torch.cuda.synchronize()
                        took = time.perf_counter() - t0
                        ms = timed(lambda: c(w, xh.to(dev, torch.bfloat16))[1].float().cpu())
                        print(json.dumps({"event": "vit", "engine": "torch-compile", "precision": "Bf16", "size": size, "batch": batch, "ms": ms, "compile_s": took}), flush=True)
                        compile_ok = took < 90
                    except Exception as e:  # noqa: BLE001 - report and go on
                        print(json.dumps({"event": "note", "torch_compile": str(e)[:200]}), flush=True)
                        compile_ok = False
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for tokens in (197, 1025):
        for name, dt in (("Bf16", torch.bfloat16), ("F16", torch.float16)):
            q, k, v = (torch.randn(5, 12, tokens, 64, device=dev, dtype=dt) for _ in range(3))
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                ms = timed(lambda: F.scaled_dot_product_attention(q, k, v), iters=50)
            flop = 4 * 5 * 12 * tokens * tokens * 64
            print(json.dumps({"event": "attention", "engine": "torch-sdpa-flash", "precision": name, "tokens": tokens, "batch": 5, "heads": 12, "ms": ms, "tflops": flop / (ms * 1e-3) / 1e12}), flush=True)


if __name__ == "__main__":
    main()
