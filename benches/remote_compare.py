#!/usr/bin/env python3
"""Benchmark ckptpilot's remote pre-flight against huggingface_hub's get_safetensors_metadata, on a local Hub.

    python3 benches/remote_compare.py ROOT [--repo bench-org/big-moe] [--ckptpilot target/release/ckptpilot]
        [--runs 3] [--python PYTHON] [--latency-ms 0] [--redirect [--redirect-host localhost]] [--timeout 600]
        [--json]

Starts tools/hub_server.py on ROOT (make the repo with `benches/make_layout.py ROOT/bench-org/big-moe --size real`), then per run:
  ckptpilot  `ckptpilot audit REPO --json` with HF_ENDPOINT=the server and a fresh, empty HF_HOME (no cache),
           HF_HUB_OFFLINE and tokens unset: wall time, exit code, the server's request / body-byte counts and
           the TCP connections that carried the requests;
  warm     the same command again with the SAME HF_HOME: what a warm cache still asks the server (expected: 0);
  python   `huggingface_hub.get_safetensors_metadata(REPO)` in PYTHON (a venv with huggingface_hub) with a
           fresh HF_HOME / HF_HUB_CACHE: process wall time (interpreter start and imports included) and the
           call's own time, requests, body bytes.
The counters are the server's /_stats, reset before each command. Prints medians, the ratio python / ckptpilot
(process wall times) and the counts as a table, or as JSON with --json. A failing ckptpilot (exit code, stderr
tail) is reported and the Python side still runs; the exit status is 0 when every command succeeded.
Standard library only (the Python side needs huggingface_hub in --python).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
SERVER = os.path.join(REPO_ROOT, "tools", "hub_server.py")

# Runs in --python; prints one JSON line. The call is timed on its own, its imports separately.
PY_SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
import huggingface_hub
get_safetensors_metadata = huggingface_hub.get_safetensors_metadata  # the package imports lazily: load it now
t1 = time.perf_counter()
m = get_safetensors_metadata(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"version": huggingface_hub.__version__, "import_s": t1 - t0, "call_s": t2 - t1,
                  "tensors": len(m.weight_map), "shards": len(m.files_metadata), "sharded": m.sharded}))
"""


class HubServer:
    """tools/hub_server.py in a child process, with its /_stats."""

    def __init__(self, root, latency_ms, redirect, redirect_host=None):
        self.tmp = tempfile.mkdtemp(prefix="remote_compare_")
        port_file = os.path.join(self.tmp, "port")
        cmd = [sys.executable, SERVER, root, "--port-file", port_file, "--latency-ms", str(latency_ms)]
        if redirect:
            cmd.append("--redirect")
            if redirect_host:
                cmd += ["--redirect-host", redirect_host]
        self.err = open(os.path.join(self.tmp, "server.err"), "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err)
        deadline = time.time() + 15
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                raise SystemExit(f"hub_server did not start: {self.stderr_tail()}")
            time.sleep(0.05)
        with open(port_file) as f:
            self.url = f"http://127.0.0.1:{int(f.read())}"

    def stats(self, reset=False):
        with urllib.request.urlopen(self.url + "/_stats" + ("?reset=1" if reset else ""), timeout=30) as r:
            return json.load(r)

    def reset(self):
        self.stats(reset=True)

    def stderr_tail(self):
        try:
            with open(os.path.join(self.tmp, "server.err")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def hub_env(endpoint, hf_home):
    """The environment of one client run: this endpoint, this cache, online, no token, no telemetry."""
    env = dict(os.environ)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN",
              "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_XET_CACHE", "HF_ASSETS_CACHE"):
        env.pop(k, None)
    env.update({"HF_ENDPOINT": endpoint, "HF_HOME": hf_home, "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"})
    return env


def run(cmd, env, timeout):
    """(wall seconds, exit code, stdout, stderr) of one command; a timeout is exit code 124."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = 124, e.stdout or "", (e.stderr or "") + f"\n[timed out after {timeout}s]"
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
    except OSError as e:
        rc, out, err = 127, "", f"cannot run {cmd[0]}: {e}"
    return time.perf_counter() - t0, rc, out, err


def tail(text, n=15):
    return "\n".join(text.rstrip().splitlines()[-n:])


def one_ckptpilot(server, args, hf_home):
    server.reset()
    wall, rc, out, err = run([args.ckptpilot, "audit", args.repo, "--json"], hub_env(server.url, hf_home), args.timeout)
    s = server.stats()
    r = {"wall_s": wall, "rc": rc, "requests": s["requests"], "body_bytes": s["body_bytes"],
         "connections": s.get("connections")}
    if rc == 0:
        try:
            report = json.loads(out)
            r["tensors"] = report.get("tensors")
            r["findings"] = report.get("summary")
        except ValueError:
            r["rc_note"] = "exit 0 but stdout is not JSON"
            r["stdout_tail"] = tail(out)
    else:
        r["stderr_tail"] = tail(err) or tail(out)
    return r


def one_python(server, args):
    hf_home = tempfile.mkdtemp(prefix="hf_home_py_")
    try:
        env = hub_env(server.url, hf_home)
        env["HF_HUB_CACHE"] = os.path.join(hf_home, "hub")
        server.reset()
        wall, rc, out, err = run([args.python, "-c", PY_SNIPPET, args.repo], env, args.timeout)
        s = server.stats()
    finally:
        shutil.rmtree(hf_home, ignore_errors=True)
    r = {"wall_s": wall, "rc": rc, "requests": s["requests"], "body_bytes": s["body_bytes"],
         "connections": s.get("connections")}
    if rc == 0:
        r.update(json.loads(out.strip().splitlines()[-1]))
        r["startup_s"] = wall - r["call_s"]  # interpreter start, imports, everything but the call
    else:
        r["stderr_tail"] = tail(err)
    return r


def median(runs, key):
    """Median over the successful runs; counts take the lower median, so a value some run really had."""
    vals = [r[key] for r in runs if r.get("rc") == 0 and r.get(key) is not None]
    if not vals:
        return None
    return statistics.median_low(vals) if all(isinstance(v, int) for v in vals) else statistics.median(vals)


def summarize(runs):
    ok = [r for r in runs if r["rc"] == 0]
    out = {"runs": len(runs), "ok": len(ok), "wall_s": median(runs, "wall_s"),
           "requests": median(runs, "requests"), "body_bytes": median(runs, "body_bytes"),
           "connections": median(runs, "connections")}
    if len(ok) < len(runs):
        bad = next(r for r in runs if r["rc"] != 0)
        out["failure"] = {"rc": bad["rc"], "stderr_tail": bad.get("stderr_tail", ""),
                          "requests": bad["requests"], "body_bytes": bad["body_bytes"]}
    return out


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}{unit}"
    return f"{v:,}{unit}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="hub_server ROOT (`benches/make_layout.py ROOT/bench-org/big-moe --size real` writes the repo)")
    ap.add_argument("--repo", default="bench-org/big-moe")
    ap.add_argument("--ckptpilot", default=os.path.join(REPO_ROOT, "target", "release", "ckptpilot"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--python", default=sys.executable, help="a Python with huggingface_hub installed")
    ap.add_argument("--latency-ms", type=float, default=0, help="server-side delay per request (a round trip)")
    ap.add_argument("--redirect", action="store_true", help="serve shards through the server's CDN-like 302")
    ap.add_argument("--redirect-host", help="host of that redirect (localhost: another host to the clients)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed to each command")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.root, *args.repo.split("/"))):
        ap.error(f"{args.root}/{args.repo} does not exist: run benches/make_layout.py {args.root}/{args.repo} --size real")

    server = HubServer(args.root, args.latency_ms, args.redirect, args.redirect_host)
    cold, warm, py = [], [], []
    try:
        for i in range(args.runs):
            hf_home = tempfile.mkdtemp(prefix="hf_home_ckptpilot_")
            try:
                cold.append(one_ckptpilot(server, args, hf_home))
                warm.append(one_ckptpilot(server, args, hf_home))  # same HF_HOME: the cache is warm
            finally:
                shutil.rmtree(hf_home, ignore_errors=True)
            py.append(one_python(server, args))
            if not args.json:
                c, w, p = cold[-1], warm[-1], py[-1]
                print(f"run {i + 1}/{args.runs}: ckptpilot rc={c['rc']} {c['wall_s']:.3f}s {c['requests']} req | "
                      f"warm rc={w['rc']} {w['requests']} req | python rc={p['rc']} {p['wall_s']:.3f}s "
                      f"{p['requests']} req", file=sys.stderr, flush=True)
    finally:
        server.close()

    result = {"repo": args.repo, "endpoint_latency_ms": args.latency_ms, "redirect": args.redirect,
              "ckptpilot": summarize(cold), "ckptpilot_warm": summarize(warm), "python": summarize(py),
              "python_version": next((r.get("version") for r in py if r.get("version")), None),
              "python_call_s": median(py, "call_s"), "python_startup_s": median(py, "startup_s"),
              "python_tensors": next((r.get("tensors") for r in py if r.get("tensors") is not None), None),
              "ckptpilot_tensors": next((r.get("tensors") for r in cold if r.get("tensors") is not None), None),
              "raw": {"ckptpilot": cold, "ckptpilot_warm": warm, "python": py}}
    ck, pt = result["ckptpilot"]["wall_s"], result["python"]["wall_s"]
    result["ratio_python_over_ckptpilot"] = pt / ck if ck and pt else None

    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"\nremote pre-flight of {args.repo}: median of {args.runs} runs, latency {args.latency_ms} ms/request"
              + (", CDN redirect" if args.redirect else ""))
        rows = [("", "ok", "wall", "requests", "connections", "body bytes", "tensors"),
                ("ckptpilot audit (cold)", f"{result['ckptpilot']['ok']}/{args.runs}", fmt(ck, " s"),
                 fmt(result["ckptpilot"]["requests"]), fmt(result["ckptpilot"]["connections"]),
                 fmt(result["ckptpilot"]["body_bytes"]), fmt(result["ckptpilot_tensors"])),
                ("ckptpilot audit (warm)", f"{result['ckptpilot_warm']['ok']}/{args.runs}",
                 fmt(result["ckptpilot_warm"]["wall_s"], " s"), fmt(result["ckptpilot_warm"]["requests"]),
                 fmt(result["ckptpilot_warm"]["connections"]), fmt(result["ckptpilot_warm"]["body_bytes"]), ""),
                (f"huggingface_hub {result['python_version'] or '?'}", f"{result['python']['ok']}/{args.runs}",
                 fmt(pt, " s"), fmt(result["python"]["requests"]), fmt(result["python"]["connections"]),
                 fmt(result["python"]["body_bytes"]), fmt(result["python_tensors"]))]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        print(f"python: get_safetensors_metadata call {fmt(result['python_call_s'], ' s')}, "
              f"the rest of the process (interpreter, imports) {fmt(result['python_startup_s'], ' s')}")
        ratio = result["ratio_python_over_ckptpilot"]
        print(f"ratio python / ckptpilot (process wall): {f'{ratio:.1f}x' if ratio else '- (ckptpilot failed)'}")
        for name in ("ckptpilot", "ckptpilot_warm", "python"):
            f = result[name].get("failure")
            if f:
                print(f"\n{name} FAILED (exit {f['rc']}, {f['requests']} requests, {f['body_bytes']} body bytes):")
                print("  " + (f["stderr_tail"] or "(no output)").replace("\n", "\n  "))
        if result["ckptpilot_tensors"] and result["python_tensors"] and result["ckptpilot_tensors"] != result["python_tensors"]:
            print(f"\nWARNING: tensor counts differ: ckptpilot {result['ckptpilot_tensors']}, python {result['python_tensors']}")
    sys.exit(0 if all(r["rc"] == 0 for r in cold + warm + py) else 1)


if __name__ == "__main__":
    main()
