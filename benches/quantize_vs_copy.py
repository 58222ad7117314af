#!/usr/bin/env python3
"""`ckptpilot quantize --to TARGET` against a plain copy of the same bytes (read every input shard,
write as many bytes as ckptpilot's output: benches/convert_compare.py's plain_copy), interleaved,
warm page cache, median of --runs; ckptpilot's peak RSS from /usr/bin/time (else wait4's rusage, which
cannot read below this script's own RSS).

  python3 benches/quantize_vs_copy.py INPUT_DIR [--to w4a8-dynamic] [--runs 5] [--threads N] [--scratch DIR] [--bin CKPTPILOT]...

convert_compare.py measures `--quantize` as w8a8-dynamic; this takes any target. `--bin` more than
once compares builds (say the old and the new) in the same interleaved runs against the same copy.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_compare import ROOT, du, plain_copy, warm  # noqa: E402


TIME = "/usr/bin/time"


def run(binary, src, dst, to, threads):
    cmd = [binary, "quantize", src, "--to", to, "--out", dst, "--quiet"]
    if threads:
        cmd += ["--threads", str(threads)]
    # A child's ru_maxrss starts at its parent's high-water mark (Linux keeps it across exec): from this
    # script it never reads below the Python process's ~80 MiB. /usr/bin/time, small, reports its own child's.
    rss_file = None
    if os.access(TIME, os.X_OK):
        fd, rss_file = tempfile.mkstemp(prefix="ckptpilot-rss-")
        os.close(fd)
        cmd = [TIME, "-f", "%M", "-o", rss_file] + cmd
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    if status != 0:
        sys.exit(f"ckptpilot failed: {p.stderr.read().decode()}")
    if rss_file:
        with open(rss_file) as f:
            rss = int(f.read().split()[-1]) * 1024
        os.unlink(rss_file)
        return dt, rss
    return dt, ru.ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--to", default="w4a8-dynamic")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--scratch", default=None, help="directory for outputs (default: next to the input)")
    ap.add_argument("--bin", action="append", help="ckptpilot binary; repeat to compare builds (default: target/release)")
    a = ap.parse_args()
    bins = a.bin or [os.environ.get("CKPTPILOT", os.path.join(ROOT, "target", "release", "ckptpilot"))]
    scratch = a.scratch or os.path.dirname(os.path.abspath(a.src))
    in_bytes = du(a.src)
    out = tempfile.mkdtemp(dir=scratch, prefix="ckptpilot-out-")
    warm(a.src)
    run(bins[0], a.src, out, a.to, a.threads)  # warm-up, and the output size
    out_bytes = du(out)
    tp = []
    tc = {b: [] for b in bins}
    rss = {b: [] for b in bins}
    for _ in range(a.runs):
        shutil.rmtree(out)
        os.makedirs(out)
        t = time.perf_counter()
        plain_copy(a.src, out, out_bytes)
        tp.append(time.perf_counter() - t)
        for b in bins:
            shutil.rmtree(out)
            dt, r = run(b, a.src, out, a.to, a.threads)
            tc[b].append(dt)
            rss[b].append(r)
    shutil.rmtree(out)
    mp = statistics.median(tp)
    print(f"input {in_bytes / 1e9:.2f} GB, output {out_bytes / 1e9:.2f} GB, warm page cache, {a.runs} interleaved runs")
    print(f"plain copy   median {mp:6.2f} s  ({in_bytes / mp / 1e9:5.2f} GB/s of input)  runs {', '.join(f'{x:.2f}' for x in tp)}")
    for b in bins:
        mc = statistics.median(tc[b])
        print(f"ckptpilot    median {mc:6.2f} s  ({in_bytes / mc / 1e9:5.2f} GB/s of input)  runs {', '.join(f'{x:.2f}' for x in tc[b])}")
        print(f"ckptpilot speed / plain copy speed = {mp / mc:.3f}  (target >= 0.8)")
        print(f"ckptpilot peak RSS {max(rss[b]) / 2 ** 20:.0f} MiB")
        print(f"command: quantize --to {a.to} ({b})")

if __name__ == "__main__":
    main()
