#!/usr/bin/env bash
# `ckptpilot quantize --to w8a8-dynamic` (or w4a8-dynamic) side by side with msModelSlim 26.1.0 on
# the CPU, on the same bf16 checkpoint, then every file msModelSlim derives from the weights compared
# byte for byte.
#
#   bash benches/quantize_vs_msmodelslim.sh MODEL_DIR [PART_GIB] [TO] [MODEL_TYPE]
#
# MODEL_DIR: a transformers checkpoint (benches/make_bf16_llama.py writes a 2.3 GB Llama,
# benches/quantize_make_moe.py a Qwen3-MoE). PART_GIB: part_file_size for both (default 1, so a
# 2.3 GB model is written in several parts). TO: w8a8-dynamic (default; msModelSlim gets
# shared/recipes/modelslim/w8a8_dynamic.yaml) or w4a8-dynamic (w4a8_dynamic_moe.yaml).
# MODEL_TYPE: msModelSlim's --model_type (default: default; Qwen3-30B for a Qwen3-MoE).
# Needs the msModelSlim venv of tools/fixtures_modelslim.sh (MSM_VENV, default /tmp/msm/gen/venv)
# and a release build (cargo build --release; CKPTPILOT= names another binary).
# Scratch: $SCRATCH (default /tmp/ckptpilot-vs-msm).
# Times are wall seconds of each whole command (msModelSlim: load, calibrate on 4x32 tokens,
# quantize, save; ckptpilot: read, quantize, write), peak RSS from /usr/bin/time.
set -euo pipefail
MODEL=$(cd "$1" && pwd); PART=${2:-1}; TO=${3:-w8a8-dynamic}; MTYPE=${4:-default}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CKPTPILOT:-$ROOT/target/release/ckptpilot}
RECIPES=$ROOT/../shared/recipes/modelslim
[ -d "$RECIPES" ] || RECIPES=/work/shared/recipes/modelslim
VENV=${MSM_VENV:-/tmp/msm/gen/venv}
W=${SCRATCH:-/tmp/ckptpilot-vs-msm}
rm -rf "$W"; mkdir -p "$W"
export PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES="" TOKENIZERS_PARALLELISM=false
# msModelSlim needs a tokenizer and calibration text beside the weights (not read by ckptpilot).
"$VENV/bin/python" "$ROOT/tools/fixtures_modelslim_prep.py" "$MODEL" "$W/model" "$W/calib.jsonl"
case "$TO" in
    w8a8-dynamic) RECIPE=w8a8_dynamic.yaml ;;
    w4a8-dynamic) RECIPE=w4a8_dynamic_moe.yaml ;;
    *) echo "TO: w8a8-dynamic or w4a8-dynamic" >&2; exit 2 ;;
esac
# The shared recipe, with this run's calibration file and part size (the recipes' per-channel min-max
# weights need no calibration, but msModelSlim reads the dataset anyway).
sed -e "s#CALIB.jsonl#$W/calib.jsonl#" -e "s#part_file_size: 4#part_file_size: $PART#" "$RECIPES/$RECIPE" > "$W/recipe.yaml"
cat "$W"/model/*.safetensors > /dev/null   # warm page cache for both
(cd "$W" && /usr/bin/time -f "msmodelslim %e s wall, %M KB peak RSS" "$VENV/bin/msmodelslim" quant \
    --model_path "$W/model" --save_path "$W/msm" --device cpu --config_path "$W/recipe.yaml" \
    --model_type "$MTYPE" --trust_remote_code False > "$W/msm.log" 2> "$W/msm.time") || { tail -30 "$W/msm.log"; exit 1; }
/usr/bin/time -f "ckptpilot %e s wall, %M KB peak RSS" "$BIN" quantize "$W/model" \
    --to "$TO" --out "$W/ck" --part-file-size "$PART" --quiet > /dev/null 2> "$W/ck.time"
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
