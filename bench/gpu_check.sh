#!/usr/bin/env bash
# The prepared GPU check for issue #6, for a machine lent through the device tool (torch,
# tokenizers, typer, … installed; `datasets` carried as wheels). Prepare here, then carry
# .whl and .gpu-data:
#   mkdir -p .whl .gpu-data/imdb && cp ../shared/data/imdb/{train,test}.csv.gz \
#       ../shared/data/imdb/labels.txt .gpu-data/imdb/
#   pip download --no-deps -d .whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
#       --python-version 3.12 --only-binary=:all:
# On the GPU: bash bench/gpu_check.sh  (about 6 minutes on an H200; results in $OUT)
set -euo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if ! python3 -c "import datasets" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/datasets-*.whl .whl/dill-*.whl .whl/multiprocess-*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py 2>&1 | tail -15
python3 -m bench.gpu_check --imdb "${IMDB:-.gpu-data/imdb}" --ag data/ag_news \
    --steps "${STEPS:-600}" --json "$OUT/gpu_check.json"
