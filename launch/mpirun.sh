#!/usr/bin/env bash
# Runs a program (normally `kiln ...`) under Open MPI's mpirun with a layout that suits kiln: one rank
# per GPU (or per group of CPU cores), each rank pinned to its own cores and told how many threads to
# use. Without this, mpirun binds every rank to ONE core and libtorch runs single-threaded, or ranks
# float over all cores and fight over them.
#
# usage: launch/mpirun.sh [options] [--] PROGRAM [ARGS...]
#   --hostfile FILE        hosts to run on, one per line (`host` or `host slots=N`; # comments);
#                          default: this machine only, or inside a Slurm allocation its nodes
#                          (ranks per node and threads then default to Slurm's tasks per node and
#                          cpus per task)
#   --gpus-per-node G      one rank per GPU: G ranks on every host
#   --ranks-per-node R     the same for CPU-only nodes (G and R are two names for one number)
#   -np N                  total ranks; without a host file: N ranks on this machine;
#                          with one: must equal hosts * ranks-per-node (checked)
#   --threads T            CPU threads per rank (intra-op); default: cores / ranks-per-node, >= 1
#   --cores-per-node C     cores of each host; default: this machine's physical cores, hardware
#                          threads (SMT) not counted (or Slurm's CPUs on the node)
#                          - give it with a host file when the hosts differ from this machine
#   --dry-run              print the mpirun command instead of running it
# Environment: MPIRUN (default mpirun), KILN_MPIRUN_ARGS (extra mpirun arguments, word-split),
# KILN_SYSFS_ROOT (default /sys: where the core count is read; tests point it at a fake tree).
# The variables PATH, LD_LIBRARY_PATH, OMP_NUM_THREADS and every KILN_*, NCCL_*, CUDA_*, UCX_*, OMPI_MCA_*
# are passed to every rank (-x), so remote ranks see what this shell sees - except
# CUDA_VISIBLE_DEVICES: it names GPUs of ONE node, and the launch node's value (e.g. 0) would hide the
# other nodes' GPUs from their ranks. Ranks on this machine inherit it anyway; ranks elsewhere see
# their own node's value (under Slurm, the one Slurm sets for the job's GPUs on that node). To choose
# GPUs per node without Slurm, start the program through a wrapper that sets it by host, e.g.
#   launch/mpirun.sh --hostfile hosts --gpus-per-node 4 ./gpus.sh build/kiln train R.yaml
#   gpus.sh: case $(hostname) in node-b) export CUDA_VISIBLE_DEVICES=4,5,6,7 ;; esac; exec "$@"
set -euo pipefail

die() { echo "launch/mpirun.sh: $*" >&2; exit 2; }
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

hostfile="" per_node="" np="" threads="" cores="" dry_run=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --hostfile) [[ $# -ge 2 ]] || die "--hostfile needs a file"; hostfile=$2; shift 2 ;;
    --gpus-per-node | --ranks-per-node)
      [[ $# -ge 2 ]] && is_count "$2" || die "$1 needs a positive integer, got '${2:-}'"
      per_node=$2; shift 2 ;;
    -np | -n | --np)
      [[ $# -ge 2 ]] && is_count "$2" || die "$1 needs a positive integer, got '${2:-}'"
      np=$2; shift 2 ;;
    --threads)
      [[ $# -ge 2 ]] && is_count "$2" || die "--threads needs a positive integer, got '${2:-}'"
      threads=$2; shift 2 ;;
    --cores-per-node)
      [[ $# -ge 2 ]] && is_count "$2" || die "--cores-per-node needs a positive integer, got '${2:-}'"
      cores=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) break ;;
  esac
done
[[ $# -gt 0 ]] || die "no program to run (usage: launch/mpirun.sh [options] PROGRAM [ARGS...])"

# Physical cores of this machine: one per distinct sibling list in sysfs (the hardware threads of a
# core share one). Open MPI's PE=N and --bind-to core count cores, so counting SMT threads asked for
# twice the PEs a node has and mpirun refused to map. Falls back to nproc where sysfs has no topology.
physical_cores() {
  local root=${KILN_SYSFS_ROOT:-/sys} dir list on
  local -A cores_seen=()
  for dir in "$root"/devices/system/cpu/cpu[0-9]*; do
    on=1; [[ -r $dir/online ]] && read -r on <"$dir/online"
    [[ $on == 0 ]] && continue  # an offline CPU: mpirun cannot bind to it
    list=""
    if [[ -r $dir/topology/core_cpus_list ]]; then read -r list <"$dir/topology/core_cpus_list"
    elif [[ -r $dir/topology/thread_siblings_list ]]; then read -r list <"$dir/topology/thread_siblings_list"  # kernels < 5.7
    fi
    [[ -n $list ]] && cores_seen[$list]=1
  done
  if [[ ${#cores_seen[@]} -gt 0 ]]; then echo "${#cores_seen[@]}"; else nproc --all 2>/dev/null || nproc; fi
}

# Cores of one node; the hosts of a job are assumed alike.
cores_given=${cores:+1}
[[ -n $cores ]] || cores=$(physical_cores)
# Inside a Slurm allocation mpirun takes the nodes and slots from Slurm itself (no host file).
in_slurm=0
if [[ -z $hostfile && -n ${SLURM_JOB_ID:-} && -n ${SLURM_JOB_NUM_NODES:-} ]]; then
  in_slurm=1
  [[ -z $cores_given && -n ${SLURM_CPUS_ON_NODE:-} ]] && cores=$SLURM_CPUS_ON_NODE
  if [[ -z $per_node && -z $np && -n ${SLURM_NTASKS_PER_NODE:-} ]]; then
    per_node=${SLURM_NTASKS_PER_NODE%%(*}  # "2(x3)" on uneven allocations: take the first
  fi
  [[ -z $per_node && -z $np && -n ${SLURM_NTASKS:-} ]] && np=$SLURM_NTASKS
  [[ -z $threads && -n ${SLURM_CPUS_PER_TASK:-} ]] && threads=$SLURM_CPUS_PER_TASK
fi

hosts=()
if [[ -n $hostfile ]]; then
  [[ -r $hostfile ]] || die "host file '$hostfile' cannot be read"
  lineno=0
  while IFS= read -r line || [[ -n $line ]]; do
    lineno=$((lineno + 1))
    line=${line%%#*}
    read -r -a words <<<"$line" || true
    [[ ${#words[@]} -eq 0 ]] && continue
    host=${words[0]}
    for w in "${words[@]:1}"; do
      [[ $w =~ ^(slots|max_slots|max-slots)=[0-9]+$ ]] ||
        die "$hostfile:$lineno: '$w' is not slots=N (a line is 'host' or 'host slots=N')"
    done
    for h in "${hosts[@]}"; do [[ $h == "$host" ]] && die "$hostfile:$lineno: host '$host' is listed twice"; done
    hosts+=("$host")
  done <"$hostfile"
  [[ ${#hosts[@]} -gt 0 ]] || die "host file '$hostfile' names no host"
fi

nodes=${#hosts[@]}
[[ $in_slurm -eq 1 ]] && nodes=$SLURM_JOB_NUM_NODES
[[ $nodes -eq 0 ]] && nodes=1
if [[ -z $per_node ]]; then
  if [[ -n $np ]]; then
    (( np % nodes == 0 )) || die "-np $np does not divide evenly over $nodes hosts; give --ranks-per-node"
    per_node=$((np / nodes))
  elif [[ -n $hostfile ]]; then
    die "with a host file, give --gpus-per-node (or --ranks-per-node)"
  else
    per_node=1
  fi
fi
total=$((nodes * per_node))
[[ -z $np || $np -eq $total ]] || die "-np $np does not match $nodes hosts x $per_node ranks per node = $total"

[[ -n $threads ]] || threads=$(( cores / per_node > 0 ? cores / per_node : 1 ))

cmd=("${MPIRUN:-mpirun}" -np "$total")
[[ $(id -u) -eq 0 ]] && cmd+=(--allow-run-as-root)
if [[ -n $hostfile ]]; then
  # Our own host file with explicit slot counts: Open MPI gives a remote host without `slots=`
  # a single slot, which would refuse the second rank on it.
  derived=$(mktemp "${TMPDIR:-/tmp}/kiln-hosts.XXXXXX")
  trap 'rm -f "$derived"' EXIT
  for h in "${hosts[@]}"; do echo "$h slots=$per_node"; done >"$derived"
  cmd+=(--hostfile "$derived")
fi
# With a host file and no --cores-per-node the remote hosts' cores are unknown (this may be a login
# node): pin as asked and let mpirun refuse loudly if a host is too small.
if (( per_node * threads <= cores )) || [[ -n $hostfile && -z $cores_given ]]; then
  # Each rank owns `threads` cores: torch's intra-op pool then has cores to itself.
  cmd+=(--map-by "ppr:${per_node}:node:PE=${threads}" --bind-to core)
else
  # More threads than cores: pinning would stack ranks on the same cores, so let the OS spread them.
  echo "launch/mpirun.sh: $per_node ranks x $threads threads > $cores cores per node; oversubscribing without binding" >&2
  cmd+=(--map-by "ppr:${per_node}:node" --bind-to none --oversubscribe)
fi

export OMP_NUM_THREADS=$threads
export KILN_LAUNCHER=launch/mpirun.sh  # kiln then knows SIGTERM is relayed (no bare-mpirun advice)
# Inside a Slurm job mpirun starts its daemons on the other nodes with srun, and srun reads
# SRUN_CPUS_PER_TASK as --cpus-per-task, which implies --exact (Slurm >= 22.05): that step, and with it
# every rank on those nodes, would be confined to cpus-per-task CPUs per node. The ranks' cores are
# chosen by the --map-by above, so the daemons' step must keep the whole allocation.
[[ -n ${SLURM_JOB_ID:-} ]] && unset SRUN_CPUS_PER_TASK
# CUDA_VISIBLE_DEVICES is per node (see the header): never forced onto other nodes.
for v in PATH LD_LIBRARY_PATH OMP_NUM_THREADS $(compgen -e | grep -E '^(KILN_|NCCL_|CUDA_|UCX_|OMPI_MCA_)' | grep -vx CUDA_VISIBLE_DEVICES || true); do
  [[ -n ${!v+x} ]] && cmd+=(-x "$v")
done
if [[ -n ${KILN_MPIRUN_ARGS:-} ]]; then
  read -r -a extra <<<"$KILN_MPIRUN_ARGS"
  cmd+=("${extra[@]}")
fi
cmd+=("$@")

echo "launch/mpirun.sh: $total ranks ($nodes host(s) x $per_node), $threads thread(s) per rank, $cores cores per host" >&2
if [[ $dry_run -eq 1 ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
# Not exec: the EXIT trap must remove the derived host file, and signals are relayed (a bash in the
# foreground would hold them until mpirun exits). mpirun forwards SIGUSR1 to the ranks, which then
# finish the step, checkpoint and exit 3; on a SIGTERM of its own it kills them about 2 s later,
# losing the step. So a SIGTERM here (a scheduler's, a user's kill) goes on as SIGUSR1.
"${cmd[@]}" &
pid=$!
trap 'kill -USR1 $pid 2>/dev/null || true' USR1
trap 'kill -USR1 $pid 2>/dev/null || true' TERM
trap 'kill -INT $pid 2>/dev/null || true' INT
while true; do
  rc=0
  wait "$pid" || rc=$?
  kill -0 "$pid" 2>/dev/null || break
done
exit "$rc"
