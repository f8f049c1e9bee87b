#!/usr/bin/env bash
# One prepared GPU check of the CUDA path (bf16 autocast): the test suite, then build-tokenizer
# → pretrain → train-encoder → train-mtl → evaluate on the shipped data. Run from the repo root
# on a CUDA machine; results (metrics, summaries, a throughput line) go to $OUT.
set -euo pipefail
OUT=${OUT:-/tmp/gpu_smoke}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
S="python3 -m sentcli"
R=/tmp/gpu_smoke_runs
rm -rf "$R" && mkdir -p "$R"
nvidia-smi -L
python3 -c "import torch, datasets; print('torch', torch.__version__, 'datasets', datasets.__version__, torch.cuda.get_device_name())"
(python3 -m pytest -q tests 2>&1 || true) | tail -4
time $S build-tokenizer data/imdb_unsup data/ag_news --vocab-size 8000 -o "$R/tok.json" --quiet
# all-MiniLM-L6-v2 dimensions: 6 layers, 12 heads, 384 wide
time $S pretrain data/imdb_unsup data/ag_news --tokenizer "$R/tok.json" -o "$R/lm" --device cuda \
    --precision bf16 --n-layer 6 --n-head 12 --n-embd 384 --batch-size 64 --max-steps 400 \
    --eval-every 200 --warmup 40 --quiet
time $S train-encoder --task topic=data/ag_news --init "$R/lm" -o "$R/topic" --device cuda \
    --precision bf16 --epochs 2 --quiet
time $S train-mtl --task topic=data/ag_news --task sentiment=data/imdb --init "$R/lm" -o "$R/mtl" \
    --device cuda --precision bf16 --freeze layers:2 --schedule joint --epochs 2 --quiet
$S evaluate --model "$R/mtl" --device cuda --json | python3 -c \
    "import json,sys; r=json.load(sys.stdin); print({t: round(m['accuracy'], 4) for t, m in r['tasks'].items()})"
for run in lm topic mtl; do
    cp "$R/$run/metrics.jsonl" "$OUT/${run}_metrics.jsonl"
    cp "$R/$run/report/summary.json" "$OUT/${run}_summary.json"
    python3 - "$R/$run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
train = [r for r in rows if r["kind"] == "train"][1:]  # the first window holds the warm-up
tps = sum(r["tokens_per_s"] for r in train) / max(len(train), 1)
print(f"{sys.argv[1]}: mean {tps:,.0f} real tokens/s over {len(train)} logged windows")
PY
done
