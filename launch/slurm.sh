#!/usr/bin/env bash
# Submits launch/gpu_slurm.sbatch with the node/GPU layout and the run's settings.
set -euo pipefail
# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: launch/slurm.sh [options] -- [extra flags for python -m mdm_jax.main]

Options:
  --config SPEC         e.g. configs/sudoku_mdm.py:paper (required)
  --workdir DIR         on a filesystem shared by all nodes (required)
  --nodes N             number of nodes (default 1)
  --gpus-per-node G     GPUs per node (default 8)
  --per-gpu             one task per GPU (default: one task per node driving all its GPUs)
  --partition P         SLURM partition
  --time T              time limit, e.g. 04:00:00 (the job requeues itself and resumes)
  --account A           SLURM account
  --mode MODE           train | eval | sample (default: train)
  --python PY           interpreter with mdm_jax[cuda] installed (default: python3)
  --dry-run             print the sbatch command instead of submitting
  -h, --help            this help
USAGE
}

config="" workdir="" nodes=1 gpus=8 per_gpu=0 partition="" time_limit="" account=""
mode="train" python="python3" dry_run=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --gpus-per-node) gpus="$2"; shift 2 ;;
    --per-gpu) per_gpu=1; shift ;;
    --partition) partition="$2"; shift 2 ;;
    --time) time_limit="$2"; shift 2 ;;
    --account) account="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ -n "$config" ]] || die "--config is required (see --help)"
[[ -n "$workdir" ]] || die "--workdir is required (see --help)"
for v in nodes gpus; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "--$v must be a positive integer, got '${!v}'"
done

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
if [[ $per_gpu -eq 1 ]]; then
  layout=("--ntasks-per-node=$gpus" "--gpus-per-task=1")
else
  layout=("--ntasks-per-node=1" "--gpus-per-node=$gpus")
fi
cmd=(sbatch "--nodes=$nodes" "${layout[@]}")
[[ -n "$partition" ]] && cmd+=("--partition=$partition")
[[ -n "$time_limit" ]] && cmd+=("--time=$time_limit")
[[ -n "$account" ]] && cmd+=("--account=$account")
flags=""
for arg in "${extra[@]}"; do flags+="${flags:+ }$arg"; done
cmd+=("--export=ALL,MDM_CONFIG=$config,MDM_WORKDIR=$workdir,MDM_MODE=$mode,MDM_PYTHON=$python,MDM_REPO=$repo,MDM_EXTRA_FLAGS=$flags"
      "$here/gpu_slurm.sbatch")

if [[ $dry_run -eq 1 ]]; then
  show "${cmd[@]}"
  exit 0
fi
mkdir -p "$workdir"
exec "${cmd[@]}"
