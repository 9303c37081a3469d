#!/usr/bin/env bash
# Check every GPU path on a single-GPU machine in a few minutes and keep the result as
# reference data:
#
#   scripts/gpu_check.sh [--wheels DIR] [--data-tar FILE] [--out DIR] [-- bench.run args]
#
#   --wheels DIR     install deepspeed (and what it needs) from wheel files, no index
#   --data-tar FILE  unpack MNIST from mnist-raw.tar.gz (MNIST/raw/*) instead of downloading
#   --out DIR        the small result, refreshed after every cell (bench.run --snapshot):
#                    run.tar.gz (the run folder, no compile caches), records.jsonl,
#                    env.json, report.md; default .device/check
#
# Made to fit one metered command of 5 minutes on one GPU: every cell has 90 s at most
# (--cell-timeout 90), and a command cut short leaves every finished cell in --out.
#
# 1. Stops at once, exit 2, without a CUDA GPU.
# 2. Preflight: nvidia-smi, the C compiler and Python.h that torch.compile needs, ninja
#    and DeepSpeed's cpu_adam op for offload (the compile cell itself checks compiling).
# 3. `bench.run --dry-run` of the gpu-check matrix: every cell built before any trains.
# 4. The gpu-check matrix (17 cells: raw/single x 4 precisions at bs 256; single at bs
#    8192; the tutorial's bs 64 cell; ddp, fsdp, DeepSpeed ZeRO 2 and 3; ZeRO 2 offload;
#    one torch.compile cell; one time-to-98%-accuracy cell), copied to
#    results/reference/<gpu-name>/.
# 5. The step clock against readings taken apart from its marks
#    (bench/analyze/clock_check.py): CUDA cells' steps were timed by CUDA events; each
#    step's phases add up to the span of the step's own event pair (3 % + 50 us); the
#    event-timed window agrees with the host's monotonic clock over the same
#    synchronised window, pauses left out (5 % + 10 ms).
# 6. What the records say of the machine: every CUDA record's hardware fingerprint
#    names the GPU with its SMs and memory; NVML's clock and temperature around each
#    cell where pynvml is installed; cells measured busy and warm-ups that never became
#    steady are listed.
# 7. The time windows: every CUDA throughput cell measured the count its raw.window
#    chose on every rank, and the repeat that chose it for at least its min_window_s
#    (2 s) unless it reached the step cap; each one's count, window and estimate listed.
# Exit status 0 only when the preflight passed, every record is ok, the clocks agree
# and the windows hold;
# otherwise 1, with every record that is not ok listed with its reason.
#
# For the script's own test only: GPU_CHECK_STAND_IN=FILE.toml skips the GPU refusal and
# the GPU-only steps and runs FILE.toml's (CPU) cells in place of gpu-check.
#
# The interpreter is $PYTHON when set (the one with torch), else the active `python`,
# else `python3`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python3)}"

wheels="" data_tar="" out="" extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels="$2"; shift 2 ;;
        --data-tar) data_tar="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

stand_in="${GPU_CHECK_STAND_IN:-}"
if [ -z "$stand_in" ] && { \
   ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || \
   ! command -v nvidia-smi >/dev/null 2>&1; }; then
    echo "gpu_check: no CUDA GPU here (nvidia-smi missing or torch.cuda.is_available() is" \
         "False); this check needs one" >&2
    exit 2
fi

scratch="${GPU_CHECK_SCRATCH:-$PWD/.device}"
mkdir -p "$scratch"
out="${out:-$scratch/check}"
matrix="${stand_in:-gpu-check}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "$wheels" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --target "$scratch/site" "$wheels"/*.whl
    export PYTHONPATH="$scratch/site:$PYTHONPATH"
    # --target puts console scripts (ninja's among them, when it is a wheel) here.
    export PATH="$scratch/site/bin:$PATH"
fi
# The ninja wheel keeps its binary in the package; DeepSpeed's JIT build looks on PATH.
ninja_dir=$("$PYTHON" -c "import ninja; print(ninja.BIN_DIR)" 2>/dev/null || true)
[ -n "$ninja_dir" ] && export PATH="$ninja_dir:$PATH"
if [ -n "$data_tar" ]; then
    mkdir -p "$scratch/data" && tar xzf "$data_tar" -C "$scratch/data"
    export MNIST_DATA_DIR="$scratch/data"
fi

echo "== preflight"
failed=0
[ -z "$stand_in" ] && \
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
"$PYTHON" - <<'EOF' || failed=1
from strategies.toolchain import Toolchain

tools = Toolchain.detect()
lines = [("C compiler (torch.compile)", tools.c_compiler),
         ("Python.h (torch.compile)", tools.python_headers or None),
         ("ninja (DeepSpeed offload JIT)", tools.ninja),
         ("C++ compiler (DeepSpeed offload JIT)", tools.cxx_compiler),
         ("DeepSpeed prebuilt ops", ", ".join(sorted(tools.deepspeed_prebuilt_ops)) or None)]
for label, found in lines:
    print(f"  {label:38} {found if found else 'MISSING'}")
print(f"  {'offload possible':38} {tools.can_build_cpu_adam}"
      + (f" (lacks {', '.join(tools.cpu_adam_build_lacks())})"
         if not tools.can_build_cpu_adam else ""))
EOF

echo "== dry run (cells that cannot run here are skipped, with the reason)"
"$PYTHON" -m bench.run --matrix "$matrix" --dry-run "${extra[@]}" || failed=1

echo "== gpu-check matrix"
"$PYTHON" -m bench.run --matrix "$matrix" --wandb disabled --out "$scratch/results" \
    --cell-timeout 90 --snapshot "$out" "${extra[@]}" || failed=1
echo "the small result (refreshed after every cell): $out"
run_dir=$(ls -td "$scratch/results"/*/ | head -n 1)
[ -n "$stand_in" ] && exit "$failed"
gpu=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
dest="results/reference/$gpu"
mkdir -p "$dest"
cp "$run_dir"/{env.json,matrix.json,records.jsonl,summary.csv,report.md,report.html} "$dest"/
[ -d "$run_dir/plots" ] && cp -r "$run_dir/plots" "$dest"/
echo "reference results: $dest"

"$PYTHON" - "$run_dir/records.jsonl" <<'EOF' || failed=1
import json
import sys

records = [json.loads(line) for line in open(sys.argv[1])]
bad = [r for r in records if r["status"] != "ok"]
for r in bad:
    reason = (r["reason"] or "").splitlines()[0][:200]
    print(f"NOT OK  {r['cell_id']} (repeat {r['repeat']}): {r['status']}: {reason}")
print(f"{len(records) - len(bad)} of {len(records)} records ok")
sys.exit(1 if bad else 0)
EOF
echo "== the step clock against readings of its own: each step's event pair, the host's window"
"$PYTHON" -m bench.analyze.clock_check "$run_dir/records.jsonl" || failed=1
echo "== the time windows: at least min_window_s, the chosen count on every rank"
"$PYTHON" - "$run_dir/records.jsonl" <<'EOF' || failed=1
import json
import sys

problems = 0
for r in (json.loads(line) for line in open(sys.argv[1])):
    window = r.get("raw", {}).get("window") or {}
    if r["status"] != "ok" or r["cell"]["accelerator"] != "cuda" or window.get("rule") != "time":
        continue
    where, seconds = f"{r['cell_id']} (repeat {r['repeat']})", r["metrics"]["window_s"]
    print(f"{where}: {window['steps']} steps in {seconds:.2f} s (a step estimated at "
          f"{1000 * window['step_s_estimate']:.3f} ms, chosen in repeat "
          f"{window['chosen_in_repeat']})")
    if any(len(rank["step_s"]) != window["steps"] for rank in r["raw"]["ranks"]):
        print(f"COUNT  {where}: ranks measured {[len(k['step_s']) for k in r['raw']['ranks']]}")
        problems += 1
    # The repeat that chose the count; a later one keeps it, however fast its steps.
    chose = window["chosen_in_repeat"] == r["repeat"]
    if chose and seconds < window["min_window_s"] and window["steps"] < window["max_steps"]:
        print(f"SHORT WINDOW  {where}: {seconds:.2f} s < {window['min_window_s']:g} s")
        problems += 1
print("time windows as chosen" if not problems else f"{problems} window problem(s)")
sys.exit(1 if problems else 0)
EOF
echo "== the machine: GPU fingerprint, NVML state, busy cells, warm-up"
"$PYTHON" - "$run_dir/records.jsonl" <<'EOF' || failed=1
import json
import sys

problems, nvml = 0, 0
for r in (json.loads(line) for line in open(sys.argv[1])):
    if r["status"] != "ok" or r["cell"]["accelerator"] != "cuda":
        continue
    gpus = (r["env_key"].get("hardware") or {}).get("gpus") or []
    if not gpus or not all(g.get("sm_count") and g.get("memory_gib") for g in gpus):
        print(f"NO GPU FINGERPRINT  {r['cell_id']}: {gpus}")
        problems += 1
    machine = r.get("machine") or {}
    nvml += "gpu_clock_mhz" in (machine.get("before") or {})
    if machine.get("busy"):
        print(f"BUSY  {r['cell_id']} (repeat {r['repeat']}): {machine.get('busiest')}")
    if r["metrics"].get("warmup_steady") is False:
        print(f"WARM-UP NEVER STEADY  {r['cell_id']} (repeat {r['repeat']}): "
              f"{r['metrics'].get('warmup_steps_taken')} steps")
print(f"NVML state recorded in {nvml} CUDA record(s)"
      + ("" if nvml else " (pynvml is not installed: clocks and temperature unread)"))
print("GPU fingerprints complete" if not problems else f"{problems} fingerprint problem(s)")
sys.exit(1 if problems else 0)
EOF
exit "$failed"
