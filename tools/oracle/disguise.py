#!/usr/bin/env python3
"""A known checkpoint under a new name: copy SRC to DST with config.json's `architectures` and
`model_type` replaced and every tensor name's leading `OLD.` renamed `NEW.` (headers rewritten, tensor
bytes untouched). Issue 24's proof that `ckptpilot stub` adapts the closest family into a plugin vLLM
loads: `tools/oracle/check_plugins.sh` runs on the copy (FIXTURES=DST's parent).

    python3 tools/oracle/disguise.py fixtures/llama /tmp/disguised/acme-llama \\
        --arch AcmeForCausalLM --model-type acme --prefix model.=transformer.
"""
import argparse
import json
import os
import shutil
import struct


def rename_header(path, old, new):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        out[new + k[len(old):] if k.startswith(old) else k] = v
    hb = json.dumps(out, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--arch", required=True)
    ap.add_argument("--model-type")
    ap.add_argument("--prefix", help="OLD.=NEW.: rename the leading segment of every tensor name")
    a = ap.parse_args()
    shutil.rmtree(a.dst, ignore_errors=True)
    shutil.copytree(a.src, a.dst)
    cfg_path = os.path.join(a.dst, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["architectures"] = [a.arch]
    if a.model_type:
        cfg["model_type"] = a.model_type
    json.dump(cfg, open(cfg_path, "w"), indent=2)
    if a.prefix:
        old, new = a.prefix.split("=", 1)
        for f in sorted(os.listdir(a.dst)):
            if f.endswith(".safetensors"):
                rename_header(os.path.join(a.dst, f), old, new)
        idx = os.path.join(a.dst, "model.safetensors.index.json")
        if os.path.exists(idx):
            j = json.load(open(idx))
            j["weight_map"] = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in j["weight_map"].items()}
            json.dump(j, open(idx, "w"), indent=2)


if __name__ == "__main__":
    main()
