"""Copy a trained run's model files into the package as the default model.

Usage: python -m scripts.ship_default_model RUN   (run by `make default-model`)
Only what inference needs is shipped: config.json, tokenizer.json and model.safetensors,
the weights in fp16 to halve the wheel (loading casts them back to the model's fp32; the
STS-B validation of a 7.4M-parameter run: 81.55 in both).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from sentcli import api
from sentcli.checkpoint import REQUIRED, load_run, save_run

LIMIT_MB = 15.0


def main() -> None:
    run = Path(sys.argv[1])
    config, net, tok, step = load_run(run)  # refuses anything not a complete, loadable run
    if config.kind == "lm":
        raise SystemExit(f"{run} is a language-model run; ship a train-mtl run")
    target = api.DEFAULT_MODEL
    n = sum(p.numel() for p in net.parameters())
    # written beside the target first: nothing shipped changes unless the whole model fits
    with tempfile.TemporaryDirectory(dir=target.parent) as d:
        save_run(Path(d), config, net.half(), tok, step)
        size = sum((Path(d) / name).stat().st_size for name in REQUIRED) / 1e6
        if size > LIMIT_MB:
            raise SystemExit(
                f"{run} is {size:.1f} MB in fp16; the default model must stay under 15"
            )
        target.mkdir(exist_ok=True)
        for name in REQUIRED:
            os.replace(Path(d) / name, target / name)
    load_run(target)  # what was shipped loads
    tasks = ", ".join(f"{t.name} ({'/'.join(t.label_names)})" for t in config.tasks)
    print(f"shipped {run} as {target}: {size:.1f} MB ({n / 1e6:.2f}M fp16 weights), tasks {tasks}")


if __name__ == "__main__":
    main()
