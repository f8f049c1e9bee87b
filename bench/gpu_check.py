"""The GPU figures of the README (issue #6): training tokens/s and model FLOP/s (as a share of
a bf16 matmul peak measured in the same run), embedding texts/s, and peak GPU memory.

    python -m bench.gpu_check --imdb DIR --ag data/ag_news [--steps 600] [--json OUT]

`--imdb` is a folder with the full IMDB train.csv.gz/test.csv.gz/labels.txt (the shipped
sample works too). train-mtl (topic + sentiment, all-MiniLM-L6-v2 dimensions: 6 layers,
12 heads, 384 wide, 256 tokens) runs eagerly, then with --compile and --batch-tokens (fixed
shapes, one compiled graph per bucket); then the trained model embeds the IMDB test reviews;
last, the host-overhead table of bench/train_speed.py on the device (sentcli's step against a
bare PyTorch loop at batch 2 × 8, width 16). `--device cpu` runs the same on a CPU (fp32/bf16
peak of its own).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.train_speed import host_overhead, matmul_peak
from sentcli import api
from sentcli.device import resolve_device, resolve_precision
from sentcli.inference.embed import InferenceOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imdb", default="data/imdb")
    parser.add_argument("--ag", default="data/ag_news")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--small", action="store_true", help="a 2×64 model (a quick CPU try)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = resolve_device(args.device)
    dtype = resolve_precision("auto", device) or torch.float32
    results: dict[str, Any] = {"device": str(device), "dtype": str(dtype)}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
    peak = matmul_peak(device, dtype)
    results["matmul_peak_tflops"] = peak / 1e12
    print(f"{results.get('gpu', device)}: measured {dtype} matmul peak {peak / 1e12:.1f} TFLOP/s")
    root = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    tok = root / "tok.json"
    api.build_tokenizer([f"{args.imdb}", args.ag], tok, vocab_size=8000)
    size = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 128} if args.small else {
        "n_layer": 6, "n_head": 12, "n_embd": 384, "block_size": 256
    }  # fmt: skip
    opts = {
        **size,
        "device": args.device,
        "precision": "auto",
        "batch_size": args.batch_size,
        "max_steps": args.steps,
        "eval_every": args.steps,
        "log_every": 20,
        "warmup": 50,
        "dropout": 0.0,
    }
    tasks = [api.TaskConfig("topic", args.ag), api.TaskConfig("sentiment", args.imdb)]
    last_run = root / "mtl-eager"
    for compiled in (False, True) if not args.no_compile else (False,):
        name = "mtl-compiled" if compiled else "mtl-eager"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        fixed = {"compile": True, "batch_tokens": args.batch_size * 256} if compiled else {}
        result = api.train_mtl(tasks, root / name, tokenizer=tok, options={**opts, **fixed})
        t = result.throughput
        row = {
            "seconds": time.perf_counter() - start,
            "tokens_per_s": t["tokens_per_s"],
            "model_tflops": t["model_flops_per_s"] / 1e12,
            "mfu_of_measured_peak": t["model_flops_per_s"] / peak,
            "peak_memory_gib": t.get("peak_memory_bytes", 0) / 2**30,
            "test_accuracy": {k: v["accuracy"] for k, v in result.test.items()},
        }
        results[name] = row
        last_run = root / name
        print(
            f"{name}: {row['tokens_per_s']:,.0f} real tokens/s, {row['model_tflops']:.2f} "
            f"TFLOP/s = {row['mfu_of_measured_peak']:.1%} of the measured peak, peak memory "
            f"{row['peak_memory_gib']:.2f} GiB, {row['seconds']:.0f} s, test {row['test_accuracy']}"
        )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    reviews = str(Path(args.imdb) / "test.csv.gz")
    for precision in ("fp32", "bf16"):
        res = api.embed(
            reviews,
            root / f"imdb_test_{precision}.npy",
            last_run,
            options=InferenceOptions(
                text_column="text", device=args.device, precision=precision, batch_size=128
            ),
        )
        s = res.stats
        row = {
            "texts": s.texts,
            "texts_per_s": s.texts / s.seconds,
            "tokens_per_s": s.tokens / s.seconds,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30
            if device.type == "cuda"
            else 0.0,
        }
        results[f"embed_{precision}"] = row
        print(
            f"embed IMDB test ({precision}): {s.texts:,} texts, {row['texts_per_s']:,.0f} texts/s, "
            f"{row['tokens_per_s']:,.0f} tokens/s, peak memory {row['peak_memory_gib']:.2f} GiB"
        )
    results["host_overhead"] = host_overhead(300, 1, args.device)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
