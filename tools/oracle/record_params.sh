#!/usr/bin/env bash
# Record what vLLM 0.33.0 allocates per TP rank for the family fixtures (fixtures/oracle/params/).
#
#   tools/oracle/record_params.sh [NAME ...]        # default: every fixture below, TP 1 2 4
#   TPS="1 2" tools/oracle/record_params.sh llama
#
# One oracle invocation at a time (each TP rank is a process). Needs ~/vllm-oracle-venv with
# vllm==0.33.0 and ../shared/tools/vllm-oracle (see its README). Timings go to $WORK/times.tsv.
set -u
cd "$(dirname "$0")/../.."
PY=${PY:-$HOME/vllm-oracle-venv/bin/python}
ORACLE=${ORACLE:-../shared/tools/vllm-oracle/oracle.py}
WORK=${WORK:-/tmp/oracle}
TPS=${TPS:-"1 2 4"}
mkdir -p "$WORK" fixtures/oracle/params
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(llama mistral qwen2 qwen3-dense qwen3-moe mixtral deepseek-v3-mla glm4-moe olmo2
  gpt-oss qwen3-next qwen2.5-vl-new qwen3-vl gemma3-tied gemma3-mm qwen3-dense-fp8 qwen3-moe-fp8 deepseek-fp8)
for name in "${NAMES[@]}"; do
  for tp in $TPS; do
    res="$WORK/$name.tp$tp.json"
    rm -f "$WORK/$name.tp$tp"*.json
    t0=$(date +%s)
    "$PY" "$ORACLE" "fixtures/$name" --tp "$tp" --max-model-len 256 --force-cpu-kernels --timeout 420 \
      --out "$res" >"$WORK/$name.tp$tp.log" 2>&1
    rc=$?
    t1=$(date +%s)
    printf '%s\t%s\t%s\t%s\n' "$name" "$tp" "$((t1 - t0))" "$rc" >>"$WORK/times.tsv"
    python3 tools/oracle/export_params.py "$res" "$tp" "fixtures/oracle/params/$name.tp$tp.json"
    echo "$name tp$tp: $((t1 - t0)) s rc=$rc"
  done
done
