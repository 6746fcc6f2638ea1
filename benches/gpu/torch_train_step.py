#!/usr/bin/env python3
"""PyTorch reference for `cxr-trainer bench-step`: the same ViT (pre-norm,
CLS pooling, timm layout), the same batch and the same step (forward, BCE,
backward, global-norm clip 1.0, AdamW), timed the same way (median over the
steps after one warm-up, synchronised). Prints one JSON line per precision.

    python3 benches/gpu/torch_train_step.py --preset vit_b16 --image-size 224 --batch 32 --steps 10
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {  # width, depth, heads
    "demo": (96, 4, 3),
    "vit_ti16": (192, 12, 3),
    "vit_s16": (384, 12, 6),
    "vit_b16": (768, 12, 12),
}


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Vit(nn.Module):
    def __init__(self, d, depth, heads, size, labels=14, channels=1, patch=16):
        super().__init__()
        self.patch = nn.Conv2d(channels, d, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.zeros(1, 1 + (size // patch) ** 2, d))
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, labels)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x)[:, 0])


def run(args, dtype):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    d, depth, heads = PRESETS[args.preset]
    model = Vit(d, depth, heads, args.image_size).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    x = torch.randn(args.batch, 1, args.image_size, args.image_size, device=dev)
    y = (torch.rand(args.batch, 14, device=dev) < 0.2).float()
    times = []
    for k in range(args.steps + 1):
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        if k > 0:
            times.append((time.perf_counter() - t) * 1e3)
    ms = statistics.median(times)
    return {"backend": f"torch-{dev}-{dtype}", "image_size": args.image_size, "preset": args.preset,
            "batch": args.batch, "steps": args.steps, "ms_per_step": ms,
            "images_per_second": args.batch * 1e3 / ms}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="vit_b16", choices=PRESETS)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 means f32, as in burn
    for dtype in ("f32", "bf16"):
        print(json.dumps(run(args, dtype)), flush=True)


if __name__ == "__main__":
    main()
