#!/usr/bin/env bash
# The Slurm path of `shoal sweep`, for real: a one-node Slurm cluster on this machine
# (recipe: ../shared/slurm-single-node.md), examples/slurm/sweep.sbatch submitted as an array of 4
# tasks over a 2 cases × 3 seeds sweep, its dependent collect job, and every run folder compared
# byte for byte (all but perf.json), with sweep.csv and cases.csv, against the same sweep run
# locally with --jobs 2. Stops the daemons it started, by their pids.
#
# Needs root (it installs slurm-wlm and munge with apt-get and writes /etc/slurm); without root it
# says so and exits 0. Usage: .ci/slurm-sweep.sh [path/to/shoal] (default target/release/shoal).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHOAL=$(realpath "${1:-target/release/shoal}")
if [[ $(id -u) != 0 ]]; then
    echo "slurm-sweep: skipped: not root (installing Slurm and starting its daemons needs root)"
    exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || pgrep -x munged >/dev/null; then
    echo "slurm-sweep: a Slurm or MUNGE daemon is already running; not touching it" >&2
    exit 1
fi

mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
chown munge:munge /run/munge
H=$(hostname -s)
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=local
SlurmctldHost=$H
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$H CPUs=$(nproc) RealMemory=$(( $(free -m | awk '/Mem:/{print $2}') * 8 / 10 )) State=UNKNOWN
PartitionName=main Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*

PIDS=()
stop_daemons() {
    # The daemons remove their pid files before they have exited: kill the pids read at start.
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
}
trap stop_daemons EXIT
rm -f /run/munge/munged.pid
runuser -u munge -- /usr/sbin/munged
# munged forks into the background: its pid file names the daemon, not the process started.
for _ in $(seq 50); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.1; done
PIDS+=("$(cat /run/munge/munged.pid)")
/usr/sbin/slurmctld
for _ in $(seq 50); do [[ -s /run/slurmctld.pid ]] && break; sleep 0.1; done
PIDS+=("$(cat /run/slurmctld.pid)")
/usr/sbin/slurmd
for _ in $(seq 50); do [[ -s /run/slurmd.pid ]] && break; sleep 0.1; done
PIDS+=("$(cat /run/slurmd.pid)")
for _ in $(seq 100); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 0.2; done

WORK=$(mktemp -d /tmp/shoal-slurm-XXXXXX)
cat > "$WORK/sweep.toml" <<EOF
scenario = "$ROOT/scenarios/smoke-40.toml"
seeds = 3
sets = ["topology.hosts=8"]

[[axis]]
key = "protocol.policy"
values = ["kraken", "bittorrent"]
EOF
cd "$WORK"
SWEEP="$WORK/sweep.toml" OUT="$WORK/cluster" SHOAL="$SHOAL" \
    sbatch --wait --array=0-3 --cpus-per-task=1 -o "$WORK/task-%a.log" "$ROOT/examples/slurm/sweep.sbatch" \
    >/dev/null
# The collect job the first task queued runs once the array has ended.
for _ in $(seq 300); do
    [[ -s "$WORK/cluster/sweep.csv" ]] && ! squeue -h -n shoal-sweep-collect | grep -q . && break
    sleep 0.2
done
test -s "$WORK/cluster/sweep.csv" || { echo "slurm-sweep: the collect job wrote no sweep.csv" >&2; exit 1; }
"$SHOAL" sweep "$WORK/sweep.toml" --out "$WORK/local" --jobs 2 --quiet >/dev/null

fail=0
for f in sweep.csv cases.csv sweep.json; do
    cmp -s "$WORK/cluster/$f" "$WORK/local/$f" || { echo "slurm-sweep: $f differs" >&2; fail=1; }
done
runs=0
while IFS= read -r f; do
    rel=${f#"$WORK/local/"}
    [[ $(basename "$f") == perf.json ]] && continue
    cmp -s "$f" "$WORK/cluster/$rel" || { echo "slurm-sweep: $rel differs" >&2; fail=1; }
    [[ $(basename "$f") == summary.json ]] && runs=$((runs + 1))
done < <(find "$WORK/local/runs" -type f | sort)
if [[ $fail != 0 || $runs != 6 ]]; then
    echo "slurm-sweep: FAILED ($runs run folders compared); see $WORK" >&2
    exit 1
fi
echo "slurm-sweep: ok: 4 array tasks and a dependent collect job made the 6 runs of the local --jobs 2 sweep, byte-identical (all but perf.json)"
rm -rf "$WORK"
