#!/usr/bin/env python3
"""Write a real-shaped 4-bit Llama checkpoint for the `dequant` benchmark, in compressed-tensors
layout: `--format int4` (pack-quantized W4A16: weight_packed I32 [N, K/8], bf16 weight_scale
[N, K/128], weight_shape) or `--format nvfp4` (nvfp4-pack-quantized: weight_packed U8 [N, K/2],
F8_E4M3 weight_scale [N, K/16], weight_global_scale F32 [1]). Random codes and realistic scales
(seed 0), bf16 norms and embeddings; shards of about 1 GB. Needs numpy only.

  python3 benches/make_packed_checkpoint.py OUT [--format int4|nvfp4] [--layers 16]
"""
import argparse
import json
import os
import struct

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--format", choices=["int4", "nvfp4"], default="int4")
ap.add_argument("--layers", type=int, default=16)
a = ap.parse_args()
H, I, V, KV = 2048, 8192, 32000, 1024
rng = np.random.default_rng(0)
os.makedirs(a.out, exist_ok=True)


def bf16(shape):
    x = (rng.standard_normal(shape, dtype=np.float32) * 0.02).view(np.uint32)
    return ((x + 0x7FFF + ((x >> 16) & 1)) >> 16).astype(np.uint16)


def linear(name, n, k, t):
    if a.format == "int4":
        t[f"{name}.weight_packed"] = ("I32", rng.integers(-(2**31), 2**31, (n, k // 8), dtype=np.int64).astype(np.int32))
        s = (np.abs(rng.standard_normal((n, k // 128), dtype=np.float32)) * 0.002 + 1e-4).view(np.uint32)
        t[f"{name}.weight_scale"] = ("BF16", ((s + 0x7FFF + ((s >> 16) & 1)) >> 16).astype(np.uint16))
        t[f"{name}.weight_shape"] = ("I64", np.array([n, k], dtype=np.int64))
    else:
        t[f"{name}.weight_packed"] = ("U8", rng.integers(0, 256, (n, k // 2), dtype=np.uint8))
        t[f"{name}.weight_scale"] = ("F8_E4M3", rng.integers(0x20, 0x70, (n, k // 16), dtype=np.uint8))
        t[f"{name}.weight_global_scale"] = ("F32", np.array([2000.0], dtype=np.float32))


def save(path, tensors):
    header, off, blobs = {}, 0, []
    for name in sorted(tensors):
        dt, arr = tensors[name]
        b = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    return off


shards, cur, size, wm, total = [], {}, 0, {}, 0
def flush():
    global cur, size
    if cur:
        shards.append(cur)
        cur, size = {}, 0

groups = [("model.embed_tokens.weight", None)] + [(L, None) for L in range(a.layers)] + [("tail", None)]
for g, _ in groups:
    t = {}
    if g == "model.embed_tokens.weight":
        t[g] = ("BF16", bf16((V, H)))
    elif g == "tail":
        t["model.norm.weight"] = ("BF16", bf16((H,)))
        t["lm_head.weight"] = ("BF16", bf16((V, H)))
    else:
        p = f"model.layers.{g}"
        for proj, n, k in [("self_attn.q_proj", H, H), ("self_attn.k_proj", KV, H), ("self_attn.v_proj", KV, H),
                           ("self_attn.o_proj", H, H), ("mlp.gate_proj", I, H), ("mlp.up_proj", I, H), ("mlp.down_proj", H, I)]:
            linear(f"{p}.{proj}", n, k, t)
        t[f"{p}.input_layernorm.weight"] = ("BF16", bf16((H,)))
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", bf16((H,)))
    cur.update(t)
    size += sum(v[1].nbytes for v in t.values())
    if size > 1 << 30:
        flush()
flush()
n = len(shards)
for i, s in enumerate(shards):
    name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
    total += save(os.path.join(a.out, name), s)
    wm.update({k: name for k in s})
json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))},
          open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=2)
w = {"num_bits": 4, "group_size": 128 if a.format == "int4" else 16, "strategy": "group" if a.format == "int4" else "tensor_group",
     "symmetric": True, "type": "int" if a.format == "int4" else "float"}
fmt = "pack-quantized" if a.format == "int4" else "nvfp4-pack-quantized"
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
       "num_hidden_layers": a.layers, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
       "vocab_size": V, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
       "torch_dtype": "bfloat16",
       "quantization_config": {"quant_method": "compressed-tensors", "format": fmt, "ignore": ["lm_head"],
                               "config_groups": {"group_0": {"targets": ["Linear"], "format": fmt, "weights": w,
                                                             "input_activations": None}}}}
json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
print(f"{total / 1e9:.2f} GB of tensors in {n} shards at {a.out}")
