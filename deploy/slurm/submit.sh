#!/usr/bin/env bash
# Submit a split ckptpilot conversion to Slurm: a job array of N parts (`--part K/N`, one task per
# part) and a `--finalize` job that runs only once every part has succeeded
# (--dependency=afterok:ARRAY --kill-on-invalid-dep=yes: a failed part cancels it instead of leaving
# it pending forever). Prints the job ids as `parts_job=ID` and `finalize_job=ID`. Submitting again
# is safe: every part keeps the shards it finished and remakes the rest.
#
#   deploy/slurm/submit.sh [OPTIONS] dequant|quantize MODEL OUT [-- CKPTPILOT FLAGS...]
#
#   -n, --parts N        number of parts, one array task each (default 4; at most the number of
#                        shards: input shards for dequant, output files for quantize)
#   --only LIST          resubmit only these parts (sbatch --array syntax: 3, 2,5, 1-4%2) and a new
#                        finalize that waits for them; the other parts' shards are already there
#   --finalize-only      submit only the finalize, without a dependency (the parts are done, or a
#                        finalize failed and should run again)
#   --max-parallel M     at most M parts running at once (--array=...%M)
#   --ckptpilot PATH     the binary every node runs (default: $CKPTPILOT, else ckptpilot on PATH);
#                        on the shared file system or installed at that path on every node
#   --logs DIR           the jobs' logs (default: the current directory); never inside OUT
#   --sbatch OPT         an sbatch option for both jobs (repeatable): --sbatch --partition=cpu
#   --part-sbatch OPT    an sbatch option for the parts only (repeatable): --part-sbatch --cpus-per-task=8
#   --finalize-sbatch OPT  an sbatch option for the finalize job only (repeatable)
#
# FLAGS go to every part and to the finalize (--dtype, --to w8a8-dynamic, --part-file-size,
# --trust-existing, --verify (parts only), --threads ...). Example:
#   deploy/slurm/submit.sh -n 8 --sbatch --partition=cpu quantize /shared/Qwen3-32B /shared/Qwen3-32B-w8a8 -- --to w8a8-dynamic
# MODEL and OUT must be the same paths on every node (a shared file system with working flock).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "submit.sh: $*" >&2; exit 2; }

parts=4 only="" maxpar="" finalize_only=0 bin=${CKPTPILOT:-} logs=$PWD
both=() part_opts=() fin_opts=()
while [ $# -gt 0 ]; do
    case $1 in
        -n|--parts) parts=${2:?}; shift 2 ;;
        --parts=*) parts=${1#*=}; shift ;;
        --only) only=${2:?}; shift 2 ;;
        --only=*) only=${1#*=}; shift ;;
        --finalize-only) finalize_only=1; shift ;;
        --max-parallel) maxpar=${2:?}; shift 2 ;;
        --max-parallel=*) maxpar=${1#*=}; shift ;;
        --ckptpilot) bin=${2:?}; shift 2 ;;
        --ckptpilot=*) bin=${1#*=}; shift ;;
        --logs) logs=${2:?}; shift 2 ;;
        --logs=*) logs=${1#*=}; shift ;;
        --sbatch) both+=("${2:?}"); shift 2 ;;
        --part-sbatch) part_opts+=("${2:?}"); shift 2 ;;
        --finalize-sbatch) fin_opts+=("${2:?}"); shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (--help)" ;;
        *) break ;;
    esac
done
[ $# -ge 3 ] || die "usage: submit.sh [OPTIONS] dequant|quantize MODEL OUT [-- FLAGS...] (--help)"
cmd=$1 model=$2 out=$3
shift 3
if [ $# -gt 0 ]; then
    [ "$1" = -- ] || die "ckptpilot flags go after --: $*"
    shift
fi
flags=("$@")
case $cmd in dequant|quantize) ;; *) die "the command is dequant or quantize, not $cmd" ;; esac
[[ $parts =~ ^[1-9][0-9]*$ ]] || die "--parts $parts: a positive number"
[ -z "$maxpar" ] || [[ $maxpar =~ ^[1-9][0-9]*$ ]] || die "--max-parallel $maxpar: a positive number"
for f in ${flags[@]+"${flags[@]}"}; do
    case $f in
        --part|--part=*|--finalize|--out|--out=*) die "$f is the script's to set, not a flag to pass" ;;
        --force) die "--force makes each part take the directory alone first: parts would refuse each other; empty OUT instead" ;;
    esac
done

# Absolute paths: the jobs may start in another directory, on another node.
if [ -z "$bin" ]; then
    bin=$(command -v ckptpilot) || die "no ckptpilot on PATH: pass --ckptpilot PATH or set CKPTPILOT"
fi
[ -x "$bin" ] || die "$bin: not an executable"
bin=$(realpath "$bin")
[ -e "$model" ] && model=$(realpath "$model")   # (a repo id in the Hugging Face cache stays as it is)
out=$(realpath -m "$out")
mkdir -p "$logs"
logs=$(realpath "$logs")
case $logs/ in "$out"/*) die "--logs $logs is inside OUT: ckptpilot refuses an OUT holding files not its own" ;; esac

array="1-$parts"
[ -z "$only" ] || array=$only
[ -z "$maxpar" ] || array="$array%$maxpar"

deps=()
if [ "$finalize_only" = 0 ]; then
    parts_job=$(sbatch --parsable --array="$array" --output="$logs/%x-%A_%a.out" \
        ${both[@]+"${both[@]}"} ${part_opts[@]+"${part_opts[@]}"} \
        "$here/convert-part.sbatch" "$bin" "$parts" "$cmd" "$model" "$out" ${flags[@]+"${flags[@]}"})
    parts_job=${parts_job%%;*}
    echo "parts_job=$parts_job"
    deps=(--dependency="afterok:$parts_job" --kill-on-invalid-dep=yes)
fi
finalize_job=$(sbatch --parsable ${deps[@]+"${deps[@]}"} \
    --output="$logs/%x-%j.out" ${both[@]+"${both[@]}"} ${fin_opts[@]+"${fin_opts[@]}"} \
    "$here/convert-finalize.sbatch" "$bin" "$cmd" "$model" "$out" ${flags[@]+"${flags[@]}"})
finalize_job=${finalize_job%%;*}
echo "finalize_job=$finalize_job"
