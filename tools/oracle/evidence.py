#!/usr/bin/env python3
"""Write src/arch/evidence.json: for every architecture, the TP sizes at which a recorded vLLM oracle
run (fixtures/oracle/*.tpN.json, fixtures/oracle/params/*.tpN.json, fixtures/oracle/families/*.tpN.json)
exists for a fixture of that architecture, the vLLM class that run built and the vLLM version.

    python3 tools/oracle/evidence.py            # rewrite src/arch/evidence.json
    python3 tools/oracle/evidence.py --check    # exit 1 if it is stale

Every record is replayed by a test (tests/remap.rs: trace rows; tests/model_spec.rs: per-rank
parameters; tests/families.rs: both for compiled families), and tests/families_table.rs checks this
file against the records, so `ckptpilot families` (which embeds it) lists only what was recorded.
Standard library only.
"""
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "src", "arch", "evidence.json")


def fixture_config(name):
    for d in (os.path.join(ROOT, "fixtures", name), os.path.join(ROOT, "fixtures", "families", name)):
        p = os.path.join(d, "config.json")
        if os.path.isfile(p):
            return json.load(open(p))
    return None


def architecture_of(cfg):
    a = cfg.get("architectures") or (cfg.get("text_config") or {}).get("architectures") or []
    return a[0] if a else None


def build():
    archs = {}
    versions = set()
    pattern = re.compile(r"^(.+)\.tp(\d+)\.json$")
    for sub in ("", "params", "families"):
        for path in sorted(glob.glob(os.path.join(ROOT, "fixtures", "oracle", sub, "*.tp*.json"))):
            m = pattern.match(os.path.basename(path))
            if not m:
                continue
            fixture, tp = m.group(1), int(m.group(2))
            rec = json.load(open(path))
            cfg = fixture_config(fixture)
            arch = rec.get("architecture") or (architecture_of(cfg) if cfg else None)
            if not arch or not rec.get("model_class"):
                continue
            versions.add(rec.get("vllm_version"))
            e = archs.setdefault(arch, {"vllm_class": rec["model_class"], "tp": set(), "fixtures": set()})
            e["tp"].add(tp)
            e["fixtures"].add(fixture)
    out = {
        "vllm": sorted(v for v in versions if v),
        "source": "tools/oracle/evidence.py over fixtures/oracle (every record replayed by a test)",
        "architectures": {
            a: {"vllm_class": e["vllm_class"], "tp": sorted(e["tp"]), "fixtures": sorted(e["fixtures"])}
            for a, e in sorted(archs.items())
        },
    }
    return json.dumps(out, indent=1, sort_keys=False) + "\n"


text = build()
if "--check" in sys.argv:
    current = open(OUT).read() if os.path.exists(OUT) else ""
    if current != text:
        print("src/arch/evidence.json is stale: run python3 tools/oracle/evidence.py", file=sys.stderr)
        sys.exit(1)
else:
    open(OUT, "w").write(text)
    print(f"wrote {OUT}: {len(json.loads(text)['architectures'])} architectures")
