#!/usr/bin/env python3
"""Compact the per-rank parameters vLLM 0.33.0 allocated for one (fixture, TP) into the reference the
plan tests read:

    python3 tools/oracle/export_params.py RESULT_JSON TP OUT_JSON

RESULT_JSON is the `--out` given to the vllm-oracle (../shared/tools/vllm-oracle/oracle.py); for TP > 1
the oracle wrote RESULT__rank<R>.json, one per rank, and all of them are read. Written per fixture by
tools/oracle/record_params.sh (oracle flags: --tp N --max-model-len 256 --force-cpu-kernels).

Output (`fixtures/oracle/params/NAME.tpN.json`):
  vllm_version, tp, model_class, dtype, quantization, engine_args, workarounds_triggered, stages,
  build_errors    every config / build error (any rank), "Type: message"; a TP vLLM refuses has no ranks
  load_errors     distinct load_weights errors (any rank), shortened
  param_aliases   tied parameters (alias -> canonical); aliases are not allocated twice and not counted
  excluded_ckpt_tensors  checkpoint tensors vLLM's load_weights never handed to a parameter (rank 0):
                  MTP / next-token layers vLLM only builds for speculative decoding, rotary caches, ...
                  with `excluded_ckpt_bytes` (their bytes as stored)
  ranks           [{rank, params {name: [shape, dtype]}, bytes, bytes_by_dtype, buffer_bytes}]
                  `bytes` = sum over model.named_parameters() (tied ones once) of numel x dtype size,
                  the parameters exactly as allocated on that rank (padded vocab, fp32 ones included);
                  buffers (rotary cos/sin caches, ...) are not parameters and are counted apart
  max_rank_bytes  the most loaded rank's `bytes` (null when the model was not built)
  ranks_differ    true when ranks allocate different bytes
"""
import json
import os
import sys

DTYPE_BYTES = {
    "float64": 8, "double": 8, "int64": 8, "uint64": 8, "long": 8, "complex64": 8,
    "float32": 4, "float": 4, "int32": 4, "uint32": 4, "int": 4,
    "bfloat16": 2, "float16": 2, "half": 2, "int16": 2, "uint16": 2, "short": 2,
    "float8_e4m3fn": 1, "float8_e4m3fnuz": 1, "float8_e5m2": 1, "float8_e5m2fnuz": 1, "float8_e8m0fnu": 1,
    "int8": 1, "uint8": 1, "bool": 1,
}


def nbytes(shape, dtype):
    n = 1
    for d in shape:
        n *= int(d)
    if dtype not in DTYPE_BYTES:
        raise SystemExit(f"unknown dtype {dtype!r}: add it to DTYPE_BYTES")
    return n * DTYPE_BYTES[dtype]


def rank_files(result, tp):
    if tp == 1:
        return [result]
    root, ext = os.path.splitext(result)
    return [f"{root}__rank{r}{ext or '.json'}" for r in range(tp)]


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    result, tp, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    runs = []
    for r, p in enumerate(rank_files(result, tp)):
        if os.path.exists(p):
            runs.append(json.load(open(p)))
        else:
            runs.append({"rank": r, "errors": [{"phase": "oracle", "type": "Missing", "message": f"no result file {os.path.basename(p)}"}]})
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
    ckpt = r0.get("ckpt_tensors") or {}
    summ = r0.get("summary") or {}
    excluded = sorted(set(summ.get("ckpt_not_traced", [])) | set(summ.get("ckpt_not_yielded", [])))
    out = {
        "vllm_version": r0.get("vllm_version"),
        "tp": tp,
        "model_class": r0.get("model_class"),
        "dtype": r0.get("dtype"),
        "quantization": r0.get("quantization"),
        "engine_args": r0.get("engine_args"),
        "workarounds_triggered": r0.get("workarounds_triggered") or [],
        "stages": r0.get("stages"),
        "build_errors": build_errors,
        "load_errors": load_errors,
        "param_aliases": r0.get("param_aliases") or {},
        "excluded_ckpt_tensors": excluded,
        "excluded_ckpt_bytes": sum(nbytes(ckpt[n]["shape"], st_dtype(ckpt[n]["dtype"])) for n in excluded if n in ckpt),
        "max_rank_bytes": max((r["bytes"] for r in ranks), default=None),
        "ranks_differ": len({r["bytes"] for r in ranks}) > 1,
        "ranks": ranks,
    }
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    with open(dst, "w") as f:
        f.write(dump(out))


def st_dtype(d):
    """safetensors header dtype -> torch name."""
    return {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64", "F8_E4M3": "float8_e4m3fn",
            "F8_E5M2": "float8_e5m2", "I8": "int8", "U8": "uint8", "I16": "int16", "I32": "int32", "I64": "int64",
            "BOOL": "bool", "F8_E8M0": "float8_e8m0fnu"}.get(d, d)


def dump(out):
    """Indented JSON with one line per parameter (and per list item)."""
    c = lambda v: json.dumps(v, separators=(", ", ": "))
    lines = ["{"]
    keys = list(out)
    for i, k in enumerate(keys):
        end = "," if i < len(keys) - 1 else ""
        v = out[k]
        if k == "ranks":
            lines.append(f' "ranks": [')
            for j, r in enumerate(v):
                lines.append("  {")
                for a in ("rank", "bytes", "bytes_by_dtype", "buffer_bytes"):
                    lines.append(f"   {c(a)}: {c(r[a])},")
                lines.append('   "params": {')
                items = list(r["params"].items())
                for m, (n, p) in enumerate(items):
                    lines.append(f"    {c(n)}: {c(p)}" + ("," if m < len(items) - 1 else ""))
                lines.append("   }")
                lines.append("  }" + ("," if j < len(v) - 1 else ""))
            lines.append(" ]" + end)
        elif isinstance(v, list) and v:
            lines.append(f" {c(k)}: [")
            for j, x in enumerate(v):
                lines.append(f"  {c(x)}" + ("," if j < len(v) - 1 else ""))
            lines.append(" ]" + end)
        else:
            lines.append(f" {c(k)}: {c(v)}{end}")
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
