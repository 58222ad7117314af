#!/usr/bin/env python3
"""Whole-conversion speed: `ckptpilot dequant` (or `quantize --to w8a8-dynamic` with --quantize)
against a plain copy of the same bytes (read every input shard, write as many bytes as ckptpilot's
output), interleaved, warm page cache, median of --runs. Also reports ckptpilot's peak RSS (from
wait4's rusage).

  python3 benches/convert_compare.py INPUT_DIR [--runs 5] [--threads N] [--quantize] [--bin OTHER_CKPTPILOT]...

Each --bin adds another ckptpilot binary (an older build, say) measured in the same interleaved runs,
so a change's cost is a ratio taken on the same machine at the same time.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def warm(d):
    for f in os.listdir(d):
        with open(os.path.join(d, f), "rb") as fh:
            while fh.read(64 << 20):
                pass


def plain_copy(src, dst, out_bytes):
    """Read every input shard and write out_bytes in total, shard by shard in proportion."""
    files = sorted(f for f in os.listdir(src) if f.endswith(".safetensors"))
    in_total = sum(os.path.getsize(os.path.join(src, f)) for f in files)
    buf = bytearray(8 << 20)
    mv = memoryview(buf)
    for f in files:
        size = os.path.getsize(os.path.join(src, f))
        to_write = out_bytes * size // in_total
        with open(os.path.join(src, f), "rb", buffering=0) as r, open(os.path.join(dst, f), "wb", buffering=0) as w:
            while True:
                n = r.readinto(buf)
                if not n:
                    break
                # Write what the output needs for this much input (about 2x for fp8 -> bf16).
                share = to_write * n // size
                while share > 0:
                    k = min(share, n)
                    w.write(mv[:k])
                    share -= k


QUANTIZE = False


def run_ckptpilot(src, dst, threads, binary=None):
    binary = binary or os.path.join(ROOT, "target", "release", "ckptpilot")
    cmd = [binary, "dequant", src, "--out", dst, "--quiet"]
    if QUANTIZE:
        cmd = [binary, "quantize", src, "--to", "w8a8-dynamic", "--out", dst, "--quiet"]
    if threads:
        cmd += ["--threads", str(threads)]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    if status != 0:
        sys.exit(f"ckptpilot failed: {p.stderr.read().decode()}")
    return dt, ru.ru_maxrss * 1024


def du(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".safetensors"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--scratch", default=None, help="directory for outputs (default: next to the input)")
    ap.add_argument("--bin", action="append", default=[], help="another ckptpilot binary to measure in the same runs")
    ap.add_argument("--quantize", action="store_true", help="measure `quantize --to w8a8-dynamic` instead of dequant")
    a = ap.parse_args()
    global QUANTIZE
    QUANTIZE = a.quantize
    scratch = a.scratch or os.path.dirname(os.path.abspath(a.src))
    in_bytes = du(a.src)
    out = tempfile.mkdtemp(dir=scratch, prefix="ckptpilot-out-")
    warm(a.src)
    run_ckptpilot(a.src, out, a.threads)  # warm-up, and the output size
    out_bytes = du(out)
    tc, tp, rss = [], [], []
    others = {b: [] for b in a.bin}
    for _ in range(a.runs):
        shutil.rmtree(out)
        os.makedirs(out)
        t = time.perf_counter()
        plain_copy(a.src, out, out_bytes)
        tp.append(time.perf_counter() - t)
        shutil.rmtree(out)
        dt, r = run_ckptpilot(a.src, out, a.threads)
        tc.append(dt)
        rss.append(r)
        for b in a.bin:
            shutil.rmtree(out)
            others[b].append(run_ckptpilot(a.src, out, a.threads, b)[0])
    shutil.rmtree(out)
    mc, mp = statistics.median(tc), statistics.median(tp)
    print(f"input {in_bytes / 1e9:.2f} GB, output {out_bytes / 1e9:.2f} GB, warm page cache, {a.runs} interleaved runs")
    print(f"plain copy   median {mp:6.2f} s  ({in_bytes / mp / 1e9:5.2f} GB/s of input)  runs {', '.join(f'{x:.2f}' for x in tp)}")
    print(f"ckptpilot      median {mc:6.2f} s  ({in_bytes / mc / 1e9:5.2f} GB/s of input)  runs {', '.join(f'{x:.2f}' for x in tc)}")
    print(f"ckptpilot speed / plain copy speed = {mp / mc:.3f}  (target >= 0.8)")
    for b, ts in others.items():
        mo = statistics.median(ts)
        print(f"{b}: median {mo:6.2f} s, speed / plain copy = {mp / mo:.3f}; ckptpilot / this = {mo / mc:.3f}  runs {', '.join(f'{x:.2f}' for x in ts)}")
    print(f"ckptpilot peak RSS {max(rss) / 2 ** 20:.0f} MiB (target <= 1024 MiB with 1 GiB shards)")
    print(f"command: {'quantize --to w8a8-dynamic' if QUANTIZE else 'dequant'}")


if __name__ == "__main__":
    main()
