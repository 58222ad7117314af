#!/usr/bin/env bash
# Generate the stub of every fixture (both layouts, both targets) with the debug binary and run
# `ruff check` on all the generated Python; exits non-zero on any finding (issue 11, item 7).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=./target/debug/ckptpilot
[ -x "$bin" ] || cargo build --locked
# The ruff .ci/run installs for python3 first, then one on the PATH.
ruff=(python3 -m ruff)
"${ruff[@]}" --version >/dev/null 2>&1 || ruff=(ruff)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
for dir in fixtures/*/ fixtures/configs/*/; do
    dir=${dir%/}
    [ -f "$dir/config.json" ] || continue
    name=$(echo "${dir#fixtures/}" | tr '/' '_')
    for target in vllm vllm-ascend; do
        for layout in plugin in-tree; do
            out="$tmp/$name.$target.$layout"
            if ! "$bin" stub "$dir" --out "$out" --target "$target" --layout "$layout" \
                >/dev/null 2>"$tmp/err"; then
                # Not a model config (the kernel edge fixtures): no kit, not even with --allow-infeasible.
                if grep -q "not a Hugging Face model config" "$tmp/err"; then
                    echo "ruff_stubs: no $target kit for $dir (not a model config)"
                    continue
                fi
                # Plan predicts that vLLM fails at every TP on this target (exit 1), or the target
                # cannot serve the weight format: the kit written anyway is checked all the same.
                if grep -q -e "\`ckptpilot plan\`" -e "cannot serve .* as stored" "$tmp/err"; then
                    "$bin" stub "$dir" --out "$out" --target "$target" --layout "$layout" --allow-infeasible \
                        >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
                    echo "ruff_stubs: $target kit for $dir written with --allow-infeasible (plan predicts it fails)"
                else
                    cat "$tmp/err" >&2
                    exit 1
                fi
            fi
            n=$((n + 1))
        done
    done
done
echo "ruff_stubs: $n stubs generated; ruff check:"
"${ruff[@]}" check --no-cache "$tmp"
