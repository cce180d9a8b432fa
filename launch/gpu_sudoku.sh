#!/usr/bin/env bash
# One-GPU Sudoku reproduction inside a fixed wall-clock budget, offline: installs
# the carried wheels, trains the 6M MDM for at most --minutes, exports its
# parameters, evaluates every strategy and leaves a small folder of results.
set -euo pipefail
# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: launch/gpu_sudoku.sh --out DIR [options] [-- extra --config.* overrides]

On one GPU, with no network: installs the wheels in .whl/ (launch/fetch_wheels.sh
fetches them), makes the Sudoku datasets on all CPU cores, trains the paper's 6M
MDM (configs/sudoku_mdm.py:gpu, bfloat16) for at most --minutes, exports its
parameters, evaluates every decoding strategy on held-out easy and hard puzzles,
and writes to --out (at most 8 plain files, each under 16 MiB):

  results.json, results.md   the evaluator's tables (accuracy per strategy and split,
                             accuracy against the number of sampling steps)
  figures.zip                its pictures (PNG) and the loss curves
  train_log.txt              everything this script printed
  metrics.jsonl              the training scalars
  params/                    export.json (step, config, dtype) + params.npz
                             [+ ema_params.npz]: raw and EMA parameters (bfloat16
                             when float32 would not fit 15 MiB files)

--init takes such an --out (or its params/) back: training goes on from its
parameters and step (the learning-rate schedule continues; optimizer moments
restart), so that several short GPU runs add up. The same params/ folder
evaluates on a CPU: python -m mdm_jax.main --config=configs/sudoku_mdm.py:gpu
--workdir=COPY_OF_OUT/params --mode=eval (results go to COPY_OF_OUT/params/eval).

The whole run is kept within --wall-minutes: training gets min(--minutes, what is
left after installation and data minus --reserve seconds) and stops, saves and
exits by itself (config.train.max_seconds); evaluation is cut at the budget's end.

Options:
  --out DIR              results directory (required; created; its old results are
                         replaced, its params/ overwritten)
  --minutes M            training budget in minutes, compilation included (default 8)
  --wall-minutes M       budget of the whole script (default 9.5)
  --reserve S            seconds kept for trainer start-up, final save, export and
                         evaluation (default 150)
  --init DIR             continue from DIR/params (a previous --out) or DIR (an export)
  --config SPEC          config and preset (default configs/sudoku_mdm.py:gpu)
  --num-train N          training puzzles, made here (default 20000; with the
                         symmetry augmentation of the gpu preset)
  --num-test N           held-out easy puzzles evaluated (default 1000)
  --num-hard N           held-out hard puzzles evaluated (default 500)
  --shard-size N         examples per stored data shard: the unit of parallel
                         generation (default 50)
  --strategies LIST      comma-separated decoding strategies
                         (default vanilla,random,top_prob,margin,entropy)
  --data DIR             dataset cache (default /tmp/mdm_data); a folder made by an
                         earlier run (same sizes) can be carried in and is reused
  --work DIR             run directory for checkpoints, TensorBoard events and the
                         evaluator's own files (default: a new /tmp/mdm_gpu_sudoku.*);
                         checkpoints already there are resumed (and --init ignored)
  --wheels DIR           wheels to install (default: <repo>/.whl)
  --site DIR             where they are installed (default /tmp/mdm_site)
  --no-install           packages are importable already: install nothing
  --python PY            Python interpreter (default: $PYTHON or python3)
  --dry-run              print the commands instead of running them
  -h, --help             this help

Without an accelerator the run stops after the import check, unless
JAX_PLATFORMS=cpu is set (tests, CPU trials with a small --config).
USAGE
}

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_num() { [[ "$1" =~ ^[0-9]+([.][0-9]+)?$ ]]; }

root="$(cd "$(dirname "$0")/.." && pwd)"
out="" minutes=8 wall_minutes=9.5 reserve=150 init="" config="configs/sudoku_mdm.py:gpu"
num_train=20000 num_test=1000 num_hard=500 shard_size=50
strategies="vanilla,random,top_prob,margin,entropy"
data="/tmp/mdm_data" work="" wheels="$root/.whl" site="/tmp/mdm_site"
python="${PYTHON:-python3}" install=1 dry_run=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out|--minutes|--wall-minutes|--reserve|--init|--config|--num-train|--num-test|\
    --num-hard|--shard-size|--strategies|--data|--work|--wheels|--site|--python)
      [[ $# -ge 2 ]] || die "$1 needs a value (see --help)" ;;
  esac
  case "$1" in
    --out) out="${2:-}"; shift 2 ;;
    --minutes) minutes="${2:-}"; shift 2 ;;
    --wall-minutes) wall_minutes="${2:-}"; shift 2 ;;
    --reserve) reserve="${2:-}"; shift 2 ;;
    --init) init="${2:-}"; shift 2 ;;
    --config) config="${2:-}"; shift 2 ;;
    --num-train) num_train="${2:-}"; shift 2 ;;
    --num-test) num_test="${2:-}"; shift 2 ;;
    --num-hard) num_hard="${2:-}"; shift 2 ;;
    --shard-size) shard_size="${2:-}"; shift 2 ;;
    --strategies) strategies="${2:-}"; shift 2 ;;
    --data) data="${2:-}"; shift 2 ;;
    --work) work="${2:-}"; shift 2 ;;
    --wheels) wheels="${2:-}"; shift 2 ;;
    --site) site="${2:-}"; shift 2 ;;
    --no-install) install=0; shift ;;
    --python) python="${2:-}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ -n "$out" ]] || die "--out is required (see --help)"
for pair in "minutes:$minutes" "wall-minutes:$wall_minutes"; do
  is_num "${pair#*:}" || die "--${pair%%:*} must be a number of minutes, got '${pair#*:}'"
done
for pair in "reserve:$reserve" "num-train:$num_train" "num-test:$num_test" \
            "num-hard:$num_hard" "shard-size:$shard_size"; do
  is_uint "${pair#*:}" || die "--${pair%%:*} must be a non-negative integer, got '${pair#*:}'"
done
for n in "$num_train" "$num_test" "$num_hard" "$shard_size"; do
  [[ "$n" -ge 1 ]] || die "--num-train, --num-test, --num-hard and --shard-size must be >= 1"
done
[[ "$strategies" =~ ^[a-z_]+(,[a-z_]+)*$ ]] || die "--strategies must be a comma-separated list, got '$strategies'"
[[ -n "$data" && -n "$python" && -n "$config" ]] || die "--data, --python and --config must not be empty"


# Paths given relative to the caller's directory (the steps run in the repo root).
abspath() { if [[ "$1" == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
out="$(abspath "$out")" data="$(abspath "$data")" wheels="$(abspath "$wheels")"
site="$(abspath "$site")"
[[ -z "$work" ]] || work="$(abspath "$work")"
[[ -z "$init" ]] || init="$(abspath "$init")"
[[ ! -f "${config%%:*}" ]] || config="$(abspath "${config%%:*}")${config#"${config%%:*}"}"

secs() { awk -v m="$1" 'BEGIN { printf "%d", m * 60 }'; }
train_max=$(secs "$minutes")
wall=$(secs "$wall_minutes")
[[ "$train_max" -ge 1 ]] || die "--minutes must be > 0"

# --init: a previous --out (with params/) or an export folder itself.
init_params=""
if [[ -n "$init" ]]; then
  if [[ -f "$init/params/export.json" ]]; then init_params="$(cd "$init/params" && pwd)"
  elif [[ -f "$init/export.json" ]]; then init_params="$(cd "$init" && pwd)"
  elif [[ $dry_run -eq 1 ]]; then init_params="$init/params"
  else die "--init $init holds no export.json (nor params/export.json)"
  fi
fi
if [[ $install -eq 1 && $dry_run -eq 0 ]]; then
  for pkg in ml_collections grain tensorboardx array_record portpicker; do
    if [[ -z "$(find "$wheels" -maxdepth 1 -iname "${pkg}-*.whl" 2>/dev/null)" ]]; then
      die "no $pkg wheel in $wheels: run launch/fetch_wheels.sh on a machine with network first (or pass --no-install)"
    fi
  done
fi
if [[ -z "$work" ]]; then
  if [[ $dry_run -eq 1 ]]; then work="/tmp/mdm_gpu_sudoku.XXXXXX"
  else work="$(mktemp -d /tmp/mdm_gpu_sudoku.XXXXXX)"; fi
fi

quoted=""
IFS=',' read -r -a strategy_list <<< "$strategies"
for s in "${strategy_list[@]}"; do quoted+="\"$s\","; done
num_eval=$(( num_test > num_hard ? num_test : num_hard ))
# One batch shape for every split and the steps sweep: each strategy compiles once
# per number of steps (the compilation cache serves the other splits).
eval_batch=$(( num_test < num_hard ? num_test : num_hard ))
eval_batch=$(( eval_batch < 1000 ? eval_batch : 1000 ))
ncpu=$(nproc 2>/dev/null || echo 4)
bg_workers=$(( ncpu > 12 ? ncpu - 6 : (ncpu + 1) / 2 ))
# The config of every step: train, export and evaluation agree on the data.
cfg=("--config=$config" "--config.data.dir=$data" "--config.data.num_train=$num_train"
     "--config.data.num_test=$num_test" "--config.data.num_hard=$num_hard"
     "--config.data.shard_size=$shard_size" "--config.eval.num_puzzles=$num_eval"
     "--config.eval.batch_size=$eval_batch"
     "--config.sampler.strategies=(${quoted})")
main=("$python" -m mdm_jax.main)
on_cpu=(env JAX_PLATFORMS=cpu)

install_cmd=("$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir
             --upgrade --target "$site")
check_code='import importlib, sys
bad = []
for m in ("jax", "flax", "optax", "orbax.checkpoint", "ml_collections", "grain", "tensorboardX", "mdm_jax"):
  try:
    importlib.import_module(m)
  except Exception as e:  # any failure to import, reported on one line
    bad.append(m + " (" + " ".join(f"{type(e).__name__}: {e}".split())[:200] + ")")
if bad:
  sys.exit("gpu_sudoku.sh: cannot import " + "; ".join(bad))
import jax
print("jax", jax.__version__, "devices:", jax.devices(), flush=True)
if jax.default_backend() == "cpu" and "cpu" not in __import__("os").environ.get("JAX_PLATFORMS", ""):
  sys.exit("gpu_sudoku.sh: JAX found no GPU (devices: " + str(jax.devices()) + "); set JAX_PLATFORMS=cpu to run on the CPU anyway")'
data_cmd=("${on_cpu[@]}" "${main[@]}" "${cfg[@]}" --mode=data "--data_splits=train,val"
          "--config.data.gen_workers=$ncpu" "${extra[@]}")
eval_data_cmd=("${on_cpu[@]}" "${main[@]}" "${cfg[@]}" --mode=data --data_splits=eval
               "--config.data.gen_workers=$bg_workers" "${extra[@]}")
train_args=("${cfg[@]}" "--workdir=$work" --mode=train --config.eval.after_train=False)
[[ -n "$init_params" ]] && train_args+=("--config.train.init_from=$init_params")
export_cmd=("${on_cpu[@]}" "$python" -m mdm_jax.checkpoint export "$work" "$out/params"
            --dtype auto --max-file-mib 15)
eval_cmd=("${main[@]}" "${cfg[@]}" "--workdir=$work" --mode=eval "${extra[@]}")
results=(results.json results.md figures.zip train_log.txt metrics.jsonl)

if [[ $dry_run -eq 1 ]]; then
  echo "# output: $out  work: $work  data: $data"
  if [[ $install -eq 1 ]]; then
    echo "$(show "${install_cmd[@]}") $wheels/*.whl"
    echo "export PYTHONPATH=$root:$site"
  else
    echo "export PYTHONPATH=$root"
  fi
  echo "export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$work/jax_cache} JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0"
  echo "# check: import jax, flax, optax, orbax.checkpoint, ml_collections, grain, tensorboardX, mdm_jax; print jax.devices()"
  show "${data_cmd[@]}"
  echo "$(show "${eval_data_cmd[@]}") &"
  echo "# training budget: min($train_max, $wall - seconds so far - $reserve) seconds"
  show "${main[@]}" "${train_args[@]}" "--config.train.max_seconds=$train_max" "${extra[@]}"
  echo wait
  show "${export_cmd[@]}"
  show cp "$work/metrics.jsonl" "$out/metrics.jsonl"
  show "${eval_cmd[@]}"
  show cp "$work/eval/results.json" "$work/eval/results.md" "$out/"
  echo "$(show "$python" -m zipfile -c "$out/figures.zip") $work/eval/*.png"
  exit 0
fi

# Checks that --out can come back from a device machine: at most 8 plain files
# (names of letters, digits, '.', '_', '-'), at most 2 folders down, each under
# 16 MiB, all together under 64 MiB.
check_out() {
  local n=0 total=0 bad=0 f size rel
  while IFS= read -r -d '' f; do
    rel="${f#"$out"/}"
    size=$(stat -c %s "$f")
    n=$((n + 1)); total=$((total + size))
    if [[ ! "$rel" =~ ^([A-Za-z0-9._-]+/){0,2}[A-Za-z0-9._-]+$ ]]; then
      echo "warning: $rel: name or depth cannot be brought back" >&2; bad=1
    fi
    if [[ ! -f "$f" || -L "$f" ]]; then echo "warning: $rel is not a plain file" >&2; bad=1; fi
    if [[ $size -ge $((16 * 1024 * 1024)) ]]; then echo "warning: $rel is $size bytes (>= 16 MiB)" >&2; bad=1; fi
  done < <(find "$out" -mindepth 1 ! -type d -print0)
  [[ $n -le 8 ]] || { echo "warning: $out holds $n files (> 8)" >&2; bad=1; }
  [[ $total -lt $((64 * 1024 * 1024)) ]] || { echo "warning: $out holds $total bytes (>= 64 MiB)" >&2; bad=1; }
  echo "out: $n files, $((total / 1024)) KiB$([[ $bad -eq 0 ]] && echo ', all can be brought back')"
}

run_all() {
  local start=$SECONDS rc=0 train_s left bg_pid train_rc eval_rc
  echo "== gpu_sudoku.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC'): out $out, work $work, data $data"
  cd "$root" || return 1
  if [[ $install -eq 1 ]]; then
    if "$python" -m pip --version >/dev/null 2>&1; then
      "${install_cmd[@]}" "$wheels"/*.whl || { echo "gpu_sudoku.sh: installing $wheels/*.whl failed" >&2; return 1; }
    else  # no pip: a wheel is a zip file laid out as its installed files
      mkdir -p "$site" || return 1
      for whl in "$wheels"/*.whl; do "$python" -m zipfile -e "$whl" "$site" || return 1; done
    fi
    export PYTHONPATH="$root:$site"
  else
    export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
  fi
  # Evaluation compiles the same sampler again for each split: cache it.
  export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$work/jax_cache}"
  export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
  "$python" -c "$check_code" || return 1
  echo "== [$((SECONDS - start)) s] data: $num_train training puzzles on $ncpu cores"
  "${data_cmd[@]}" || { echo "gpu_sudoku.sh: making the training data failed" >&2; return 1; }
  "${eval_data_cmd[@]}" >"$work/eval_data.log" 2>&1 &
  bg_pid=$!

  left=$((wall - (SECONDS - start) - reserve))
  train_s=$(( train_max < left ? train_max : left ))
  if [[ $train_s -lt 10 ]]; then
    echo "gpu_sudoku.sh: only $left s left for training within --wall-minutes $wall_minutes (--reserve $reserve)" >&2
    wait "$bg_pid"
    return 1
  fi
  echo "== [$((SECONDS - start)) s] training for at most $train_s s${init_params:+ from $init_params}"
  if [[ -n "$init_params" ]] && compgen -G "$work/checkpoints/[0-9]*" >/dev/null; then
    echo "warning: $work has checkpoints: training resumes from them, --init is ignored" >&2
  fi
  train_rc=0
  # The trainer stops itself at max_seconds; the watchdog only catches a hang.
  timeout --signal=TERM --kill-after=30 $((train_s + 90)) \
    "${main[@]}" "${train_args[@]}" "--config.train.max_seconds=$train_s" "${extra[@]}" \
    || train_rc=$?
  if [[ $train_rc -ne 0 ]]; then
    echo "gpu_sudoku.sh: training exited with status $train_rc$([[ $train_rc -eq 124 ]] && echo ' (stopped by the watchdog)')" >&2
    rc=1
  fi
  if wait "$bg_pid"; then
    grep -v '%|' "$work/eval_data.log"
  else
    echo "gpu_sudoku.sh: making the evaluation data failed:" >&2
    tail -n 5 "$work/eval_data.log" >&2
    rc=1
  fi

  echo "== [$((SECONDS - start)) s] export"
  if ! compgen -G "$work/checkpoints/[0-9]*" >/dev/null; then
    echo "gpu_sudoku.sh: no checkpoint in $work: nothing to export" >&2
    return 1
  fi
  "${export_cmd[@]}" || { echo "gpu_sudoku.sh: export failed" >&2; return 1; }
  cp "$work/metrics.jsonl" "$out/metrics.jsonl"
  [[ $rc -eq 0 ]] || return "$rc"

  left=$((wall - (SECONDS - start) - 10))
  left=$(( left > 30 ? left : 30 ))
  echo "== [$((SECONDS - start)) s] evaluation (at most $left s)"
  eval_rc=0
  timeout --signal=TERM --kill-after=10 "$left" "${eval_cmd[@]}" || eval_rc=$?
  if [[ $eval_rc -ne 0 ]]; then
    echo "gpu_sudoku.sh: evaluation exited with status $eval_rc$([[ $eval_rc -eq 124 ]] && echo ' (out of time)'); the parameters are exported" >&2
    return 1
  fi
  cp "$work/eval/results.json" "$work/eval/results.md" "$out/" || return 1
  if compgen -G "$work/eval/*.png" >/dev/null; then
    "$python" -m zipfile -c "$out/figures.zip" "$work"/eval/*.png || return 1
  fi
  echo "== [$((SECONDS - start)) s] done: $out"
}

mkdir -p "$out" "$work" "$data"
for f in "${results[@]}"; do rm -f "${out:?}/$f"; done
set +e  # run_all handles its errors; its output also goes to the log
run_all 2>&1 | tee "$out/train_log.txt"
status=${PIPESTATUS[0]}
check_out 2>&1 | tee -a "$out/train_log.txt"
exit "$status"
