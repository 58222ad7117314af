#!/usr/bin/env python3
"""Whole-process timing of `ckptpilot audit --json` against the Python safetensors audit on the same
layout, interleaved (each round in a shuffled order) after one warm-up each, warm page cache. Prints medians and the ratio.

  python3 benches/audit_compare.py DIR [--runs 7] [--no-python] [--python /path/to/venv/bin/python]
                                        [--command remap] [--base OLD_BUILD/ckptpilot]

--command remap times `remap --json` instead (its target: within 2x of the audit); --base adds another
build of ckptpilot to the same interleaved runs (before / after on the same load).
"""
import argparse
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(cmd):
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if r.returncode not in (0, 1):
        sys.exit(f"{cmd} failed: {r.stderr.decode()[:500]}")
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--no-python", action="store_true")
    ap.add_argument("--python", default=sys.executable, help="interpreter with the safetensors package to compare against")
    ap.add_argument("--command", default="audit", choices=["audit", "remap"], help="the ckptpilot command to time (--json)")
    ap.add_argument("--base", help="another ckptpilot binary to time in the same runs")
    a = ap.parse_args()
    ck = [os.path.join(ROOT, "target", "release", "ckptpilot"), a.command, "--json", a.dir]
    py = [a.python, os.path.join(ROOT, "benches", "audit_py.py"), a.dir]
    ver = subprocess.run([a.python, "-c", "import safetensors; print(safetensors.__version__)"], capture_output=True, text=True).stdout.strip()
    print(f"baseline: Python safetensors {ver}")
    cmds = {"ckptpilot": ck}
    if a.base:
        cmds["ckptpilot-base"] = [a.base] + ck[1:]
    if not a.no_python:
        cmds["python-safetensors"] = py
    times = {k: [] for k in cmds}
    for k, c in cmds.items():
        timed(c)  # warm-up
    # Each round in a new order: a process that starts right after the Python one (which frees
    # hundreds of megabytes) can stall while the kernel reclaims; a fixed order would charge
    # that to one contender only.
    order = list(cmds)
    rng = random.Random(1)
    for _ in range(a.runs):
        rng.shuffle(order)
        for k in order:
            times[k].append(timed(cmds[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:20s} median {med[k] * 1000:8.1f} ms  (runs: {', '.join(f'{x * 1000:.0f}' for x in v)})")
    if a.base:
        print(f"ckptpilot / ckptpilot-base = {med['ckptpilot'] / med['ckptpilot-base']:.3f}")
    if not a.no_python:
        print(f"ckptpilot / python = {med['ckptpilot'] / med['python-safetensors']:.3f}  (target <= 0.100)")


if __name__ == "__main__":
    main()
