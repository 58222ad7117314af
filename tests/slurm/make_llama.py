#!/usr/bin/env python3
"""Write a bf16 Llama checkpoint big enough for `ckptpilot quantize --part K/N` to have N >= 2
output files: quantize splits its *output* files (`--part-file-size` GiB, at least 1), and every
fixture in fixtures/ quantizes to a single file of a few hundred KiB.

    make_llama.py OUT [LAYERS]

Standard library only (no numpy, no torch). The weights are a fixed pseudo-random pattern of finite
bf16 values (seeded: the same bytes on every run), repeated with an odd period so that rows differ.
With the default 10 layers: 2.9 GB of bf16 in 3 shards, about 1.33 GiB once quantized to int8, so two
output files at --part-file-size 1.
"""

import json
import os
import random
import struct
import sys

HIDDEN, INTER, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 4096, 8192, 32, 8, 128, 512


def tensors(layers):
    yield "model.embed_tokens.weight", [VOCAB, HIDDEN]
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", [HIDDEN]
        yield p + "self_attn.q_proj.weight", [HEADS * HEAD_DIM, HIDDEN]
        yield p + "self_attn.k_proj.weight", [KV_HEADS * HEAD_DIM, HIDDEN]
        yield p + "self_attn.v_proj.weight", [KV_HEADS * HEAD_DIM, HIDDEN]
        yield p + "self_attn.o_proj.weight", [HIDDEN, HEADS * HEAD_DIM]
        yield p + "post_attention_layernorm.weight", [HIDDEN]
        yield p + "mlp.gate_proj.weight", [INTER, HIDDEN]
        yield p + "mlp.up_proj.weight", [INTER, HIDDEN]
        yield p + "mlp.down_proj.weight", [HIDDEN, INTER]
    yield "model.norm.weight", [HIDDEN]
    yield "lm_head.weight", [VOCAB, HIDDEN]


def pattern():
    rng = random.Random(25)
    # Finite bf16 values in about +-[2^-8, 2^-1): sign, exponent 119..126, 7 random mantissa bits.
    # An odd number of elements, so that the pattern does not line up with rows.
    n = 500_009
    vals = [(rng.getrandbits(1) << 15) | ((119 + rng.randrange(8)) << 7) | rng.getrandbits(7) for _ in range(n)]
    return struct.pack(f"<{n}H", *vals)


def write_shard(path, entries, block):
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in entries:
        nbytes = 2
        for d in shape:
            nbytes *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + nbytes]}
        off += nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    pos = 0  # where in the pattern the next byte comes from: every tensor continues it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        left = off
        while left:
            chunk = block[pos:] + block[:pos]
            take = min(left, len(chunk))
            f.write(chunk[:take])
            pos = (pos + take) % len(block)
            left -= take
    return off


def main():
    out = sys.argv[1]
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    os.makedirs(out, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "max_position_embeddings": 4096,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": HEADS,
        "num_hidden_layers": layers,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "vocab_size": VOCAB,
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    all_t = list(tensors(layers))
    nshards = 3
    per = -(-len(all_t) // nshards)
    block = pattern()
    weight_map, total = {}, 0
    for s in range(nshards):
        name = f"model-{s + 1:05d}-of-{nshards:05d}.safetensors"
        entries = all_t[s * per : (s + 1) * per]
        total += write_shard(os.path.join(out, name), entries, block)
        weight_map.update({t: name for t, _ in entries})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


if __name__ == "__main__":
    main()
