#!/usr/bin/env bash
# Build the ckptpilot wheel: the `ckptpilot` command (an entry point into the extension module, which
# runs the same command line in-process), the Python API, the type stubs, and shell completions and
# the man page in the wheel's data directory (installed under the environment's share/).
#
#   tools/build_wheel.sh [TARGET]        # default: this machine; aarch64-unknown-linux-gnu cross-builds
#
# Needs maturin (pip install 'maturin>=1.5,<2') and, for manylinux2014, ziglang; a cross target needs
# its rustup target (and without zig, its C linker: tools/ci/aarch64.sh installs both). Wheels land
# in target/wheels/.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-}
maturin=(maturin)
command -v maturin >/dev/null 2>&1 || maturin=(python3 -m maturin)

# Completions and the man page come from this machine's build of the same sources.
cargo build --release --locked --bin ckptpilot
data=python/build/data/data/share
rm -rf python/build/data
mkdir -p "$data/man/man1" "$data/bash-completion/completions" "$data/zsh/site-functions" "$data/fish/vendor_completions.d"
./target/release/ckptpilot man --out "$data/man/man1" >/dev/null
./target/release/ckptpilot completions bash >"$data/bash-completion/completions/ckptpilot"
./target/release/ckptpilot completions zsh >"$data/zsh/site-functions/_ckptpilot"
./target/release/ckptpilot completions fish >"$data/fish/vendor_completions.d/ckptpilot.fish"

args=(build --release --locked --manifest-path python/Cargo.toml --out target/wheels)
# With zig (pip install ziglang) as the linker the wheel is manylinux2014 (glibc >= 2.17: CentOS 7,
# Ubuntu 18.04, EulerOS), for either architecture, with no cross gcc; without it the wheel takes this
# machine's glibc (manylinux_2_34 here: Ubuntu 22.04+, openEuler 22.03+).
zig=0
if python3 -m ziglang version >/dev/null 2>&1; then
    zig=1
    args+=(--zig --compatibility manylinux2014)
fi
if [ -n "$target" ]; then
    args+=(--target "$target")
    if [ "$target" = aarch64-unknown-linux-gnu ] && [ "$zig" = 0 ]; then
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}
        export CC_aarch64_unknown_linux_gnu=${CC_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-gcc}
        export AR_aarch64_unknown_linux_gnu=${AR_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-ar}
    fi
fi
"${maturin[@]}" "${args[@]}"
