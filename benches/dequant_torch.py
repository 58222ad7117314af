#!/usr/bin/env python3
"""ckptpilot's fp8 -> bf16 kernel against PyTorch on the CPU, same shape, same machine, one run:
PyTorch does what users run today (`w.to(float32) * scale expanded to the weight, .to(bfloat16)`);
ckptpilot's figure comes from `ckptpilot bench dequant --json` run right after. Both at 1 thread and at
all threads. Needs torch; not part of the tests.

  python3 benches/dequant_torch.py [--shape 18432,7168] [--reps 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_gbps(n, k, threads, reps):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(n, k, generator=g) * 112).clamp(-448, 448).to(torch.float8_e4m3fn)
    s = torch.rand((n + 127) // 128, (k + 127) // 128, generator=g) * 1e-3
    times = []
    for i in range(reps + 1):
        t = time.perf_counter()
        full = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:n, :k]
        out = (w.to(torch.float32) * full).to(torch.bfloat16)
        dt = time.perf_counter() - t
        if i:
            times.append(dt)
    del out
    return n * k / statistics.median(times) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="18432,7168")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    n, k = map(int, a.shape.split(","))
    all_threads = os.cpu_count() or 1
    threads = sorted({1, all_threads})
    tg = {t: torch_gbps(n, k, t, a.reps) for t in threads}
    r = subprocess.run([os.path.join(ROOT, "target", "release", "ckptpilot"), "bench", "dequant", "--shape", a.shape,
                        "--threads", ",".join(map(str, threads)), "--json"], capture_output=True, text=True, check=True)
    ck = {x["threads"]: x for x in json.loads(r.stdout)["results"]}
    print(f"[{n}, {k}] F8_E4M3 -> bf16, GB/s of fp8 input (torch {torch.__version__})")
    for t in threads:
        c = ck[t]
        print(f"  threads {t:2d}: torch {tg[t]:6.3f}   ckptpilot {c['gbps_fp8_in']:6.2f} (fresh buffer {c['fresh_buffer_gbps']:5.2f})"
              f"   ratio {c['gbps_fp8_in'] / tg[t]:6.1f}x (fresh {c['fresh_buffer_gbps'] / tg[t]:5.1f}x)  target >= 30x")


if __name__ == "__main__":
    main()
