#!/usr/bin/env bash
# Regenerate fixtures/modelslim-*-mx* and the other Ascend 950 (MX / FP8) fixtures: tiny checkpoints written by
# msModelSlim 26.1.0 itself, on the CPU, from fixtures/llama, fixtures/qwen3-moe and a bf16 Qwen3 dense
# (fixtures/qwen3-dense-fp8 + its .reference, tools/fixtures_modelslim_fp8ref.py; only for the FlatQuant attempt).
# Same venv and pins as tools/fixtures_modelslim.sh (its default venv /tmp/msm/gen/venv is reused when the pins match);
# a separate scratch dir so the two scripts never wipe each other's run/.
#
#   bash tools/fixtures_modelslim_mx.sh           # from the repo root
#
# Env: MSM_WORK  scratch dir (default /tmp/msm/mx). msModelSlim records the calibration file's absolute path
#                ($MSM_WORK/run/calib.jsonl) in *_best_practice.yaml: keep the default for byte-identical fixtures.
#      MSM_VENV  venv to use (default /tmp/msm/gen/venv, built here with the pins below if missing or different).
#
# Writes (each dir = exactly the files msModelSlim wrote, nothing removed; tokenizer files ~11 KB, kept):
#   modelslim_v1 pipeline (`msmodelslim quant`, linear_quant min-max RTN, no anti-outlier / rotation), from the
#   MX lab_practice recipes (qwen3_vl_moe_w8a8_mxfp8.yaml, longcat_flash_w4a4_mxfp4.yaml) without quarot / iter_smooth:
#   fixtures/modelslim-llama-w8a8-mxfp8         W8A8_MXFP8   act+weight per_block mxfp8           --model_type default
#   fixtures/modelslim-llama-w4a4-mxfp4         W4A4_MXFP4   act+weight per_block mxfp4           --model_type default
#   fixtures/modelslim-llama-w4a8-mxfp          W4A8_MXFP    act per_block mxfp8, weight mxfp4    --model_type default
#   fixtures/modelslim-qwen3-moe-w8a8-mxfp8     W8A8_MXFP8   attention + experts                  --model_type Qwen3-30B
#   fixtures/modelslim-qwen3-moe-w4a4-mxfp4     W4A4_MXFP4   attention + experts                  --model_type Qwen3-30B
#   fixtures/modelslim-qwen3-moe-w4a8-mxfp      W4A8_MXFP    attention + experts                  --model_type Qwen3-30B
#   fixtures/modelslim-llama-wfp8afp8-dynamic   act per_token fp8_e4m3, weight per_channel fp8_e4m3: msModelSlim
#        names it WFP8AFP8_DYNAMIC, a scheme vLLM-Ascend 182b75ea84 does not register (it registers W8A8FP8_DYNAMIC):
#        kept as the evidence that such a checkpoint is refused (audit: modelslim-scheme)
#   data-free converter (`msmodelslim quant` with `apiversion: modelslim_convert`, no calibration, no runner):
#   fixtures/modelslim-llama-w8a8-mxfp8-convert     FLOAT -> W8A8_MXFP8, the decoder layers' linears
#   fixtures/modelslim-qwen3-moe-w8a8-mxfp8-convert FLOAT -> W8A8_MXFP8, attention + experts (router gate FLOAT)
#   fixtures/modelslim-qwen3-dense-fp8-w8a8-mxfp8-convert  FP8_BLOCK -> FLOAT -> W8A8_MXFP8 (the converter's auto route)
#        straight from fixtures/qwen3-dense-fp8 (128x128-block fp8 + weight_scale_inv, no tokenizer): weight_scale_inv
#        dropped, quantization_config removed from config.json, --model_type Qwen3-8B
# Not produced (the script checks that they still fail, with the error):
#   W4A16_MXFP4 (weight-only mxfp4): "No implementation found for ABC AutoFakeQuantLinear with dispatch key:
#        (QScheme(scope=per_tensor, dtype=float ...), QScheme(scope=per_block, dtype=mxfp4 ...))"; ascendv1 saver
#        has no handler for it either
#   W4A4_MXFP4_FLATQUANT (flatquant + mxfp4 linear_quant, Qwen3-8B adapter): FlatQuant's trainer fails,
#        "RuntimeError: The size of tensor a (32) must match the size of tensor b (128) at non-singleton dimension 0"
#        (processor/flat_quant/trainer.py takes [0] of a decoder layer's output, which transformers 4.57 returns as a
#        tensor, not a tuple)
# Two runs of this script give byte-identical fixtures (checked with msmodelslim 26.1.0 / torch 2.7.1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=$ROOT/tools
WORK=${MSM_WORK:-/tmp/msm/mx}
VENV=${MSM_VENV:-/tmp/msm/gen/venv}
RUN=$WORK/run
PY=$VENV/bin/python

# PINS, CONSTRAINTS and check_versions (one list for both fixture scripts).
. "$TOOLS/modelslim_pins.sh"

if [ ! -x "$PY" ] || ! check_versions >/dev/null 2>&1; then
    [ -n "${MSM_VENV:-}" ] && { check_versions; exit 1; }
    mkdir -p "$WORK"; VENV=$WORK/venv; PY=$VENV/bin/python
    if [ ! -x "$PY" ] || ! check_versions >/dev/null 2>&1; then
        rm -rf "$VENV"; python3 -m venv "$VENV"
        printf '%s\n' $PINS $CONSTRAINTS > "$WORK/constraints.txt"
        "$VENV/bin/pip" install -q -c "$WORK/constraints.txt" $PINS
    fi
fi
check_versions

export PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES="" TOKENIZERS_PARALLELISM=false
rm -rf "$RUN"; mkdir -p "$RUN/out"

"$PY" "$TOOLS/fixtures_modelslim_prep.py" "$ROOT/fixtures/llama" "$RUN/llama" "$RUN/calib.jsonl"
"$PY" "$TOOLS/fixtures_modelslim_prep.py" "$ROOT/fixtures/qwen3-moe" "$RUN/qwen3-moe" "$RUN/calib.jsonl"
"$PY" "$TOOLS/fixtures_modelslim_fp8ref.py" "$ROOT/fixtures/qwen3-dense-fp8" \
    "$ROOT/fixtures/qwen3-dense-fp8.reference/dequant_bf16.safetensors" "$RUN/qwen3-dense-bf16"
"$PY" "$TOOLS/fixtures_modelslim_prep.py" "$RUN/qwen3-dense-bf16" "$RUN/qwen3-dense" "$RUN/calib.jsonl"
cp -r "$ROOT/fixtures/qwen3-dense-fp8" "$RUN/qwen3-dense-fp8"   # the converter needs no tokenizer nor calibration

v1() {  # NAME ACT_QCONFIG WEIGHT_QCONFIG [EXTRA_PROCESS]
    cat > "$RUN/$1.yaml" <<EOF
apiversion: modelslim_v1
metadata:
  config_id: tiny-$1
  label: {w_bit: 8, a_bit: 8, is_sparse: False, kv_cache: False}
spec:
  process:${4:-}
    - type: "linear_quant"
      qconfig:
$2
        weight: $3
      include: ["*"]
      exclude: ["*mlp.gate"]
  runner: "${5:-model_wise}"
  dataset: $RUN/calib.jsonl
  save:
    - type: "ascendv1_saver"
      part_file_size: 4
EOF
}
MXFP8='{scope: "per_block", dtype: "mxfp8", symmetric: True, method: "minmax"}'
MXFP4='{scope: "per_block", dtype: "mxfp4", symmetric: True, method: "minmax"}'
FP8T='{scope: "per_token", dtype: "fp8_e4m3", symmetric: True, method: "minmax"}'
FP8C='{scope: "per_channel", dtype: "fp8_e4m3", symmetric: True, method: "minmax"}'
v1 w8a8_mxfp8       "        act: $MXFP8" "$MXFP8"
v1 w4a4_mxfp4       "        act: $MXFP4" "$MXFP4"
v1 w4a8_mxfp        "        act: $MXFP8" "$MXFP4"
v1 wfp8afp8_dynamic "        act: $FP8T"  "$FP8C"
v1 w4a16_mxfp4      ""                   "$MXFP4"
v1 w4a4_mxfp4_flatquant "        act: $MXFP4" "$MXFP4" '
    - type: "flatquant"' layer_wise

convert() {  # NAME PATTERN...
    local name=$1; shift
    { printf 'apiversion: modelslim_convert\nmetadata:\n  config_id: tiny-%s\n' "$name"
      printf '  label: {w_bit: 8, a_bit: 8, is_sparse: False, kv_cache: False}\nspec:\n  linears:\n'
      printf '    - match: [%s]\n      target: W8A8_MXFP8\n' "$(printf '"%s", ' "$@" | sed 's/, $//')"
      printf '  save:\n    - type: "ascend_v1"\n      part_file_size: 4\n'; } > "$RUN/$name.yaml"
}
convert convert_w8a8_mxfp8_dense "model.layers.*.self_attn.*_proj" "model.layers.*.mlp.*_proj"
convert convert_w8a8_mxfp8_moe   "model.layers.*.self_attn.*_proj" "model.layers.*.mlp.experts.*"

run() {  # NAME MODEL CONFIG MODEL_TYPE
    (cd "$RUN" && "$VENV/bin/msmodelslim" quant --model_path "$RUN/$2" --save_path "$RUN/out/modelslim-$1" --device cpu \
        --config_path "$RUN/$3.yaml" --model_type "$4" --trust_remote_code False) > "$RUN/$1.log" 2>&1
}
quant() { echo "== modelslim-$1"; run "$@" || { tail -30 "$RUN/$1.log"; exit 1; }; }
fails() {  # NAME MODEL CONFIG MODEL_TYPE EXPECTED_ERROR_TEXT
    echo "== $1 (expected to fail)"
    if run "$1" "$2" "$3" "$4"; then echo "$1: msModelSlim now writes it: make it a fixture" >&2; exit 1; fi
    grep -qF -- "$5" "$RUN/$1.log" || { tail -30 "$RUN/$1.log"; echo "$1: failed with another error" >&2; exit 1; }
    echo "   fails as recorded: $5"
    rm -rf "$RUN/out/modelslim-$1"
}
quant llama-w8a8-mxfp8              llama     w8a8_mxfp8       default
quant llama-w4a4-mxfp4              llama     w4a4_mxfp4       default
quant llama-w4a8-mxfp               llama     w4a8_mxfp        default
quant qwen3-moe-w8a8-mxfp8          qwen3-moe w8a8_mxfp8       Qwen3-30B
quant qwen3-moe-w4a4-mxfp4          qwen3-moe w4a4_mxfp4       Qwen3-30B
quant qwen3-moe-w4a8-mxfp           qwen3-moe w4a8_mxfp        Qwen3-30B
quant llama-wfp8afp8-dynamic        llama     wfp8afp8_dynamic default
quant llama-w8a8-mxfp8-convert      llama     convert_w8a8_mxfp8_dense default
quant qwen3-moe-w8a8-mxfp8-convert  qwen3-moe convert_w8a8_mxfp8_moe   Qwen3-30B
quant qwen3-dense-fp8-w8a8-mxfp8-convert qwen3-dense-fp8 convert_w8a8_mxfp8_dense Qwen3-8B
fails llama-w4a16-mxfp4 llama w4a16_mxfp4 default \
    "No implementation found for ABC <class 'msmodelslim.ir.auto.AutoFakeQuantLinear'> with dispatch key: (QScheme(scope=per_tensor, dtype=float, symmetric=True), QScheme(scope=per_block, dtype=mxfp4, symmetric=True))"
fails qwen3-dense-w4a4-mxfp4-flatquant qwen3-dense w4a4_mxfp4_flatquant Qwen3-8B \
    "RuntimeError: The size of tensor a (32) must match the size of tensor b (128) at non-singleton dimension 0"

for d in "$RUN"/out/modelslim-*; do
    name=$(basename "$d")
    chmod -R u+rwX,go+rX "$d"            # msModelSlim writes 0600/0400 files
    rm -rf "$ROOT/fixtures/$name"; cp -r "$d" "$ROOT/fixtures/$name"
    echo "$name: $(du -sb "$ROOT/fixtures/$name" | cut -f1) bytes"
done
