#!/usr/bin/env python3
"""The producers' own 4-bit dequantization on the CPU, timed, for the ratio to `ckptpilot dequant`:
compressed-tensors' compressor `decompress` for every packed weight of a checkpoint (what
ModelCompressor.decompress_model runs per module), tensors loaded with safetensors first (load
time not counted). Needs torch, safetensors and compressed-tensors (the venv of tools/fixtures_fp4.sh).

  python3 benches/dequant4_torch.py DIR [--threads N]
"""
import argparse
import glob
import json
import os
import time

import torch
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationConfig
from safetensors.torch import load_file

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--threads", type=int, default=0)
a = ap.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
qc = QuantizationConfig.model_validate(json.load(open(os.path.join(a.dir, "config.json")))["quantization_config"])
(scheme,) = qc.config_groups.values()
comp = BaseCompressor.get_value_from_registry(scheme.format)
tensors = {}
for f in sorted(glob.glob(os.path.join(a.dir, "*.safetensors"))):
    tensors.update(load_file(f))
packed_bytes = out_bytes = 0
t0 = time.perf_counter()
for k in sorted(tensors):
    if not k.endswith(".weight_packed"):
        continue
    p = k[: -len("weight_packed")]
    sd = {n[len(p):]: t for n, t in tensors.items() if n.startswith(p) and "." not in n[len(p):]}
    w = comp.decompress(sd, scheme)["weight"]
    packed_bytes += tensors[k].numel() * tensors[k].element_size()
    out_bytes += w.numel() * w.element_size()
dt = time.perf_counter() - t0
print(f"{scheme.format}: compressed-tensors decompress {dt:.2f} s for {packed_bytes / 1e9:.2f} GB packed -> "
      f"{out_bytes / 1e9:.2f} GB bf16 ({torch.get_num_threads()} threads)")
