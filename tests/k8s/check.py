#!/usr/bin/env python3
"""deploy/k8s/convert-job.yaml without a cluster: it parses, it is the Indexed Job + finalize the
README describes (kubectl's label selections pick the right objects, completions = PARTS), and its
containers' shell commands, run here as a pod would run them (the ConfigMap's environment,
JOB_COMPLETION_INDEX = 0..N-1, then the finalize), make the same checkpoint, byte for byte, as a
single `ckptpilot dequant` / `ckptpilot quantize` run.

    python3 tests/k8s/check.py      (CKPTPILOT: the binary, default target/debug/ckptpilot)
"""

import filecmp
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFEST = os.path.join(REPO, "deploy/k8s/convert-job.yaml")
BIN = os.path.abspath(os.environ.get("CKPTPILOT", os.path.join(REPO, "target/debug/ckptpilot")))


def select(docs, step):
    """What `kubectl apply -f MANIFEST -l ckptpilot.io/step=STEP` applies."""
    return [d for d in docs if d["metadata"].get("labels", {}).get("ckptpilot.io/step") == step]


def container_script(job):
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["/bin/sh", "-c"], c["command"]
    (script,) = c["args"]
    assert [e["configMapRef"]["name"] for e in c["envFrom"]] == ["ckptpilot-convert"]
    return script


def run_pod(script, env, index=None):
    e = dict(os.environ, **env)
    if index is not None:
        e["JOB_COMPLETION_INDEX"] = str(index)
    r = subprocess.run(["/bin/sh", "-c", script], check=False, env=e, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"k8s check: pod (index {index}) exited {r.returncode}:\n{r.stderr}")


def checkpoint_files(d):
    out = []
    for root, _, files in os.walk(d):
        for f in files:
            if not f.startswith(".ckptpilot-"):
                out.append(os.path.relpath(os.path.join(root, f), d))
    return sorted(out)


def same(whole, split):
    a, b = checkpoint_files(whole), checkpoint_files(split)
    if a != b or not a:
        sys.exit(f"k8s check: {split} holds {b}, the single run {a}")
    for f in a:
        if not filecmp.cmp(os.path.join(whole, f), os.path.join(split, f), shallow=False):
            sys.exit(f"k8s check: {f} differs from the single-process run")
    return len(a)


def main():
    with open(MANIFEST) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [("ConfigMap", "ckptpilot-convert"), ("Job", "ckptpilot-finalize"), ("Job", "ckptpilot-parts")], (
        kinds
    )
    parts_step, finalize_step = select(docs, "parts"), select(docs, "finalize")
    assert sorted(d["kind"] for d in parts_step) == ["ConfigMap", "Job"], parts_step
    assert [d["metadata"]["name"] for d in finalize_step] == ["ckptpilot-finalize"]
    cm = next(d for d in parts_step if d["kind"] == "ConfigMap")
    parts = next(d for d in parts_step if d["kind"] == "Job")
    fin = finalize_step[0]
    spec = parts["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == int(cm["data"]["PARTS"]), "the parts Job's completions must equal PARTS"
    assert spec["parallelism"] <= spec["completions"]
    for job in (parts, fin):
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        assert (
            job["spec"]["template"]["metadata"]["labels"]["ckptpilot.io/step"]
            == job["metadata"]["labels"]["ckptpilot.io/step"]
        )
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert claims == {"models"}, claims
    part_sh, fin_sh = container_script(parts), container_script(fin)
    assert "JOB_COMPLETION_INDEX + 1" in part_sh and "--part" in part_sh
    assert "--finalize" in fin_sh
    print(f"k8s check: {MANIFEST}: ConfigMap + Indexed Job ({spec['completions']} parts) + finalize Job")

    # The pods' commands, with ckptpilot on PATH, on fixtures: dequant as the manifest says (PARTS
    # included); quantize with PARTS=1 (a fixture quantizes to one output file).
    tmp = tempfile.mkdtemp(prefix="ckptpilot-k8s.")
    try:
        bindir = os.path.join(tmp, "bin")
        os.mkdir(bindir)
        os.symlink(BIN, os.path.join(bindir, "ckptpilot"))
        path = bindir + os.pathsep + os.environ.get("PATH", "")
        cases = [
            ("dequant", "fixtures/deepseek-fp8", cm["data"]["PARTS"], cm["data"]["CKPTPILOT_FLAGS"] + " --verify", []),
            ("quantize", "fixtures/qwen3-moe", "1", "--to w8a8-dynamic --verify", ["--to", "w8a8-dynamic"]),
        ]
        for cmd, model, n, flags, whole_flags in cases:
            model = os.path.join(REPO, model)
            whole, split = os.path.join(tmp, cmd + "-whole"), os.path.join(tmp, cmd + "-split")
            subprocess.run([BIN, cmd, model, "--out", whole, "-q", *whole_flags], check=True, stdout=subprocess.DEVNULL)
            env = dict(
                cm["data"], CKPTPILOT_COMMAND=cmd, MODEL=model, OUT=split, PARTS=n, CKPTPILOT_FLAGS=flags, PATH=path
            )
            for i in range(int(n)):
                run_pod(part_sh, env, i)
            run_pod(fin_sh, env)
            print(
                f"k8s check: {cmd}: {n} part pod(s) + finalize pod: {same(whole, split)} files byte-identical to a single run"
            )
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
