#!/usr/bin/env bash
# Train a spec on N GPUs (torchrun) for a fixed training wall-clock, export it, then analyse the
# trained weights for the size model (benchmarks/trained_size.py) and keep some of them.
#   bash benchmarks/gpu_trained_size.sh OUTDIR DATADIR GPUS SECONDS SPEC [key=value overrides...]
# DATADIR holds fineweb_{train,val}_*.bin and tokenizer.model (runtime.demo --corpus builds them).
set -euo pipefail
out=${1:?out dir}; data=${2:?data dir}; gpus=${3:?gpus}; secs=${4:?seconds}; spec=${5:?spec}; shift 5
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
name=$(basename "$spec" .yaml)
run=/tmp/runs/$name
mkdir -p "$out"
python3 -m runtime.launch "$gpus" "$spec" train.max_wallclock_seconds="$secs" train.iterations=100000 \
  train.val_tokens=1048576 "$@" --data "$data/fineweb_train_*.bin" --tokenizer "$data/tokenizer.model" \
  --out "$run" --log-every 100 --val-every 0 --no-progress 2>&1 | grep --line-buffered -v Warning | tee "$out/train.log"
cp "$run/log.jsonl" "$out/$name.jsonl"
python3 benchmarks/trained_size.py "$run" "$spec" "$@" --data "$data/fineweb_train_*.bin" --out "$out" \
  --keep "${KEEP:-tok_emb.weight,blocks.4.,blocks.9.}" 2>&1 | tee "$out/analysis.log"
