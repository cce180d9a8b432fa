#!/usr/bin/env bash
# Single host: run mdm_jax on this machine's devices, optionally as several JAX
# processes on 127.0.0.1 (exercises the multi-host code path on one machine).
set -euo pipefail
# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: launch/local.sh [options] -- [extra flags for python -m mdm_jax.main]

Runs `python -m mdm_jax.main --config=CONFIG --workdir=WORKDIR ...` on this host.

Options:
  --config SPEC          config file and preset, e.g. configs/sudoku_mdm.py:demo (required)
  --workdir DIR          checkpoints, metrics and results go here (required)
  --mode MODE            train | eval | sample (default: train)
  --processes N          JAX processes on this host (default 1). N > 1 starts N
                         processes joined by jax.distributed on 127.0.0.1.
  --cpu-devices D        on CPU, give each process D virtual devices (default: unset)
  --port P               coordinator port for --processes > 1 (default 12355)
  --python PY            Python interpreter (default: $PYTHON or python3)
  --dry-run              print the commands instead of running them
  -h, --help             this help
USAGE
}

config="" workdir="" mode="train" processes=1 cpu_devices="" port=12355
python="${PYTHON:-python3}" dry_run=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --processes) processes="$2"; shift 2 ;;
    --cpu-devices) cpu_devices="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ -n "$config" ]] || die "--config is required (see --help)"
[[ -n "$workdir" ]] || die "--workdir is required (see --help)"
[[ "$processes" =~ ^[1-9][0-9]*$ ]] || die "--processes must be a positive integer, got '$processes'"
if [[ -n "$cpu_devices" ]]; then
  [[ "$cpu_devices" =~ ^[1-9][0-9]*$ ]] || die "--cpu-devices must be a positive integer, got '$cpu_devices'"
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$cpu_devices"
fi

base=("$python" -m mdm_jax.main "--config=$config" "--workdir=$workdir" "--mode=$mode")

if [[ "$processes" -eq 1 ]]; then
  cmd=("${base[@]}" "${extra[@]}")
  if [[ $dry_run -eq 1 ]]; then
    [[ -n "$cpu_devices" ]] && echo "export XLA_FLAGS='$XLA_FLAGS'"
    show "${cmd[@]}"
    exit 0
  fi
  exec "${cmd[@]}"
fi

pids=()
# shellcheck disable=SC2317  # invoked by the trap below
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM
status=0
for ((i = 0; i < processes; i++)); do
  cmd=("${base[@]}" "--coordinator_address=127.0.0.1:$port" "--num_processes=$processes"
       "--process_id=$i" "${extra[@]}")
  if [[ $dry_run -eq 1 ]]; then
    [[ -n "$cpu_devices" && $i -eq 0 ]] && echo "export XLA_FLAGS='$XLA_FLAGS'"
    echo "$(show "${cmd[@]}") &"
    continue
  fi
  "${cmd[@]}" &
  pids+=($!)
done
[[ $dry_run -eq 1 ]] && { echo wait; exit 0; }
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"
