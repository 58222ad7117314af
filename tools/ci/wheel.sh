#!/usr/bin/env bash
# Issue 15: build the x86-64 wheel (tools/build_wheel.sh), install it into a fresh venv, run the
# installed `ckptpilot` on a fixture, and run the Python API's pytest suite against it.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m maturin --version >/dev/null 2>&1 || python3 -m pip install --quiet 'maturin>=1.5,<2'
# zig links the wheel against glibc 2.17 (manylinux2014), so it installs on older hosts too.
python3 -m ziglang version >/dev/null 2>&1 || python3 -m pip install --quiet 'ziglang>=0.13'
rm -f target/wheels/ckptpilot-*.whl
tools/build_wheel.sh
wheel=$(ls target/wheels/ckptpilot-*manylinux2014_x86_64*.whl)
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "$wheel" numpy pytest
# The installed command, as a user types it, on a fixture (exit 0: no error findings).
"$venv/bin/ckptpilot" audit fixtures/deepseek-fp8 --color never | head -3
"$venv/bin/ckptpilot" plan fixtures/deepseek-fp8 --tp 1 --target vllm-ascend --json >/dev/null || [ $? -eq 1 ]
# From another directory, so `import ckptpilot` is the installed package.
(cd "$(dirname "$venv")" && "$venv/bin/python" -m pytest -q "$OLDPWD/python/tests")
python3 -m ruff check --no-cache python/
echo "wheel: $(basename "$wheel") installed and tested"
