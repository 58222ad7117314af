#!/usr/bin/env python3
"""Compact a vllm-oracle result (rank 0) into the reference the remap tests read:

    python3 tools/oracle/export_trace.py ORACLE_RANK0_JSON OUT_JSON

Keeps what vLLM 0.33.0 itself recorded: each checkpoint tensor's (param, shard_id, expert_id) from the
weight-loader trace, the tensors it never loaded, its parameter names (aliases resolved), the errors it
raised while loading, and the versions. Written by: the oracle run on the fixture at --tp 2
(see tests/remap.rs and the remap issue's note for the commands).
"""
import json
import sys

src, dst = sys.argv[1], sys.argv[2]
o = json.load(open(src))
trace = {}
for t in o.get("trace") or []:
    trace.setdefault(t["ckpt_name"], [t["param"], t["shard_id"], t["expert_id"]])
aliases = o.get("param_aliases") or {}
out = {
    "vllm_version": o.get("vllm_version"),
    "tp": o.get("tp"),
    "model_class": o.get("model_class"),
    "trace": dict(sorted(trace.items())),
    "stages": o.get("stages"),
    "build_errors": [f"{e['type']}: {e['message'][:300]}" for e in o["errors"] if e["phase"] in ("config", "build")],
    "not_loaded": sorted((o.get("summary") or {}).get("ckpt_not_traced", [])),
    "params": sorted({aliases.get(k, k) for k in (o.get("params") or {})}),
    "load_errors": sorted({f"{e['type']}: {e['message'][:120]}" for e in o["errors"] if e["phase"] == "load_weights"}),
}
json.dump(out, open(dst, "w"), indent=1)
