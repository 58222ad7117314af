"""The Python API and the installed command (issue 15): run by .ci/run against the wheel installed in a
fresh venv. Needs numpy and pytest; torch only for the load-time dequant test (skipped without it)."""

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ckptpilot

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"
EXE = shutil.which("ckptpilot", path=os.path.dirname(sys.executable)) or shutil.which("ckptpilot")


def read_st(path):
    """{name: (dtype, shape, bytes)} of a safetensors file, read with the standard library."""
    b = Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8 : 8 + n])
    h.pop("__metadata__", None)
    return {
        k: (v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0] : 8 + n + v["data_offsets"][1]])
        for k, v in h.items()
    }


def cli_json(*args):
    r = subprocess.run(
        [EXE, *args, "--json"], capture_output=True, text=True, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def test_the_wheel_installs_the_command_and_its_data():
    assert EXE, "the ckptpilot console script is on the venv's PATH"
    r = subprocess.run([EXE, "--version"], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and r.stdout.strip() == f"ckptpilot {ckptpilot.__version__}"
    share = Path(sys.prefix) / "share"
    assert (share / "man/man1/ckptpilot.1").is_file() and (share / "man/man1/ckptpilot-plan.1").is_file()
    assert (share / "bash-completion/completions/ckptpilot").read_text().count("ckptpilot") > 10
    assert (share / "zsh/site-functions/_ckptpilot").is_file()
    # Exit statuses as the binary's: 3 for a missing input, 2 for a usage error, 0 for a clean audit.
    assert subprocess.run([EXE, "audit", "/nonexistent"], capture_output=True, check=False).returncode == 3
    assert (
        subprocess.run([EXE, "plan", str(FIX / "llama"), "--tp", "0"], capture_output=True, check=False).returncode == 2
    )
    assert subprocess.run([EXE, "audit", str(FIX / "llama")], capture_output=True, check=False).returncode == 0
    # A closed stdout ends quietly.
    p = subprocess.run(
        f"'{EXE}' remap '{FIX / 'qwen3-moe'}' --json | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.stdout.strip() == "0" and "panic" not in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("model", ["llama", "qwen3-moe", "qwen3-dense-fp8", "deepseek-v3-mla", "llama-w4a16"])
def test_reports_are_the_commands_json(model):
    path = str(FIX / model)
    assert ckptpilot.audit(path) == cli_json("audit", path)
    assert ckptpilot.plan(path, tp=[1, 2]) == cli_json("plan", path, "--tp", "1,2")
    assert ckptpilot.plan(path, tp=2, target="vllm-ascend", max_model_len="32k") == cli_json(
        "plan", path, "--tp", "2", "--target", "vllm-ascend", "--max-model-len", "32k"
    )
    assert ckptpilot.remap(path, tp=1) == cli_json("remap", path, "--tp", "1")


def test_a_report_with_errors_is_returned_and_an_unreadable_input_raises():
    a = ckptpilot.audit(str(FIX / "llama"))
    assert a["schema"] == "ckptpilot.audit/1" and a["tool"]["vllm_reference"] == ckptpilot.VLLM_REFERENCE
    # No feasible configuration: still a report (the command exits 1).
    p = ckptpilot.plan(str(FIX / "llama"), tp=8)
    assert p["configs"][0]["feasible"] is False
    with pytest.raises(ckptpilot.CkptpilotError) as e:
        ckptpilot.audit("/nonexistent/model")
    assert e.value.status == 3 and "no such file" in str(e.value) and e.value.help
    with pytest.raises(ckptpilot.CkptpilotError) as e:
        ckptpilot.plan(str(FIX / "llama"), tp=0)
    assert e.value.status == 2
    # vLLM refuses the layout: no slices, a refusal with vLLM's words.
    with pytest.raises(ckptpilot.CkptpilotError) as e:
        ckptpilot.remap(str(FIX / "qwen3-moe-fp8"), tp=2)
    assert e.value.status == 1 and "block_k = 128" in str(e.value)
    with pytest.raises(ckptpilot.CkptpilotError) as e:
        ckptpilot.audit("nobody/nothing", offline=True)
    assert e.value.status == 3 and "offline" in str(e.value)


def bf16_bits(f32):
    """Round float32 to bfloat16 (nearest, ties to even) as uint16 bits; NaN stays NaN."""
    b = f32.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f32)
    r[nan] = ((b[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def same_bits(a, b):
    """Equal bit patterns, NaN compared as a class."""
    fa = (a.astype(np.uint32) << 16).view(np.float32)
    fb = (b.astype(np.uint32) << 16).view(np.float32)
    return np.all((a == b) | (np.isnan(fa) & np.isnan(fb)))


def test_dequantize_matches_the_committed_pytorch_reference():
    # fixtures/deepseek-fp8: e4m3 weights with 128x128 block scales (partial edge blocks); the reference
    # is PyTorch's dequantization (fixtures/generate.py), bf16.
    ref = read_st(FIX / "deepseek-fp8.reference" / "dequant_bf16.safetensors")
    tensors = {}
    for p in sorted((FIX / "deepseek-fp8").glob("*.safetensors")):
        tensors.update(read_st(p))
    checked = 0
    for name, (dt, shape, data) in tensors.items():
        if dt != "F8_E4M3":
            continue
        _sdt, sshape, sdata = tensors[name + "_scale_inv"]
        codes = np.frombuffer(data, dtype=np.uint8).reshape(shape)
        scale = np.frombuffer(sdata, dtype=np.float32).reshape(sshape)
        got = ckptpilot.dequantize(codes, scale, block_size=(128, 128))
        rdt, rshape, rdata = ref[name]
        assert rdt == "BF16" and list(got.shape) == rshape and got.dtype == np.uint16
        assert same_bits(got, np.frombuffer(rdata, dtype=np.uint16).reshape(rshape)), name
        checked += 1
    assert checked >= 10


def test_dequantize_every_code_and_layout_against_numpy():
    # Decoded e4m3 values from the committed fp8 edge file (PyTorch's decode).
    edge = read_st(FIX / "fp8-edge" / "fp8_edge.safetensors")
    table = np.frombuffer(edge["e4m3.f32"][2], dtype=np.float32)
    codes = np.arange(256, dtype=np.uint8).reshape(8, 32)
    for scale in (np.float32(1.0), np.float32(0.0017), np.float32(448.0), np.float32(3e-39)):
        got = ckptpilot.dequantize(codes, np.array([scale], dtype=np.float32))
        want = bf16_bits(table[codes] * scale)
        assert same_bits(got, want), scale
    # Per channel [N] and [N, 1]; float16 / float32 outputs; e5m2.
    rows = np.linspace(0.01, 3.0, 8).astype(np.float32)
    want = bf16_bits(table[codes] * rows[:, None])
    assert same_bits(ckptpilot.dequantize(codes, rows), want)
    assert same_bits(ckptpilot.dequantize(codes, rows.reshape(8, 1)), want)
    f32 = ckptpilot.dequantize(codes, rows, out_dtype="float32")
    assert f32.dtype == np.float32 and np.array_equal(f32, table[codes] * rows[:, None], equal_nan=True)
    f16 = ckptpilot.dequantize(codes, rows, out_dtype="float16")
    assert np.array_equal(f16, (table[codes] * rows[:, None]).astype(np.float16), equal_nan=True)
    e5 = ckptpilot.dequantize(codes, np.ones(1, np.float32), fmt="e5m2", out_dtype="float32")
    e5_ref = (codes.astype(np.uint16) << 8).view(np.float16).astype(np.float32)
    assert np.array_equal(e5, e5_ref, equal_nan=True)
    # Block scales with partial edge blocks: [3, 5] over 2x2 blocks of 2x2 codes... of a 5x9 weight.
    w = (np.arange(45, dtype=np.uint32) * 37 % 256).astype(np.uint8).reshape(5, 9)
    s = np.arange(1, 16, dtype=np.float32).reshape(3, 5) / 7
    full = np.repeat(np.repeat(s, 2, axis=0), 2, axis=1)[:5, :9]
    assert same_bits(ckptpilot.dequantize(w, s, block_size=(2, 2)), bf16_bits(table[w] * full))


def test_dequantize_refuses_what_does_not_fit():
    codes = np.zeros((4, 6), np.uint8)
    with pytest.raises(ValueError, match="scale"):
        ckptpilot.dequantize(codes, np.ones((3, 3), np.float32), block_size=(2, 2))
    with pytest.raises(ValueError, match="float32"):
        ckptpilot.dequantize(codes, np.ones(4, np.float64))
    with pytest.raises(ValueError, match="uint8"):
        ckptpilot.dequantize(codes.astype(np.int32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="not C-contiguous"):
        ckptpilot.dequantize(np.zeros((6, 4), np.uint8).T, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="shape"):
        ckptpilot.dequantize(b"\x00" * 24, np.ones(1, np.float32))
    assert ckptpilot.dequantize(b"\x38" * 24, np.ones(1, np.float32), shape=(4, 6), out_dtype="float32").max() == 1.0


def test_generated_load_time_dequant_uses_the_rust_kernel_and_agrees_with_its_python_path():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "src" / "stub" / "assets"))
    try:
        import fp8_dequant
    finally:
        sys.path.pop(0)
    assert fp8_dequant._ckptpilot is ckptpilot
    w = torch.randint(0, 256, (300, 260), dtype=torch.uint8).view(torch.float8_e4m3fn)
    s = torch.rand(3, 3) * 0.01
    fast = fp8_dequant.dequantize(w, s, block_size=(128, 128))
    slow = fp8_dequant.dequantize(w, s, block_size=(128, 128), use_ckptpilot=False)
    assert fast.dtype == torch.bfloat16
    a, b = fast.view(torch.int16), slow.view(torch.int16)
    nan = torch.isnan(fast.float()) & torch.isnan(slow.float())
    assert bool(((a == b) | nan).all())
