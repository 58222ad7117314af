#!/usr/bin/env python3
"""Write a real-shaped bf16 (or --dtype float16) Qwen3-MoE checkpoint (transformers' names and config, loadable by
msModelSlim's Qwen3-30B adapter) for the `quantize --to w4a8-dynamic` benchmarks: random normal
weights (seed 0, std 0.02, each row scaled by exp(N(0, 0.5)) so row maxima differ), written one
shard at a time (peak memory: one shard), shards of --shard-gb.
Defaults: hidden 1024, 16 layers, 32 experts of intermediate 512, 16 heads of 64, 4 KV heads, vocab
32000: 0.91 B parameters, 1.8 GB. Needs torch, safetensors and transformers (the msModelSlim venv).

  python3 benches/quantize_make_moe.py OUT [--layers 16] [--experts 32] [--hidden 1024] [--moe-intermediate 512] [--dtype float16]
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import Qwen3MoeConfig

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--layers", type=int, default=16)
ap.add_argument("--experts", type=int, default=32)
ap.add_argument("--hidden", type=int, default=1024)
ap.add_argument("--moe-intermediate", type=int, default=512)
ap.add_argument("--shard-gb", type=float, default=1.0)
ap.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
a = ap.parse_args()
torch.manual_seed(0)
DT = getattr(torch, a.dtype)
H, I, E, heads, kv, hd, V = a.hidden, a.moe_intermediate, a.experts, 16, 4, 64, 32000
cfg = Qwen3MoeConfig(
    vocab_size=V, hidden_size=H, intermediate_size=4 * I, moe_intermediate_size=I, num_hidden_layers=a.layers,
    num_attention_heads=heads, num_key_value_heads=kv, head_dim=hd, num_experts=E, num_experts_per_tok=4,
    max_position_embeddings=4096, tie_word_embeddings=False, torch_dtype=a.dtype,
)
cfg.architectures = ["Qwen3MoeForCausalLM"]
os.makedirs(a.out, exist_ok=True)
cfg.save_pretrained(a.out)


def w(n, k):
    t = torch.randn(n, k) * 0.02 * torch.exp(torch.randn(n, 1) * 0.5)
    return t.to(DT)


def tensors():
    yield "model.embed_tokens.weight", w(V, H)
    for l in range(a.layers):
        p = f"model.layers.{l}."
        yield p + "self_attn.q_proj.weight", w(heads * hd, H)
        yield p + "self_attn.k_proj.weight", w(kv * hd, H)
        yield p + "self_attn.v_proj.weight", w(kv * hd, H)
        yield p + "self_attn.o_proj.weight", w(H, heads * hd)
        yield p + "self_attn.q_norm.weight", torch.ones(hd, dtype=DT)
        yield p + "self_attn.k_norm.weight", torch.ones(hd, dtype=DT)
        yield p + "mlp.gate.weight", w(E, H)
        for e in range(E):
            yield p + f"mlp.experts.{e}.gate_proj.weight", w(I, H)
            yield p + f"mlp.experts.{e}.up_proj.weight", w(I, H)
            yield p + f"mlp.experts.{e}.down_proj.weight", w(H, I)
        yield p + "input_layernorm.weight", torch.ones(H, dtype=DT)
        yield p + "post_attention_layernorm.weight", torch.ones(H, dtype=DT)
    yield "model.norm.weight", torch.ones(H, dtype=DT)
    yield "lm_head.weight", w(V, H)


limit = int(a.shard_gb * 1e9)
shards, cur, size = [], {}, 0  # shards: each one's {name: bytes}; only the current one's tensors are held


def flush():
    shards.append({k: t.numel() * 2 for k, t in cur.items()})
    save_file(cur, os.path.join(a.out, f"part-{len(shards)}.tmp"), metadata={"format": "pt"})


for name, t in tensors():
    if cur and size + t.numel() * 2 > limit:
        flush()
        cur, size = {}, 0
    cur[name] = t
    size += t.numel() * 2
flush()
n = len(shards)
weight_map, total = {}, 0
for i, s in enumerate(shards, 1):
    name = f"model-{i:05d}-of-{n:05d}.safetensors"
    os.rename(os.path.join(a.out, f"part-{i}.tmp"), os.path.join(a.out, name))
    for k, b in s.items():
        weight_map[k] = name
        total += b
with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
print(f"{a.out}: {total / 2e9:.2f} B parameters, {total / 1e9:.2f} GB, {n} shards")
