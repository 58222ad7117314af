

# --- routing: the same rules, in the same order, as `ckptpilot remap` -----------------------------


def _apply_mapper(name):
    """hf_to_vllm_mapper: substr, prefix, suffix; every matching entry applies; None drops."""
    n = name
    for frm, to in MAPPER["substr"]:
        if frm in n:
            if to is None:
                return None
            n = n.replace(frm, to, 1)
    for frm, to in MAPPER["prefix"]:
        if n.startswith(frm):
            if to is None:
                return None
            n = to + n[len(frm):]
    for frm, to in MAPPER["suffix"]:
        if n.endswith(frm):
            if to is None:
                return None
            n = n[: len(n) - len(frm)] + to
    return n


def _layer_index(name):
    segs = name.split(".")
    for i, seg in enumerate(segs[:-1]):
        if seg == "layers":
            b = segs[i + 1]
            return int(b) if b.isascii() and b.isdigit() else None
    return None


def _alias(name):
    for frm, to in ALIASES:
        if frm in name:
            name = name.replace(frm, to, 1)
    return name


def route(name):
    """("skip", reason), ("buffer", vllm_buffer, reason) or ("param", vllm_param, shard_id, expert_id, stacked)."""
    n = _apply_mapper(name)
    if n is None:
        return ("skip", "dropped by hf_to_vllm_mapper")
    if MTP is not None:
        if MTP["style"] == "prefix":
            is_mtp = bool(MTP["prefix"]) and n.startswith(MTP["prefix"])
        else:
            layer = _layer_index(n)
            is_mtp = layer is not None and NUM_HIDDEN_LAYERS is not None and layer >= NUM_HIDDEN_LAYERS
        if is_mtp:
            return ("skip", f"MTP layer: the main model skips it; {MTP['draft']} loads it with --speculative-config")
    for frm, to in KV_SCALE_RENAMES:
        if n.endswith(frm):
            n = n[: len(n) - len(frm)] + to
            if n not in PARAMS:
                return ("skip", f"KV-cache scale with no `{n}` parameter: vLLM warns \"Found kv scale in the checkpoint … not loaded\" and drops it")
            return ("param", n, None, None, False)
    for s in SKIP:
        if (s.get("prefix") and n.startswith(s["prefix"])) or (s.get("substr") and s["substr"] in n) or (
            s.get("suffix") and n.endswith(s["suffix"])
        ):
            return ("skip", s["reason"])
    for b in BUFFERS:
        if (b.get("prefix") and n.startswith(b["prefix"])) or (b.get("substr") and b["substr"] in n) or (
            b.get("suffix") and n.endswith(b["suffix"])
        ):
            return ("buffer", _alias(n), b["reason"])
    if EXPERTS is not None:
        pos = n.find("experts.")
        if pos >= 0:
            rest = n[pos + len("experts."):]
            digits = 0
            while digits < len(rest) and rest[digits] in "0123456789":
                digits += 1
            if digits > 0 and rest[digits:digits + 1] == ".":
                expert = int(rest[:digits])
                after = rest[digits + 1:]
                for ckpt, shard, param in ((EXPERTS["gate"], "w1", "w13_"), (EXPERTS["down"], "w2", "w2_"),
                                           (EXPERTS["up"], "w3", "w13_")):
                    if after.startswith(ckpt + "."):
                        tail = after[len(ckpt) + 1:]
                        return ("param", _alias(n[:pos] + EXPERTS["param"] + param + tail), shard, expert, False)
    for s in STACKED:
        if s["within"] is not None and not n.startswith(s["within"]):
            continue
        if s["shard"] in n:
            return ("param", _alias(n.replace(s["shard"], s["param"], 1)), s["id"], None, True)
    return ("param", _alias(n), None, None, False)


def _unknown_prefix(name):
    segs = name.split(".")
    for i in range(1, len(segs) + 1):
        p = ".".join(segs[:i])
        if p not in _PREFIXES:
            return p
    return name


_PREFIXES = set()
for _p in PARAMS:
    _segs = _p.split(".")
    for _i in range(1, len(_segs) + 1):
        _PREFIXES.add(".".join(_segs[:_i]))


def _shard_key(shard):
    return "" if shard is None else str(shard)


def remap(names, dtypes=None, dequantize_fp8=False):
    """The remap table for `names` (checkpoint tensor names): one dict per name with
    checkpoint_name, param, shard_id, expert_id, action and reason, as `ckptpilot remap --json` rows."""
    rows = []
    for i, name in enumerate(names):
        row = {"checkpoint_name": name, "param": None, "shard_id": None, "expert_id": None, "action": "skip",
               "reason": None, "routed_to": None}
        r = route(name)
        if r[0] == "skip":
            row["reason"] = r[1]
            rows.append(row)
            continue
        if r[0] == "buffer":
            row["action"] = "buffer"
            row["routed_to"] = r[1]
            row["reason"] = r[2]
            rows.append(row)
            continue
        _, param, shard, expert, stacked = r
        spec = PARAMS.get(param)
        if spec is None:
            row["action"] = "unmapped"
            row["routed_to"] = param
            first = param.split(".")[0]
            if first not in _TOP or UNMAPPED == "no-module":
                row["reason"] = (
                    f"ValueError: There is no module or parameter named '{_unknown_prefix(param)}' in {CLASS}"
                )
            elif UNMAPPED == "keyerror":
                row["reason"] = f"KeyError: '{param}'"
            else:
                row["reason"] = f"silently skipped (`{param}` is not a parameter)"
            rows.append(row)
            continue
        if expert is not None or spec["fused_experts"]:
            row["action"] = "expert"
        elif stacked:
            row["action"] = "stack"
        else:
            row["action"] = "load"
        if dequantize_fp8 and dtypes is not None:
            leaf = name.rsplit(".", 1)[-1]
            if dtypes[i] in ("F8_E4M3", "F8_E5M2"):
                row["action"] = "dequantize-then-load"
            elif "scale" in leaf and FP8:
                row["action"] = "skip"
                row["reason"] = "consumed by dequantizing its weight (target without fp8)"
        key = _shard_key(shard)
        if key not in spec["shards"]:
            row["action"] = "unmapped"
            row["reason"] = f"{param} has no shard `{key}`"
            row["routed_to"] = param
        else:
            row["param"] = param
            row["shard_id"] = shard
            row["expert_id"] = expert
        rows.append(row)
    return rows


_TOP = {p.split(".")[0] for p in PARAMS}


def unmapped(names):
    """The checkpoint names that reach no parameter, with what vLLM would do."""
    return [(r["checkpoint_name"], r["reason"]) for r in remap(names) if r["action"] == "unmapped"]


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(remap([line.strip() for line in sys.stdin if line.strip()]), indent=1))
