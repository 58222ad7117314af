"""ckptpilot: pre-flight checks for Hugging Face checkpoints headed for vLLM / vLLM-Ascend.

The same library as the ``ckptpilot`` command, in-process:

    import ckptpilot
    report = ckptpilot.audit("path/or/org/name")            # the dict `ckptpilot audit --json` prints
    plan = ckptpilot.plan("org/name", tp=[8, 16], target="vllm-ascend")
    table = ckptpilot.remap("org/name", tp=8)
    bf16 = ckptpilot.dequantize(fp8_codes, scale, block_size=(128, 128))

``audit``, ``plan`` and ``remap`` run the command itself and return its ``--json`` report, so they
answer exactly as the command does (a repo id the local cache lacks is read from the Hub, headers
only). A report with error findings or no feasible configuration is still returned (look at it); an
input that cannot be read, a refused layout or a bad argument raises :class:`CkptpilotError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, Union

from ._ckptpilot import VLLM_REFERENCE, __version__, _dequantize_fp8, _run_captured

__all__ = ["VLLM_REFERENCE", "CkptpilotError", "__version__", "audit", "dequantize", "plan", "remap"]

PathLike = Union[str, "os.PathLike[str]"]


class CkptpilotError(Exception):
    """A command that gave no report: ``status`` is its exit status (2 usage, 3 input, 1 refusal),
    ``help`` the fix it suggests."""

    def __init__(self, message: str, status: int, help: str = "") -> None:
        super().__init__(message if not help else f"{message}\nhelp: {help}")
        self.status = status
        self.help = help


def _report(argv: Sequence[str]) -> dict[str, Any]:
    status, out, errors = _run_captured(["ckptpilot", *argv])
    if status in (0, 1) and out:
        return json.loads(out)
    msg, hint = errors[0] if errors else (f"ckptpilot {' '.join(argv)} exited {status} without a report", "")
    raise CkptpilotError(msg, status, hint)


def _common(target: str | None, rules: Iterable[PathLike], offline: bool) -> list[str]:
    a: list[str] = []
    if target is not None:
        a += ["--target", target]
    for r in rules:
        a += ["--rules", os.fspath(r)]
    if offline:
        a.append("--offline")
    return a


def _ints(xs: int | Iterable[int]) -> str:
    return ",".join(str(int(x)) for x in ([xs] if isinstance(xs, int) else xs))


def audit(
    model: PathLike, *, target: str = "vllm", rules: Iterable[PathLike] = (), offline: bool = False
) -> dict[str, Any]:
    """``ckptpilot audit MODEL --json``: findings, shards, dtypes, the model summary."""
    return _report(["audit", os.fspath(model), "--json", *_common(target, rules, offline)])


def plan(
    model: PathLike,
    *,
    tp: int | Iterable[int] | None = None,
    ep: bool | str | None = None,
    dp: int | None = None,
    pp: int | None = None,
    target: str = "vllm",
    device: str | None = None,
    device_memory: str | None = None,
    gpu_memory_utilization: float | None = None,
    max_model_len: int | str | None = None,
    max_num_seqs: int | None = None,
    kv_cache_dtype: str | None = None,
    rules: Iterable[PathLike] = (),
    offline: bool = False,
) -> dict[str, Any]:
    """``ckptpilot plan MODEL --json``: each parallel configuration, vLLM's verdict, per-rank memory.
    ``ep``: True / False, or "both" to plan each TP with and without expert parallelism."""
    a = ["plan", os.fspath(model), "--json", *_common(target, rules, offline)]
    if tp is not None:
        a += ["--tp", _ints(tp)]
    if ep is not None:
        a.append("--ep=" + (ep if isinstance(ep, str) else ("on" if ep else "off")))
    for flag, v in (
        ("--dp", dp),
        ("--pp", pp),
        ("--device", device),
        ("--device-memory", device_memory),
        ("--gpu-memory-utilization", gpu_memory_utilization),
        ("--max-model-len", max_model_len),
        ("--max-num-seqs", max_num_seqs),
        ("--kv-cache-dtype", kv_cache_dtype),
    ):
        if v is not None:
            a += [flag, str(v)]
    return _report(a)


def remap(
    model: PathLike,
    *,
    tp: int = 1,
    ep: bool = False,
    target: str = "vllm",
    rules: Iterable[PathLike] = (),
    offline: bool = False,
) -> dict[str, Any]:
    """``ckptpilot remap MODEL --json``: every tensor's vLLM parameter, shard and expert id, TP slice."""
    a = ["remap", os.fspath(model), "--json", "--tp", str(int(tp)), *_common(target, rules, offline)]
    if ep:
        a.append("--ep")
    return _report(a)


_FP8 = {"float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2", "e4m3": "e4m3", "e5m2": "e5m2"}
_OUT = {"bfloat16": ("bfloat16", "<u2"), "float16": ("float16", "<f2"), "float32": ("float32", "<f4")}


def _bytes_and_shape(x: Any, what: str) -> tuple[bytes, tuple[int, ...], str]:
    """The bytes, shape and item format of any C-contiguous object with the buffer protocol (numpy
    arrays, bytes, memoryviews)."""
    m = memoryview(x)
    if not m.c_contiguous:
        raise ValueError(f"{what}: not C-contiguous (pass a contiguous copy)")
    return m.tobytes(), tuple(m.shape or ()), m.format


def dequantize(
    weight: Any,
    scale: Any,
    *,
    block_size: tuple[int, int] | None = None,
    fmt: str = "e4m3",
    out_dtype: str = "bfloat16",
    shape: Sequence[int] | None = None,
) -> Any:
    """fp8 ``weight`` [..., N, K] (its codes as uint8, or an fp8 array) times its float32 ``scale``:
    block scales [ceil(N/bn), ceil(K/bk)] with ``block_size=(bn, bk)``, per-channel [N] / [N, 1], or
    one per tensor. Bit-exact with ``ckptpilot dequant``: exact decode, one f32 multiply, one rounding
    to nearest even. Returns a numpy array of ``shape`` (bfloat16 as its uint16 bits: view it with
    ``torch.from_numpy(a).view(torch.bfloat16)``), or a memoryview when numpy is absent."""
    fmt = _FP8.get(str(getattr(weight, "dtype", fmt)), fmt)
    if fmt not in ("e4m3", "e5m2"):
        raise ValueError(f"fmt {fmt!r}: expected 'e4m3' or 'e5m2'")
    if out_dtype not in _OUT:
        raise ValueError(f"out_dtype {out_dtype!r}: expected one of {sorted(_OUT)}")
    w, wshape, wfmt = _bytes_and_shape(weight, "weight")
    if wfmt not in ("B", "b", "c"):
        raise ValueError(f"weight: items of format {wfmt!r}; pass the fp8 codes as uint8 (tensor.view(torch.uint8))")
    shape = tuple(int(d) for d in (shape if shape is not None else wshape))
    if len(shape) < 2:
        raise ValueError(f"weight: shape {shape} is not [..., N, K] (pass shape= for a flat buffer)")
    s, _, sfmt = _bytes_and_shape(scale, "scale")
    if sfmt not in ("f", "<f", "=f"):
        raise ValueError(f"scale: items of format {sfmt!r}; float32 expected (convert with .astype('float32'))")
    n_scales = len(s) // 4
    if n_scales == 1 and block_size is None:
        layout = "tensor"
    elif block_size is not None:
        layout = "block"
    else:
        layout = "channel"
    out = _dequantize_fp8(w, list(shape), fmt, s, layout, tuple(block_size) if block_size else None, out_dtype)
    try:
        import numpy as np
    except ImportError:
        return memoryview(out).cast("H" if out_dtype != "float32" else "f", shape)
    return np.frombuffer(out, dtype=np.dtype(_OUT[out_dtype][1])).reshape(shape)
