#!/usr/bin/env bash
# Cross-build the kernel tests for aarch64-unknown-linux-gnu and run them under qemu-user:
#   - tests/kernels.rs, every test: the fp8 kernels bit-exact against PyTorch;
#   - tests/dequant4.rs, the `in_process` tests: MXFP4 / NVFP4 / INT4 dequantized through the
#     library in this process, bit-exact against the producers' references. Its other tests spawn
#     the ckptpilot binary, an aarch64 program the host cannot exec without binfmt_misc.
# Idempotent: the Debian cross toolchain, qemu and the rustup target are installed only when missing.
# The release profile by default: the optimized code that ships, whose loops LLVM vectorizes with
# NEON (CKPTPILOT_AARCH64_PROFILE=dev builds faster and tests the unoptimized code instead).
# Each test binary runs under `timeout` (CKPTPILOT_AARCH64_TIMEOUT, seconds): a hang fails, never stalls.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=aarch64-unknown-linux-gnu
profile=${CKPTPILOT_AARCH64_PROFILE:-release}
limit=${CKPTPILOT_AARCH64_TIMEOUT:-600}
qemu=qemu-aarch64-static
sysroot=/usr/aarch64-linux-gnu

# The toolchain: Debian's cross gcc (the linker, and the C compiler of ring and blake3) and qemu-user.
# No binfmt-support (it is only recommended): the test binaries are started through qemu explicitly.
missing=()
for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "aarch64: installing ${missing[*]}"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}
export CC_aarch64_unknown_linux_gnu=${CC_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-gcc}
export AR_aarch64_unknown_linux_gnu=${AR_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-ar}
# `cargo test --target` starts each test binary through this runner.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="timeout $limit $qemu -L $sysroot"
cargo=(cargo test --locked --target "$target" --profile "$profile")

t0=$SECONDS
if ! "${cargo[@]}" --test kernels --test dequant4 --no-run; then
    echo "aarch64: FAIL (the cross build)"
    exit 1
fi
echo "aarch64: built ($profile) in $((SECONDS - t0)) s"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=0
summary=()
# run NAME TEST [FILTER]: one test binary under qemu, its result line kept for the summary.
run() {
    local name=$1 test=$2 rc=0
    shift 2
    "${cargo[@]}" --test "$test" -- "$@" 2>&1 | tee "$log" || rc=$?
    local result
    result=$(grep -E '^test result:' "$log" | tail -n 1 || true)
    if [ "$rc" -eq 0 ] && [ -n "$result" ] && ! grep -q '\. 0 passed' <<<"$result"; then
        summary+=("PASS  $name: ${result#test result: }")
    else
        grep -q 'exit status: 124' "$log" && result="timed out after $limit s"
        summary+=("FAIL  $name (exit $rc): ${result:-no test result}")
        failed=1
    fi
}
run "fp8 kernels (tests/kernels.rs)" kernels
run "fp4/int4 in process (tests/dequant4.rs in_process)" dequant4 in_process

echo
echo "aarch64 under $($qemu --version | head -n 1), $profile profile, $((SECONDS - t0)) s:"
printf '  %s\n' "${summary[@]}"
if ((failed)); then
    echo "aarch64: FAIL"
    exit 1
fi
echo "aarch64: PASS"
