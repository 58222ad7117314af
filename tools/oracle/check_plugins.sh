#!/usr/bin/env bash
# Proof in vLLM (issue 11 item 8): the plugin `ckptpilot stub --layout plugin` writes is the class vLLM
# 0.33.0 builds, and its load_weights fills every parameter, for the family fixtures at TP 1 and 2.
#
#   tools/oracle/check_plugins.sh [NAME ...]        # default: every fixture below, TP 1 2
#   TPS="1" tools/oracle/check_plugins.sh llama
#
# Per case: (1) ckptpilot stub fixtures/NAME --out $WORK/NAME.tpN --tp N --layout plugin --force;
# (2) pip install --no-deps --no-build-isolation that package into ~/vllm-oracle-venv; (3) the oracle
# on fixtures/NAME at TP N; (4) tools/oracle/check_plugin.py: every rank built the class the plugin
# registers and every parameter was returned by load_weights and traced without error (vLLM's
# strict check passes); (5) pip uninstall, always (trap). One oracle invocation at a time.
# Prints `NAME tpN: PASS|FAIL|REFUSED <why>` per case, a summary, and a table in $WORK/results.tsv;
# exits 1 if any case FAILs. REFUSED: ckptpilot stub exited 1 saying vLLM refuses that TP.
# Needs ~/vllm-oracle-venv with vllm==0.33.0 and ../shared/tools/vllm-oracle (see its README).
set -u
cd "$(dirname "$0")/../.."
PY=${PY:-$HOME/vllm-oracle-venv/bin/python}
ORACLE=${ORACLE:-../shared/tools/vllm-oracle/oracle.py}
WORK=${WORK:-/tmp/plugins}
TPS=${TPS:-"1 2"}
CKPTPILOT=${CKPTPILOT:-target/debug/ckptpilot}
# FIXTURES: where NAME is (default fixtures/; tools/oracle/disguise.py writes disguised copies elsewhere).
FIXTURES=${FIXTURES:-fixtures}
# ISOLATE=1: install each plugin into its own directory ($WORK/NAME.tpN.site, put on PYTHONPATH for
# the oracle) instead of the venv, so other oracle runs on this machine never see it.
ISOLATE=${ISOLATE:-0}
mkdir -p "$WORK"
[ -x "$CKPTPILOT" ] || cargo build || exit 2
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(llama mistral qwen2 qwen3-dense qwen3-moe mixtral deepseek-v3-mla glm4-moe olmo2
  gpt-oss qwen3-next qwen2.5-vl-new qwen3-vl gemma3-tied gemma3-mm qwen3-dense-fp8 qwen3-moe-fp8 deepseek-fp8)

INSTALLED=""
uninstall() {
  if [ -n "$INSTALLED" ]; then
    "$PY" -m pip uninstall -y "$INSTALLED" >>"$WORK/pip.log" 2>&1 || echo "warning: pip uninstall $INSTALLED failed" >&2
    INSTALLED=""
  fi
}
trap uninstall EXIT
trap 'uninstall; exit 130' INT TERM

# A plugin left installed by an earlier run would be loaded too: refuse to start.
stray=$("$PY" -c 'from importlib.metadata import entry_points as e; print(" ".join(sorted(x.value for x in e(group="vllm.general_plugins") if not x.value.startswith("vllm"))))' 2>/dev/null)
if [ -n "$stray" ]; then
  echo "vllm.general_plugins already has: $stray — uninstall it first" >&2
  exit 2
fi

printf 'name\ttp\tstatus\tclass\tfilled\tseconds\twhy\n' >"$WORK/results.tsv"
pass=0 fail=0 refused=0
failed=()
for name in "${NAMES[@]}"; do
  for tp in $TPS; do
    case_id="$name.tp$tp"
    out="$WORK/$case_id"
    res="$WORK/$case_id.result.json"
    rm -rf "$out" "$WORK/$case_id".result*.json
    status="" cls="-" filled="-" secs="-" why=""

    # (1) generate the plugin
    if "$CKPTPILOT" stub "$FIXTURES/$name" --out "$out" --tp "$tp" --layout plugin --force --color never \
      >"$WORK/$case_id.stub.log" 2>&1; then
      :
    else
      rc=$?
      if [ "$rc" -eq 1 ] && grep -qE "refuses|predicts that vLLM" "$WORK/$case_id.stub.log"; then
        status=REFUSED
      else
        status=FAIL
      fi
      why="ckptpilot stub rc=$rc: $(grep -m1 -A1 -E 'refuses|error' "$WORK/$case_id.stub.log" | tr -s ' \t\n' ' ' | cut -c1-400)"
    fi

    # (2) install it
    if [ -z "$status" ]; then
      project=$(sed -n 's/^name = "\(.*\)"/\1/p' "$out/pyproject.toml" | head -1)
      if [ -z "$project" ]; then
        status=FAIL why="no project name in $out/pyproject.toml"
      else
        site=""
        if [ "$ISOLATE" = 1 ]; then
          site="$WORK/$case_id.site"
          rm -rf "$site"
          pip_args=(--target "$site")
        else
          INSTALLED=$project
          pip_args=()
        fi
        if ! "$PY" -m pip install --no-deps --no-build-isolation "${pip_args[@]}" "$out" >"$WORK/$case_id.pip.log" 2>&1; then
          status=FAIL why="pip install $out failed (see $WORK/$case_id.pip.log)"
        fi
      fi
    fi

    # (3) the oracle, (4) the verdict
    if [ -z "$status" ]; then
      t0=$(date +%s)
      pypath=${PYTHONPATH:-}
      [ -n "$site" ] && pypath="$site${pypath:+:$pypath}"
      PYTHONPATH="$pypath" \
        "$PY" "$ORACLE" "$FIXTURES/$name" --tp "$tp" --max-model-len 256 --force-cpu-kernels --timeout 420 \
        --out "$res" >"$WORK/$case_id.oracle.log" 2>&1
      orc=$?
      secs=$(($(date +%s) - t0))
      verdict=$(python3 tools/oracle/check_plugin.py "$out" "$res" "$tp")
      IFS=$'\t' read -r status cls filled why <<<"$(head -1 <<<"$verdict")"
      [ "$orc" -ne 0 ] && [ "$status" = PASS ] && status=FAIL why="oracle rc=$orc; $why"
      tail -n +2 <<<"$verdict" >"$WORK/$case_id.details"
    fi

    # (5) always uninstall
    uninstall

    case $status in
      PASS) pass=$((pass + 1)) ;;
      REFUSED) refused=$((refused + 1)) ;;
      *) status=FAIL; fail=$((fail + 1)); failed+=("$case_id") ;;
    esac
    echo "$name tp$tp: $status $why [class=$cls params=$filled ${secs}s]"
    [ "$status" = FAIL ] && [ -s "$WORK/$case_id.details" ] && cat "$WORK/$case_id.details"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$tp" "$status" "$cls" "$filled" "$secs" "$why" >>"$WORK/results.tsv"
  done
done
echo "summary: $pass PASS, $fail FAIL, $refused REFUSED of $((pass + fail + refused)) cases${failed[*]:+ (FAIL: ${failed[*]})}; table: $WORK/results.tsv"
[ "$fail" -eq 0 ]
