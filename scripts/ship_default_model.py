"""Copy a trained run's model files into the package as the default model.

Usage: python scripts/ship_default_model.py RUN   (run by `make default-model`)
Only what inference needs is shipped: config.json, tokenizer.json and model.safetensors,
the weights in fp16 to halve the wheel (loading casts them back to the model's fp32; the
STS-B validation of a 7.4M-parameter run: 81.55 in both).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from safetensors.torch import save_file

from sentcli import api
from sentcli.checkpoint import CONFIG, TOKENIZER, WEIGHTS, load_run, load_weights

LIMIT_MB = 15.0


def main() -> None:
    run = Path(sys.argv[1])
    config, _, _, _ = load_run(run)  # refuses anything that is not a complete, loadable run
    if config.kind == "lm":
        raise SystemExit(f"{run} is a language-model run; ship a train-mtl run")
    weights, step = load_weights(run)
    half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    target = api.DEFAULT_MODEL
    target.mkdir(exist_ok=True)
    tmp = target / (WEIGHTS + ".tmp")
    save_file(half, str(tmp), metadata={"format": "pt", "kind": config.kind, "step": str(step)})
    size = (tmp.stat().st_size + sum((run / n).stat().st_size for n in (CONFIG, TOKENIZER))) / 1e6
    if size > LIMIT_MB:
        tmp.unlink()
        raise SystemExit(f"{run} is {size:.1f} MB in fp16; the default model must stay under 15")
    for name in (CONFIG, TOKENIZER):
        shutil.copyfile(run / name, target / name)
    tmp.chmod(0o644)  # safetensors writes 0600; the package is read by every user
    tmp.replace(target / WEIGHTS)
    load_run(target)  # what was shipped loads
    tasks = ", ".join(f"{t.name} ({'/'.join(t.label_names)})" for t in config.tasks)
    n = sum(v.numel() for v in weights.values())
    print(f"shipped {run} as {target}: {size:.1f} MB ({n / 1e6:.2f}M fp16 weights), tasks {tasks}")


if __name__ == "__main__":
    main()
