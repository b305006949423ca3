#!/usr/bin/env bash
# recurc vs the challenge's own train_gpt.py on one GPU: same shards, seed, 524,288 tokens/step,
# fixed step count (no wall-clock cap), same warm-down; prints both loss curves, the validation
# losses and the ratios (tokens/s, peak memory, first step incl. compile), and MFU.
#   bash benchmarks/vs_challenge.sh OUT REF_SCRIPT [RUNS]
# RUNS: space-separated kind:seed[:spec] (kind ref or recurc; spec for recurc, default
# specs/baseline.yaml), e.g. "ref:1337 ref:1337 ref:42 recurc:1337". STEPS (150), WARMDOWN (50),
# DATA (a corpus dir; built from the machine's own Python sources if missing), CORPUS_BYTES,
# RECURC_ARGS (more runtime.train options, e.g. --attention-kernel auto), TAG (appended to run tags).
set -euo pipefail
out=${1:?out dir}; ref=$(realpath "${2:?the challenge script train_gpt.py}")
runs=${3:-"ref:1337 recurc:1337"}
steps=${STEPS:-150}; wd=${WARMDOWN:-50}; data=${DATA:-/tmp/vs_corpus}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
here=$(pwd); mkdir -p "$out"
if [ ! -f "$data/tokenizer.model" ]; then
  python3 benchmarks/vs_challenge.py corpus "$data" --max-bytes "${CORPUS_BYTES:-1000000000}" \
    '/usr/lib/python3*/**/*.py' '/opt/torch/.venv/lib/python3*/site-packages/**/*.py' \
    '/usr/local/lib/python3*/**/*.py'
fi
n=0
for run in $runs; do
  IFS=: read -r kind seed spec <<<"$run"; n=$((n + 1))
  tag="${kind}_${n}s${seed}${TAG:-}"
  if [ "$kind" = ref ]; then
    work=$(mktemp -d); (cd "$work" && DATA_PATH="$data" TOKENIZER_PATH="$data/tokenizer.model" VOCAB_SIZE=1024 \
      SEED="$seed" ITERATIONS="$steps" WARMDOWN_ITERS="$wd" MAX_WALLCLOCK_SECONDS=0 VAL_LOSS_EVERY=0 \
      TRAIN_LOG_EVERY=5 RUN_ID=ref torchrun --standalone --nproc_per_node=1 "$ref" 2>&1) \
      | python3 benchmarks/vs_challenge.py stamp "$out/$tag.txt" | grep -E "^step:(1|$steps)/|val_loss|peak" || true
  else
    spec=${spec:-specs/baseline.yaml}; tag="${tag}_$(basename "$spec" .yaml)"
    python3 -m runtime.train "$spec" train.seed="$seed" train.iterations="$steps" train.warmdown_steps="$wd" \
      train.max_wallclock_seconds=null --data "$data/fineweb_train_*.bin" --tokenizer "$data/tokenizer.model" \
      --out "/tmp/vs_runs/$tag" --log-every 5 --val-every 0 --no-progress ${EXPORT:---no-export} ${RECURC_ARGS:-} 2>&1 \
      | python3 benchmarks/vs_challenge.py stamp "$out/$tag.txt" | grep -E "^step (1|$steps)/|^val |^final|^export|rror" || true
  fi
done
python3 benchmarks/vs_challenge.py report "$out" --spec "${REPORT_SPEC:-specs/baseline.yaml}" | tee "$out/report.txt"
