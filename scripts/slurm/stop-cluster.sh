#!/usr/bin/env bash
# Stop the local test cluster that scripts/slurm/start-cluster.sh started: slurmd, slurmctld,
# slurmdbd, the private mariadbd and munged, each found by the pid file in the state folder (a
# daemon that was already running before start-cluster.sh, e.g. a system munged, has no pid file
# there and is left alone).
#
#   scripts/slurm/stop-cluster.sh            # keep the state folder (database, logs)
#   scripts/slurm/stop-cluster.sh --purge    # also delete the state folder and the config files
#                                            # in /etc/slurm that start-cluster.sh wrote
set -euo pipefail

STATE=${MVL_SLURM_STATE:-/tmp/mvl-slurm}
MARK="# Written by medvisionllama scripts/slurm/start-cluster.sh (local test cluster)"
PURGE=0
[[ ${1:-} == --purge ]] && PURGE=1

say() { echo "stop-cluster: $*"; }
[[ $(id -u) -eq 0 ]] || { echo "stop-cluster: error: must run as root (the daemons run as root, mysql and munge)" >&2; exit 1; }
[[ -d $STATE ]] || { say "no state folder $STATE: nothing to stop"; exit 0; }

stop() {  # name pidfile: SIGTERM the process named in pidfile if it is `name`, wait, then SIGKILL
    local name=$1 pidfile=$2 pid i
    [[ -s $pidfile ]] || return 0
    pid=$(<"$pidfile")
    if [[ -d /proc/$pid ]] && grep -q "$name" "/proc/$pid/comm" 2>/dev/null; then
        say "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            [[ -d /proc/$pid ]] || break
            sleep 0.1
        done
        if [[ -d /proc/$pid ]]; then
            say "$name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

# jobs still running would keep slurmstepd processes: cancel ours first
if command -v scancel >/dev/null && [[ -s $STATE/run/slurmctld.pid ]]; then
    squeue -h -o %i 2>/dev/null | xargs -r scancel >/dev/null 2>&1 || true
fi
stop slurmd "$STATE/run/slurmd.pid"
stop slurmctld "$STATE/run/slurmctld.pid"
stop slurmdbd "$STATE/run/slurmdbd.pid"
stop mariadbd "$STATE/mariadb/mariadbd.pid"
stop munged "$STATE/munge/munged.pid"

if (( PURGE )); then
    for conf in /etc/slurm/slurm.conf /etc/slurm/gres.conf /etc/slurm/slurmdbd.conf; do
        if [[ -f $conf ]] && grep -qxF "$MARK" "$conf"; then rm -f "$conf"; fi
    done
    rm -rf "$STATE"
    say "removed $STATE and the configs start-cluster.sh wrote"
else
    say "stopped; state and logs kept in $STATE (--purge removes them)"
fi
