#!/usr/bin/env python3
"""Write a DeepSeek-V3-shaped Hub repo for the remote pre-flight benchmark (benches/remote_compare.py).

    python3 benches/make_hub_layout.py OUT_ROOT [--shards 160] [--tensors N] [--small]

writes OUT_ROOT/bench-org/big-moe/ as tools/hub_server.py serves it:
  config.json                    DeepSeek-V3's real config (shared/corpus), n_routed_experts / num_hidden_layers
                                 rewritten only when --tensors / --small shrink the model
  generation_config.json         DeepSeek-V3's
  model.safetensors.index.json   {"metadata": {"total_size"}, "weight_map"}
  model-0000K-of-0NNNN.safetensors
Each shard is a valid safetensors file: the 8-byte header length, the JSON header (`__metadata__`
{"format": "pt"}, tensors in offset order, contiguous data_offsets, padded with spaces to a multiple of 8),
then the data area left as a hole (f.truncate): a SPARSE file. Only headers take disk space (~13 MB for the
full layout) while the logical size is DeepSeek-V3's (~690 GB).

Tensors: DeepSeek-V3's names and shapes from its config (MLA attention, 3 dense layers, 58 MoE layers of 256
routed + 1 shared expert, the MTP layer 61), every linear F8_E4M3 [N, K] with its F32
`weight_scale_inv` [ceil(N/128), ceil(K/128)]; norms, embeddings, lm_head, the router and the MTP eh_proj /
shared_head in BF16; the router's e_score_correction_bias F32. The full model is 91,991 tensors, as the real
checkpoint. Tensors go to shards in model order, cut where the running byte count passes k/shards of the
total (so a weight and its scale may straddle two shards); inside a shard they are ordered as the
safetensors library writes them (dtype F32, then BF16, then F8_E4M3, each by name). No weight map of the real
checkpoint is in shared/corpus, so the shard assignment is this rule's, not DeepSeek's (real: 163 shards).

--tensors N   scale n_routed_experts (kept a multiple of n_group) so the tensor count is near N
--small       a quick layout: 8 shards, 30 layers, 8 experts (~2k tensors, ~28 GB sparse)
Deterministic: the same arguments give the same bytes. Standard library only.
"""
import argparse
import json
import math
import os
import shutil
import struct

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "corpus", "configs")
CONFIG = os.path.join(CORPUS, "deepseek-ai--DeepSeek-V3", "config.json")
REPO = ("bench-org", "big-moe")
DTYPE_BYTES = {"F8_E4M3": 1, "BF16": 2, "F32": 4}
# safetensors' Rust writer orders tensors by dtype, descending in its enum (.. F8_E4M3 < BF16 < F32), then name.
DTYPE_RANK = {"F32": 0, "BF16": 1, "F8_E4M3": 2}
GENERATION_CONFIG = {"_from_model_config": True, "bos_token_id": 0, "eos_token_id": 1, "do_sample": True,
                     "temperature": 0.6, "top_p": 0.95, "transformers_version": "4.46.3"}


def tensors(cfg):
    """[(name, dtype, shape)] of a DeepSeek-V3 fp8 checkpoint with this config, in model order."""
    h, vocab = cfg["hidden_size"], cfg["vocab_size"]
    heads, nope, rope, v = (cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"],
                            cfg["v_head_dim"])
    q_lora, kv_lora = cfg["q_lora_rank"], cfg["kv_lora_rank"]
    experts, moe_inter = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
    layers, mtp = cfg["num_hidden_layers"], cfg.get("num_nextn_predict_layers", 0)
    bn, bk = cfg["quantization_config"]["weight_block_size"]
    out = []

    def linear(name, n, k):  # fp8 weight + its 128x128 block scales
        out.append((f"{name}.weight", "F8_E4M3", [n, k]))
        out.append((f"{name}.weight_scale_inv", "F32", [math.ceil(n / bn), math.ceil(k / bk)]))

    def bf16(name, *shape):
        out.append((f"{name}.weight", "BF16", list(shape)))

    def mlp(p, inter):
        linear(f"{p}.gate_proj", inter, h)
        linear(f"{p}.up_proj", inter, h)
        linear(f"{p}.down_proj", h, inter)

    bf16("model.embed_tokens", vocab, h)
    for i in range(layers + mtp):
        p = f"model.layers.{i}"
        if i >= layers:  # an MTP module: layer `layers + j`, DeepSeek's README_WEIGHTS.md
            bf16(f"{p}.embed_tokens", vocab, h)
            bf16(f"{p}.enorm", h)
            bf16(f"{p}.hnorm", h)
            bf16(f"{p}.eh_proj", h, 2 * h)
        bf16(f"{p}.input_layernorm", h)
        linear(f"{p}.self_attn.q_a_proj", q_lora, h)
        bf16(f"{p}.self_attn.q_a_layernorm", q_lora)
        linear(f"{p}.self_attn.q_b_proj", heads * (nope + rope), q_lora)
        linear(f"{p}.self_attn.kv_a_proj_with_mqa", kv_lora + rope, h)
        bf16(f"{p}.self_attn.kv_a_layernorm", kv_lora)
        linear(f"{p}.self_attn.kv_b_proj", heads * (nope + v), kv_lora)
        linear(f"{p}.self_attn.o_proj", h, heads * v)
        bf16(f"{p}.post_attention_layernorm", h)
        if i < cfg["first_k_dense_replace"]:
            mlp(f"{p}.mlp", cfg["intermediate_size"])
        else:
            bf16(f"{p}.mlp.gate", experts, h)
            out.append((f"{p}.mlp.gate.e_score_correction_bias", "F32", [experts]))
            for e in range(experts):
                mlp(f"{p}.mlp.experts.{e}", moe_inter)
            mlp(f"{p}.mlp.shared_experts", moe_inter * cfg["n_shared_experts"])
        if i >= layers:
            bf16(f"{p}.shared_head.norm", h)
            bf16(f"{p}.shared_head.head", vocab, h)
    bf16("model.norm", h)
    bf16("lm_head", vocab, h)
    return out


def nbytes(dtype, shape):
    return DTYPE_BYTES[dtype] * math.prod(shape)


def split(ts, shards):
    """Cut the model-ordered tensors into `shards` non-empty runs of about equal bytes."""
    if len(ts) < shards:
        raise SystemExit(f"{len(ts)} tensors cannot fill {shards} shards")
    total = sum(nbytes(d, s) for _, d, s in ts)
    out, cur, acc = [], [], 0
    for i, t in enumerate(ts):
        cur.append(t)
        acc += nbytes(t[1], t[2])
        left_t, left_s = len(ts) - i - 1, shards - len(out) - 1
        if left_s and (acc * shards >= total * (len(out) + 1) or left_t == left_s):
            out.append(cur)
            cur = []
    out.append(cur)
    assert len(out) == shards and all(out)
    return out


def write_shard(path, chunk):
    """A safetensors header for `chunk`, then a hole up to the file's full size. Returns (header, data) bytes."""
    chunk = sorted(chunk, key=lambda t: (DTYPE_RANK[t[1]], t[0]))
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, shape in chunk:
        size = nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + size]}
        off += size
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        f.truncate(8 + len(hb) + off)  # sparse: the data area is never written
    return 8 + len(hb), off


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_root", help="the hub_server ROOT; the repo goes to OUT_ROOT/bench-org/big-moe")
    ap.add_argument("--shards", type=int, help="number of shards (160; 8 with --small)")
    ap.add_argument("--tensors", type=int, help="approximate tensor count (default: the real 91,991)")
    ap.add_argument("--small", action="store_true", help="8 shards, 30 layers, 8 experts (~2k tensors)")
    ap.add_argument("--config", default=CONFIG, help="DeepSeek-V3 config.json (default: shared/corpus)")
    a = ap.parse_args()

    with open(a.config) as f:
        cfg = json.load(f)
    shards = a.shards or (8 if a.small else 160)
    if a.small:
        cfg["num_hidden_layers"], cfg["n_routed_experts"] = 30, 8
    if a.tensors:
        # Each routed expert adds 6 tensors (3 fp8 linears + scales) to every MoE layer (MTP included).
        group = cfg.get("n_group") or 1
        per_expert = 6 * (cfg["num_hidden_layers"] + cfg.get("num_nextn_predict_layers", 0)
                          - cfg["first_k_dense_replace"])
        base = len(tensors({**cfg, "n_routed_experts": 0}))
        e = round((a.tensors - base) / per_expert / group) * group
        cfg["n_routed_experts"] = max(group, min(e, cfg["n_routed_experts"]), cfg["num_experts_per_tok"])
    ts = tensors(cfg)

    repo = os.path.join(a.out_root, *REPO)
    if os.path.isdir(repo):
        shutil.rmtree(repo)  # stale shards of another --shards would stay listed
    os.makedirs(repo)
    with open(os.path.join(repo, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(repo, "generation_config.json"), "w") as f:
        json.dump(GENERATION_CONFIG, f, indent=2)
        f.write("\n")

    weight_map, header_bytes, header_max, data_bytes = {}, 0, 0, 0
    for k, chunk in enumerate(split(ts, shards)):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        hb, db = write_shard(os.path.join(repo, fname), chunk)
        header_bytes += hb
        header_max = max(header_max, hb)
        data_bytes += db
        weight_map.update((name, fname) for name, _, _ in chunk)
    with open(os.path.join(repo, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": data_bytes}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")

    print(json.dumps({
        "repo": "/".join(REPO), "path": repo, "shards": shards, "tensors": len(ts),
        "layers": cfg["num_hidden_layers"], "routed_experts": cfg["n_routed_experts"],
        "header_bytes_total": header_bytes, "header_bytes_max": header_max,
        "logical_bytes": header_bytes + data_bytes, "logical_gb": round((header_bytes + data_bytes) / 1e9, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
