#!/usr/bin/env bash
# Regenerate the 4-bit fixtures and their bf16 references (tools/fixtures_fp4.py), on the CPU, from the tiny bf16
# fixtures fixtures/llama and fixtures/gpt-oss (read, never modified):
#
#   bash tools/fixtures_fp4.sh              # from the repo root; needs python3.11 + PyPI (~4 GB of wheels)
#
# Env: FP4_WORK  scratch dir (default /tmp/fp4). Its venv/ is reused when its pinned versions match; out/ is
#                wiped each time.
#      FP4_VENV  use this existing venv instead of $FP4_WORK/venv (its versions are still checked).
#
# Writes (each with NAME.reference/dequant_bf16.safetensors: the producer's own bf16 dequantization, one tensor a
# weight, named as the bf16 weight; its metadata records the versions):
#   fixtures/gpt-oss-mxfp4     gpt-oss on-disk MXFP4 (experts _blocks/_scales, config of openai/gpt-oss-20b);
#                              codes packed by the generator (transformers' quantizer needs a hub kernel);
#                              reference: transformers.integrations.mxfp4.convert_moe_packed_tensors
#   fixtures/mxfp4-edge        every e8m0 scale byte x every block byte; same reference
#   fixtures/llama-nvfp4       llm-compressor oneshot NVFP4A16 (nvfp4-pack-quantized), data-free, lm_head ignored
#   fixtures/nvfp4-edge        every F8_E4M3 scale byte and packed byte, under 11 global scales (0 .. inf, nan)
#   fixtures/llama-w4a16       llm-compressor oneshot int4 group-32 symmetric min-max RTN (pack-quantized)
#   fixtures/llama-w4a16-asym  the same, asymmetric (weight_zero_point)
#   compressed-tensors references: the format compressor's decompress() on the stored tensors.
# The generator reloads each fixture with its producer's loader and checks it against the reference bit for bit.
# The `kernels` package must stay out of the venv (without it transformers dequantizes MXFP4 on a CPU load).
# Two runs of this script give byte-identical fixtures (checked with the pins below).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=$ROOT/tools
WORK=${FP4_WORK:-/tmp/fp4}
VENV=${FP4_VENV:-$WORK/venv}
OUT=$WORK/out
PY=$VENV/bin/python

# Exact versions (pip freeze of the venv the fixtures were made with, python 3.11, linux x86_64; torch is the
# PyPI wheel, CUDA build, run on the CPU).
PINS="llmcompressor==0.14.0.1 compressed-tensors==0.19.0 torch==2.14.0 transformers==5.17.0 safetensors==0.8.0
accelerate==1.15.0 numpy==2.4.6 huggingface_hub==1.33.0 tokenizers==0.23.3 triton==3.8.0"
CONSTRAINTS="annotated-doc==0.0.7 annotated-types==0.8.0 anyio==4.16.0 auto-round==0.15.1 certifi==2026.10.19.post1
charset-normalizer==3.5.3 click==8.5.1 cuda-bindings==13.5.0 cuda-pathfinder==1.9.1 cuda-toolkit==13.0.3.0
datasets==5.2.0 dill==0.4.1 filelock==4.3.1 fsspec==2026.9.0 h11==0.16.0 hf-xet==1.8.0 httpcore==1.0.9
httpx==0.28.1 idna==3.20 Jinja2==3.1.6 loguru==0.7.3 markdown-it-py==4.3.0 MarkupSafe==3.0.4 mdurl==0.1.2
mpmath==1.3.0 multiprocess==0.70.19 networkx==3.6.1 nvidia-cublas==13.1.1.3 nvidia-cuda-cupti==13.0.85
nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cudnn-cu13==9.24.0.43 nvidia-cufft==12.0.0.61
nvidia-cufile==1.15.1.6 nvidia-curand==10.4.0.35 nvidia-cusolver==12.0.4.66 nvidia-cusparse==12.6.3.3
nvidia-cusparselt-cu13==0.8.1 nvidia-ml-py==13.615.71 nvidia-nccl-cu13==2.30.7 nvidia-nvjitlink==13.5.37
nvidia-nvshmem-cu13==3.4.5 nvidia-nvtx==13.0.85 packaging==26.4 pandas==3.1.1 pillow==13.0.0 psutil==7.2.2
py-cpuinfo==9.0.0 pyarrow==26.0.1 pydantic==2.14.4 pydantic_core==2.50.5 Pygments==2.21.0
python-dateutil==4.0.0 PyYAML==6.0.4 regex==2026.11.19 requests==2.34.2 rich==15.0.0 shellingham==1.5.4
sympy==1.14.0 tqdm==4.70.1 typer==0.29.2 typing-inspection==0.4.5 typing_extensions==4.16.0 tzdata==2026.6
urllib3==2.8.0 xxhash==4.1.0"

check_versions() {
    "$PY" - $PINS <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        bad.append(f"{name}: want {want}, have {have}")
try:
    bad.append(f"kernels {version('kernels')} is installed: uninstall it (MXFP4 would load through the hub kernel)")
except PackageNotFoundError:
    pass
if bad:
    print("version mismatch:\n  " + "\n  ".join(bad), file=sys.stderr); sys.exit(1)
print("versions ok:", " ".join(sys.argv[1:]))
EOF
}

mkdir -p "$WORK"
if [ ! -x "$PY" ] || ! check_versions >/dev/null 2>&1; then
    [ -n "${FP4_VENV:-}" ] && { check_versions; exit 1; }
    rm -rf "$VENV"
    python3.11 -m venv "$VENV"
    printf '%s\n' $PINS $CONSTRAINTS > "$WORK/constraints.txt"
    "$VENV/bin/pip" install -q -c "$WORK/constraints.txt" $PINS
fi
check_versions

export PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES="" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
rm -rf "$OUT"; mkdir -p "$OUT"
"$PY" "$TOOLS/fixtures_fp4.py" "$ROOT" "$OUT" > "$WORK/fixtures_fp4.log" 2>&1 || { tail -40 "$WORK/fixtures_fp4.log"; exit 1; }
grep -E '^(gpt-oss|mxfp4|llama|nvfp4)' "$WORK/fixtures_fp4.log"

for d in "$OUT"/*; do
    name=$(basename "$d")
    rm -rf "$ROOT/fixtures/$name"; cp -r "$d" "$ROOT/fixtures/$name"
    echo "$name: $(du -sb "$ROOT/fixtures/$name" | cut -f1) bytes"
done
