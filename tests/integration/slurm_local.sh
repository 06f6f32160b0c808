#!/usr/bin/env bash
# Start a single-node Slurm on this machine for the fleet tests (and .ci/run): munged, slurmctld and slurmd, with
# this host as the only node of one partition, `debug`. Needs root and Debian's slurm-wlm + munge.
#
#   tests/integration/slurm_local.sh          start (or confirm it is running) and wait until the node is idle
#   tests/integration/slurm_local.sh stop     stop the daemons this script started
#
# State, spool and logs go under $TORCHRIG_SLURM_DIR (default /tmp/torchrig-slurm). The configuration is written to
# /etc/slurm/slurm.conf, where every Slurm command looks for it; a slurm.conf that this script did not write is
# never touched. There is no slurmdbd: `sacct` has no accounting to read, so `torchrig fleet` reads finished jobs
# from slurmctld (`scontrol show job`), which keeps them for MinJobAge (set to a day here).
set -euo pipefail
log() { printf '[slurm %s] %s\n' "$(date +%T)" "$*"; }
die() { log "$*"; exit 1; }

dir=${TORCHRIG_SLURM_DIR:-/tmp/torchrig-slurm}
conf=/etc/slurm/slurm.conf
marker="# written by torchrig tests/integration/slurm_local.sh"

stop() {  # stop NAME...: the daemons of those names that this script started
  for name in "$@"; do
    pidfile="$dir/$name.pid"
    if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      log "stopping $name ($(cat "$pidfile"))"
      kill "$(cat "$pidfile")"
      for _ in $(seq 1 20); do kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null || break; sleep 0.5; done
    fi
  done
}

if [[ ${1:-start} == stop ]]; then stop slurmd slurmctld munged; exit 0; fi
[[ $(id -u) == 0 ]] || die "needs root (it starts munged, slurmctld and slurmd)"
for cmd in munged slurmctld slurmd sinfo; do
  command -v "$cmd" >/dev/null || die "$cmd is missing: apt-get install slurm-wlm munge"
done

host=$(hostname -s)
idle() { sinfo --noheader --nodes="$host" --format=%t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }
if [[ -f $conf ]] && ! grep -qF "$marker" "$conf"; then
  die "$conf exists and was not written by this script: not touching a real cluster's configuration"
fi

mkdir -p "$dir/ctld" "$dir/spool" /etc/slurm
# --- munge: a key (made once), its run directory, the daemon
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating /etc/munge/munge.key"
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  cp /run/munge/munged.pid "$dir/munged.pid" 2>/dev/null || true
  for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
  munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# --- slurm.conf: this host as the only node, with what slurmd detects (CPUs, sockets, cores, memory), reached
# over the loopback address (a fresh machine's host name need not resolve)
node=$(slurmd -C | head -n 1)
[[ $node == NodeName=* ]] || die "slurmd -C did not describe this node: $node"
new=$(cat <<EOF
$marker; state, spool and logs in $dir
ClusterName=torchrig
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=86400
SlurmdTimeout=300
KillWait=10
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
if [[ -f $conf && $(cat "$conf") == "$new" ]] && idle; then
  log "Slurm is already up: node $host $(sinfo --noheader --nodes="$host" --format=%t)"
  exit 0
fi
stop slurmd slurmctld  # daemons of an earlier start read an older configuration
sleep 1
printf '%s\n' "$new" >"$conf"

log "starting slurmctld and slurmd (logs in $dir)"
slurmctld
for _ in $(seq 1 30); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
slurmd
for _ in $(seq 1 60); do idle && break; sleep 1; done
if ! idle; then
  log "the node did not become idle: sinfo says"
  sinfo -N -l || true
  tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" || true
  exit 1
fi
log "Slurm is up: $(sinfo --noheader --format='partition %P, node %N %t')"
