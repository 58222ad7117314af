#!/usr/bin/env python3
"""Write a multi-GB DeepSeek-format fp8 checkpoint for the conversion benchmark: shards of about
--shard-gib GiB holding real DeepSeek-V3 expert shapes ([2048, 7168] gate/up, [7168, 2048] down)
as F8_E4M3 with F32 `weight_scale_inv` [ceil(N/128), ceil(K/128)], plus bf16 norms. Codes follow
real weights: quantized Gaussian values. Needs numpy only.

  python3 benches/make_fp8_checkpoint.py OUT [--gib 4] [--shard-gib 1]
"""
import argparse
import json
import math
import os
import struct

import numpy as np


def e4m3_codes(n, rng):
    # Every finite non-negative e4m3 value, and Gaussian samples (4 sigma = 448) rounded to them.
    vals = []
    for c in range(0x7F):
        e, m = c >> 3, c & 7
        vals.append(m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
    vals = np.array(vals)
    g = np.clip(rng.standard_normal(1 << 20) * 112.0, -448, 448)
    idx = np.abs(np.abs(g)[:, None] - vals[None, :]).argmin(axis=1).astype(np.uint8)
    pool = idx | np.where(g < 0, 0x80, 0).astype(np.uint8)
    return pool[rng.integers(0, len(pool), n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--gib", type=float, default=4.0)
    ap.add_argument("--shard-gib", type=float, default=1.0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(7)
    block = e4m3_codes(2048 * 7168, rng).tobytes()  # one expert matrix worth of codes, reused
    shapes = [("gate_proj", 2048, 7168), ("up_proj", 2048, 7168), ("down_proj", 7168, 2048)]
    total_target = int(a.gib * 2 ** 30)
    shard_target = int(a.shard_gib * 2 ** 30)
    weight_map, written, shard_no, expert = {}, 0, 0, 0
    shards = []
    while written < total_target:
        tensors, size = [], 0
        while size < shard_target and written + size < total_target:
            layer, e = 3 + expert // 256, expert % 256
            for p, n, k in shapes:
                name = f"model.layers.{layer}.mlp.experts.{e}.{p}"
                tensors.append((name + ".weight", "F8_E4M3", [n, k], None))
                sc = rng.uniform(1e-4, 3e-3, size=(math.ceil(n / 128), math.ceil(k / 128))).astype(np.float32)
                tensors.append((name + ".weight_scale_inv", "F32", list(sc.shape), sc.tobytes()))
                size += n * k + sc.nbytes
            norm = (np.ones(7168, dtype=np.float32)).astype(np.float32).view(np.uint32) >> 16
            tensors.append((f"model.layers.{layer}.mlp.experts.{e}.norm_probe.weight", "BF16", [7168], norm.astype(np.uint16).tobytes()))
            size += 7168 * 2
            expert += 1
        shards.append(tensors)
        written += size
    n_shards = len(shards)
    for i, tensors in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for name, dt, shape, data in tensors:
            nbytes = len(data) if data is not None else math.prod(shape)
            header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + nbytes]}
            off += nbytes
            weight_map[name] = fname
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * ((8 - len(hb) % 8) % 8)
        with open(os.path.join(a.out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(hb)) + hb)
            for name, dt, shape, data in tensors:
                f.write(data if data is not None else block[: math.prod(shape)])
    tensor_bytes = sum(len(d) if d is not None else math.prod(s) for t in shards for _, _, s, d in t)
    json.dump({"metadata": {"total_size": tensor_bytes},
               "weight_map": weight_map}, open(os.path.join(a.out, "model.safetensors.index.json"), "w"))
    json.dump({"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "torch_dtype": "bfloat16",
               "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                       "weight_block_size": [128, 128]}},
              open(os.path.join(a.out, "config.json"), "w"), indent=2)
    print(f"{n_shards} shards, {written / 2 ** 30:.2f} GiB")


if __name__ == "__main__":
    main()
