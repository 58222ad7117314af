#!/usr/bin/env python3
"""Rebuild fuzz/seeds/ from fixtures/ (run from the repository root: python3 fuzz/make_seeds.py).

Standard library only, deterministic. The directory targets (audit_dir, dequant_dir) read one input
as several files joined by SEP (see src/fuzzing.rs): config.json, model.safetensors.index.json,
then up to four shards. Their seeds are tiny but valid fp8 checkpoints (a one-layer Qwen3 with
128x128 block scales, the same as compressed-tensors per-channel, a two-layer DeepSeek-V3 with MLA
and MoE), so that the fuzzer starts deep inside audit, plan, remap and dequant rather than at the
header parser.
"""
import glob
import json
import math
import os
import random
import struct

SEP = b"~~FILE~~"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
SIZE = {"F8_E4M3": 1, "BF16": 2, "F32": 4}


def out(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tensor_bytes(rng, dtype, shape):
    n = math.prod(shape)
    if dtype == "F32":  # scales: small positive floats
        return b"".join(struct.pack("<f", rng.uniform(0.001, 0.01)) for _ in range(n))
    if dtype == "BF16":
        return b"".join(struct.pack("<f", rng.uniform(-1, 1))[2:] for _ in range(n))
    return bytes(rng.randrange(256) for _ in range(n))


def safetensors(tensors, rng):
    """tensors: [(name, dtype, shape)] -> file bytes (header padded to 8 like the reference writer)."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, dtype, shape in tensors:
        b = tensor_bytes(rng, dtype, shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def fp8(name, shape, scheme):
    """An fp8 weight and its scale."""
    if scheme == "block":
        return [(name + ".weight", "F8_E4M3", shape),
                (name + ".weight_scale_inv", "F32", [math.ceil(shape[0] / 128), math.ceil(shape[1] / 128)])]
    return [(name + ".weight", "F8_E4M3", shape), (name + ".weight_scale", "F32", [shape[0], 1])]


def qwen3(scheme):
    h, heads, kv, hd, inter, vocab = 32, 2, 1, 16, 32, 16
    cfg = json.load(open(os.path.join(ROOT, "fixtures", "qwen3-dense-fp8" if scheme == "block" else "ct-fp8-channel",
                                      "config.json")))
    cfg.update(hidden_size=h, num_attention_heads=heads, num_key_value_heads=kv, head_dim=hd,
               intermediate_size=inter, vocab_size=vocab, num_hidden_layers=1, layer_types=["full_attention"],
               max_position_embeddings=64, tie_word_embeddings=False)
    t = [("model.embed_tokens.weight", "BF16", [vocab, h]), ("lm_head.weight", "BF16", [vocab, h]),
         ("model.norm.weight", "BF16", [h])]
    p = "model.layers.0."
    t += [(p + "input_layernorm.weight", "BF16", [h]), (p + "post_attention_layernorm.weight", "BF16", [h]),
          (p + "self_attn.q_norm.weight", "BF16", [hd]), (p + "self_attn.k_norm.weight", "BF16", [hd])]
    t += fp8(p + "self_attn.q_proj", [heads * hd, h], scheme)
    t += fp8(p + "self_attn.k_proj", [kv * hd, h], scheme)
    t += fp8(p + "self_attn.v_proj", [kv * hd, h], scheme)
    t += fp8(p + "self_attn.o_proj", [h, heads * hd], scheme)
    t += fp8(p + "mlp.gate_proj", [inter, h], scheme)
    t += fp8(p + "mlp.up_proj", [inter, h], scheme)
    t += fp8(p + "mlp.down_proj", [h, inter], scheme)
    return cfg, t


def deepseek():
    h, heads, ql, kvl, nope, rope, v, inter, mi, e, vocab = 32, 2, 32, 16, 16, 8, 16, 32, 16, 2, 16
    cfg = json.load(open(os.path.join(ROOT, "fixtures", "deepseek-fp8", "config.json")))
    cfg.update(hidden_size=h, num_attention_heads=heads, num_key_value_heads=heads, q_lora_rank=ql,
               kv_lora_rank=kvl, qk_nope_head_dim=nope, qk_rope_head_dim=rope, qk_head_dim=nope + rope,
               v_head_dim=v, head_dim=rope, intermediate_size=inter, moe_intermediate_size=mi, n_routed_experts=e,
               num_experts_per_tok=1, n_group=1, topk_group=1, vocab_size=vocab, num_hidden_layers=2,
               num_nextn_predict_layers=0, max_position_embeddings=64)
    t = [("model.embed_tokens.weight", "BF16", [vocab, h]), ("lm_head.weight", "BF16", [vocab, h]),
         ("model.norm.weight", "BF16", [h])]
    for i in range(2):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", "BF16", [h]), (p + "post_attention_layernorm.weight", "BF16", [h]),
              (p + "self_attn.q_a_layernorm.weight", "BF16", [ql]),
              (p + "self_attn.kv_a_layernorm.weight", "BF16", [kvl])]
        t += fp8(p + "self_attn.q_a_proj", [ql, h], "block")
        t += fp8(p + "self_attn.q_b_proj", [heads * (nope + rope), ql], "block")
        t += fp8(p + "self_attn.kv_a_proj_with_mqa", [kvl + rope, h], "block")
        t += fp8(p + "self_attn.kv_b_proj", [heads * (nope + v), kvl], "block")
        t += fp8(p + "self_attn.o_proj", [h, heads * v], "block")
        if i == 0:
            mlps = [(p + "mlp.", inter)]
        else:
            t += [(p + "mlp.gate.weight", "BF16", [e, h]), (p + "mlp.gate.e_score_correction_bias", "F32", [e])]
            mlps = [(p + f"mlp.experts.{j}.", mi) for j in range(e)] + [(p + "mlp.shared_experts.", mi)]
        for q, n in mlps:
            t += fp8(q + "gate_proj", [n, h], "block") + fp8(q + "up_proj", [n, h], "block")
            t += fp8(q + "down_proj", [h, n], "block")
    return cfg, t


def directory(cfg, tensors, shards, seed):
    """The dir-target encoding of a checkpoint split into `shards` files, and the single-file image."""
    rng = random.Random(seed)
    per = math.ceil(len(tensors) / shards)
    parts = [tensors[i * per:(i + 1) * per] for i in range(shards)]
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    files = [safetensors(p, rng) for p in parts]
    size = sum(math.prod(s) * SIZE[d] for _, d, s in tensors)
    index = {"metadata": {"total_size": size}, "weight_map": {n: names[i] for i, p in enumerate(parts) for n, _, _ in p}}
    cfg_text = json.dumps(cfg, indent=2).encode()
    enc = SEP.join([cfg_text, json.dumps(index, indent=2).encode()] + files)
    single = safetensors(tensors, random.Random(seed))
    return cfg_text, enc, single


def small(cfg):
    """Shrinks layer and expert counts (and a long ignore list) in place; True if it changed any."""
    if not isinstance(cfg, dict):
        return False
    changed = False
    for key, most in (("num_hidden_layers", 4), ("n_routed_experts", 8), ("num_experts", 8), ("num_local_experts", 8)):
        if isinstance(cfg.get(key), int) and cfg[key] > most:
            cfg[key] = most
            changed = True
    q = cfg.get("quantization_config") or {}
    if len(q.get("modules_to_not_convert") or []) > 16:
        q["modules_to_not_convert"] = q["modules_to_not_convert"][:9]
        changed = True
    return changed


def header_only(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return b[:8 + n]


def main():
    q_cfg, q_t = qwen3("block")
    c_cfg, c_t = qwen3("channel")
    d_cfg, d_t = deepseek()
    qwen_cfg_text, q_dir, q_single = directory(q_cfg, q_t, 2, 1)
    _, q_dir1, _ = directory(q_cfg, q_t, 1, 2)
    _, c_dir, c_single = directory(c_cfg, c_t, 2, 3)
    _, d_dir, d_single = directory(d_cfg, d_t, 2, 4)
    # audit_file runs every input beside this config (AUDIT_FILE_CONFIG in src/fuzzing.rs).
    print(json.dumps(q_cfg, separators=(",", ":")))
    for target in ("audit_dir", "dequant_dir"):
        out(target, "qwen3-fp8-block-2shards", q_dir)
        out(target, "qwen3-fp8-block-1shard", q_dir1)
        out(target, "qwen3-ct-fp8-channel-2shards", c_dir)
        out(target, "deepseek-v3-fp8-2shards", d_dir)
    out("audit_file", "qwen3-fp8-block", q_single)
    out("audit_file", "qwen3-ct-fp8-channel", c_single)
    out("audit_file", "deepseek-v3-fp8", d_single)
    out("header", "qwen3-fp8-block", q_single)
    out("header", "deepseek-v3-fp8", d_single)
    for fx in ("deepseek-fp8", "qwen3-moe-fp8", "ct-fp8-block", "gpt-oss", "qwen2.5-vl", "gemma3-mm"):
        shards = sorted(glob.glob(os.path.join(ROOT, "fixtures", fx, "*.safetensors")))
        if shards:
            out("header", f"{fx}-header-only", header_only(shards[0]))
            out("audit_file", f"{fx}-header-only", header_only(shards[0]))
    for fx in ("deepseek-fp8", "qwen3-dense", "qwen3-moe-fp8", "ct-fp8-channel", "gemma3-tied"):
        p = os.path.join(ROOT, "fixtures", fx, "model.safetensors.index.json")
        if os.path.exists(p):
            out("index", fx, open(p, "rb").read())
    # The hand-written index pass's edges: metadata after weight_map, a key it skips, an escape
    # and a non-string value (both handed to serde), a path that escapes.
    out("index", "scan-edges", json.dumps({
        "weight_map": {"a.weight": "m-1.safetensors", "b\\u0041": "m-2.safetensors", "c": "../x.safetensors"},
        "format": [1, {"k": "}"}],
        "metadata": {"total_size": 12.0},
    }).encode() + b"\n")
    out("index", "scan-non-string", b'{"weight_map": {"a": "m.safetensors", "b": 3}, "metadata": {"total_size": 1}}')
    for p in sorted(glob.glob(os.path.join(ROOT, "fixtures", "*", "config.json")) +
                    glob.glob(os.path.join(ROOT, "fixtures", "configs", "*", "config.json"))):
        name = os.path.relpath(os.path.dirname(p), os.path.join(ROOT, "fixtures")).replace("/", "-")
        text = open(p, "rb").read()
        cfg = json.loads(text)
        if small(cfg) or small(cfg.get("text_config")):
            # A real model's config plans ~50k parameters (30 ms a run under coverage
            # instrumentation), and Qwen3-30B-A3B-FP8's 145 modules_to_not_convert are checked
            # against each (0.2 s): the fuzzer would starve. Seeds keep every field and the shape
            # of each list, at a few layers and experts.
            text = json.dumps(cfg, indent=2).encode()
            name += "-small"
        out("config", name, text)


if __name__ == "__main__":
    main()
