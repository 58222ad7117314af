# The pinned msModelSlim environment both fixture scripts use (tools/fixtures_modelslim.sh,
# tools/fixtures_modelslim_mx.sh): sourced after $PY is set. One list, so the two cannot drift.
# Exact versions (pip freeze of the venv the fixtures were made with, python 3.11, linux x86_64).
PINS="msmodelslim==26.1.0 torch==2.7.1 transformers==4.57.6 tokenizers==0.22.2 safetensors==0.8.0
accelerate==1.15.0 numpy==2.4.6 huggingface_hub==0.36.2 scipy==1.17.1 pydantic==2.14.4 PyYAML==6.0.4"
CONSTRAINTS="annotated-types==0.8.0 bracex==3.2.3 certifi==2026.10.19.post1 charset-normalizer==3.5.3
easydict==1.13 einops==0.8.2 filelock==4.3.1 fsspec==2026.9.0 hf-xet==1.8.0 idna==3.20 Jinja2==3.1.6
MarkupSafe==3.0.4 mpmath==1.3.0 networkx==3.6.1 nvidia-cublas-cu12==12.6.4.1 nvidia-cuda-cupti-cu12==12.6.80
nvidia-cuda-nvrtc-cu12==12.6.77 nvidia-cuda-runtime-cu12==12.6.77 nvidia-cudnn-cu12==9.5.1.17
nvidia-cufft-cu12==11.3.0.4 nvidia-cufile-cu12==1.11.1.6 nvidia-curand-cu12==10.3.7.77
nvidia-cusolver-cu12==11.7.1.2 nvidia-cusparse-cu12==12.5.4.2 nvidia-cusparselt-cu12==0.6.3
nvidia-nccl-cu12==2.26.2 nvidia-nvjitlink-cu12==12.6.85 nvidia-nvtx-cu12==12.6.77 packaging==26.4 psutil==7.2.2
pydantic_core==2.50.5 pygtrie==2.6.2 regex==2026.11.19 requests==2.34.2 sympy==1.14.0 tqdm==4.70.1
triton==3.3.1 typing-inspection==0.4.5 typing_extensions==4.16.0 urllib3==2.8.0 wcmatch==12.0.3"

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
if bad:
    print("version mismatch:\n  " + "\n  ".join(bad), file=sys.stderr); sys.exit(1)
print("versions ok:", " ".join(sys.argv[1:]))
EOF
}
