#!/usr/bin/env bash
# `ckptpilot quantize --to w8a8-dynamic` side by side with msModelSlim 26.1.0 on the CPU, on the
# same bf16 checkpoint, then every file msModelSlim derives from the weights compared byte for byte.
#
#   bash benches/quantize_vs_msmodelslim.sh MODEL_DIR [PART_GIB]
#
# MODEL_DIR: a transformers Llama checkpoint (benches/make_bf16_llama.py writes a 2.3 GB one).
# PART_GIB: part_file_size for both (default 1, so a 2.3 GB model is written in several parts).
# Needs the msModelSlim venv of tools/fixtures_modelslim.sh (MSM_VENV, default /tmp/msm/gen/venv)
# and a release build (cargo build --release). Scratch: $SCRATCH (default /tmp/ckptpilot-vs-msm).
# Times are wall seconds of each whole command (msModelSlim: load, calibrate on 4x32 tokens,
# quantize, save; ckptpilot: read, quantize, write), peak RSS from /usr/bin/time.
set -euo pipefail
MODEL=$(cd "$1" && pwd); PART=${2:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${MSM_VENV:-/tmp/msm/gen/venv}
W=${SCRATCH:-/tmp/ckptpilot-vs-msm}
rm -rf "$W"; mkdir -p "$W"
export PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES="" TOKENIZERS_PARALLELISM=false
# msModelSlim needs a tokenizer and calibration text beside the weights (not read by ckptpilot).
"$VENV/bin/python" "$ROOT/tools/fixtures_modelslim_prep.py" "$MODEL" "$W/model" "$W/calib.jsonl"
cat > "$W/w8a8_dynamic.yaml" <<YAML
apiversion: modelslim_v1
metadata:
  config_id: bench-w8a8-dynamic-rtn
  label: {w_bit: 8, a_bit: 8, is_sparse: False, kv_cache: False}
spec:
  process:
    - type: "linear_quant"
      qconfig:
        act:    {scope: "per_token",   dtype: "int8", symmetric: True, method: "minmax"}
        weight: {scope: "per_channel", dtype: "int8", symmetric: True, method: "minmax"}
      include: ["*"]
      exclude: ["*mlp.gate"]
  runner: "model_wise"
  dataset: $W/calib.jsonl
  save:
    - type: "ascendv1_saver"
      part_file_size: $PART
YAML
cat "$W"/model/*.safetensors > /dev/null   # warm page cache for both
(cd "$W" && /usr/bin/time -f "msmodelslim %e s wall, %M KB peak RSS" "$VENV/bin/msmodelslim" quant \
    --model_path "$W/model" --save_path "$W/msm" --device cpu --config_path "$W/w8a8_dynamic.yaml" \
    --model_type default --trust_remote_code False > "$W/msm.log" 2> "$W/msm.time") || { tail -30 "$W/msm.log"; exit 1; }
/usr/bin/time -f "ckptpilot %e s wall, %M KB peak RSS" "$ROOT/target/release/ckptpilot" quantize "$W/model" \
    --to w8a8-dynamic --out "$W/ck" --part-file-size "$PART" --quiet > /dev/null 2> "$W/ck.time"
tail -1 "$W/msm.time"; tail -1 "$W/ck.time"
python3 - "$W" <<'PY'
import re, sys
w = sys.argv[1]
msm = float(re.search(r"([\d.]+) s wall", open(f"{w}/msm.time").read().splitlines()[-1]).group(1))
ck = float(re.search(r"([\d.]+) s wall", open(f"{w}/ck.time").read().splitlines()[-1]).group(1))
print(f"ckptpilot is {msm / ck:.1f}x faster than msModelSlim (wall time ratio msModelSlim / ckptpilot)")
PY
same=0; diff=0
for f in "$W"/msm/quant_model_* "$W"/msm/config.json; do
    b=$(basename "$f")
    if cmp -s "$f" "$W/ck/$b"; then same=$((same+1)); else diff=$((diff+1)); echo "DIFFERS: $b"; fi
done
echo "files compared: $same identical, $diff different ($(ls "$W"/msm/quant_model_weights-*.safetensors | wc -l) weight parts)"
