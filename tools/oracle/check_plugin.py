#!/usr/bin/env python3
"""Judge one vLLM oracle run of a `ckptpilot stub --layout plugin` adapter (used by check_plugins.sh).

    check_plugin.py PLUGIN_DIR RESULT.json TP

PLUGIN_DIR is the generated plugin package (its __init__.py registers the adapter class with
`ModelRegistry.register_model(ARCH, "pkg.module:Class")`); RESULT.json is the oracle's --out
(for TP > 1 the oracle writes RESULT__rank<R>.json). Every rank must have:
  - built the plugin's class for the resolved architecture (model_class), not vLLM's own;
  - no error in config / distributed / build / load_weights / strict_check (or any other phase
    except the known CPU-wheel limit in process_weights_after_loading: a missing `_C` op);
  - every parameter filled: in the names load_weights returned AND traced without error
    (summary.params_not_in_loaded and summary.params_not_traced empty), strict_check passed.
Prints one line: STATUS<TAB>CLASS<TAB>FILLED/TOTAL<TAB>WHY, then (FAIL only) detail lines
prefixed with "  | ". Exit code 0 for PASS, 1 for FAIL.
"""

import glob
import json
import os
import re
import sys

# vLLM 0.33.0's CUDA wheel lacks these CPU ops; the oracle README lists this as a CPU-only limit.
KNOWN_POSTPROCESS = re.compile(r"'_OpNamespace' '_C' object has no attribute '\w+'")


def registrations(plugin_dir):
    """ARCH -> 'pkg.module.Class' from every register_model call in the plugin's package(s)."""
    regs = {}
    for init in glob.glob(os.path.join(plugin_dir, "*", "__init__.py")):
        src = open(init).read()
        for arch, target in re.findall(r'register_model\(\s*"([^"]+)"\s*,\s*"([^"]+)"\s*\)', src):
            regs[arch] = target.replace(":", ".")
    return regs


def rank_files(result, tp):
    if tp <= 1:
        return [(0, result)]
    root, ext = os.path.splitext(result)
    return [(r, f"{root}__rank{r}{ext or '.json'}") for r in range(tp)]


def short(s, n=300):
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def main():
    plugin_dir, result, tp = sys.argv[1], sys.argv[2], int(sys.argv[3])
    regs = registrations(plugin_dir)
    why, details, notes = [], [], []
    classes, counts = [], []
    for rank, path in rank_files(result, tp):
        tag = f"rank{rank}: " if tp > 1 else ""
        if not os.path.exists(path):
            why.append(f"{tag}no result file {os.path.basename(path)}")
            classes.append("-")
            counts.append(None)
            continue
        res = json.load(open(path))
        arch = (res.get("resolved_arch") or [res.get("arch")])[0]
        cls = res.get("model_class") or "-"
        classes.append(cls)
        expected = regs.get(arch)
        if expected is None:
            why.append(f"{tag}plugin registers no class for {arch} (registers {sorted(regs) or 'nothing'})")
        elif cls != expected:
            why.append(f"{tag}vLLM built {cls}, not the plugin's {expected}")

        fatal = []
        for er in res.get("errors", []):
            if er.get("phase") == "process_weights_after_loading" and KNOWN_POSTPROCESS.search(er.get("message", "")):
                notes.append(f"{tag}process_weights_after_loading: {short(er['message'], 120)} (CPU wheel)")
                continue
            if er.get("phase") == "workaround":
                notes.append(f"{tag}oracle workaround: {short(er['message'], 120)}")
                continue
            fatal.append(er)
        if fatal:
            phases = sorted({er.get("phase") for er in fatal})
            why.append(f"{tag}{len(fatal)} error(s) in {','.join(phases)}")
            seen = set()
            for er in fatal:
                key = (er.get("phase"), er.get("type"), er.get("message", "")[:200])
                if key in seen:
                    continue
                seen.add(key)
                n_same = sum(1 for e in fatal if (e.get("phase"), e.get("type"), e.get("message", "")[:200]) == key)
                at = f" [ckpt tensor {er['ckpt_name']}]" if er.get("ckpt_name") else ""
                details.append(f"{tag}{er.get('phase')}: {er.get('type')}: {short(er.get('message'), 600)}{at}"
                               + (f" (x{n_same})" if n_same > 1 else ""))
                if er.get("where"):
                    details.append(f"{tag}  at {' <- '.join(reversed(er['where'][-3:]))}")

        params = set(res.get("params") or {})
        s = res.get("summary") or {}
        stages = res.get("stages") or {}
        if not stages.get("build"):
            counts.append(None)
            continue
        returned = set(res.get("loaded") or [])
        traced_ok = {r["param"] for r in res.get("trace", []) if "error" not in r and r.get("param")}
        filled = params & returned & traced_ok
        counts.append((len(filled), len(params)))
        not_loaded = s.get("params_not_in_loaded") or []
        not_traced = s.get("params_not_traced") or []
        # Attention q/k/v scale and zero-point placeholders that a compressed-tensors (or fp8 KV)
        # model builds in every layer but the checkpoint does not hold: vLLM's own load_weights
        # leaves them at their defaults too (QuantizationConfig._ignore_unexpected_suffixes;
        # BaseKVCacheMethod replaces the -1 sentinel after loading) and its strict check runs only
        # for unquantized models. Reported, not failed.
        ckpt = set(res.get("ckpt_tensors") or [])
        suffixes = (".q_scale", ".k_scale", ".v_scale", ".q_zero_point", ".k_zero_point", ".v_zero_point")
        def placeholder(p):
            # The checkpoint spells it without vLLM's `.attn` (…self_attn.k_scale -> …self_attn.attn.k_scale).
            return p.endswith(suffixes) and ".attn." in p and p.replace(".attn.", ".", 1) not in ckpt
        left = sorted({p for p in not_loaded + not_traced if placeholder(p)})
        if left and res.get("quantization"):
            notes.append(f"{tag}{len(left)} attention scale placeholder(s) absent from the checkpoint, left at their defaults as vLLM's own loader leaves them")
            not_loaded = [p for p in not_loaded if p not in left]
            not_traced = [p for p in not_traced if p not in left]
            filled |= set(left) & params
            counts[-1] = (len(filled), len(params))
        if res.get("loaded") is None:
            why.append(f"{tag}load_weights returned None")
        elif not_loaded:
            why.append(f"{tag}{len(not_loaded)} param(s) not in load_weights' return")
            details.append(f"{tag}not returned: {short(', '.join(not_loaded), 800)}")
        if not_traced:
            why.append(f"{tag}{len(not_traced)} param(s) never loaded (no trace row)")
            details.append(f"{tag}never traced: {short(', '.join(not_traced), 800)}")
        if s.get("trace_rows_with_error"):
            why.append(f"{tag}{s['trace_rows_with_error']} weight-loader call(s) raised")
        if stages.get("strict_check") is False:
            why.append(f"{tag}vLLM strict check failed")
        elif "strict_check" not in stages and res.get("loaded") is not None:
            notes.append(f"{tag}strict check not run")
        if s.get("ckpt_not_traced"):
            notes.append(f"{tag}{len(s['ckpt_not_traced'])} ckpt tensor(s) skipped: {short(', '.join(s['ckpt_not_traced']), 160)}")

    ucls = sorted(set(classes))
    cls_txt = ucls[0] if len(ucls) == 1 else " / ".join(f"r{i}:{c}" for i, c in enumerate(classes))
    if all(c is not None for c in counts) and len({c for c in counts}) == 1:
        cnt_txt = f"{counts[0][0]}/{counts[0][1]}"
    else:
        cnt_txt = " ".join(f"r{i}:" + ("-" if c is None else f"{c[0]}/{c[1]}") for i, c in enumerate(counts))
    status = "FAIL" if why else "PASS"
    msg = "; ".join(why) if why else "plugin class built, every parameter filled"
    if notes:
        msg += " (note: " + "; ".join(dict.fromkeys(n.split(": ", 1)[-1] if tp > 1 else n for n in notes)) + ")"
    print(f"{status}\t{cls_txt}\t{cnt_txt}\t{msg}")
    for d in details:
        print(f"  | {d}")
    sys.exit(0 if status == "PASS" else 1)


if __name__ == "__main__":
    main()
