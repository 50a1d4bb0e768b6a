#!/usr/bin/env bash
# Starts a one-node SLURM (Debian slurm-wlm + munge) on this machine: one partition `debug` holding this host
# with all its CPUs. Idempotent: when the node already answers, it only prints its state. Needs root.
# Accounting is off (no slurmdbd), so `sacct` fails; submitit and `ssl-zoo status` read squeue and files.
set -euo pipefail

HOST=$(hostname)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 9 / 10 ))
CONF=/etc/slurm/slurm.conf

node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

for cmd in slurmctld slurmd munged sinfo; do
  command -v "$cmd" >/dev/null || { echo "slurm: $cmd not found (apt-get install -y slurm-wlm munge)" >&2; exit 1; }
done
if [ "$(id -u)" != 0 ]; then
  state=$(node_state)
  [[ "$state" =~ ^(idle|mixed|allocated|completing) ]] && { echo "slurm: node $HOST is $state"; exit 0; }
  echo "slurm: starting the daemons needs root" >&2
  exit 1
fi

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$CONF.new" <<EOF
# Written by ssl-zoo scripts/start_slurm.sh: one node, one partition, no accounting (edits are overwritten).
ClusterName=sslzoo
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
# A requeued job may start again once its old credential has expired (default 120 s): keep requeues quick.
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=30
MinJobAge=300
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
if cmp -s "$CONF.new" "$CONF"; then
  rm -f "$CONF.new"
  if [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing) ]]; then
    echo "slurm: node $HOST is $(node_state)"
    exit 0
  fi
else
  mv "$CONF.new" "$CONF"
  changed=1
fi

# munge: the key and its folders must belong to the munge user, or munged refuses to start.
mkdir -p /run/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chmod 400 /etc/munge/munge.key
chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- munged
fi

if [ -n "${changed:-}" ]; then  # some settings (AuthInfo) are read only at start: restart the daemons
  for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    if alive "$pidfile"; then
      pid=$(cat "$pidfile")
      kill "$pid"
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
  done
fi
alive /run/slurmctld.pid || slurmctld
for _ in $(seq 30); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 1; done
alive /run/slurmd.pid || slurmd

for _ in $(seq 60); do
  state=$(node_state)
  case "$state" in
    idle*|mixed*|allocated*|completing*) echo "slurm: node $HOST is $state (partition debug, $CPUS CPUs)"; exit 0 ;;
    down*|drain*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "slurm: node $HOST did not become idle (state: ${state:-none}); see /var/log/slurm/" >&2
exit 1
