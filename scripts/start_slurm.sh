#!/usr/bin/env bash
# Makes sure a SLURM answers on this machine, printing one line saying what it did. A SLURM that already answers
# (`sinfo`) is used as it is: its config, daemons and jobs are never touched. Only when none runs does it start a
# one-node SLURM (Debian slurm-wlm + munge, as root): one partition `debug` holding this host with all its CPUs.
# Accounting is off (no slurmdbd), so `sacct` fails; submitit and `ssl-zoo status` read squeue and files.
# Exit codes: 0 a SLURM answers (found or started), 1 none and it could not start one (the line says why).
set -euo pipefail

HOST=$(hostname)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 9 / 10 ))
CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}  # SLURM_CONF: where slurm itself looks too
MARK="# Written by ssl-zoo scripts/start_slurm.sh"

node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1; }
fail() { echo "slurm: $*" >&2; exit 1; }

command -v sinfo >/dev/null || fail "sinfo not found (apt-get install -y slurm-wlm munge)"
if timeout 20 sinfo -h -o %P >/dev/null 2>&1; then  # a SLURM answers: someone's cluster, used as it is
  echo "slurm: using the running SLURM (partitions: $(sinfo -h -o %P | tr '\n' ' ' | sed 's/ $//'))"
  exit 0
fi
# Daemons that run but do not answer belong to someone: never stop, reconfigure or restart them.
for d in slurmctld slurmd; do
  pgrep -x "$d" >/dev/null && fail "$d is running but sinfo gets no answer; left untouched (see its logs)"
done
for cmd in slurmctld slurmd munged; do
  command -v "$cmd" >/dev/null || fail "$cmd not found (apt-get install -y slurm-wlm munge)"
done
[ "$(id -u)" = 0 ] || fail "no SLURM runs and starting one needs root"
# A config this script did not write is a user's: never overwritten.
if [ -s "$CONF" ] && ! head -n1 "$CONF" | grep -qF "$MARK"; then
  fail "no SLURM runs, but $CONF was not written by this script; left untouched (start that SLURM yourself)"
fi

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$CONF.new" <<EOF
$MARK: one node, one partition, no accounting.
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
mv "$CONF.new" "$CONF"

# munge: used as it is when it answers; else started, with the key and folders owned by munge (or it refuses).
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  pgrep -x munged >/dev/null && fail "munged is running but does not answer; left untouched"
  mkdir -p /run/munge
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chmod 400 /etc/munge/munge.key
  chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  runuser -u munge -- munged
fi

slurmctld
for _ in $(seq 30); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 1; done
slurmd

for _ in $(seq 60); do
  state=$(node_state)
  case "$state" in
    idle*|mixed*|allocated*|completing*)
      echo "slurm: started a one-node SLURM: node $HOST is $state (partition debug, $CPUS CPUs)"; exit 0 ;;
    down*|drain*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
fail "started slurmctld and slurmd, but node $HOST did not become idle (state: ${state:-none}); see /var/log/slurm/"
