#!/usr/bin/env bash
# Exercise every GPU path on a fresh single-GPU machine in a few minutes and keep
# the result as reference data:
#
#   scripts/gpu_check.sh [--wheels DIR] [--data-tar FILE] [-- extra bench.run arguments]
#
#   --wheels DIR     install deepspeed (and what it needs) from wheel files, no index
#   --data-tar FILE  unpack MNIST from mnist-raw.tar.gz (MNIST/raw/*) instead of downloading
#
# Runs the `gpu-check` matrix (raw/single x 4 precisions; ddp, fsdp, DeepSpeed
# ZeRO 1/2/3 and both offloads; compile default and reduce-overhead; the tutorial's
# defaults; one time-to-98%-accuracy cell), then copies records, report, plots and
# env.json to results/reference/<gpu-name>/.
set -euo pipefail
cd "$(dirname "$0")/.."

wheels="" data_tar="" extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels="$2"; shift 2 ;;
        --data-tar) data_tar="$2"; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "no CUDA device visible to torch; this check needs one GPU" >&2; exit 2; }

scratch="${GPU_CHECK_SCRATCH:-$PWD/.device}"
mkdir -p "$scratch"
if [ -n "$wheels" ]; then
    python3 -m pip install -q --no-index --no-deps --target "$scratch/site" "$wheels"/*.whl
    export PYTHONPATH="$scratch/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -n "$data_tar" ]; then
    mkdir -p "$scratch/data" && tar xzf "$data_tar" -C "$scratch/data"
    export MNIST_DATA_DIR="$scratch/data"
fi

out="$scratch/results"
python3 -m bench.run --matrix gpu-check --wandb disabled --out "$out" "${extra[@]}" || true
run_dir=$(ls -td "$out"/*/ | head -n 1)
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
dest="results/reference/$gpu"
mkdir -p "$dest"
cp "$run_dir"/{env.json,matrix.json,records.jsonl,summary.csv,report.md,report.html} "$dest"/ 2>/dev/null || true
[ -d "$run_dir/plots" ] && cp -r "$run_dir/plots" "$dest"/
echo "reference results: $dest"
