#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine, with accounting and a fake GPU, for testing the
# Snakemake profile in slurm/ (tests/test_slurm.py uses it; see docs/slurm.md).
#
#   sudo scripts/slurm/start-cluster.sh      # idempotent: running daemons are left alone, unless
#                                            # the sizes changed: then slurmctld and slurmd restart
#   scripts/slurm/stop-cluster.sh            # stops only what this script started
#
# What it does, as root: installs the Debian packages if a program is missing (munge, slurmctld,
# slurmd, slurm-client, slurmdbd, mariadb-server); starts munged, a private MariaDB on 127.0.0.1
# (its own data folder under the state folder), slurmdbd, slurmctld and slurmd; registers the
# cluster, an account and the user with sacctmgr so that `sacct` works (the Snakemake SLURM
# plugin's default status check needs it: without accounting Snakemake waits forever).
#
# The node advertises one fake GPU (gres.conf: Name=gpu Type=fake File=/dev/null) so that jobs
# asking for `gpu: 1` really schedule, and CPUs/memory large enough for the profile's requests
# (SlurmdParameters=config_overrides: nothing is enforced, ProctrackType=proctrack/linuxproc,
# TaskPlugin=task/none). Every daemon is started with setsid and its stdin/stdout/stderr on
# /dev/null or a log file, so a caller's pipe (a CI log) closes when this script ends.
#
# The config files go to /etc/slurm (slurm.conf, gres.conf, slurmdbd.conf): the plugin's job step
# drops SLURM_CONF before it calls `srun` inside a job, so a config elsewhere would not be found.
# An existing /etc/slurm/slurm.conf that this script did not write is never overwritten.
#
# Environment (all optional):
#   MVL_SLURM_STATE    state, logs and pid files          [/tmp/mvl-slurm]
#   MVL_SLURM_CLUSTER  cluster name                        [mvl]
#   MVL_SLURM_ACCOUNT  account created for the users       [mvl]
#   MVL_SLURM_USERS    users added to the account          [root and $SUDO_USER if set]
#   MVL_SLURM_CPUS     CPUs the node advertises            [16, at least nproc]
#   MVL_SLURM_MEM_MB   memory (MB) the node advertises     [128000]
#   MVL_SLURM_GPUS     fake GPUs the node advertises       [1]
#   MVL_SLURM_DB_PORT  port of the private MariaDB         [3307]
set -euo pipefail

STATE=${MVL_SLURM_STATE:-/tmp/mvl-slurm}
CLUSTER=${MVL_SLURM_CLUSTER:-mvl}
ACCOUNT=${MVL_SLURM_ACCOUNT:-mvl}
USERS=${MVL_SLURM_USERS:-root${SUDO_USER:+ $SUDO_USER}}
NPROC=$(nproc)
CPUS=${MVL_SLURM_CPUS:-$(( NPROC > 16 ? NPROC : 16 ))}
MEM_MB=${MVL_SLURM_MEM_MB:-128000}
GPUS=${MVL_SLURM_GPUS:-1}
DB_PORT=${MVL_SLURM_DB_PORT:-3307}
DB_PASS=mvl-slurm-local  # the private database listens on 127.0.0.1 only
NODE=$(hostname -s)
ETC=/etc/slurm
MARK="# Written by medvisionllama scripts/slurm/start-cluster.sh (local test cluster)"
T0=$(date +%s)

say() { echo "start-cluster: $*"; }
die() { echo "start-cluster: error: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts munged, mariadbd, slurmdbd, slurmctld, slurmd); try: sudo $0"

# ---------------------------------------------------------------- packages
need=()
for prog in munged slurmctld slurmd sbatch sacct sacctmgr slurmdbd mariadbd mariadb-install-db; do
    command -v "$prog" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$prog" >/dev/null 2>&1 || need+=("$prog")
done
export PATH=$PATH:/usr/sbin:/sbin
if (( ${#need[@]} )); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${need[*]} and no apt-get to install them (Debian/Ubuntu only); install munge, slurmctld, slurmd, slurm-client, slurmdbd and mariadb-server by hand"
    say "installing munge slurmctld slurmd slurm-client slurmdbd mariadb-server (missing: ${need[*]})"
    pkgs=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${pkgs[@]}" </dev/null >"/tmp/mvl-slurm-apt.log" 2>&1; then
        apt-get update </dev/null >>"/tmp/mvl-slurm-apt.log" 2>&1 || true
        apt-get install -y --no-install-recommends "${pkgs[@]}" </dev/null >>"/tmp/mvl-slurm-apt.log" 2>&1 \
            || die "apt-get install failed; see /tmp/mvl-slurm-apt.log"
    fi
fi

# ---------------------------------------------------------------- folders and configs
mkdir -p "$STATE"/{run,log,ctld,spool,munge,mariadb}
chmod 755 "$STATE" "$STATE"/{run,log}
chown munge:munge "$STATE/munge"
chmod 700 "$STATE/munge"
chown mysql:mysql "$STATE/mariadb"

mkdir -p "$ETC"
if [[ -e $ETC/slurm.conf ]] && ! grep -qxF "$MARK" "$ETC/slurm.conf"; then
    die "$ETC/slurm.conf exists and was not written by this script: refusing to overwrite a real cluster's configuration"
fi

CHANGED=()  # config files rewritten now: running daemons are restarted to read them
write_if_changed() {  # path mode content: rewrite only when different
    local path=$1 mode=$2 content=$3
    if [[ ! -f $path ]] || [[ $(cat "$path") != "$content" ]]; then
        [[ -f $path ]] && CHANGED+=("$(basename "$path")")
        printf '%s\n' "$content" >"$path.tmp.$$"
        chmod "$mode" "$path.tmp.$$"
        mv "$path.tmp.$$" "$path"
    fi
}

write_if_changed "$ETC/slurm.conf" 644 "$MARK
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
GresTypes=gpu
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
JobCompType=jobcomp/none
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:fake:$GPUS State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"

write_if_changed "$ETC/gres.conf" 644 "$MARK
NodeName=$NODE Name=gpu Type=fake File=/dev/null Count=$GPUS"

write_if_changed "$ETC/slurmdbd.conf" 600 "$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=mvl_slurm_acct_db"

# ---------------------------------------------------------------- helpers
alive() {  # pidfile name: true when the pid in pidfile runs a process called name
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ -d /proc/$pid ]] && grep -q "$2" "/proc/$pid/comm" 2>/dev/null
}
wait_for() {  # seconds description command...: poll until the command succeeds
    local limit=$1 what=$2; shift 2
    local i
    for ((i = 0; i < limit * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        if [[ -n ${WATCH_PID:-} ]] && ! kill -0 "$WATCH_PID" 2>/dev/null; then
            die "$what exited while starting; see the logs in $STATE/log"
        fi
        sleep 0.2
    done
    die "$what did not come up within ${limit}s; see the logs in $STATE/log"
}

# ---------------------------------------------------------------- munge
if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already answers; using it"
else
    if [[ ! -s /etc/munge/munge.key ]]; then
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key; \
        else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
        chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
    say "starting munged"
    setsid runuser -u munge -- munged --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" </dev/null >>"$STATE/log/munged.out" 2>&1
    wait_for 20 munged bash -c 'munge -n </dev/null | unmunge'
fi

# ---------------------------------------------------------------- mariadb (private instance)
DB_SOCK=$STATE/mariadb/mariadb.sock  # mariadbd runs as mysql: its socket, pid and log live in a folder it owns
if alive "$STATE/mariadb/mariadbd.pid" mariadbd; then
    say "mariadbd already running"
else
    if [[ ! -d $STATE/mysql/mysql ]]; then
        say "initialising a private MariaDB in $STATE/mysql"
        rm -rf "$STATE/mysql"
        mkdir -p "$STATE/mysql" && chown mysql:mysql "$STATE/mysql"
        mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" --skip-test-db \
            --auth-root-authentication-method=socket </dev/null >"$STATE/log/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
    fi
    say "starting mariadbd on 127.0.0.1:$DB_PORT"
    setsid mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --socket="$DB_SOCK" \
        --pid-file="$STATE/mariadb/mariadbd.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --skip-name-resolve --log-error="$STATE/mariadb/mariadb.log" --innodb-buffer-pool-size=32M \
        --innodb-log-file-size=16M --performance-schema=OFF \
        </dev/null >>"$STATE/log/mariadb.out" 2>&1 &
    WATCH_PID=$! wait_for 60 mariadbd mariadb-admin --no-defaults --socket="$DB_SOCK" -u root ping
fi
mariadb --no-defaults --socket="$DB_SOCK" -u root <<SQL || die "could not create the slurm database user; see $STATE/mariadb/mariadb.log"
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON mvl_slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON mvl_slurm_acct_db.* TO 'slurm'@'localhost';
SQL

# ---------------------------------------------------------------- slurmdbd, accounts
if alive "$STATE/run/slurmdbd.pid" slurmdbd; then
    say "slurmdbd already running"
else
    say "starting slurmdbd"
    setsid slurmdbd </dev/null >>"$STATE/log/slurmdbd.out" 2>&1
    wait_for 60 slurmdbd sacctmgr -n show cluster
fi
sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" \
    || sacctmgr -i add cluster "$CLUSTER" </dev/null >/dev/null
sacctmgr -n -P show account format=account | grep -qx "$ACCOUNT" \
    || sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="medvisionllama test" Organization=mvl </dev/null >/dev/null
for user in $USERS; do
    sacctmgr -n -P show assoc where user="$user" account="$ACCOUNT" format=user | grep -qx "$user" \
        || sacctmgr -i add user "$user" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" Cluster="$CLUSTER" </dev/null >/dev/null
done

# ---------------------------------------------------------------- slurmctld, slurmd
stop_daemon() {  # pidfile name: stop a daemon this script started, wait until it is gone
    local pid
    alive "$1" "$2" || return 0
    pid=$(<"$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do [[ -d /proc/$pid ]] || return 0; sleep 0.1; done
    die "$2 (pid $pid) did not stop within 10s"
}
if (( ${#CHANGED[@]} )) && { alive "$STATE/run/slurmctld.pid" slurmctld || alive "$STATE/run/slurmd.pid" slurmd; }; then
    # new sizes (MVL_SLURM_CPUS, _MEM_MB, _GPUS): a node's definition is read when the daemons
    # start (`scontrol reconfigure` does not change a node's CPUs or GRES), so restart them; the
    # controller keeps its queue in StateSaveLocation, and running jobs go on
    say "configuration changed (${CHANGED[*]}): restarting slurmctld and slurmd to apply it"
    stop_daemon "$STATE/run/slurmd.pid" slurmd
    stop_daemon "$STATE/run/slurmctld.pid" slurmctld
fi
if alive "$STATE/run/slurmctld.pid" slurmctld; then
    say "slurmctld already running"
else
    say "starting slurmctld"
    setsid slurmctld </dev/null >>"$STATE/log/slurmctld.out" 2>&1
    wait_for 60 slurmctld bash -c 'scontrol ping | grep -q UP'
fi
if alive "$STATE/run/slurmd.pid" slurmd; then
    say "slurmd already running"
else
    say "starting slurmd"
    setsid slurmd </dev/null >>"$STATE/log/slurmd.out" 2>&1
fi
node_ready() { sinfo -h -n "$NODE" -o %t | grep -Eq '^(idle|mix|alloc)'; }
for _ in $(seq 1 50); do node_ready && break; sleep 0.3; done
if ! node_ready; then  # down or drained from an earlier run
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    wait_for 30 "node $NODE" node_ready
fi

echo "$T0" >"$STATE/run/started-at"
say "cluster '$CLUSTER' is up in $(( $(date +%s) - T0 ))s: node $NODE, $CPUS CPUs, ${MEM_MB} MB, gpu:fake:$GPUS, partition debug, account $ACCOUNT"
say "configs: $ETC/{slurm,gres,slurmdbd}.conf   logs: $STATE/log/ (munged: $STATE/munge/, mariadb: $STATE/mariadb/)"
say "stop with: $(dirname "$0")/stop-cluster.sh"
