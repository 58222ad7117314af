#!/usr/bin/env python3
"""Write a real-shaped bf16 Llama checkpoint with transformers (the reference writer) for the
whole-checkpoint `quantize` benchmark: random weights (seed 0), `save_pretrained` shards of 1 GB.
Defaults: hidden 2048, intermediate 8192, 16 layers, 16 heads, 8 KV heads, vocab 32000 — 1.14 B
parameters, 2.3 GB. Needs torch and transformers.

  python3 benches/make_bf16_llama.py OUT [--layers 16]
"""
import argparse

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--layers", type=int, default=16)
ap.add_argument("--hidden", type=int, default=2048)
ap.add_argument("--intermediate", type=int, default=8192)
a = ap.parse_args()
torch.manual_seed(0)
cfg = LlamaConfig(
    hidden_size=a.hidden,
    intermediate_size=a.intermediate,
    num_hidden_layers=a.layers,
    num_attention_heads=16,
    num_key_value_heads=8,
    vocab_size=32000,
    max_position_embeddings=4096,
    torch_dtype="bfloat16",
)
with torch.no_grad():
    m = LlamaForCausalLM(cfg).to(torch.bfloat16)
m.save_pretrained(a.out, max_shard_size="1GB", safe_serialization=True)
print(sum(p.numel() for p in m.parameters()), "parameters written to", a.out)
