#!/usr/bin/env bash
# Short training runs on one lent GPU (no network): shards built there from local text, each spec
# trained for a fixed wall-clock, exported through recurc/quant.py, predicted vs actual bytes logged.
#   bash benchmarks/gpu_runs.sh OUTDIR SECONDS VOCAB SPEC...
set -euo pipefail
out=${1:?out dir}; secs=${2:?seconds}; vocab=${3:?vocab}; shift 3
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
data=/tmp/data$vocab
mkdir -p "$out"
# Python sources of the machine's own stdlib and site-packages: ~60 MB of text, no download
python3 -m runtime.demo "$data" --vocab-size "$vocab" --max-bytes 60000000 \
  --corpus '/usr/lib/python3*/**/*.py' '/opt/torch/.venv/lib/python3*/site-packages/**/*.py' | tail -4
for spec in "$@"; do
  name=$(basename "$spec" .yaml)
  python3 -m runtime.train "$spec" train.max_wallclock_seconds="$secs" train.iterations=100000 \
    train.val_tokens=1048576 --data "$data/fineweb_train_*.bin" --tokenizer "$data/tokenizer.model" \
    --out "/tmp/runs/$name" --log-every 50 --val-every 0 --no-progress 2>&1 | grep -v Warning | tail -8
  cp "/tmp/runs/$name/log.jsonl" "$out/$name.jsonl"
done
