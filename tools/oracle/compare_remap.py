#!/usr/bin/env python3
"""Compare `ckptpilot remap --json` with the vLLM oracle's trace for one checkpoint at one TP size.

    python3 tools/oracle/compare_remap.py CKPTPILOT CHECKPOINT ORACLE_RANK0_JSON [--tp N] [--ep]

Checks, for every checkpoint tensor: vLLM's (param, shard_id, expert_id) equals ckptpilot's; tensors vLLM
never loaded are skipped or unmapped in ckptpilot; vLLM's parameter names (rank 0) equal ckptpilot's
expected parameter set. Prints the differences; exit 1 when there are any.
"""
import json
import subprocess
import sys


def norm_shard(s):
    return None if s is None or s == "" else str(s)


def main():
    ckptpilot, ckpt, oracle = sys.argv[1:4]
    tp = sys.argv[sys.argv.index("--tp") + 1] if "--tp" in sys.argv else "2"
    args = [ckptpilot, "remap", ckpt, "--tp", tp, "--json"] + (["--ep"] if "--ep" in sys.argv else [])
    ours = json.loads(subprocess.run(args, capture_output=True, text=True).stdout)
    o = json.load(open(oracle))
    trace = {}
    for t in o["trace"]:
        trace.setdefault(t["ckpt_name"], (t["param"], norm_shard(t["shard_id"]), t["expert_id"]))
    diffs = []
    rows = {r["checkpoint_name"]: r for r in ours["rows"]}
    for name, r in sorted(rows.items()):
        mine = (r["param"], norm_shard(r["shard_id"]), r["expert_id"])
        if name in trace:
            if r["action"] in ("skip", "unmapped") or mine != trace[name]:
                diffs.append(f"{name}: vLLM {trace[name]}, ckptpilot {mine} {r['action']} {r.get('reason', '')}")
        elif r["action"] not in ("skip", "unmapped"):
            diffs.append(f"{name}: vLLM never loads it, ckptpilot {mine} {r['action']}")
    aliases = o.get("param_aliases") or {}
    vparams = {aliases.get(k, k) for k in o["params"]}
    mine = {p["name"] for p in ours["params"]}
    for p in sorted(vparams - mine):
        diffs.append(f"vLLM param missing from ckptpilot's set: {p}")
    for p in sorted(mine - vparams):
        diffs.append(f"ckptpilot param not in vLLM's model: {p}")
    for d in diffs:
        print("  ", d)
    errs = [f for f in ours["findings"] if f["severity"] == "error"]
    print(f"{ckpt}: {len(rows)} tensors, {len(diffs)} differences, reverse check errors: {len(errs)}")
    for f in errs[:8]:
        print("   finding:", f["code"], f["message"][:160])
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
