#!/usr/bin/env bash
# The Slurm route of a split conversion (deploy/slurm/submit.sh), on a real Slurm: munged, slurmctld
# and slurmd started here with a generated one-node configuration (4 task slots) in a temporary
# directory, and stopped at the end whatever happens. Three scenarios, each compared file by file
# (`cmp`) with a single-process run of the same conversion:
#   1. dequant fixtures/deepseek-fp8 as 3 array tasks + finalize, then the finalize alone again;
#   2. dequant in 2 parts, one task SIGKILLed half-way (one shard finished, the next one's temporary
#      file on disk, as an OOM kill or a lost node leaves it): the finalize is cancelled
#      (kill-on-invalid-dep), the task is resubmitted (submit.sh --only K) with a new finalize;
#   3. quantize --to w8a8-dynamic of fixtures/llama in 2 parts (--part-file-size 16KiB: several
#      output files), one task cancelled with `scancel JOB_K` mid-run, resubmitted, finalized.
#
#   tests/slurm/run.sh          (as root; installs slurmctld slurmd slurm-client munge with apt if missing)
#
# CKPTPILOT: the binary (default target/debug/ckptpilot, which `cargo test` builds).
# KEEP=1 keeps the temporary directory (logs, outputs) for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
t0=$SECONDS

bin=${CKPTPILOT:-target/debug/ckptpilot}
[ -x "$bin" ] || { echo "slurm test: no $bin (cargo build first, or set CKPTPILOT)" >&2; exit 1; }
bin=$(realpath "$bin")

# --- Slurm and munge -------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "slurm test: needs slurmctld, slurmd, slurm-client and munge (apt-get as root installs them)" >&2
        exit 1
    fi
    echo "slurm test: installing slurmctld slurmd slurm-client munge" >&2
    # The packages' own services stay down (a policy-rc.d that says no, unless one is there): this test
    # runs its own daemons with its own configuration.
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        guard=/usr/sbin/policy-rc.d
    fi
    (apt-get update -qq || true) >/dev/null
    st=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null || st=$?
    [ -z "$guard" ] || rm -f "$guard"
    [ "$st" = 0 ] || { echo "slurm test: apt-get install failed ($st)" >&2; exit 1; }
fi

T=$(mktemp -d /tmp/ckptpilot-slurm.XXXXXX)
chmod 755 "$T"
export SLURM_CONF=$T/slurm.conf
started=()   # pid files of the daemons this test started, in start order
child=""     # a long step run in the background (bg), so that a signal is handled at once

bg() { # run "$@" and wait for it; a trapped signal interrupts the wait, stop_daemons ends the step
    "$@" &
    child=$!
    local st=0
    wait "$child" || st=$?
    child=""
    return "$st"
}

stop_daemons() {
    local rc=$? i pf pid n
    trap - EXIT INT TERM
    set +e
    [ -z "$child" ] || { kill "$child" 2>/dev/null; wait "$child" 2>/dev/null; }
    if [ -e "$T/slurmctld.pid" ]; then
        # Nothing of ours keeps running after the test: cancel what is left, let the steps end.
        scancel --quiet --user=root 2>/dev/null
        for _ in $(seq 30); do
            [ -z "$(squeue -h -t PD,R,CG,CF 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do
        pf=${started[$i]}
        pid=$(cat "$pf" 2>/dev/null) || continue
        kill "$pid" 2>/dev/null || continue
        for n in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$pid" 2>/dev/null
    done
    if [ "$rc" != 0 ]; then
        echo "slurm test FAILED (exit $rc); the daemons' last words:" >&2
        tail -n 15 "$T"/log/*.log >&2 2>/dev/null
        for f in "$T"/logs/*.out; do
            [ -e "$f" ] && { echo "--- $f" >&2; grep -v '^ ' "$f" | tail -n 5 >&2; }
        done
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept $T" >&2
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap stop_daemons EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

mkdir -p "$T/munge" "$T/munge-key" "$T/state" "$T/spool" "$T/log" "$T/logs"
chmod 700 "$T/munge-key"
head -c 1024 /dev/urandom >"$T/munge-key/munge.key"
chmod 400 "$T/munge-key/munge.key"
munged --force --socket="$T/munge/munge.socket" --key-file="$T/munge-key/munge.key" \
    --log-file="$T/log/munged.log" --pid-file="$T/munge/munged.pid" --seed-file="$T/munge/munged.seed"
started+=("$T/munge/munged.pid")

node=$(hostname -s)
cat >"$SLURM_CONF" <<EOF
ClusterName=ckptpilot-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$T/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
# No cgroups in a container: process groups track the jobs, nothing binds or accounts.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# 4 task slots whatever the machine has (CI has 2 cores).
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
# Finished jobs stay visible to scontrol (there is no accounting database here).
MinJobAge=3600
NodeName=$node NodeAddr=127.0.0.1 CPUs=4 RealMemory=2000 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -i
started+=("$T/slurmctld.pid")
slurmd
started+=("$T/slurmd.pid")
for i in $(seq 60); do
    [ "$(sinfo -h -N -o %T 2>/dev/null)" = idle ] && break
    [ "$i" = 60 ] && { echo "slurm test: the node never came up: $(sinfo -h -N -o %T 2>&1)" >&2; exit 1; }
    sleep 0.5
done
echo "slurm test: slurmctld + slurmd up ($(sinfo -h -N -o '%N %c CPUs %T'), Slurm $(sinfo -V | cut -d' ' -f2))"

# --- helpers ----------------------------------------------------------------------------------------
submit() { # submit.sh ARGS... -> sets parts_job and finalize_job
    local o
    o=$("$repo/deploy/slurm/submit.sh" --ckptpilot "$bin" --logs "$T/logs" "$@")
    parts_job=$(sed -n 's/^parts_job=//p' <<<"$o")
    finalize_job=$(sed -n 's/^finalize_job=//p' <<<"$o")
    [ -n "$finalize_job" ] || { echo "submit.sh printed: $o" >&2; return 1; }
}

states() { # JOBID -> the state of each of its jobs (every array element), one a line
    scontrol -o show job "$1" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2
}

wait_jobs() { # JOBID... : until none of them is pending, running or completing (at most 10 minutes)
    local j s
    for _ in $(seq 1200); do
        s=$(for j in "$@"; do states "$j"; done)
        grep -q -E '^(PENDING|RUNNING|CONFIGURING|COMPLETING|SUSPENDED|REQUEUED|RESIZING)$' <<<"$s" || return 0
        sleep 0.5
    done
    echo "slurm test: jobs $* still not done after 10 minutes: $s" >&2
    return 1
}

expect_states() { # JOBID WANT: every job of JOBID ended in state WANT
    local got
    got=$(states "$1" | sort -u | tr '\n' ' ')
    [ "$got" = "$2 " ] || { echo "slurm test: job $1 ended $got, expected $2" >&2; scontrol show job "$1" >&2; return 1; }
}

same_output() { # WHOLE SPLIT: the same checkpoint files, byte for byte, and no temporary file left
    local a=$1 b=$2 f n=0
    # ckptpilot's own bookkeeping (.ckptpilot-*: state records naming parts, lock files) is not part of
    # the checkpoint and differs by design; everything else must be identical, temporary files included
    # (there must be none).
    diff <(cd "$a" && find . -type f ! -name '.ckptpilot-*' | sort) \
         <(cd "$b" && find . -type f ! -name '.ckptpilot-*' | sort) \
        || { echo "slurm test: $b does not hold the files $a holds" >&2; return 1; }
    while IFS= read -r f; do
        cmp "$a/$f" "$b/$f" || return 1
        n=$((n + 1))
    done < <(cd "$a" && find . -type f ! -name '.ckptpilot-*' | sort)
    [ "$n" -gt 0 ] || { echo "slurm test: $a is empty" >&2; return 1; }
    echo "    $n files byte-identical to the single-process run"
}

holder_pid() { # LOCKFILE -> the PID written in it by the process holding it ("PID@HOST ckptpilot ...")
    sed -n 's/^\([0-9][0-9]*\)@.*/\1/p' "$1" 2>/dev/null || true
}

tmp_size_of() { # DIR PID -> the size of a temporary file process PID is writing in DIR, if any
    local f
    for f in "$1"/.[!.]*.ckptpilot-tmp."$2"@*; do
        [ -e "$f" ] && { stat -c %s "$f"; return; }
    done
}

# --- inputs and single-process references -----------------------------------------------------------
deq_model=$repo/fixtures/deepseek-fp8
q_model=$repo/fixtures/llama
bg "$bin" dequant "$deq_model" --out "$T/dequant-whole" -q >/dev/null
bg "$bin" quantize "$q_model" --to w8a8-dynamic --part-file-size 16KiB --out "$T/quantize-whole" -q >/dev/null
nfiles=$(ls "$T/quantize-whole"/quant_model_weights-*.safetensors | wc -l)
[ "$nfiles" -ge 2 ] || { echo "slurm test: the quantize input makes $nfiles output file(s), 2 needed" >&2; exit 1; }
echo "slurm test: inputs and single-process references ready ($((SECONDS - t0)) s)"

# --- 1. dequant, 3 parts ----------------------------------------------------------------------------
echo "1. dequant in 3 array tasks + finalize"
submit -n 3 dequant "$deq_model" "$T/dequant-split"
wait_jobs "$parts_job" "$finalize_job"
expect_states "$parts_job" COMPLETED
expect_states "$finalize_job" COMPLETED
same_output "$T/dequant-whole" "$T/dequant-split"
# A finalize submitted again (submit.sh --finalize-only) finds every part done: the same checkpoint.
submit --finalize-only dequant "$deq_model" "$T/dequant-split"
wait_jobs "$finalize_job"
expect_states "$finalize_job" COMPLETED
same_output "$T/dequant-whole" "$T/dequant-split"

# --- 2. dequant, one task SIGKILLed half-way, resubmitted -------------------------------------------
echo "2. dequant in 2 parts, part 2 killed (SIGKILL) after its first shard, resubmitted"
out=$T/dequant-killed
# The fault hook holds each shard's temporary file open 2 s before writing it: time to kill part 2
# after it has finished one shard and started the next.
CKPTPILOT_FAULT_PAUSE_MS=2000 submit -n 2 dequant "$deq_model" "$out"
first=$parts_job first_finalize=$finalize_job
victim=""
for _ in $(seq 600); do
    pid=$(holder_pid "$out/.ckptpilot-dequant.part-2-of-2.lock")
    done_shards=$(grep -c header_blake3 "$out/.ckptpilot-dequant.part-2-of-2.json" 2>/dev/null || true)
    if [ -n "$pid" ] && [ "${done_shards:-0}" -ge 1 ] \
        && [ -n "$(tmp_size_of "$out" "$pid")" ]; then
        victim=$pid
        break
    fi
    sleep 0.1
done
[ -n "$victim" ] || { echo "slurm test: part 2 never reached its second shard" >&2; exit 1; }
kill -9 "$victim"
wait_jobs "$first" "$first_finalize"
[ "$(scontrol -o show job "${first}_2" | grep -o 'JobState=[A-Z]*')" = JobState=FAILED ] \
    || { echo "slurm test: the killed task did not fail" >&2; scontrol show job "${first}_2" >&2; exit 1; }
[ "$(scontrol -o show job "${first}_1" | grep -o 'JobState=[A-Z]*')" = JobState=COMPLETED ]
expect_states "$first_finalize" CANCELLED
scontrol -o show job "$first_finalize" | grep -q 'Reason=DependencyNeverSatisfied'
[ ! -e "$out/model.safetensors.index.json" ] || { echo "slurm test: finalized without part 2" >&2; exit 1; }
ls -a "$out" | grep -q '\.ckptpilot-tmp\.' || { echo "slurm test: the kill left no temporary file" >&2; exit 1; }
echo "    part 2 (PID $victim) killed: task FAILED, finalize CANCELLED (DependencyNeverSatisfied), a stale temporary file left"
submit -n 2 --only 2 dequant "$deq_model" "$out"
wait_jobs "$parts_job" "$finalize_job"
expect_states "$parts_job" COMPLETED
expect_states "$finalize_job" COMPLETED
log=$T/logs/ckptpilot-part-${parts_job}_2.out
grep -q '"shards_kept": [1-9]' "$log" || { echo "slurm test: the resubmitted part did not keep its finished shard" >&2; cat "$log" >&2; exit 1; }
echo "    resubmitted part 2 kept the shard it had finished and remade the rest"
same_output "$T/dequant-whole" "$out"

# --- 3. quantize, one task cancelled mid-run, resubmitted ------------------------------------------
echo "3. quantize --to w8a8-dynamic in 2 parts, part 2 cancelled (scancel) mid-run, resubmitted"
out=$T/quantize-cancelled
# The fault hook holds each file's temporary file open 3 s first, so that part 2 is cancelled while it
# holds its lock and temporary file.
CKPTPILOT_FAULT_PAUSE_MS=3000 submit -n 2 quantize "$q_model" "$out" -- --to w8a8-dynamic --part-file-size 16KiB
first=$parts_job first_finalize=$finalize_job
victim=""
for _ in $(seq 600); do
    pid=$(holder_pid "$out/.ckptpilot-quantize.part-2-of-2.lock")
    if [ -n "$pid" ] && [ -n "$(tmp_size_of "$out" "$pid")" ]; then
        victim=$pid
        break
    fi
    sleep 0.1
done
[ -n "$victim" ] || { echo "slurm test: part 2 never got going" >&2; exit 1; }
scancel "${first}_2"
wait_jobs "$first" "$first_finalize"
[ "$(scontrol -o show job "${first}_2" | grep -o 'JobState=[A-Z]*')" = JobState=CANCELLED ] \
    || { echo "slurm test: the cancelled task is not CANCELLED" >&2; scontrol show job "${first}_2" >&2; exit 1; }
[ "$(scontrol -o show job "${first}_1" | grep -o 'JobState=[A-Z]*')" = JobState=COMPLETED ]
expect_states "$first_finalize" CANCELLED
scontrol -o show job "$first_finalize" | grep -q 'Reason=DependencyNeverSatisfied'
[ ! -e "$out/quant_model_description.json" ] || { echo "slurm test: finalized without part 2" >&2; exit 1; }
echo "    part 2 (PID $victim) cancelled: finalize CANCELLED (DependencyNeverSatisfied); part 1 COMPLETED"
submit -n 2 --only 2 quantize "$q_model" "$out" -- --to w8a8-dynamic --part-file-size 16KiB
wait_jobs "$parts_job" "$finalize_job"
expect_states "$parts_job" COMPLETED
expect_states "$finalize_job" COMPLETED
same_output "$T/quantize-whole" "$out"

echo "slurm test: all 3 scenarios byte-identical to single-process runs ($((SECONDS - t0)) s)"
