#!/usr/bin/env bash
# Regenerate fixtures/modelslim-* : tiny checkpoints written by msModelSlim itself (vLLM-Ascend's quantizer),
# on the CPU, from the tiny bf16 fixtures fixtures/llama, fixtures/qwen3-moe and fixtures/qwen2 (copied, never modified)
# and a bf16 Qwen3 dense built from fixtures/qwen3-dense-fp8 + its .reference (tools/fixtures_modelslim_fp8ref.py).
# msModelSlim runs with $MSM_WORK/run as its working directory (the old API drops a features.npy there).
#
#   bash tools/fixtures_modelslim.sh              # from the repo root; needs python3.11 + PyPI (~3 GB of wheels)
#   bash tools/fixtures_modelslim.sh llama-w4a8-dynamic qwen3-moe-w4a8-dynamic    # only these (names below,
#                                                  without modelslim-); the others are left as they are
#
# Env: MSM_WORK  scratch dir (default /tmp/msm/gen). Its venv/ is reused when its pinned versions match;
#                run/ is wiped each time. Keep the default: msModelSlim records the calibration file's absolute
#                path ($MSM_WORK/run/calib.jsonl) in *_best_practice.yaml, so another MSM_WORK changes that file.
#      MSM_VENV  use this existing venv instead of $MSM_WORK/venv (its versions are still checked).
#
# Writes (each dir = exactly the files msModelSlim wrote, nothing removed; tokenizer files are ~11 KB, kept):
#   fixtures/modelslim-llama-w8a8-dynamic        W8A8_DYNAMIC  modelslim_v1 CLI, --model_type default
#   fixtures/modelslim-qwen3-moe-w8a8-dynamic    W8A8_DYNAMIC  modelslim_v1 CLI, --model_type Qwen3-30B
#   fixtures/modelslim-llama-w8a8                W8A8 (static) modelslim_v1 CLI, --model_type default
#   fixtures/modelslim-llama-w8a16               W8A16         modelslim_v1 CLI, --model_type default
#   fixtures/modelslim-qwen3-moe-w4a8-dynamic    W4A8_DYNAMIC experts + W8A8_DYNAMIC attention, Qwen3-30B
#   fixtures/modelslim-llama-w4a8-dynamic        the same MoE recipe on a dense Llama (no experts: every
#        linear of the decoder W8A8_DYNAMIC), --model_type default
#   fixtures/modelslim-qwen2-w8a8-dynamic        W8A8_DYNAMIC  modelslim_v1 CLI, --model_type default (q/k/v bias: F32)
#   fixtures/modelslim-qwen3-dense-fp8-w8a8-dynamic  W8A8_DYNAMIC  CLI, Qwen3-8B, on qwen3-dense-fp8's bf16 reference
#   fixtures/modelslim-llama-w8a8-dynamic-v0     W8A8_DYNAMIC  older Python API (msmodelslim.pytorch.llm_ptq),
#        save_type=['safe_tensor']; that API writes no config.json, so this script copies the source's
#        config.json next to its two files (the only file here that msModelSlim did not write).
# Two runs of this script give byte-identical fixtures (checked with msmodelslim 26.1.0 / torch 2.7.1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=$ROOT/tools
WORK=${MSM_WORK:-/tmp/msm/gen}
VENV=${MSM_VENV:-$WORK/venv}
RUN=$WORK/run
PY=$VENV/bin/python

# PINS, CONSTRAINTS and check_versions (one list for both fixture scripts).
. "$TOOLS/modelslim_pins.sh"

mkdir -p "$WORK"
if [ ! -x "$PY" ] || ! check_versions >/dev/null 2>&1; then
    [ -n "${MSM_VENV:-}" ] && { check_versions; exit 1; }
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    printf '%s\n' $PINS $CONSTRAINTS > "$WORK/constraints.txt"
    "$VENV/bin/pip" install -q -c "$WORK/constraints.txt" $PINS
fi
check_versions

export PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES="" TOKENIZERS_PARALLELISM=false
rm -rf "$RUN"; mkdir -p "$RUN/out"

# Inputs: copies of the bf16 fixtures + WordLevel tokenizer + calib.jsonl (same file for all models).
"$PY" "$TOOLS/fixtures_modelslim_prep.py" "$ROOT/fixtures/llama" "$RUN/llama" "$RUN/calib.jsonl"
"$PY" "$TOOLS/fixtures_modelslim_prep.py" "$ROOT/fixtures/qwen3-moe" "$RUN/qwen3-moe" "$RUN/calib.jsonl"
"$PY" "$TOOLS/fixtures_modelslim_prep.py" "$ROOT/fixtures/qwen2" "$RUN/qwen2" "$RUN/calib.jsonl"
# bf16 Qwen3 dense from the fp8 fixture: fp8 weights -> their reference dequantization, scales dropped (not a fixture).
"$PY" "$TOOLS/fixtures_modelslim_fp8ref.py" "$ROOT/fixtures/qwen3-dense-fp8" \
    "$ROOT/fixtures/qwen3-dense-fp8.reference/dequant_bf16.safetensors" "$RUN/qwen3-dense-fp8-bf16"
"$PY" "$TOOLS/fixtures_modelslim_prep.py" "$RUN/qwen3-dense-fp8-bf16" "$RUN/qwen3-dense-fp8ref" "$RUN/calib.jsonl"

# modelslim_v1 configs (from shared/recipes/modelslim): per-channel min-max RTN int8/int4 weights, no anti-outlier.
cat > "$RUN/w8a8_dynamic.yaml" <<EOF
apiversion: modelslim_v1
metadata:
  config_id: tiny-w8a8-dynamic-rtn
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
  dataset: $RUN/calib.jsonl
  save:
    - type: "ascendv1_saver"
      part_file_size: 4
EOF
cat > "$RUN/w8a8_static.yaml" <<EOF
apiversion: modelslim_v1
metadata:
  config_id: tiny-w8a8-static
  label: {w_bit: 8, a_bit: 8, is_sparse: False, kv_cache: False}
spec:
  process:
    - type: "linear_quant"
      qconfig:
        act:    {scope: "per_tensor",  dtype: "int8", symmetric: False, method: "minmax"}
        weight: {scope: "per_channel", dtype: "int8", symmetric: True,  method: "minmax"}
      include: ["*"]
      exclude: ["*mlp.gate"]
  runner: "model_wise"
  dataset: $RUN/calib.jsonl
  save:
    - type: "ascendv1_saver"
      part_file_size: 4
EOF
cat > "$RUN/w8a16.yaml" <<EOF
apiversion: modelslim_v1
metadata:
  config_id: tiny-w8a16
  label: {w_bit: 8, a_bit: 16, is_sparse: False, kv_cache: False}
spec:
  process:
    - type: "linear_quant"
      qconfig:
        weight: {scope: "per_channel", dtype: "int8", symmetric: True, method: "minmax"}
      include: ["*"]
      exclude: ["*mlp.gate"]
  runner: "model_wise"
  dataset: $RUN/calib.jsonl
  save:
    - type: "ascendv1_saver"
      part_file_size: 4
EOF
cat > "$RUN/w4a8_dynamic_moe.yaml" <<EOF
apiversion: modelslim_v1
metadata:
  config_id: tiny-moe-w4a8-dynamic
  label: {w_bit: 4, a_bit: 8, is_sparse: False, kv_cache: False}
default_w8a8_dynamic: &default_w8a8_dynamic
  act:    {scope: "per_token",   dtype: "int8", symmetric: True, method: "minmax"}
  weight: {scope: "per_channel", dtype: "int8", symmetric: True, method: "minmax"}
default_w4a8_dynamic: &default_w4a8_dynamic
  act:    {scope: "per_token",   dtype: "int8", symmetric: True, method: "minmax"}
  weight: {scope: "per_channel", dtype: "int4", symmetric: True, method: "minmax"}
spec:
  process:
    - type: "group"
      configs:
        - type: "linear_quant"
          qconfig: *default_w8a8_dynamic
          include: ["*self_attn*"]
        - type: "linear_quant"
          qconfig: *default_w8a8_dynamic
          include: ["*mlp*"]
          exclude: ["*mlp.gate", "*mlp.experts.*"]
        - type: "linear_quant"
          qconfig: *default_w4a8_dynamic
          include: ["*mlp.experts*"]
  runner: "model_wise"
  dataset: $RUN/calib.jsonl
  save:
    - type: "ascendv1_saver"
      part_file_size: 4
EOF

ONLY=" $* "
quant() {  # NAME MODEL CONFIG MODEL_TYPE
    [ "$ONLY" = "  " ] || [[ "$ONLY" == *" $1 "* ]] || return 0
    echo "== modelslim-$1"
    (cd "$RUN" && "$VENV/bin/msmodelslim" quant --model_path "$RUN/$2" --save_path "$RUN/out/modelslim-$1" --device cpu \
        --config_path "$RUN/$3.yaml" --model_type "$4" --trust_remote_code False) > "$RUN/$1.log" 2>&1 \
        || { tail -30 "$RUN/$1.log"; exit 1; }
}
quant llama-w8a8-dynamic      llama     w8a8_dynamic     default
quant qwen3-moe-w8a8-dynamic  qwen3-moe w8a8_dynamic     Qwen3-30B
quant llama-w8a8              llama     w8a8_static      default
quant llama-w8a16             llama     w8a16            default
quant qwen3-moe-w4a8-dynamic  qwen3-moe w4a8_dynamic_moe Qwen3-30B
quant qwen2-w8a8-dynamic      qwen2     w8a8_dynamic     default
quant qwen3-dense-fp8-w8a8-dynamic qwen3-dense-fp8ref w8a8_dynamic Qwen3-8B
quant llama-w4a8-dynamic      llama     w4a8_dynamic_moe default

if [ "$ONLY" = "  " ] || [[ "$ONLY" == *" llama-w8a8-dynamic-v0 "* ]]; then
echo "== modelslim-llama-w8a8-dynamic-v0"
(cd "$RUN" && "$PY" "$TOOLS/fixtures_modelslim_v0.py" "$RUN/llama" "$RUN/calib.jsonl" "$RUN/out/modelslim-llama-w8a8-dynamic-v0") \
    > "$RUN/llama-w8a8-dynamic-v0.log" 2>&1 || { tail -30 "$RUN/llama-w8a8-dynamic-v0.log"; exit 1; }
cp "$ROOT/fixtures/llama/config.json" "$RUN/out/modelslim-llama-w8a8-dynamic-v0/config.json"
fi

for d in "$RUN"/out/modelslim-*; do
    name=$(basename "$d")
    chmod -R u+rwX,go+rX "$d"            # msModelSlim writes 0600/0400 files
    rm -rf "$ROOT/fixtures/$name"; cp -r "$d" "$ROOT/fixtures/$name"
    echo "$name: $(du -sb "$ROOT/fixtures/$name" | cut -f1) bytes"
done
