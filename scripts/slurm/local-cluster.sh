#!/usr/bin/env bash
# A real two-node SLURM cluster on this one machine, for trying the job script and
# for the SLURM tests (tests/e2e/test_slurm.py):
#
#   scripts/slurm/local-cluster.sh install  # slurm-wlm and munge, if missing (root, apt-get)
#   scripts/slurm/local-cluster.sh start    # installs them first when missing
#   export SLURM_CONF=$(scripts/slurm/local-cluster.sh conf)
#   sbatch ... / squeue / sinfo
#   scripts/slurm/local-cluster.sh status
#   scripts/slurm/local-cluster.sh stop     # cancels its jobs, stops every daemon it started
#
# One slurmctld and two slurmd (nodes n1 and n2, one CPU each) on 127.0.0.1, with
# one munged. Everything they write lives under $MNIST_BENCH_SLURM_DIR (default
# /tmp/mnist-bench-slurm): the configuration, state, spool, logs, munge key and
# socket. Nothing of the system's is changed beyond the installed packages: no
# /etc/slurm, no service started, no /run/munge.
set -euo pipefail

ROOT="${MNIST_BENCH_SLURM_DIR:-/tmp/mnist-bench-slurm}"
PORT="${MNIST_BENCH_SLURM_PORT:-17000}"  # slurmctld; the nodes take the next two
CONF="$ROOT/etc/slurm.conf"
MUNGE_SOCKET="$ROOT/munge/munge.socket.2"
NODES=(n1 n2)
# Every daemon carries this in its environment: `stop` finds what is its own by it (and
# the job steps by their working folder), and only that.
MARK="MNIST_BENCH_SLURM_CLUSTER=$ROOT"

# Exit status 3: slurm-wlm and munge are missing and cannot be installed here (the
# SLURM tests skip with the message); any other failure is 1.
CANNOT_INSTALL=3

say() { echo "local-cluster: $*" >&2; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null && return 0
    if [ "$(id -u)" -ne 0 ]; then
        say "slurm-wlm and munge are not installed, and installing them needs root"
        exit "$CANNOT_INSTALL"
    fi
    command -v apt-get >/dev/null \
        || { say "no apt-get here to install slurm-wlm and munge"; exit "$CANNOT_INSTALL"; }
    say "installing slurm-wlm and munge (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q slurm-wlm munge >/dev/null; } \
        || { say "apt-get could not install slurm-wlm and munge"; exit "$CANNOT_INSTALL"; }
}

write_conf() {
    local user; user="$(id -un)"
    mkdir -p "$ROOT"/{etc,state,log,run,munge} "${NODES[@]/#/$ROOT/spool/}"
    chmod 700 "$ROOT/munge"
    cat > "$CONF" <<CONF
# Written by scripts/slurm/local-cluster.sh: two nodes on 127.0.0.1.
ClusterName=mnistbench
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool/%n
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd-%n.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd-%n.log
# No cgroups (a container may not delegate them): processes tracked by parentage.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# The configured CPUs count, not what each slurmd finds (both find the whole machine).
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
# A cancelled or requeued job's processes get SIGTERM, then SIGKILL this many s later.
KillWait=10
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=n1 NodeAddr=127.0.0.1 Port=$((PORT + 1)) CPUs=1 State=UNKNOWN
NodeName=n2 NodeAddr=127.0.0.1 Port=$((PORT + 2)) CPUs=1 State=UNKNOWN
PartitionName=local Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
    if [ ! -s "$ROOT/munge/munge.key" ]; then
        (umask 077 && head -c 1024 /dev/urandom > "$ROOT/munge/munge.key")
    fi
}

alive() {  # a process that runs: not gone, not a zombie nobody reaped yet
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat%% *}" != Z ]
}

pid_of() {  # the pid in a pid file, if that process is alive
    local file="$1" pid
    [ -f "$file" ] || return 1
    pid="$(cat "$file" 2>/dev/null)" || return 1
    [ -n "$pid" ] && alive "$pid" && echo "$pid"
}

own_processes() {  # pids of this cluster's daemons and job steps, and only those
    local dir pid
    for dir in /proc/[0-9]*; do
        pid="${dir#/proc/}"
        [ "$pid" = "$$" ] && continue
        # the daemons carry the mark; slurmd gives its slurmstepd a clean environment,
        # but they work in this cluster's log folder
        if { tr '\0' '\n' < "$dir/environ"; } 2>/dev/null | grep -qxF "$MARK" \
            || { [ "$(cat "$dir/comm" 2>/dev/null)" = slurmstepd ] \
                 && [[ "$(readlink "$dir/cwd" 2>/dev/null)" == "$ROOT"/* ]]; }; then
            echo "$pid"
        fi
    done
    return 0
}

wait_until() {  # wait_until SECONDS COMMAND...: true once COMMAND succeeds
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

nodes_idle() {
    [ "$(SLURM_CONF="$CONF" sinfo -h -N -o '%N %t' 2>/dev/null | grep -c ' idle$')" -eq 2 ]
}

start() {
    install_packages
    if pid_of "$ROOT/run/slurmctld.pid" >/dev/null; then
        say "already running ($CONF)"; return 0
    fi
    [ -z "$(own_processes)" ] || stop  # what a half-started or half-stopped cluster left
    write_conf
    export "${MARK?}" SLURM_CONF="$CONF"
    munged --force --key-file="$ROOT/munge/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$ROOT/munge/munged.pid" --seed-file="$ROOT/munge/munged.seed" \
        --log-file="$ROOT/log/munged.log"
    slurmctld -f "$CONF" -i  # -i: ignore state from an earlier cluster in this folder
    for node in "${NODES[@]}"; do
        slurmd -f "$CONF" -N "$node"
    done
    if ! wait_until 30 nodes_idle; then
        say "the nodes did not come up; logs in $ROOT/log"
        tail -n 5 "$ROOT"/log/*.log >&2 || true
        stop; return 1
    fi
    say "up: 2 nodes; export SLURM_CONF=$CONF"
}

no_jobs() { [ -z "$(SLURM_CONF="$CONF" squeue -h -o %i 2>/dev/null)" ]; }
gone() { [ -z "$(own_processes)" ]; }

stop() {
    local jobs pids
    if pid_of "$ROOT/run/slurmctld.pid" >/dev/null; then
        # Cancelled jobs' tasks get SIGTERM, then SIGKILL after KillWait: let the
        # cluster end them before its daemons go.
        jobs="$(SLURM_CONF="$CONF" squeue -h -o %i 2>/dev/null || true)"
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            SLURM_CONF="$CONF" scancel --quiet $jobs 2>/dev/null || true
            wait_until 30 no_jobs || say "jobs still listed after scancel: $jobs"
        fi
    fi
    pids="$(own_processes)"
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -TERM $pids 2>/dev/null || true
    if ! wait_until 15 gone; then
        pids="$(own_processes)"
        # shellcheck disable=SC2086
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        wait_until 5 gone || { say "still running: $(own_processes | tr '\n' ' ')"; return 1; }
    fi
    rm -f "$ROOT"/run/*.pid "$ROOT/munge/munged.pid" "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    say "stopped"
}

status() {
    local down=0 name file pid
    for name in munged slurmctld "${NODES[@]/#/slurmd-}"; do
        case "$name" in munged) file="$ROOT/munge/munged.pid" ;; *) file="$ROOT/run/$name.pid" ;; esac
        if pid="$(pid_of "$file")"; then echo "$name: running (pid $pid)"
        else echo "$name: stopped"; down=1; fi
    done
    [ "$down" -eq 0 ] && SLURM_CONF="$CONF" sinfo -N -o '%N %t %c' || true
    return "$down"
}

case "${1:-}" in
    install) install_packages ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    conf) echo "$CONF" ;;
    *) echo "usage: $0 install|start|stop|status|conf" >&2; exit 2 ;;
esac
