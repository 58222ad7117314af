"""Type stubs of the extension module (python/src/lib.rs)."""

__version__: str
VLLM_REFERENCE: str

def _cli(argv: list[str]) -> int: ...
def _run_captured(argv: list[str]) -> tuple[int, bytes, list[tuple[str, str]]]: ...
def _dequantize_fp8(
    weight: bytes,
    shape: list[int],
    fmt: str,
    scale: bytes,
    layout: str,
    block: tuple[int, int] | None = None,
    out_dtype: str = "bfloat16",
) -> bytearray: ...
