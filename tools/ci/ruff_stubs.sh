#!/usr/bin/env bash
# Generate the stub of every fixture (both layouts, both targets) with the debug binary and run
# `ruff check` on all the generated Python; exits non-zero on any finding (issue 11, item 7).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=./target/debug/ckptkit
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
            if ! "$bin" stub "$dir" --out "$tmp/$name.$target.$layout" --target "$target" --layout "$layout" \
                >/dev/null 2>"$tmp/err"; then
                # A model vLLM builds at no TP on this target gets no kit (exit 1): nothing to check.
                if grep -q "at no TP" "$tmp/err"; then
                    echo "ruff_stubs: no $target kit for $dir (vLLM builds it at no TP)"
                    continue
                fi
                # A weight format the target has no method for (NVFP4, MXFP4 on vLLM-Ascend): convert first.
                if grep -q "cannot serve .* as stored" "$tmp/err"; then
                    echo "ruff_stubs: no $target kit for $dir (the target cannot serve its weight format)"
                    continue
                fi
                cat "$tmp/err" >&2
                exit 1
            fi
            n=$((n + 1))
        done
    done
done
echo "ruff_stubs: $n stubs generated; ruff check:"
"${ruff[@]}" check --no-cache "$tmp"
