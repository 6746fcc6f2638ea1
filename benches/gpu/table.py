#!/usr/bin/env python3
"""Markdown tables from check.sh's JSON lines (the last thing it prints)."""
import json
import sys


def rows(path):
    try:
        return [json.loads(l) for l in open(path) if l.startswith("{")]
    except FileNotFoundError:
        return []


r = rows(sys.argv[1])
train = rows(sys.argv[2]) if len(sys.argv) > 2 else []
gpu = next((x["description"] for x in r if x.get("event") == "gpu"), "?")
print(f"GPU: {gpu}\n")
print("| (a) kernel | precision | shape | rel L2 | bound | untouched | ok |\n|---|---|---|---|---|---|---|")
for x in r:
    if x.get("event") == "kernel":
        print(f"| {x['kernel']} | {x['precision']} | {x['shape']} | {x['rel_l2']:.2e} | {x['bound']:.0e} | {x['untouched']} | {'yes' if x['passed'] else 'NO'} |")
print("\n| (b) forward 224 | rel L2 logits | rel L2 features | bound | ok |\n|---|---|---|---|---|")
for x in r:
    if x.get("event") == "forward":
        print(f"| {x['precision']} | {x['rel_l2_logits']:.2e} | {x['rel_l2_features']:.2e} | {x['bound']:.0e} | {'yes' if x['passed'] else 'NO'} |")
print("\n| (c) ViT-B/16 | size | batch | ours bf16 ms | ours f16 ms | torch eager bf16 ms | torch compile ms | eager / ours-bf16 | ours TFLOP/s | floor ms (800 TFLOP/s) |\n|---|---|---|---|---|---|---|---|---|---|")
vit = [x for x in r if x.get("event") == "vit"]
for size in (224, 512):
    for batch in (1, 5):
        pick = lambda e, p="Bf16": next((x for x in vit if x["engine"] == e and x["size"] == size and x["batch"] == batch and x["precision"] == p), None)
        ob, of, te, tc = pick("ours"), pick("ours", "F16"), pick("torch-eager-sdpa"), pick("torch-compile")
        f = lambda x: f"{x['ms']:.2f}" if x else "-"
        ratio = f"{te['ms'] / ob['ms']:.2f}" if ob and te else "-"
        flop = 2 * batch * (106.5e9 if size == 512 else 17.6e9)
        print(f"| | {size} | {batch} | {f(ob)} | {f(of)} | {f(te)} | {f(tc)} | {ratio} | {ob['tflops'] if ob else '-'} | {flop / 800e12 * 1e3:.2f} |")
print("\n| (d) attention | tokens | precision | ours ms | SDPA flash ms | ours / SDPA throughput |\n|---|---|---|---|---|---|")
att = [x for x in r if x.get("event") == "attention"]
for tokens in (197, 1025):
    for p in ("Bf16", "F16"):
        o = next((x for x in att if x["engine"] == "ours" and x["tokens"] == tokens and x["precision"] == p), None)
        t = next((x for x in att if x["engine"] != "ours" and x["tokens"] == tokens and x["precision"] == p), None)
        ratio = f"{t['ms'] / o['ms']:.2f}" if o and t else "-"
        print(f"| | {tokens} | {p} | {o['ms'] if o else '-'} | {t['ms'] if t else '-'} | {ratio} |")
if train:
    print("\n| training step | backend | size | batch | ms/step | img/s |\n|---|---|---|---|---|---|")
    for x in train:
        name = x['backend'] + (f"-{x['precision']}" if x.get('precision') not in (None, 'f32') else "")
        print(f"| | {name} | {x['image_size']} | {x['batch']} | {x['ms_per_step']:.1f} | {x['images_per_second']:.1f} |")
