#!/usr/bin/env python3
"""Write a DeepSeek-V3-sized checkpoint layout for the audit benchmark: 160 shards, ~92k tensors with
DeepSeek-V3's real names (61 layers, 256 routed + 1 shared expert, MTP layer 61, fp8 weights with
`weight_scale_inv`), and an index. Standard library only.

  --size tiny   every tensor 16x16 (scales 1x1): about 20 MB on disk
  --size real   DeepSeek-V3's real shapes, data left as holes in sparse files (about 0.7 TB apparent
                for fp8, 1.3 TB with --dtype bf16); nothing but headers is written
"""
import argparse
import json
import math
import os
import struct

H, QL, KVL, NH, NOPE, ROPE, V, INTER, MOE, VOCAB, E = 7168, 1536, 512, 128, 128, 64, 128, 18432, 2048, 129280, 256
LAYERS, DENSE, MTP = 61, 3, 1


def tensors(dtype):
    """(name, dtype, shape) in DeepSeek-V3's order; fp8 linears come with their block scales."""
    fp8 = dtype == "fp8"
    out = []

    def lin(name, n, k):
        if fp8:
            out.append((name + ".weight", "F8_E4M3", [n, k]))
            out.append((name + ".weight_scale_inv", "F32", [math.ceil(n / 128), math.ceil(k / 128)]))
        else:
            out.append((name + ".weight", "BF16", [n, k]))

    def norm(name, n):
        out.append((name + ".weight", "BF16", [n]))

    out.append(("model.embed_tokens.weight", "BF16", [VOCAB, H]))
    for i in range(LAYERS + MTP):
        p = f"model.layers.{i}"
        norm(p + ".input_layernorm", H)
        norm(p + ".post_attention_layernorm", H)
        lin(p + ".self_attn.q_a_proj", QL, H)
        norm(p + ".self_attn.q_a_layernorm", QL)
        lin(p + ".self_attn.q_b_proj", NH * (NOPE + ROPE), QL)
        lin(p + ".self_attn.kv_a_proj_with_mqa", KVL + ROPE, H)
        norm(p + ".self_attn.kv_a_layernorm", KVL)
        lin(p + ".self_attn.kv_b_proj", NH * (NOPE + V), KVL)
        lin(p + ".self_attn.o_proj", H, NH * V)
        if i < DENSE:
            lin(p + ".mlp.gate_proj", INTER, H)
            lin(p + ".mlp.up_proj", INTER, H)
            lin(p + ".mlp.down_proj", H, INTER)
        else:
            out.append((p + ".mlp.gate.weight", "BF16", [E, H]))
            out.append((p + ".mlp.gate.e_score_correction_bias", "F32", [E]))
            for e in range(E):
                lin(f"{p}.mlp.experts.{e}.gate_proj", MOE, H)
                lin(f"{p}.mlp.experts.{e}.up_proj", MOE, H)
                lin(f"{p}.mlp.experts.{e}.down_proj", H, MOE)
            lin(p + ".mlp.shared_experts.gate_proj", MOE, H)
            lin(p + ".mlp.shared_experts.up_proj", MOE, H)
            lin(p + ".mlp.shared_experts.down_proj", H, MOE)
        if i >= LAYERS:
            norm(p + ".enorm", H)
            norm(p + ".hnorm", H)
            out.append((p + ".eh_proj.weight", "BF16", [H, 2 * H]))
            norm(p + ".shared_head.norm", H)
            out.append((p + ".shared_head.head.weight", "BF16", [VOCAB, H]))
            out.append((p + ".embed_tokens.weight", "BF16", [VOCAB, H]))
    norm("model.norm", H)
    out.append(("lm_head.weight", "BF16", [VOCAB, H]))
    return out


SIZE = {"F8_E4M3": 1, "BF16": 2, "F32": 4}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--size", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--dtype", choices=["fp8", "bf16"], default="fp8")
    ap.add_argument("--shards", type=int, default=160)
    a = ap.parse_args()
    ts = tensors(a.dtype)
    if a.size == "tiny":
        ts = [(n, d, [16, 16] if len(s) == 2 and not n.endswith("_scale_inv") else ([1, 1] if len(s) == 2 else [16]))
              for n, d, s in ts]
    os.makedirs(a.out, exist_ok=True)
    per = math.ceil(len(ts) / a.shards)
    weight_map, total = {}, 0
    for si in range(a.shards):
        chunk = ts[si * per:(si + 1) * per]
        fname = f"model-{si + 1:05d}-of-{a.shards:05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for n, d, s in chunk:
            size = SIZE[d] * math.prod(s)
            header[n] = {"dtype": d, "shape": s, "data_offsets": [off, off + size]}
            off += size
            weight_map[n] = fname
        total += off
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * ((8 - len(hb) % 8) % 8)
        with open(os.path.join(a.out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            if a.size == "tiny":
                f.write(bytes(off))
            else:
                f.truncate(8 + len(hb) + off)  # a sparse file: apparent size only
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=2)
    cfg = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": H,
           "intermediate_size": INTER, "moe_intermediate_size": MOE, "num_hidden_layers": LAYERS,
           "num_attention_heads": NH, "num_key_value_heads": NH, "n_routed_experts": E, "n_shared_experts": 1,
           "num_experts_per_tok": 8, "topk_method": "noaux_tc", "first_k_dense_replace": DENSE, "moe_layer_freq": 1, "q_lora_rank": QL,
           "kv_lora_rank": KVL, "qk_nope_head_dim": NOPE, "qk_rope_head_dim": ROPE, "v_head_dim": V,
           "vocab_size": VOCAB, "num_nextn_predict_layers": MTP, "tie_word_embeddings": False}
    if a.dtype == "fp8":
        cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                      "weight_block_size": [128, 128]}
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    print(f"{len(ts)} tensors in {a.shards} shards, {total / 1e12:.2f} TB of tensor data ({a.size})")


if __name__ == "__main__":
    main()
