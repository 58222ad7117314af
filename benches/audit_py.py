#!/usr/bin/env python3
"""The same audit with the Python `safetensors` library, as the baseline for ckptpilot's speed: open
every shard (numpy framework: no torch import to pay for), read every tensor's dtype and shape, check the index both ways, pair every fp8 weight
with its scale across the checkpoint. Prints a one-line summary."""
import json
import os
import sys

from safetensors import safe_open


def main(d):
    idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
    wm = idx["weight_map"]
    seen, dtypes, problems = {}, {}, 0
    for shard in sorted(set(wm.values())):
        with safe_open(os.path.join(d, shard), framework="numpy") as f:
            f.metadata()
            for k in f.keys():
                s = f.get_slice(k)
                dt, shape = s.get_dtype(), s.get_shape()
                dtypes[dt] = dtypes.get(dt, 0) + 1
                if k in seen:
                    problems += 1
                seen[k] = (shard, dt, shape)
                if wm.get(k) != shard:
                    problems += 1
    problems += sum(1 for k in wm if k not in seen)
    for k, (shard, dt, shape) in seen.items():
        if dt.startswith("F8") and k + "_scale_inv" not in seen:
            problems += 1
    print(f"{len(seen)} tensors, {len(dtypes)} dtypes, {problems} problems")


if __name__ == "__main__":
    main(sys.argv[1])
