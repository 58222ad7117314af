#!/usr/bin/env python3
"""The family compiler: an architecture's remap / plan rules, learned from vLLM 0.33.0 itself.

    ~/vllm-oracle-venv/bin/python tools/oracle/compile_family.py NAME [--arch ARCH]
        [--model-type MT | --config CONFIG_JSON] [--set KEY=JSON ...] [--tps 1,2] [--apply]
    ~/vllm-oracle-venv/bin/python tools/oracle/compile_family.py --spec NAME [--apply]   # from family_specs.py
    ~/vllm-oracle-venv/bin/python tools/oracle/compile_family.py --all [--apply]         # every spec not yet done

Steps, one architecture at a time (one oracle process chain at a time, under `nice -n 10`):
  1. write  a tiny random checkpoint with transformers (the venv's; config from the model type's
            config class or a real config.json, shrunk: hidden 64, 2 layers, vocab 256, 4 experts;
            MTP layers, shared experts, biases, tied embeddings and sliding windows kept where the
            config has them) into fixtures/families/NAME/ (config.json + >= 2 safetensors shards + index)
  2. oracle vllm-oracle (../shared/tools/vllm-oracle/oracle.py) at each TP size, compacted into
            fixtures/oracle/families/NAME.tpN.json: the trace (tensor -> [param, shard_id, expert_id]),
            tensors vLLM never loaded, build / load errors, every rank's parameters (shape, dtype) and
            the most loaded rank's bytes (tools/oracle/export_params.py's accounting)
  3. draft  first: does an existing family (src/arch/families/*.json) already hold? (a copy of it
            listing this architecture is verified like a draft); else a new family file inferred from
            the trace and the per-rank shapes: mapper prefixes, stacked shards, expert names, skips,
            each parameter's partition (from vLLM's weight_loader and its shapes across TP sizes),
            shapes written over config keys, layer sets, dtype, q/k norms. What it cannot infer goes
            under `_todo` for a person.
  4. verify `ckptpilot --rules DRAFT remap --json --tp N` row for row against the trace (param, shard id,
            expert id; never-loaded tensors skip / unmapped), the parameter set, and
            `ckptpilot --rules DRAFT plan --json --tp N` per-rank weight bytes against the recorded
            most loaded rank (a TP vLLM refused must be infeasible in plan).
  --apply   a verified existing family gets the architecture added to its `architectures`; a
            verified new draft is written to src/arch/families/NAME.json. A draft that fails
            verification goes to tools/oracle/drafts/NAME.json with the differences.
Each run appends a row to tools/oracle/families.tsv (name, architecture, status, family, seconds, note).

Environment: CKPTPILOT (default /work/target-fam/debug/ckptpilot), ORACLE, WORK (default /tmp/fam-oracle).
"""
import argparse
import copy
import glob
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
ORACLE = os.environ.get("ORACLE", os.path.join(ROOT, "..", "shared", "tools", "vllm-oracle", "oracle.py"))
CKPTPILOT = os.environ.get("CKPTPILOT", "/work/target-fam/debug/ckptpilot")
WORK = os.environ.get("WORK", "/tmp/fam-oracle")
FIX = os.path.join(ROOT, "fixtures", "families")
REC = os.path.join(ROOT, "fixtures", "oracle", "families")
FAMS = os.path.join(ROOT, "src", "arch", "families")
DRAFTS = os.path.join(HERE, "drafts")
TABLE = os.path.join(HERE, "families.tsv")

sys.path.insert(0, HERE)
from export_params import nbytes, st_dtype, dump  # noqa: E402  (the params accounting the plan tests use)

# ---------------------------------------------------------------------------------------------- 1. write

# Small sizes, by the names transformers configs use (attribute_map aliases are resolved per class).
TINY = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "num_hidden_layers": 2,
    "vocab_size": 256,
    "max_position_embeddings": 256,
    "moe_intermediate_size": 64,
    "shared_expert_intermediate_size": 64,
    "num_experts": 4,
    "num_local_experts": 4,
    "n_routed_experts": 4,
    "moe_num_experts": 4,
    "num_experts_per_tok": 2,
    "n_group": 1,
    "topk_group": 1,
    "kv_lora_rank": 32,
    "q_lora_rank": 48,
    "qk_rope_head_dim": 16,
    "qk_nope_head_dim": 32,
    "v_head_dim": 32,
    "sliding_window": 128,
    "first_k_dense_replace": 1,
    "num_nextn_predict_layers": 1,
    "linear_num_value_heads": 4,
    "linear_num_key_heads": 2,
    "linear_key_head_dim": 32,
    "linear_value_head_dim": 32,
    "rotary_dim": 16,
    # Gemma 3n / 4's per-layer input embeddings ([vocab_per_layer, layers x hidden_per_layer]: 262144 x 8960
    # in the published configs)
    "vocab_size_per_layer_input": 256,
    "hidden_size_per_layer_input": 16,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


VISION_TINY = {
    "hidden_size": 80,
    "intermediate_size": 112,
    "num_attention_heads": 4,
    "num_heads": 4,
    "num_hidden_layers": 3,
    "depth": 3,
    "out_hidden_size": 64,
    "vision_output_dim": 48,
    "projector_input_dim": 48,
    "projector_output_dim": 48,
    "head_dim": 20,
    "image_size": 56,
    # 56 = 4 x 14: towers whose default patch does not divide 56 (CLIP's 32, SigLIP's 16) fail vLLM's
    # `image_size % patch_size == 0` assertion at build (clip.py CLIPVisionEmbeddings)
    "patch_size": 14,
    "num_position_embeddings": 16,
}


# Audio towers (Whisper-style encoders: Qwen2-Audio, Voxtral, Whisper itself), sizes distinct from the
# text and vision tables so each dimension names one config key.
AUDIO_TINY = {
    "d_model": 72,
    "encoder_layers": 2,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 88,
    "max_source_positions": 60,
}


# The second size set: a checkpoint written with these (never run through vLLM) tells which config
# expression each dimension is, where the first set's values coincide (kv heads x head_dim = hidden, ...).
ALT = {"hidden_size": 96, "intermediate_size": 160, "num_attention_heads": 6, "num_key_value_heads": 3, "head_dim": 16,
       "vocab_size": 320, "moe_intermediate_size": 48, "shared_expert_intermediate_size": 80, "kv_lora_rank": 24,
       "q_lora_rank": 40, "qk_rope_head_dim": 8, "qk_nope_head_dim": 24, "v_head_dim": 20, "rotary_dim": 8,
       "linear_num_value_heads": 6, "linear_num_key_heads": 3, "linear_key_head_dim": 16, "linear_value_head_dim": 24}
AUDIO_ALT = {"d_model": 40, "encoder_attention_heads": 2, "encoder_ffn_dim": 56, "max_source_positions": 44}
VISION_ALT = {"image_size": 42, "hidden_size": 56, "intermediate_size": 72, "num_attention_heads": 2, "num_heads": 2, "head_dim": 28,
              "out_hidden_size": 96, "vision_output_dim": 40, "projector_input_dim": 40, "projector_output_dim": 40}


def _has(obj, key):
    """hasattr, where a per-layer attribute (transformers' heterogeneous configs, Gemma 4: reading the global
    `head_dim` raises AmbiguousGlobalPerLayerAttributeError) counts as present."""
    try:
        return hasattr(obj, key)
    except Exception as e:
        return "PerLayer" in type(e).__name__


def tiny_config(args, alt=False):
    """A transformers config object with small sizes (and the dict written to config.json)."""
    import transformers

    if args.config:
        raw = json.load(open(args.config))
        model_type = raw["model_type"]
        base = raw
    else:
        model_type = args.model_type
        base = {}
    cls = transformers.AutoConfig.for_model(model_type).__class__
    default = cls()
    amap = getattr(cls, "attribute_map", {}) or {}
    kw = {}
    layers_before = base.get("num_hidden_layers", getattr(default, "num_hidden_layers", None))
    tiny = dict(TINY, **ALT) if alt else TINY
    for k, v in tiny.items():
        own = amap.get(k, k)
        if isinstance(getattr(cls, own, None), property):  # derived (FalconConfig.head_dim): not settable
            continue
        present = own in base or _has(default, own) or k in base
        if present:
            kw[own] = v
    if args.config:
        merged = dict(base)
        merged.update(kw)
        # Lists with one entry per layer follow the new layer count.
        n = kw.get(amap.get("num_hidden_layers", "num_hidden_layers"), 2)
        for k, v in list(merged.items()):
            if isinstance(v, list) and layers_before and len(v) == layers_before and k != "architectures":
                merged[k] = v[:n]
        for drop in ("quantization_config", "auto_map", "_name_or_path", "transformers_version"):
            merged.pop(drop, None)
        kw = merged
    # Composite (multimodal) configs: the text config gets TINY, towers VISION_TINY (sizes distinct
    # from the text model's, so each dimension names one config key).
    for sub, sub_cls in (getattr(default, "sub_configs", None) or {}).items():
        sd = getattr(default, sub, None)
        if sd is None:
            continue
        sub_amap = getattr(type(sd), "attribute_map", {}) or {}
        table = tiny if sub == "text_config" else dict(VISION_TINY, **(VISION_ALT if alt else {})) if "vision" in sub else \
            dict(AUDIO_TINY, **(AUDIO_ALT if alt else {})) if "audio" in sub else None
        if table is None:
            continue
        skw = dict(base.get(sub) or {}) if args.config else {}
        if not args.config:
            # The composite's own sub-config defaults that are flags, not sizes (PaliGemma's
            # `vision_use_head: False`): passing a sub-config dict replaces the composite's defaults
            # with the sub-config class's own, which would add a tower the published checkpoints lack.
            try:
                own = type(sd)()
                for k, v in sd.to_dict().items():
                    if isinstance(v, (bool, str)) and k not in ("model_type", "dtype", "torch_dtype") \
                            and getattr(own, k, None) != v:
                        skw[k] = v
            except Exception:
                pass
        for k, v in table.items():
            own = sub_amap.get(k, k)
            if own in skw or _has(sd, own):
                skw[own] = v
        for k, v in list(skw.items()):
            if isinstance(v, list) and k.endswith("_indexes"):
                skw[k] = [i for i in range(len(v[:1]))]
        if "model_type" not in skw and getattr(sd, "model_type", None):
            skw["model_type"] = sd.model_type
        kw[sub] = skw
    for k, v in (args.set or {}).items():
        # "@KEY" (or "@sub.KEY"): the value this tiny config already has for KEY, else the size table's
        # (so both size sets keep a relation the published configs have, LFM2's block_dim == hidden_size)
        if isinstance(v, str) and v.startswith("@"):
            ref, cur = v[1:], kw
            for seg in ref.split("."):
                cur = cur.get(seg) if isinstance(cur, dict) else None
            v = cur if cur is not None else tiny[ref.split(".")[-1]]
        if "." in k:
            a, b = k.split(".", 1)
            kw.setdefault(a, {})[b] = v
        else:
            kw[amap.get(k, k)] = v
    kw.pop("model_type", None)
    cfg = cls(**kw)
    return cfg


def write_checkpoint(args, out, alt=False):
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = tiny_config(args, alt)
    cfg.architectures = [args.arch]
    hf_class = args.hf_class or args.arch
    cls = getattr(transformers, hf_class, None)
    try:
        torch.set_default_dtype(torch.bfloat16)
        if cls is not None:
            model = cls(cfg)
        else:
            model = transformers.AutoModelForCausalLM.from_config(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model = model.to(torch.bfloat16)
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    os.makedirs(out, exist_ok=True)
    for f in glob.glob(os.path.join(out, "*")):
        os.remove(f)
    model.save_pretrained(out, max_shard_size=f"{max(1, total // 2 // 1000 + 1)}KB")
    for f in os.listdir(out):
        if f not in ("config.json",) and not f.endswith(".safetensors") and not f.endswith(".index.json"):
            os.remove(os.path.join(out, f))
    c = json.load(open(os.path.join(out, "config.json")))
    c["architectures"] = [args.arch]
    c.setdefault("torch_dtype", "bfloat16")
    c.pop("transformers_version", None)
    json.dump(c, open(os.path.join(out, "config.json"), "w"), indent=2, sort_keys=True)
    if alt:
        return c
    if args.post_write:
        args.post_write(out)
    shards = [f for f in os.listdir(out) if f.endswith(".safetensors")]
    if len(shards) < 2:
        raise SystemExit(f"{out}: {len(shards)} shard(s); want >= 2")
    return c


# --------------------------------------------------------------------------------------------- 2. oracle


def headers(d):
    """name -> shape of every tensor in the safetensors files of `d`."""
    out = {}
    for f in glob.glob(os.path.join(d, "*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            h = json.loads(fh.read(n))
        out.update({k: v["shape"] for k, v in h.items() if k != "__metadata__"})
    return out


def shape_check(alt_dir, rules_file):
    """remap-shape findings of the rules on the second-size checkpoint (its shapes are the truth)."""
    if not alt_dir:
        return []
    r = ckptpilot((["--rules", rules_file] if rules_file else []) + ["remap", alt_dir, "--json"])
    try:
        v = json.loads(r.stdout)
    except ValueError:
        return [f"second size set: remap gave no JSON: {r.stderr[-200:]}"]
    return [f"second size set: {f['message'][:200]}" for f in v["findings"] if f.get("code") == "remap-shape"]


def run_oracle(name, fixture, tp, hf_overrides=None, reuse=False):
    os.makedirs(WORK, exist_ok=True)
    res = os.path.join(WORK, f"{name}.tp{tp}.json")
    if reuse and os.path.exists(rank_files(res, tp)[0]):
        return res
    for f in glob.glob(os.path.join(WORK, f"{name}.tp{tp}*.json")):
        os.remove(f)
    cmd = ["nice", "-n", "10", sys.executable, ORACLE, fixture, "--tp", str(tp), "--max-model-len", "256",
           "--force-cpu-kernels", "--timeout", "420", "--out", res]
    if hf_overrides:
        cmd += ["--hf-overrides", json.dumps(hf_overrides)]
    with open(os.path.join(WORK, f"{name}.tp{tp}.log"), "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    return res


def rank_files(result, tp):
    if tp == 1:
        return [result]
    root, ext = os.path.splitext(result)
    return [f"{root}__rank{r}{ext}" for r in range(tp)]


def multi_load_trace(rows, params):
    """checkpoint name -> [param, shard id, expert id]. A fused expert tensor the loader passes on in
    several loads -> [param, its shard ids in the order first loaded (a list when several), None]: None
    when each load carries every expert (the loaded tensor has the parameter's expert dimension:
    Llama 4) or the loads cover experts 0..n-1 exactly (one per expert and shard: GraniteMoe), else the
    expert ids as a list. A tensor loaded once keeps its one load's ids."""
    loads = {}
    for t in rows:
        loads.setdefault(t["ckpt_name"], []).append(t)

    def all_experts(t):
        p = (params or {}).get(t["param"]) or {}
        shape = p.get("shape") or []
        return t["expert_id"] is not None and len(shape) >= 3 and len(t.get("loaded_shape") or []) == len(shape)

    trace = {}
    for ck, ts in loads.items():
        first = ts[0]
        whole = all(all_experts(t) for t in ts)
        if (len(ts) == 1 and not whole) or any(t["param"] != first["param"] for t in ts):
            trace[ck] = [first["param"], first["shard_id"], first["expert_id"]]
            continue
        shards = []
        for t in ts:
            if t["shard_id"] not in shards:
                shards.append(t["shard_id"])
        experts = sorted({t["expert_id"] for t in ts if t["expert_id"] is not None})
        every = whole or (experts == list(range(len(experts))) and len(ts) == len(shards) * max(len(experts), 1))
        trace[ck] = [first["param"], shards[0] if len(shards) == 1 else shards, None if every else experts]
    return trace


def compact(result, tp, arch):
    """One record: the trace (rank 0) plus every rank's parameters."""
    runs = []
    for r, p in enumerate(rank_files(result, tp)):
        if os.path.exists(p):
            runs.append(json.load(open(p)))
        else:
            runs.append({"rank": r, "errors": [{"phase": "oracle", "type": "Missing", "message": f"no result {os.path.basename(p)}"}]})
    r0 = runs[0]
    build_errors, load_errors = [], []
    for o in runs:
        for e in o.get("errors") or []:
            if e["phase"] in ("config", "distributed", "build", "oracle"):
                s = f"{e['type']}: {e['message'][:300]}"
                if s not in build_errors:
                    build_errors.append(s)
            elif e["phase"] == "load_weights":
                s = f"{e['type']}: {e['message'][:160]}"
                if s not in load_errors:
                    load_errors.append(s)
    trace = multi_load_trace(r0.get("trace") or [], r0.get("params"))
    aliases = r0.get("param_aliases") or {}
    summ = r0.get("summary") or {}
    built = all((o.get("stages") or {}).get("build") for o in runs)
    ranks = []
    if built:
        for o in sorted(runs, key=lambda o: o["rank"]):
            params = {n: [p["shape"], p["dtype"]] for n, p in sorted(o["params"].items())}
            by_dtype = {}
            for shape, dtype in params.values():
                by_dtype[dtype] = by_dtype.get(dtype, 0) + nbytes(shape, dtype)
            ranks.append({
                "rank": o["rank"],
                "bytes": sum(by_dtype.values()),
                "bytes_by_dtype": dict(sorted(by_dtype.items())),
                "buffer_bytes": sum(nbytes(b["shape"], b["dtype"]) for b in (o.get("buffers") or {}).values()),
                "params": params,
            })
    loaders = {n: p.get("weight_loader") for n, p in (r0.get("params") or {}).items()}
    ckpt = {n: [t["shape"], t["dtype"]] for n, t in (r0.get("ckpt_tensors") or {}).items()}
    return {
        "vllm_version": r0.get("vllm_version"),
        "tp": tp,
        "architecture": arch,
        "model_class": r0.get("model_class"),
        "dtype": r0.get("dtype"),
        "workarounds_triggered": r0.get("workarounds_triggered") or [],
        "stages": r0.get("stages"),
        "build_errors": build_errors,
        "load_errors": load_errors,
        "trace": dict(sorted(trace.items())),
        "not_loaded": sorted(set(summ.get("ckpt_not_traced", [])) | set(summ.get("ckpt_not_yielded", []))),
        "params": sorted({aliases.get(k, k) for k in (r0.get("params") or {})}),
        "param_aliases": aliases,
        "params_not_loaded": sorted(set(summ.get("params_not_traced") or []) - set(aliases)),
        "max_rank_bytes": max((r["bytes"] for r in ranks), default=None),
        "_loaders": loaders,
        "_ckpt": ckpt,
        "ranks": ranks,
    }


def save_record(rec, path):
    out = {k: v for k, v in rec.items() if not k.startswith("_")}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(dump(out))


# ---------------------------------------------------------------------------------------------- 3. draft

STD_SKIPS = [
    {"substr": "rotary_emb.inv_freq", "reason": "rotary buffer, recomputed (ROTARY_EMBEDS_UNUSED_WEIGHTS)"},
    {"substr": "rotary_emb.cos_cached", "reason": "rotary buffer, recomputed"},
    {"substr": "rotary_emb.sin_cached", "reason": "rotary buffer, recomputed"},
]

LOADER_PARTITION = [
    ("VocabParallelEmbedding", "vocab"),
    ("ParallelLMHead", "vocab"),
    ("QKVParallelLinear", "qkv"),
    ("MergedColumnParallelLinear", "merged"),
    ("RowParallelLinear", "row"),
    ("ReplicatedLinear", "replicated"),
    ("ColumnParallelLinear", "column"),
    ("FusedMoE", "expert"),
]


def padded_vocab(n):
    return (n + 63) // 64 * 64


def config_view(cfg):
    """Integer config values by the names rule expressions read (text_config first), plus derived."""
    flat = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, bool):
                continue
            if isinstance(v, int):
                flat[prefix + k] = v
            elif isinstance(v, dict) and not prefix and k in ("text_config",):
                pass

    walk(cfg)
    for sub in ("vision_config", "audio_config"):
        if isinstance(cfg.get(sub), dict):
            for k, v in cfg[sub].items():
                if isinstance(v, int) and not isinstance(v, bool):
                    flat[f"{sub}.{k}"] = v
                elif isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                    for i, x in enumerate(v):  # [h, w]: read by index (vision_config.image_size.0)
                        flat[f"{sub}.{k}.{i}"] = x
    if isinstance(cfg.get("text_config"), dict):
        for k, v in cfg["text_config"].items():
            if isinstance(v, int) and not isinstance(v, bool):
                flat[k] = v
    alias = {"hidden_size": ["n_embd", "d_model"], "num_attention_heads": ["n_head", "n_heads"],
             "num_hidden_layers": ["n_layer", "num_layers", "n_layers"], "intermediate_size": ["ffn_dim", "n_inner"],
             # vLLM's CONFIG_FIELD_ALIASES["total_num_kv_heads"] order (src/checkpoint/config.rs KV_HEAD_KEYS)
             "num_key_value_heads": ["n_head_kv", "num_kv_heads", "multi_query_group_num", "num_attention_groups", "n_kv_heads"],
             "num_experts": ["n_routed_experts", "num_experts", "num_local_experts", "moe_num_experts", "n_experts"]}
    if cfg.get("model_type") in ("falcon", "RefinedWeb", "RefinedWebModel") and cfg.get("multi_query") \
            and not cfg.get("new_decoder_architecture"):
        flat["num_key_value_heads"] = 1  # FalconModelArchConfigConvertor: multi-query, one KV head
    for k, al in alias.items():
        if k not in flat:
            for a in al:
                if a in flat:
                    flat[k] = flat[a]
                    break
    if "num_key_value_heads" not in flat and "num_attention_heads" in flat:
        flat["num_key_value_heads"] = flat["num_attention_heads"]
    if "head_dim" not in flat and "hidden_size" in flat and flat.get("num_attention_heads"):
        flat["head_dim"] = flat["hidden_size"] // flat["num_attention_heads"]
    if "moe_intermediate_size" not in flat and "num_experts" in flat and "intermediate_size" in flat:
        flat["moe_intermediate_size"] = flat["intermediate_size"]
    return flat


PREFERRED = [
    "hidden_size", "vocab_size", "intermediate_size", "moe_intermediate_size", "kv_lora_rank", "q_lora_rank",
    "kv_lora_rank+qk_rope_head_dim", "num_attention_heads*(qk_nope_head_dim+v_head_dim)",
    "num_attention_heads*(qk_nope_head_dim+qk_rope_head_dim)", "num_attention_heads*v_head_dim", "num_attention_heads*head_dim",
    "num_key_value_heads*head_dim", "head_dim", "num_experts", "(num_attention_heads+2*num_key_value_heads)*head_dim",
    "2*intermediate_size", "moe_num_shared_experts*moe_intermediate_size", "n_shared_experts*moe_intermediate_size",
    "num_shared_experts*moe_intermediate_size", "2*moe_intermediate_size", "shared_expert_intermediate_size", "kv_lora_rank", "q_lora_rank",
    "num_attention_heads", "num_key_value_heads",
]


def eval_expr(e, view):
    try:
        return eval(re.sub(r"[A-Za-z_][A-Za-z0-9_.]*", lambda m: str(view[m.group(0)]), e).replace("/", "//"))
    except (KeyError, SyntaxError, ZeroDivisionError):
        return None


def dim_expr(value, view, prefer=(), todo=None, where="", alt=None):
    """The config expression whose value is `value` under `view` (and alt[1] under alt[0], the second
    size set, when known)."""
    if alt is not None and alt[1] is not None:
        e = _dim_expr(value, view, prefer, None, where, alt)
        if e is not None:
            return e
        if todo is not None:
            todo.append(f"{where}: dimension {value} (and {alt[1]} at the second size set) matches no config "
                        "expression for both; written as a literal")
        if value == alt[1]:
            return str(value)
    return _dim_expr(value, view, prefer, todo, where, None) or str(value)


def _dim_expr(value, view, prefer=(), todo=None, where="", alt=None):
    if value == 1 and (alt is None or alt[1] == 1):  # a unit dimension, not whichever key holds 1
        return "1"
    cands = list(prefer) + PREFERRED + sorted(k for k in view if k not in PREFERRED and "." not in k
                                              and not k.endswith("_token_id") and k not in (
                                                  "pretraining_tp", "num_hidden_layers", "num_experts_per_tok",
                                                  "first_k_dense_replace", "n_group", "topk_group"))
    if is_tower(where):
        vk = sorted(k for k in view if k.startswith("vision_config.") or k.startswith("audio_config."))
        first = ["vision_config.hidden_size", "vision_config.intermediate_size", "vision_config.out_hidden_size",
                 "audio_config.d_model", "audio_config.encoder_ffn_dim"]
        # Idefics3 / SmolVLM's connector: pixel shuffle folds scale_factor^2 patches into one
        # (vllm/model_executor/models/idefics3.py: Idefics3SimpleMLP, hidden_size * scale_factor**2)
        shuffle = ["vision_config.hidden_size*scale_factor*scale_factor"]
        # position embeddings: one per patch (CLIP adds the class token)
        npatch = "(vision_config.image_size/vision_config.patch_size)*(vision_config.image_size/vision_config.patch_size)"
        # [h, w] lists (InternVL, interns1_vit.py: (image_size[1] // patch_size[1]) * (image_size[0] // patch_size[0]))
        npatch_hw = "(vision_config.image_size.0/vision_config.patch_size.0)*(vision_config.image_size.1/vision_config.patch_size.1)"
        shuffle += [npatch, npatch + "+1", npatch_hw, npatch_hw + "+1"]
        cands = list(prefer) + first + vk + shuffle + [f"{m}*{k}" for m in (2, 3, 4) for k in first] + cands
    cands += ["num_attention_heads*(qk_nope_head_dim+v_head_dim)", "num_attention_heads*(qk_nope_head_dim+qk_rope_head_dim)",
              "kv_lora_rank+qk_rope_head_dim", "num_attention_heads*v_head_dim", "qk_nope_head_dim+qk_rope_head_dim",
              "num_attention_heads*head_dim+2*num_key_value_heads*head_dim", "2*num_key_value_heads*head_dim",
              "2*num_attention_heads*head_dim", "num_experts*moe_intermediate_size", "2*hidden_size", "4*hidden_size",
              "3*hidden_size", "hidden_size/num_attention_heads", "max_position_embeddings+2",
              "linear_num_value_heads*linear_value_head_dim", "linear_num_key_heads*linear_key_head_dim",
              "2*linear_num_key_heads*linear_key_head_dim+linear_num_value_heads*linear_value_head_dim",
              "linear_num_value_heads", "linear_conv_kernel_dim",
              # Mamba's x_proj (vllm/model_executor/layers/mamba/mamba_mixer.py, MambaMixer.__init__:
              # RowParallelLinear(intermediate_size, time_step_rank + ssm_state_size * 2))
              "time_step_rank+2*state_size"]
    for c in cands:
        if eval_expr(c, view) == value and (alt is None or eval_expr(c, alt[0]) == alt[1]):
            return c
    if alt is not None:
        return None
    if value == 1:
        return "1"
    if todo is not None:
        todo.append(f"{where}: dimension {value} matches no config expression; written as a literal")
    return str(value)


def is_tower(name):
    # mlp_AR: PaddleOCR-VL's projector (vllm/model_executor/models/paddleocr_vl.py: `self.mlp_AR = Projector(...)`)
    return any(k in name for k in ("vision", "visual", "audio", "mm_projector", "multi_modal", "patch_embed", "merger",
                                   "connector", "mlp_AR"))


LAYER_RE = re.compile(r"\.(layers|h|blocks|layer)\.(\d+)\.")


def pattern(name):
    m = LAYER_RE.search(name)
    if not m:
        return name, None
    return name[: m.start()] + f".{m.group(1)}.{{L}}." + name[m.end():], int(m.group(2))


def infer_mapper(recs):
    """Prefix renames: a checkpoint name loaded (unstacked) under another name, same tail."""
    prefix, substr = {}, {}
    t = recs[0]["trace"]
    for ck, (param, shard, expert) in t.items():
        # param None: vLLM loaded the tensor into a registered buffer, not a parameter (AutoWeightsLoader
        # loads persistent buffers too: Apertus' xIELU act_fn.beta / .eps); no rename to learn from it.
        if param is None or shard is not None or expert is not None or ck == param:
            continue
        a, b = ck.split("."), param.split(".")
        i = 0
        while i < min(len(a), len(b)) and a[-1 - i] == b[-1 - i]:
            i += 1
        ca, cb = ".".join(a[: len(a) - i]), ".".join(b[: len(b) - i])
        j = 0
        while j < min(len(a) - i, len(b) - i) and a[j] == b[j]:
            j += 1
        if j == 0:
            if not ca or not cb:  # a pure insertion / deletion: anchor it on the next common segment
                k = len(a) - i
                ca, cb = ".".join(a[: k + 1]), ".".join(b[: len(b) - i + 1])
            prefix[ca + "."] = cb + "."
        else:
            sa, sb = "." + ".".join(a[j: len(a) - i]) + ".", "." + ".".join(b[j: len(b) - i]) + "."
            if sa == ".." or sb == "..":
                # a pure insertion / deletion inside the name (vLLM's Transformers MoE backend loads the
                # router `mlp.gate.weight` into `mlp.experts.gate.weight`): anchor it on the segments
                # either side, else on the next one only
                sa, sb = "." + ".".join(a[j - 1: len(a) - i + 1]) + ".", "." + ".".join(b[j - 1: len(b) - i + 1]) + "."
                if LAYER_RE.search("x" + sa + "x") is not None:
                    sa, sb = "." + ".".join(a[j: len(a) - i + 1]) + ".", "." + ".".join(b[j: len(b) - i + 1]) + "."
            if i == 0 and sa.endswith(".") and sb.endswith("."):
                # the renamed segment ends the name (Mamba's `mixer.A_log` loaded into `mixer.A`:
                # mamba.py load_weights, `name.replace("A_log", "A")`): no dot follows it
                sa, sb = sa[:-1], sb[:-1]
            if LAYER_RE.search("x" + sa + "x") is None:
                substr[sa] = sb
    return prefix, substr


def apply_map(name, prefix, substr):
    for a, b in substr.items():
        if a in name:
            name = name.replace(a, b, 1)
    for a, b in prefix.items():
        if name.startswith(a):
            name = b + name[len(a):]
    return name


def cfg_tied(cfg):
    return bool(cfg.get("tie_word_embeddings", (cfg.get("text_config") or {}).get("tie_word_embeddings")))


def source_of(model_class):
    """`path.py :: Class.load_weights` for vLLM's recorded model class; a class built inside a function
    (`adapters.as_seq_cls_model.<locals>.ModelForSequenceClassification`) is cited by that function."""
    if ".<locals>." in model_class:
        outer, cls = model_class.split(".<locals>.", 1)
        module, fn = outer.rsplit(".", 1)
        return f"{module.replace('.', '/')}.py :: {fn} → {cls}.load_weights"
    module, cls = model_class.rsplit(".", 1) if "." in model_class else ("", model_class)
    return f"{module.replace('.', '/')}.py :: {cls}.load_weights"


def draft_family(name, arch, cfg, recs, todo, alt=None):
    """A family file from the records (TP ascending, recs[0] the smallest TP)."""
    r1 = recs[0]
    view = config_view(cfg)
    n_layers = view.get("num_hidden_layers", 0)
    prefix, substr = infer_mapper(recs)
    stacked, experts = [], {}
    exp_param = None
    notes = set()
    fused_suffix = {}
    buffers = []
    for ck, (param, shard, expert) in r1["trace"].items():
        if param is None:
            # Loaded into a registered buffer (AutoWeightsLoader's persistent buffers): the family's
            # `buffers`, matched by the name's part after the layer index (or the whole name).
            p, layer = pattern(ck)
            b = {"substr": p.split("{L}", 1)[1]} if layer is not None else {"suffix": ck}
            b["reason"] = "vLLM 0.33.0 loads it into a persistent buffer, not a parameter (oracle: traced with no parameter; AutoWeightsLoader._load_module)"
            if b not in buffers:
                buffers.append(b)
            continue
        n = apply_map(ck, prefix, substr)
        if expert is None and isinstance(shard, (str, list)) and re.search(r"\.(w13|w2)_", param) \
                and not re.search(r"experts\.\d+\.", n):
            # One tensor holding every expert, cut up by the loader (multi_load_trace): a suffix rename
            # from the last segment both names share, and a fused_experts parameter (draft_params).
            a, b = n.split("."), param.split(".")
            j = 0
            while j < min(len(a), len(b)) and a[j] == b[j]:
                j += 1
            j = max(j - 1, 0)
            fused_suffix["." + ".".join(a[j:])] = "." + ".".join(b[j:])
            continue
        if expert is not None:
            m = re.search(r"experts\.(\d+)\.([A-Za-z0-9_]+)\.", n)
            if not m:
                notes.add(f"{ck}: expert {expert} from a tensor without `experts.<E>.<proj>.` (fused experts): not inferred")
                continue
            experts[shard] = m.group(2)
            pos = n.find("experts.")
            mm = re.search(r"(w13_|w2_)", param)
            if mm:
                exp_param = param[pos: mm.start()]
            continue
        if shard is not None and n != param:
            a, b = n.split("."), param.split(".")
            if len(a) == len(b):
                diff = [i for i in range(len(a)) if a[i] != b[i]]
                if len(diff) == 1:
                    i = diff[0]
                    ent = {"param": "." + b[i], "shard": "." + a[i], "id": shard}
                    if ent not in stacked:
                        stacked.append(ent)
                    continue
            notes.add(f"{ck} -> {param} shard {shard}: stacked rename not inferred")
    # Longest shard names first (so `.q_proj` cannot shadow a longer one that contains it).
    stacked.sort(key=lambda s: -len(s["shard"]))
    # A stacked rename that holds in one part of the model only (InternVL: the language model fuses
    # q/k/v into qkv_proj, the InternViT tower loads q_proj / k_proj / v_proj as they are): `within`
    # the shortest name prefix that every stacked use shares and no unstacked use has.
    for ent in stacked:
        used, unused = [], []
        for ck, (param, shard, expert) in r1["trace"].items():
            if param is None or expert is not None:
                continue
            n = apply_map(ck, prefix, substr)
            if ent["shard"] not in n:
                continue
            (used if shard is not None and ent["param"] in param else unused).append(n)
        if not unused or not used:
            continue
        segs = [u.split(".") for u in used]
        common = []
        for parts in zip(*segs):
            if len(set(parts)) != 1:
                break
            common.append(parts[0])
        for k in range(1, len(common) + 1):
            w = ".".join(common[:k]) + "."
            if not any(u.startswith(w) for u in unused):
                ent["within"] = w
                break
        else:
            notes.add(f"stacked {ent['shard']} -> {ent['param']}: also loaded unstacked, and no name prefix tells them apart")
    fam = {
        "family": name,
        "architectures": [arch],
        "class": (r1.get("model_class") or "").rsplit(".", 1)[-1],
        "vllm_classes": {arch: ":".join((r1.get("model_class") or "").rsplit(".", 1))},
        "model_types": [cfg.get("model_type")] if cfg.get("model_type") else [],
        "vllm_source": f"{source_of(r1.get('model_class') or '')} (drafted by tools/oracle/compile_family.py from the oracle trace)",
        "verified": "",
    }
    if prefix or substr or fused_suffix:
        fam["mapper"] = {}
        if fused_suffix:
            fam["mapper"]["suffix"] = [[a, b] for a, b in sorted(fused_suffix.items(), key=lambda kv: -len(kv[0]))]
        if substr:
            fam["mapper"]["substr"] = [[a, b] for a, b in substr.items()]
        if prefix:
            # most specific first: each applies to the name the previous ones rewrote
            fam["mapper"]["prefix"] = [[a, b] for a, b in sorted(prefix.items(), key=lambda kv: -len(kv[0]))]
    # Skips: what vLLM never loaded.
    skips = list(STD_SKIPS)
    if "lm_head.weight" in recs[0]["params"] or "lm_head.weight" in recs[0]["param_aliases"]:
        skips.append({"prefix": "lm_head.", "when": "tie_word_embeddings",
                      "reason": "tied: lm_head shares the embedding (AutoWeightsLoader skip_prefixes)"})
        if not cfg_tied(cfg):
            todo.append("lm_head: untied here; the tied case (skip lm_head., no lm_head parameter) follows the other families, unchecked")
    mtp = False
    # A top-level component vLLM loads nothing of (Qwen3-Omni's talker. / code2wav.: vLLM builds the thinker
    # only) is one prefix skip; per-tensor patterns would turn its layer-indexed names into substr skips that
    # also match the model's own layers.
    loaded_tops = {t.split(".", 1)[0] for t in recs[0]["trace"]}
    dead_tops = sorted({ck.split(".", 1)[0] for ck in recs[0]["not_loaded"] if "." in ck} - loaded_tops)
    for top in dead_tops:
        skips.append({"prefix": top + ".", "reason": "vLLM 0.33.0 loads nothing under it (oracle: not traced)"})
        todo.append(f"skip {top}.: vLLM never loaded any of it; say why (a component vLLM does not build?)")
    for ck in recs[0]["not_loaded"]:
        if any(s["substr"] in ck for s in STD_SKIPS):
            continue
        if ck.split(".", 1)[0] in dead_tops:
            continue
        if ck.startswith("lm_head.") and cfg_tied(cfg):
            s = {"prefix": "lm_head.", "when": "tie_word_embeddings", "reason": "tied: lm_head shares the embedding (AutoWeightsLoader skip_prefixes)"}
        else:
            p, layer = pattern(ck)
            if layer is not None and layer >= n_layers:
                mtp = True
                continue
            if layer is not None:
                s = {"substr": p.split("{L}", 1)[1], "reason": "vLLM 0.33.0 never loads it (oracle: not traced)"}
            else:
                # remap matches skips on the name the mapper rewrote (src/remap: apply_mapper, then skip)
                s = {"prefix": apply_map(ck, prefix, substr), "reason": "vLLM 0.33.0 never loads it (oracle: not traced)"}
            todo.append(f"skip {s.get('substr') or s.get('prefix')}: vLLM never loaded it; say why (buffer? unused head?)")
        if s not in skips:
            skips.append(s)
    fam["skip"] = skips
    if buffers:
        fam["buffers"] = buffers
    if mtp:
        fam["mtp"] = {"style": "layers", "draft": "TODO: the MTP draft class"}
        todo.append("mtp: layers >= num_hidden_layers are skipped; name the draft model class")
    if stacked:
        fam["stacked"] = stacked
    if experts:
        ex = {"gate": experts.get("w1", "gate_proj"), "up": experts.get("w3", "up_proj"), "down": experts.get("w2", "down_proj"),
              "param": exp_param or "experts.routed_experts."}
        fam["experts"] = ex
    fam["unmapped"] = "keyerror"
    todo.append("unmapped: keyerror assumed (a clean checkpoint cannot tell keyerror from drop); read load_weights")
    fam["params"] = draft_params(recs, cfg, view, todo, alt)
    if alt is None:
        todo.append("no second size set was written: where config values coincide, a dimension's expression is a guess")
    qk = [p for p in fam["params"] if p.get("qk_norm")]
    if qk:
        fam["parallel"] = {"qk_norm": qk_norm_kind(recs, qk, view)}
        fam["parallel_source"] = "inferred from the q/k norm shapes across TP sizes (compile_family.py)"
    free = attention_free_source(r1.get("model_class") or "")
    if free:
        fam.setdefault("parallel", {})["attention_free"] = True
        fam["parallel_source"] = "; ".join(x for x in (fam.get("parallel_source"), free) if x)
    for n in sorted(notes):
        todo.append(n)
    fam["_todo"] = todo
    return fam


def attention_free_source(model_class):
    """Where vLLM says the model class has no attention: its class statement lists the IsAttentionFree
    interface (vllm/model_executor/models/interfaces.py: `is_attention_free = True`). '' if not."""
    import importlib.util
    mod, _, cls = model_class.rpartition(".")
    try:
        spec = importlib.util.find_spec(mod)
    except (ImportError, ValueError):
        return ""
    if not spec or not spec.origin:
        return ""
    m = re.search(r"^class " + re.escape(cls) + r"\((.*?)\):", open(spec.origin).read(), re.S | re.M)
    if not m or "IsAttentionFree" not in m.group(1):
        return ""
    rel = "vllm/" + spec.origin.split("/vllm/", 1)[1]
    return f"attention_free: {rel}: class {cls}(..., IsAttentionFree, ...) (no attention, no num_attention_heads)"


def qk_norm_kind(recs, qk, view):
    p = qk[0]
    if p["partition"] != "replicated":
        return "full-sharded"
    if p.get("shape") == ["head_dim"]:
        return "per-head"
    return "full-gather"


def dim_prefer(pat, part, shard, i, ndim):
    """Which config expression a dimension most likely is, where several have its value."""
    if part == "vocab" and i == 0:
        return ["vocab_size"]
    attn = bool(re.search(r"attn|attention", pat))
    moe = part == "expert" or "expert" in pat
    inter = ["moe_intermediate_size", "intermediate_size"] if moe else ["intermediate_size", "moe_intermediate_size"]
    if ndim >= 2 and i == ndim - 1:  # the input dimension
        if shard == "w2" or (part == "row" and not attn):
            return inter
        if part == "row" and attn:
            return ["num_attention_heads*head_dim"]
        return ["hidden_size"]
    if i == 0 or ndim == 1:
        if shard == "q":
            return ["num_attention_heads*head_dim"]
        if shard in ("k", "v"):
            return ["num_key_value_heads*head_dim"]
        if shard in ("w1", "w3", "0", "1") or part == "merged":
            return inter
        if ndim == 1 and ("q_norm" in pat or "k_norm" in pat):
            return ["head_dim"]
        if part == "row" or ndim == 1:
            return ["hidden_size"]
    return []


def draft_params(recs, cfg, view, todo, alt=None):
    r1 = recs[0]
    alt_view, alt_shapes = (config_view(alt[0]), alt[1]) if alt else (None, {})

    def av(ck, i):
        s = alt_shapes.get(ck)
        return (alt_view, s[i]) if s is not None and i < len(s) and len(s) == len(r1["_ckpt"][ck][0]) else None
    rank0 = {tp_rec["tp"]: tp_rec["ranks"][0]["params"] for tp_rec in recs if tp_rec["ranks"]}
    tps = sorted(rank0)
    t_lo = tps[0]
    # Parameters fed by each checkpoint tensor.
    feeds = {}
    for ck, (param, shard, expert) in r1["trace"].items():
        feeds.setdefault(param, []).append((ck, shard, expert))
    model_dtype = r1.get("dtype") or "bfloat16"
    # Sets of layers: MoE layers are those with expert parameters.
    vparams = r1["params"]
    moe_layers = {pattern(p)[1] for p in vparams if ("w13_" in p or "w2_" in p) and pattern(p)[1] is not None}
    layer_types = cfg.get("layer_types") or (cfg.get("text_config") or {}).get("layer_types")
    groups = {}
    for p in vparams:
        pat, layer = pattern(p)
        groups.setdefault(pat, []).append((layer, p))
    n_layers = view.get("num_hidden_layers", 0)
    out = []
    for pat, members in sorted(groups.items()):
        layers = sorted(l for l, _ in members if l is not None)
        repr_name = members[0][1]
        rule = {"name": pat}
        if layers and is_tower(pat):
            cnt = max(layers) + 1
            towers = ("audio_config.encoder_layers", "audio_config.num_hidden_layers") if "audio" in pat else \
                ("vision_config.depth", "vision_config.num_hidden_layers", "vision_config.num_layers")
            key = next((k for k in towers if view.get(k) == cnt), None)
            # LLaVA builds the tower only up to the feature layer it reads (vision_feature_layer -2: all
            # but the last; vllm/model_executor/models/llava.py: _get_num_hidden_layers)
            fl = view.get("vision_feature_layer")
            if key is None and isinstance(fl, int) and fl < 0:
                key = next((f"{k}+vision_feature_layer+1" for k in towers if view.get(k) is not None
                            and view[k] + fl + 1 == cnt), None)
            if key and layers == list(range(cnt)):
                rule["repeat"] = {"L": key}
            else:
                rule["repeat"] = {"L": str(cnt)}
                todo.append(f"{pat}: tower blocks {layers}; no vision_config count matched")
        elif layers:
            allset = list(range(n_layers))
            if layers == allset:
                rule["repeat"] = {"L": "layers"}
            elif set(layers) == moe_layers:
                rule["repeat"] = {"L": "moe_layers"}
            elif set(layers) == set(allset) - moe_layers:
                rule["repeat"] = {"L": "dense_layers"}
            elif layer_types and set(layers) == {i for i, t in enumerate(layer_types[:n_layers])
                                                 if "linear" not in t and t != "conv"}:
                rule["repeat"] = {"L": "full_attention_layers"}
            elif layer_types and set(layers) == {i for i, t in enumerate(layer_types[:n_layers]) if t == "conv"}:
                # LFM2's short-convolution blocks (vllm/model_executor/models/lfm2.py, Lfm2Model.__init__)
                rule["repeat"] = {"L": "conv_layers"}
            elif layer_types and set(layers) == {i for i, t in enumerate(layer_types[:n_layers]) if "linear" in t}:
                rule["repeat"] = {"L": "linear_attention_layers"}
            else:
                rule["repeat"] = {"L": "layers"}
                todo.append(f"{pat}: only in layers {layers}; no layer set matched")
        loader = r1["_loaders"].get(repr_name) or ""
        todo_mark = len(todo)
        part = None
        for key, pp in LOADER_PARTITION:
            if key in loader:
                part = pp
                break
        fed = feeds.get(repr_name, [])
        shards, feeder = {}, {}
        for ck, shard, expert in fed:
            key = "" if shard is None else shard if isinstance(shard, str) else json.dumps(shard, separators=(",", ":"))
            if key not in shards:
                shards[key] = r1["_ckpt"][ck][0]
                feeder[key] = ck
        lo = rank0[t_lo].get(repr_name)
        hi = rank0[tps[-1]].get(repr_name) if len(tps) > 1 else None
        if lo is None:
            todo.append(f"{repr_name}: not on rank 0 (pipeline / alias?)")
            continue
        split_dims = [i for i, (a, b) in enumerate(zip(lo[0], hi[0])) if a != b] if hi else []
        expert_ids = {e for _, _, e in fed if e is not None}
        if expert_ids or part == "expert":
            part = "expert"
            rule["experts"] = "num_experts"
        elif part == "qkv":
            part = "qkv-kv" if set(shards) & {"q", "k", "v"} else "qkv"
        elif part is None or part == "replicated":
            if not split_dims:
                part = "replicated"
            elif split_dims == [0]:
                part = "column"
                todo.append(f"{pat}: split on dim 0 by {loader or 'an unnamed loader'}; column assumed")
            else:
                part = "row"
                todo.append(f"{pat}: split on dim {split_dims} by {loader or 'an unnamed loader'}; row assumed")
        elif part == "column" and set(shards) - {""}:
            part = "merged"
        row_bias = part == "row" and len(lo[0]) == 1  # RowParallelLinear's bias: whole on every rank
        if part in ("column", "merged", "row", "qkv-kv", "qkv", "vocab") and hi and not split_dims and tps[-1] > 1 and not row_bias:
            # vLLM says parallel but every rank holds all of it (e.g. a replicated kv at TP > kv heads).
            todo.append(f"{pat}: loader {loader} but not split at TP {tps[-1]}")
            if part in ("column", "merged"):
                # MergedReplicatedLinear (DeepSeek / GLM-4.7-Flash's fused_qkv_a_proj) keeps the merged
                # loader with TP disabled: whole on every rank
                part = "replicated"
        fused = [(ck, sh) for ck, sh, e in fed if e is None and isinstance(sh, (str, list)) and re.search(r"\.(w13|w2)_", pat)
                 and not re.search(r"experts\.\d+\.", ck)]
        if fused:
            # A tensor holding every expert, cut up expert by expert by the loader (multi_load_trace).
            ck, sh = fused[0]
            shape = r1["_ckpt"][ck][0]
            rule["partition"] = "expert"
            rule["experts"] = "num_experts"
            rule["fused_experts"] = True
            rule["fused_shards"] = sh if isinstance(sh, list) else [sh]
            fused_prefer = ["2*moe_intermediate_size", "2*intermediate_size", "hidden_size", "moe_intermediate_size", "intermediate_size"]
            rule["shape"] = [dim_expr(d, view, ["num_experts"] if i == 0 else fused_prefer, todo, pat, av(ck, i))
                             for i, d in enumerate(shape)]
            del todo[todo_mark:]  # the partition guesses above do not apply to it
            inter = [i for i, e in enumerate(rule["shape"]) if i > 0 and "intermediate" in e]
            if len(inter) == 1:
                rule["tp_dim"] = inter[0]
            else:
                todo.append(f"{pat}: which dimension of the fused expert tensor {shape} TP splits: not inferred")
            if lo[1] != model_dtype:
                rule["dtype"] = lo[1]
            out.append(rule)
            continue
        rule["partition"] = part
        if not fed:
            rule["optional"] = True
            rule["shape"] = [dim_expr(d, view, todo=todo, where=pat) for d in lo[0]]
            todo.append(f"{pat}: no checkpoint tensor fills it at TP {t_lo}; optional, shape from vLLM's parameter")
        elif list(shards) == [""]:
            shape = shards[""]
            rule["shape"] = [dim_expr(d, view, dim_prefer(pat, part, "", i, len(shape)), todo, pat, av(feeder[""], i))
                             for i, d in enumerate(shape)]
            if part in ("merged", "qkv") and not (set(shards) - {""}):
                todo.append(f"{pat}: the checkpoint holds it fused ({part}); remap's TP slices for it are the loader's, not one contiguous range")
        else:
            rule["shards"] = {}
            for k, shape in sorted(shards.items()):
                rule["shards"][k] = [dim_expr(d, view, dim_prefer(pat, part, k, i, len(shape)), todo, pat, av(feeder[k], i))
                                     for i, d in enumerate(shape)]
        if lo[1] != model_dtype:
            rule["dtype"] = lo[1]
        base = pat.rsplit(".", 1)[0]
        if part == "vocab":
            rule["role"] = "head" if "lm_head" in pat else "embed"
            if "lm_head" in pat:
                rule["when"] = "!tie_word_embeddings"
        elif is_tower(pat):
            rule["role"] = "tower"
        elif "{L}" not in pat:
            rule["role"] = "head"
        leaf = base.rsplit(".", 1)[-1]
        # the decoder's q/k norms only (plan's qk-norm rule reads them against the text head_dim; a vision
        # tower's own q/k norms, GLM-OCR's visual.blocks.N.attn.k_norm, have the tower's head size)
        if leaf in ("q_norm", "q_layernorm", "query_layernorm") and "attn" in base and not is_tower(pat):
            rule["qk_norm"] = "q"
        if leaf in ("k_norm", "k_layernorm", "key_layernorm") and "attn" in base and not is_tower(pat):
            rule["qk_norm"] = "k"
        if part in ("column", "merged", "row", "qkv-kv", "qkv") and pat.endswith(".weight"):
            rule["quantized"] = True
        out.append(rule)
    if any("quantized" in r for r in out):
        todo.append("quantized: set on every linear weight (column / merged / row / qkv); no quantized checkpoint checked")
    return out


# --------------------------------------------------------------------------------------------- 4. verify


def ckptpilot(args):
    r = subprocess.run(["nice", "-n", "10", CKPTPILOT] + args, capture_output=True, text=True)
    return r


def shard_s(v):
    return None if v is None else v if isinstance(v, list) else str(v)


def verify(fixture, rules_file, recs, quick=False):
    """Differences between ckptpilot (with `rules_file`) and the records; empty when equal. `quick`:
    stop at the first record that differs (to reject a candidate family fast)."""
    diffs = []
    for rec in recs:
        if quick and diffs:
            break
        tp = rec["tp"]
        extra = ["--rules", rules_file] if rules_file else []
        plan = ckptpilot(extra + ["plan", fixture, "--tp", str(tp), "--json"])
        try:
            c = json.loads(plan.stdout)["configs"][0]
        except (ValueError, KeyError, IndexError):
            diffs.append(f"tp{tp}: plan gave no JSON: {plan.stderr[-300:]}")
            continue
        if rec["build_errors"]:
            if c.get("feasible"):
                diffs.append(f"tp{tp}: vLLM refuses ({rec['build_errors'][0][:120]}), plan calls it feasible")
            continue
        r = ckptpilot(extra + ["remap", fixture, "--tp", str(tp), "--json"])
        try:
            v = json.loads(r.stdout)
        except ValueError:
            diffs.append(f"tp{tp}: remap gave no JSON: {r.stderr[-300:]}")
            continue
        trace = rec["trace"]
        rows = v["rows"]
        if len(rows) != len(trace) + len(rec["not_loaded"]):
            diffs.append(f"tp{tp}: {len(rows)} rows, vLLM {len(trace)} loaded + {len(rec['not_loaded'])} not")
        for row in rows:
            n, act = row["checkpoint_name"], row["action"]
            t = trace.get(n)
            if t is None:
                if act not in ("skip", "unmapped"):
                    diffs.append(f"tp{tp}: vLLM never loads {n}; remap {act} -> {row.get('param')}")
                continue
            if act in ("skip", "unmapped"):
                diffs.append(f"tp{tp}: {n}: vLLM loads into {t[0]}; remap {act} ({row.get('reason') or row.get('routed_to')})")
                continue
            got = (row["param"], shard_s(row["shard_id"]), row["expert_id"])
            want = (t[0], shard_s(t[1]), t[2])
            if got != want:
                diffs.append(f"tp{tp}: {n}: remap {got}, vLLM {want}")
        ours = {p["name"] for p in v["params"]}
        theirs = set(rec["params"])
        for p in sorted(theirs - ours):
            diffs.append(f"tp{tp}: vLLM has parameter {p}; the rules do not")
        for p in sorted(ours - theirs):
            diffs.append(f"tp{tp}: the rules have parameter {p}; vLLM does not")
        errs = [f for f in v["findings"] if f.get("severity") == "error"]
        if bool(errs) != bool(rec["load_errors"]):
            diffs.append(f"tp{tp}: remap error findings {[f['message'][:100] for f in errs[:2]]}, vLLM load errors {rec['load_errors'][:2]}")
        ob = c.get("per_rank_weight_bytes")
        if ob != rec["max_rank_bytes"]:
            diffs.append(f"tp{tp}: plan per-rank bytes {ob}, vLLM {rec['max_rank_bytes']}")
    return diffs


# ----------------------------------------------------------------------------------------------- driver


# Families tried first, simplest and most common first (a dense model that also passes with a MoE
# family's rules belongs with the dense one).
FIRST = ["llama", "qwen2", "qwen3", "olmo2", "mixtral", "qwen3_moe", "deepseek_v2", "glm4_moe", "gemma3"]


def family_files():
    out = []
    for f in sorted(glob.glob(os.path.join(FAMS, "*.json"))):
        if os.path.basename(f).startswith("_") or os.path.basename(f) == "generic.json":
            continue
        out.append(f)
    rank = lambda f: (FIRST.index(os.path.basename(f)[:-5]) if os.path.basename(f)[:-5] in FIRST else len(FIRST), f)
    return sorted(out, key=rank)


def try_existing(fixture, arch, recs, alt_dir=None):
    """The first existing family that, listing `arch`, equals vLLM on every record."""
    os.makedirs(WORK, exist_ok=True)
    results = {}
    for f in family_files():
        fam = json.load(open(f))
        if arch in fam["architectures"]:
            d = verify(fixture, None, recs) + shape_check(alt_dir, None)
            return fam["family"], f, d, results
        fam["architectures"] = fam["architectures"] + [arch]
        tmp = os.path.join(WORK, f"cand-{fam['family']}.json")
        json.dump(fam, open(tmp, "w"))
        d = verify(fixture, tmp, recs, quick=True)
        if not d:
            d = shape_check(alt_dir, tmp)
        results[fam["family"]] = d
        if not d:
            return fam["family"], f, d, results
    return None, None, None, results


def add_architecture(path, arch):
    """Add `arch` to an existing family's `architectures`, touching nothing else in the file."""
    text = open(path).read()
    m = re.search(r'"architectures": \[\n((?:    "[^"]*",?\n)*)  \]', text)
    if not m:
        raise SystemExit(f"{path}: architectures list not in the expected layout")
    items = re.findall(r'"([^"]*)"', m.group(1))
    if arch in items:
        return
    items.append(arch)
    body = ",\n".join(f'    "{a}"' for a in items) + "\n"
    text = text[: m.start(1)] + body + text[m.end(1):]
    open(path, "w").write(text)


REUSED = False


def table_row(name, arch, status, family, secs, note):
    if REUSED:
        secs = None
    new = not os.path.exists(TABLE)
    rows = []
    if not new:
        old = [l.split("\t") for l in open(TABLE).read().splitlines()[1:] if l]
        if secs is None:  # a rerun on reused oracle results: keep the full compile's time
            secs = next((o[4] for o in old if o[0] == name), "?")
        rows = ["\t".join(o) for o in old if o[0] != name]
    rows.append("\t".join([name, arch, status, family or "-", str(secs), note.replace("\t", " ").replace("\n", " ")[:400]]))
    with open(TABLE, "w") as f:
        f.write("name\tarchitecture\tstatus\tfamily\tseconds\tnote\n")
        f.write("\n".join(sorted(rows)) + "\n")


def vllm_registry():
    """Architectures vLLM 0.33.0 registers, and those it lists as previously supported."""
    import importlib.util
    spec = importlib.util.find_spec("vllm")
    if spec is None:
        return None
    src = open(os.path.join(os.path.dirname(spec.origin), "model_executor", "models", "registry.py")).read()
    prev_block = src[src.find("_PREVIOUSLY_SUPPORTED_MODELS"):]
    prev_block = prev_block[: prev_block.find("}")]
    previously = dict(re.findall(r'"([A-Za-z0-9_]+)": "([0-9.]+)"', prev_block))
    registered = set(re.findall(r'^\s+"([A-Za-z0-9_]+)": \(', src, re.M))
    return {"registered": registered, "previously": previously}


def compile_one(args):
    t0 = time.time()
    name, arch = args.name, args.arch
    global REUSED
    REUSED = args.no_write
    fixture = os.path.join(FIX, name)
    note = ""
    reg = vllm_registry()
    if reg and arch not in reg["registered"] and not arch.endswith("ForSequenceClassification"):
        removed = reg["previously"].get(arch)
        msg = (f"vLLM 0.33.0 does not register it (last supported in vLLM {removed})" if removed
               else "vLLM 0.33.0 does not register it (vllm/model_executor/models/registry.py)")
        print(f"[{name}] {msg}")
        table_row(name, arch, "failed", None, round(time.time() - t0), msg)
        return "failed"
    if not args.no_write and not args.model_type and not args.config:
        msg = ("transformers 5 has no class for it (a remote-code model): no tiny checkpoint can be written, and "
               "vLLM reads its config only with trust_remote_code, which the oracle does not use")
        print(f"[{name}] {msg}")
        table_row(name, arch, "failed", None, round(time.time() - t0), msg)
        return "failed"
    if not args.no_write:
        try:
            cfg = write_checkpoint(args, fixture)
        except Exception as e:  # transformers cannot build it
            msg = f"transformers cannot build it: {type(e).__name__}: {str(e)[:200]}"
            print(f"[{name}] {msg}")
            table_row(name, arch, "failed", None, round(time.time() - t0), msg)
            import shutil
            shutil.rmtree(fixture, ignore_errors=True)
            return "failed"
    cfg = json.load(open(os.path.join(fixture, "config.json")))
    recs = []
    for tp in args.tps:
        res = run_oracle(name, fixture, tp, args.hf_overrides, args.no_write)
        rec = compact(res, tp, arch)
        recs.append(rec)
        print(f"[{name}] tp{tp}: stages={rec['stages']} trace={len(rec['trace'])} not_loaded={len(rec['not_loaded'])} "
              f"build_errors={rec['build_errors'][:1]} load_errors={rec['load_errors'][:2]}", flush=True)
    # Records are committed only for verified architectures (tests/families.rs replays every one);
    # the others stay in WORK with their fixture, for a person to rerun with --no-write.
    for f in glob.glob(os.path.join(REC, f"{name}.tp*.json")):
        os.remove(f)

    def keep_records():
        stale = os.path.join(DRAFTS, f"{name}.json")
        if os.path.exists(stale):
            os.remove(stale)
        for rec in recs:
            save_record(rec, os.path.join(REC, f"{name}.tp{rec['tp']}.json"))

    def park():
        import shutil
        dst = os.path.join(WORK, "unverified", name)
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.move(fixture, dst)
        for rec in recs:
            save_record(rec, os.path.join(WORK, "unverified", f"{name}.tp{rec['tp']}.json"))

    built = [r for r in recs if not r["build_errors"]]
    if not built:
        msg = f"vLLM does not build it: {recs[0]['build_errors'][0][:300]}"
        table_row(name, arch, "failed", None, round(time.time() - t0), msg)
        park()
        return "failed"
    if built[0]["load_errors"]:
        note = f"vLLM load errors: {built[0]['load_errors'][:2]}; "
    # The second size set (transformers only, no oracle): which config key each dimension is.
    alt_dir, alt = None, None
    try:
        alt_dir = os.path.join(WORK, "alt", name)
        alt_cfg = write_checkpoint(args, alt_dir, alt=True)
        alt = (alt_cfg, headers(alt_dir))
    except Exception as e:
        alt_dir = None
        note += f"no second size set ({type(e).__name__}: {str(e)[:80]}); "
    # 3. an existing family?
    fam_name, fam_path, diffs, tried = try_existing(fixture, arch, recs, alt_dir)
    if fam_name is not None and not diffs:
        if args.apply:
            add_architecture(fam_path, arch)
        keep_records()
        msg = note + f"rules of existing family `{fam_name}` equal vLLM at TP {','.join(map(str, args.tps))}" + \
            ("" if args.apply else " (not applied)")
        print(f"[{name}] verified: {msg}")
        table_row(name, arch, "verified", fam_name, round(time.time() - t0), msg)
        return "verified"
    closest = min(tried.items(), key=lambda kv: len(kv[1])) if tried else (None, [])
    # 3b. a new family
    todo = []
    fam = draft_family(name.replace("-", "_").replace(".", "_"), arch, cfg, [r for r in recs if r["ranks"]], todo, alt)
    os.makedirs(WORK, exist_ok=True)
    tmp = os.path.join(WORK, f"draft-{name}.json")
    json.dump(fam, open(tmp, "w"), indent=2)
    d = verify(fixture, tmp, recs) + shape_check(alt_dir, tmp)
    if not d:
        fam["verified"] = (f"vllm-oracle, vLLM 0.33.0 on the CPU, TP {', '.join(map(str, args.tps))}: fixtures/families/{name}, "
                           "every trace row equal to the remap, the parameter set and plan's per-rank bytes equal "
                           "(drafted and checked by tools/oracle/compile_family.py; tests/families.rs replays it)")
        if args.apply:
            with open(os.path.join(FAMS, f"{fam['family']}.json"), "w") as f:
                json.dump(fam, f, indent=2)
                f.write("\n")
        keep_records()
        msg = note + f"new family {fam['family']}.json; {len(todo)} _todo notes for a person"
        print(f"[{name}] verified (new family): {msg}")
        table_row(name, arch, "verified", fam["family"], round(time.time() - t0), msg)
        return "verified-new"
    os.makedirs(DRAFTS, exist_ok=True)
    fam["_todo"] = fam.get("_todo", []) + ["VERIFICATION FAILED: " + x for x in d[:40]]
    with open(os.path.join(DRAFTS, f"{name}.json"), "w") as f:
        json.dump(fam, f, indent=2)
        f.write("\n")
    msg = note + f"draft differs from vLLM ({len(d)}): {d[0][:200]}; closest existing family {closest[0]} ({len(closest[1])} differences)"
    print(f"[{name}] drafted-needs-person: {msg}")
    for x in d[:15]:
        print("   ", x)
    table_row(name, arch, "drafted-needs-person", closest[0], round(time.time() - t0), msg)
    park()
    return "drafted"


def _json_or_text(v):
    try:
        return json.loads(v)
    except ValueError:
        return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", nargs="?")
    ap.add_argument("--arch")
    ap.add_argument("--model-type")
    ap.add_argument("--config", help="a real config.json to shrink")
    ap.add_argument("--hf-class", help="the transformers class that writes it (default: --arch)")
    ap.add_argument("--set", action="append", default=[], help="KEY=JSON config override after shrinking")
    ap.add_argument("--tps", default="1,2")
    ap.add_argument("--apply", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="reuse fixtures/families/NAME and the oracle results in WORK")
    ap.add_argument("--spec", action="append", default=[])
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--skip", action="append", default=[], help="with --all: names to leave out")
    a = ap.parse_args()
    jobs = []
    if a.all:
        # One process per architecture, so edits to this script and to family_specs.py between
        # architectures take effect; the table says what is done.
        import importlib
        while True:
            import family_specs
            importlib.reload(family_specs)
            done = set()
            if os.path.exists(TABLE):
                done = {l.split("\t")[0] for l in open(TABLE).read().splitlines()[1:] if l}
            todo = [s["name"] for s in family_specs.SPECS if s["name"] not in done and s["name"] not in a.skip]
            if not todo:
                return
            cmd = [sys.executable, os.path.abspath(__file__), "--spec", todo[0], "--tps", a.tps] + (["--apply"] if a.apply else [])
            r = subprocess.run(cmd)
            if r.returncode != 0:
                table_row(todo[0], next(s["arch"] for s in family_specs.SPECS if s["name"] == todo[0]), "failed", None, 0,
                          f"the compiler itself failed (exit {r.returncode}); see its output")
    if a.spec:
        from family_specs import SPECS
        for s in SPECS:
            if s["name"] in a.spec:
                jobs.append(s)
    else:
        jobs.append({"name": a.name, "arch": a.arch, "model_type": a.model_type, "config": a.config,
                     "hf_class": a.hf_class, "set": dict(kv.split("=", 1) for kv in a.set)})
    for s in jobs:
        ns = argparse.Namespace(
            name=s["name"], arch=s["arch"], model_type=s.get("model_type"), config=s.get("config"),
            hf_class=s.get("hf_class"),
            set={k: (_json_or_text(v) if isinstance(v, str) else v) for k, v in (s.get("set") or {}).items()},
            tps=[int(x) for x in str(s.get("tps") or a.tps).split(",")], apply=a.apply, no_write=a.no_write,
            hf_overrides=s.get("hf_overrides"), post_write=s.get("post_write"))
        if ns.config and not os.path.isabs(ns.config):
            ns.config = os.path.join(ROOT, ns.config)
        compile_one(ns)


if __name__ == "__main__":
    main()
