#!/usr/bin/env bash
# A private, throw-away Slurm on this machine: one node (this host, 127.0.0.1) with 2 CPUs, its own
# munged, slurmctld and slurmd, all state, logs, sockets and pid files under one directory, on free
# ports. Nothing in /etc is changed, so it can run beside a real Slurm or another copy of itself.
#
#   slurm_local.sh up DIR     install slurm-wlm + munge if missing (root), start the daemons, wait
#                             until the node is idle; prints `export SLURM_CONF=DIR/slurm.conf`
#                             With KILN_SLURM_ACCOUNTING=1 also a private MariaDB and slurmdbd
#                             (packages slurmdbd + mariadb-server), so `sacct` works; without it
#                             finished jobs go to DIR/jobcomp.txt only.
#   slurm_local.sh down DIR   stop the daemons started under DIR (by their pid files only)
#   slurm_local.sh logs DIR   print the tail of the daemons' logs (for a failed test)
#
# Clients (sbatch, srun, squeue, scontrol, scancel) find this Slurm through SLURM_CONF; jobs inherit
# it from the submitting environment. Exit code 77 means "cannot run here" (not root and Slurm is
# missing), which the ctest wrappers report as skipped.
set -euo pipefail

die() { echo "slurm_local: $*" >&2; exit 1; }

# The Debian packages that give slurmctld, slurmd, the clients, srun's PMIx plugin (mpi_pmix*.so is
# in slurm-wlm-basic-plugins; it loads libpmix2, which openmpi already depends on) and munge.
PACKAGES=(slurm-wlm munge libpmix2)
ACCOUNTING=${KILN_SLURM_ACCOUNTING:-0}
[[ $ACCOUNTING == 1 ]] && PACKAGES+=(slurmdbd mariadb-server)

ensure_installed() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "slurm_local: needs root to install ${missing[*]} (apt-get install -y ${missing[*]})" >&2
    exit 77
  fi
  echo "slurm_local: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Debian's postinst tries to start the packaged services; a policy-rc.d may forbid that, which is
  # what we want anyway: our daemons run from DIR, not from systemd.
  apt-get update -qq >&2 || die "apt-get update failed"
  apt-get install -y --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

# N free TCP ports on 127.0.0.1 (bound and released at once; the window for a clash is tiny).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

stop_pidfile() {
  local f=$1 name=$2 pid
  [[ -s $f ]] || return 0
  pid=$(cat "$f")
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "slurm_local: $name ($pid) ignored SIGTERM; SIGKILL" >&2; kill -9 "$pid" 2>/dev/null || true; }
  fi
  rm -f "$f"
}

cmd_down() {
  local dir=$1
  [[ -d $dir ]] || return 0
  # Jobs still running would be orphaned with the node gone: cancel them while slurmctld listens.
  if [[ -s $dir/slurmctld.pid && -f $dir/slurm.conf ]]; then
    SLURM_CONF=$dir/slurm.conf timeout 10 scancel --quiet --user="$(id -un)" 2>/dev/null || true
    sleep 1
  fi
  stop_pidfile "$dir/slurmd.pid" slurmd
  stop_pidfile "$dir/slurmctld.pid" slurmctld
  stop_pidfile "$dir/slurmdbd.pid" slurmdbd
  stop_pidfile "$dir/mariadb.pid" mariadbd
  stop_pidfile "$dir/munged.pid" munged
}

cmd_logs() {
  local dir=$1 f
  for f in slurmctld.log slurmd.log slurmdbd.log mariadb.log munged.log; do
    [[ -f $dir/$f ]] || continue
    echo "----- $dir/$f (last 40 lines)"
    tail -n 40 "$dir/$f"
  done
}

accounting_lines() {
  if [[ $ACCOUNTING == 1 ]]; then
    printf '%s\n' "AccountingStorageType=accounting_storage/slurmdbd" "AccountingStorageHost=127.0.0.1" \
      "AccountingStoragePort=${dbd_port}" \
      "# The munge socket for talking to slurmdbd (AuthInfo's socket is not used for that)." \
      "AccountingStoragePass=${sock}" "JobAcctGatherType=jobacct_gather/linux" "JobAcctGatherFrequency=30"
  else
    printf '%s\n' "# No slurmdbd (KILN_SLURM_ACCOUNTING=1 adds one), hence no sacct." \
      "AccountingStorageType=accounting_storage/none" "JobAcctGatherType=jobacct_gather/none"
  fi
}

# MariaDB (own data dir, socket and port on 127.0.0.1) + slurmdbd, and the cluster registered.
start_accounting() {
  mariadb-install-db --no-defaults --datadir="$dir/db" --user=root --auth-root-authentication-method=socket \
    --skip-test-db >"$dir/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $dir/mariadb-install.log"
  # mariadbd does not daemonize itself: start it in its own session so it outlives this script.
  setsid /usr/sbin/mariadbd --no-defaults --datadir="$dir/db" --socket="$dir/db.sock" --port="$db_port" \
    --bind-address=127.0.0.1 --skip-name-resolve --user=root --pid-file="$dir/mariadb.pid" \
    --log-error="$dir/mariadb.log" --innodb-buffer-pool-size=16M </dev/null >/dev/null 2>&1 &
  for _ in $(seq 150); do [[ -S $dir/db.sock ]] && break; sleep 0.2; done
  [[ -S $dir/db.sock ]] || die "mariadbd did not start; $(tail -n 3 "$dir/mariadb.log" 2>/dev/null)"
  local pw
  pw=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
  mariadb --no-defaults --socket="$dir/db.sock" -u root -e \
    "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
    die "could not create the slurmdbd database user"
  (umask 077 && cat >"$dir/slurmdbd.conf" <<EOF
# Generated by tests/e2e/slurm_local.sh (slurmdbd reads it from slurm.conf's directory).
AuthType=auth/munge
AuthInfo=socket=${sock}
DbdHost=${host}
DbdAddr=127.0.0.1
DbdPort=${dbd_port}
SlurmUser=root
PidFile=${dir}/slurmdbd.pid
LogFile=${dir}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=${db_port}
StorageUser=slurm
StoragePass=${pw}
StorageLoc=slurm_acct_db
EOF
  )
  slurmdbd || die "slurmdbd did not start; $(tail -n 5 "$dir/slurmdbd.log" 2>/dev/null)"
  # slurmdbd creates its tables before it answers; the cluster must exist before slurmctld registers.
  local ok=0 t0=$SECONDS
  while (( SECONDS - t0 < 60 )); do
    timeout 10 sacctmgr -i add cluster kiln-local >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.5
  done
  [[ $ok == 1 ]] || die "slurmdbd did not answer within 60 s; $(tail -n 5 "$dir/slurmdbd.log" 2>/dev/null)"
}

cmd_up() {
  local dir=$1
  [[ $(id -u) -eq 0 ]] || { echo "slurm_local: a local slurmd must run as root (it starts jobs as their user)" >&2; exit 77; }
  ensure_installed
  mkdir -p "$dir"/{state,spool,munge}
  dir=$(cd "$dir" && pwd)
  chmod 700 "$dir/munge"

  # A private munge key and socket, so the test neither needs nor disturbs a system munged.
  local key=$dir/munge/munge.key sock=$dir/munge/munge.socket
  [[ -f $key ]] || mungekey --create --keyfile="$key" >/dev/null 2>&1 ||
    { dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; }
  chmod 400 "$key"
  munged --force --socket="$sock" --key-file="$key" --pid-file="$dir/munged.pid" \
    --log-file="$dir/munged.log" --seed-file="$dir/munge/munged.seed" ||
    die "munged did not start; see $dir/munged.log"
  for _ in $(seq 50); do [[ -S $sock ]] && break; sleep 0.1; done
  [[ -S $sock ]] || die "munged socket $sock did not appear"

  local host ports ctld_port slurmd_port
  host=$(hostname -s)
  read -r ctld_port slurmd_port dbd_port db_port <<<"$(free_ports 4)"
  local cpus=2  # and as many stand-in GPUs
  cat >"$dir/slurm.conf" <<EOF
# Generated by tests/e2e/slurm_local.sh: a one-node Slurm on localhost for kiln's tests.
ClusterName=kiln-local
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctld_port}
SlurmdPort=${slurmd_port}
SlurmUser=root
SlurmdUser=root
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${sock},cred_expire=10
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${dir}/spool/slurmd-%n
SlurmctldPidFile=${dir}/slurmctld.pid
SlurmdPidFile=${dir}/slurmd.pid
SlurmctldLogFile=${dir}/slurmctld.log
SlurmdLogFile=${dir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: track processes by parent pid, bind nothing (mpirun/kiln bind).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
$(accounting_lines)
# Finished jobs, one line per run, also in a text file (the only record without slurmdbd).
JobCompType=jobcomp/filetxt
JobCompLoc=${dir}/jobcomp.txt
# Look at pending jobs every 2 s (default 60), so a requeued job starts soon after it may.
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
MinJobAge=600
ReturnToService=2
# The node's CPUs come from this file even where the machine has fewer or more.
SlurmdParameters=config_overrides
InactiveLimit=0
KillWait=10
Waittime=0
# Two stand-in GPUs, so the cluster scripts' --gpus-per-node requests go through Slurm's scheduler
# while kiln runs on the CPU (gres.conf below).
GresTypes=gpu
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} Gres=gpu:${cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  # Slurm drops a GPU without a device file and refuses one that is not a character device, so the
  # stand-ins are two harmless character devices that exist everywhere.
  echo "NodeName=${host} Name=gpu File=/dev/null,/dev/zero" >"$dir/gres.conf"
  export SLURM_CONF=$dir/slurm.conf
  [[ $ACCOUNTING == 1 ]] && start_accounting

  slurmctld -f "$SLURM_CONF" || die "slurmctld did not start; $(tail -n 5 "$dir/slurmctld.log" 2>/dev/null)"
  slurmd -f "$SLURM_CONF" -N "$host" || die "slurmd did not start; $(tail -n 5 "$dir/slurmd.log" 2>/dev/null)"

  local state=""
  for _ in $(seq 120); do
    state=$(sinfo -h -n "$host" -o '%T' 2>/dev/null || true)
    [[ $state == idle ]] && break
    sleep 0.5
  done
  [[ $state == idle ]] || { cmd_logs "$dir" >&2; die "node $host is '${state:-unreachable}', not idle, after 60 s"; }
  echo "export SLURM_CONF=$SLURM_CONF"
}

[[ $# -eq 2 ]] || die "usage: $0 up|down|logs DIR"
case $1 in
  up) cmd_up "$2" ;;
  down) cmd_down "$2" ;;
  logs) cmd_logs "$2" ;;
  *) die "usage: $0 up|down|logs DIR" ;;
esac
