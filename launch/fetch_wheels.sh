#!/usr/bin/env bash
# Downloads the wheels that launch/gpu_sudoku.sh installs on a GPU machine without
# network access. Run it here, on a machine with network, before the GPU run.
set -euo pipefail
# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: launch/fetch_wheels.sh [options]

Downloads (pip download, binary wheels only, no dependencies resolved) the
packages that mdm_jax needs beyond what the GPU machine has (jax with CUDA, flax,
optax, orbax-checkpoint, chex, absl-py, numpy, matplotlib, tqdm, pyyaml,
cloudpickle, etils, protobuf, psutil, ...):

  ml-collections, grain, tensorboardX, and grain's array-record and portpicker

pinned to the versions this repository is tested with, for CPython 3.12 on
manylinux x86-64, into DEST (default: .whl/ at the repository root, ignored by
git). Other versions of these packages already in DEST are removed, so DEST keeps
one wheel per package. launch/gpu_sudoku.sh installs DEST/*.whl offline.

Options:
  --dest DIR             where the wheels go (default: <repo>/.whl)
  --python-version V     target Python version (default 3.12)
  --python PY            Python whose pip downloads (default: $PYTHON or python3)
  --dry-run              print the pip command instead of running it
  -h, --help             this help
USAGE
}

# name==version; the versions of the development virtualenv (`pip show NAME`).
PINNED=(
  ml-collections==1.1.0
  grain==0.2.18
  tensorboardX==2.6.5
  array-record==0.8.6
  portpicker==1.6.0
)

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.whl" pyver="3.12" python="${PYTHON:-python3}" dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dest) dest="$2"; shift 2 ;;
    --python-version) pyver="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ "$pyver" =~ ^3\.[0-9]+$ ]] || die "--python-version must look like 3.12, got '$pyver'"

platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
tmp="$dest/.download"
cmd=("$python" -m pip download --no-deps --only-binary=:all: --python-version "$pyver"
     --implementation cp "${platforms[@]}" -d "$tmp" "${PINNED[@]}")
if [[ $dry_run -eq 1 ]]; then
  show "${cmd[@]}"
  exit 0
fi

rm -rf "$tmp"
mkdir -p "$tmp" "$dest"
if ! "${cmd[@]}" >&2; then
  rm -rf "$tmp"
  echo "fetch_wheels.sh: pip download failed (network? a wheel missing for this platform: add a --platform manylinux_2_N_x86_64 above)" >&2
  exit 1
fi
# One wheel per package: drop other versions of what was just downloaded.
for whl in "$tmp"/*.whl; do
  name="$(basename "$whl")"
  dist="${name%%-*}"
  find "$dest" -maxdepth 1 -iname "${dist}-*.whl" ! -name "$name" -delete
  mv -f "$whl" "$dest/"
done
rm -rf "$tmp"
echo "wheels in $dest:"
for whl in "$dest"/*.whl; do
  echo "  $(basename "$whl")"
done
