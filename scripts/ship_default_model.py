"""Copy a trained run's model files into the package as the default model.

Usage: python scripts/ship_default_model.py RUN   (run by `make default-model`)
Only what inference needs is shipped: config.json, model.safetensors, tokenizer.json.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from sentcli import api
from sentcli.checkpoint import REQUIRED, load_run

LIMIT_MB = 15.0


def main() -> None:
    run = Path(sys.argv[1])
    config, _, _, _ = load_run(run)  # refuses anything that is not a complete, loadable run
    if config.kind == "lm":
        raise SystemExit(f"{run} is a language-model run; ship a train-mtl run")
    size = sum((run / name).stat().st_size for name in REQUIRED) / 1e6
    if size > LIMIT_MB:
        raise SystemExit(f"{run} is {size:.1f} MB; the default model must stay under {LIMIT_MB}")
    target = api.DEFAULT_MODEL
    target.mkdir(exist_ok=True)
    for name in REQUIRED:
        shutil.copyfile(run / name, target / name)
    tasks = ", ".join(f"{t.name} ({'/'.join(t.label_names)})" for t in config.tasks)
    print(f"shipped {run} as {target}: {size:.1f} MB, tasks {tasks}")


if __name__ == "__main__":
    main()
