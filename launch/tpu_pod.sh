#!/usr/bin/env bash
# TPU VM pod slice: create (or reuse) the slice, copy this checkout to every worker,
# install with the TPU JAX extra, and run the same mdm_jax command on all workers.
# jax.distributed.initialize() detects the pod by itself on every worker.
set -euo pipefail
# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: launch/tpu_pod.sh [options] -- [extra flags for python -m mdm_jax.main]

Options:
  --name NAME             TPU VM name (required)
  --zone ZONE             e.g. us-central2-b (required)
  --accelerator-type T    e.g. v4-32, v5litepod-16 (required when the TPU must be created)
  --version V             TPU VM software version (default: tpu-ubuntu2204-base)
  --project P             GCP project (default: gcloud's configured project)
  --config SPEC           e.g. configs/sudoku_mdm.py:paper (required)
  --workdir PATH          a gs:// bucket path shared by all workers (required)
  --mode MODE             train | eval | sample (default: train)
  --spot                  create the slice as a Spot VM (preemptible; training resumes)
  --skip-setup            do not copy code or install (rerun on an existing slice)
  --detach                start the run in the background on every worker (log: ~/mdm_jax.log)
  --delete                delete the TPU VM after the run (not with --detach)
  --dry-run               print every command instead of running it
  -h, --help              this help

Example:
  launch/tpu_pod.sh --name mdm --zone us-central2-b --accelerator-type v4-32 \
    --config configs/sudoku_mdm.py:paper --workdir gs://my-bucket/mdm/sudoku
USAGE
}

name="" zone="" accel="" version="tpu-ubuntu2204-base" project="" config="" workdir=""
mode="train" spot=0 skip_setup=0 detach=0 delete=0 dry_run=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --accelerator-type) accel="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --spot) spot=1; shift ;;
    --skip-setup) skip_setup=1; shift ;;
    --detach) detach=1; shift ;;
    --delete) delete=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
for req in name zone config workdir; do
  [[ -n "${!req}" ]] || die "--$req is required (see --help)"
done
[[ "$workdir" == gs://* ]] || die "--workdir must be a gs:// path that every worker can reach, got '$workdir'"

run() {
  if [[ $dry_run -eq 1 ]]; then show "$@"; else "$@"; fi
}

tpu=(gcloud compute tpus tpu-vm)
where=("--zone=$zone")
[[ -n "$project" ]] && where+=("--project=$project")
remote_dir="\$HOME/mdm_jax"  # expanded on the workers

# 1. Create the slice unless it exists.
if [[ $dry_run -eq 1 ]]; then
  if [[ -n "$accel" ]]; then
    echo "# if '$name' does not exist yet:"
    create=("${tpu[@]}" create "$name" "${where[@]}" "--accelerator-type=$accel" "--version=$version")
    [[ $spot -eq 1 ]] && create+=(--spot)
    show "${create[@]}"
  else
    echo "# '$name' must exist already (no --accelerator-type given)"
  fi
elif ! "${tpu[@]}" describe "$name" "${where[@]}" >/dev/null 2>&1; then
  [[ -n "$accel" ]] || die "TPU '$name' does not exist; pass --accelerator-type to create it"
  create=("${tpu[@]}" create "$name" "${where[@]}" "--accelerator-type=$accel" "--version=$version")
  [[ $spot -eq 1 ]] && create+=(--spot)
  "${create[@]}"
fi

# 2. Copy this checkout (committed files) to every worker and install it.
if [[ $skip_setup -eq 0 ]]; then
  repo_root="$(cd "$(dirname "$0")/.." && pwd)"
  tarball="/tmp/mdm_jax-$name.tar.gz"
  run git -C "$repo_root" archive --format=tar.gz -o "$tarball" HEAD
  run "${tpu[@]}" scp "$tarball" "$name:/tmp/mdm_jax.tar.gz" "${where[@]}" --worker=all
  setup="mkdir -p $remote_dir && tar xzf /tmp/mdm_jax.tar.gz -C $remote_dir"
  setup+=" && python3 -m venv \$HOME/mdm_venv && \$HOME/mdm_venv/bin/pip install -q --upgrade pip"
  setup+=" && \$HOME/mdm_venv/bin/pip install -q -e \"${remote_dir}[tpu]\""
  run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$setup"
fi

# 3. The same command on every worker (all hosts must start it).
main="cd $remote_dir && \$HOME/mdm_venv/bin/python -m mdm_jax.main --config=$config --workdir=$workdir --mode=$mode"
for arg in "${extra[@]}"; do main+=" $(printf '%q' "$arg")"; done
if [[ $detach -eq 1 ]]; then
  main="nohup bash -c $(printf '%q' "$main") > \$HOME/mdm_jax.log 2>&1 &"
fi
run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$main"

# 4. Optionally delete the slice.
if [[ $delete -eq 1 ]]; then
  run "${tpu[@]}" delete "$name" "${where[@]}" --quiet
fi
