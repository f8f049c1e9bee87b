"""Training throughput: sentcli's classifier training step against a Hugging Face
`BertForSequenceClassification` of the same dimensions (created from a config, no download)
trained with a plain PyTorch loop.

Both sides get the same texts (the first N rows of a task), the same tokenizer and token
ids (cut to the same max length), the same batch size, the same optimizer (AdamW, lr 1e-3,
betas 0.9/0.95, weight decay 0.1, clipping at 1.0) and dropout 0.1, in one process on one
device, one after the other (each measured twice, alternating). sentcli runs its real
`train-encoder` path (api.train_encoder: length-bucketed batches, fused QKV, SDPA, autocast
per --precision) and reports the median real tokens/s of its logged windows; the peer's
loop shuffles, pads each batch to its longest text (what DataCollatorWithPadding does) and
is timed over the same number of steps after a warm-up. A second peer row gives it
sentcli's own length-bucketed batches, to separate batching from the model code. Both use
dropout 0.1; the peer also drops attention probabilities (BERT's default), sentcli does not
by default (`attn_dropout` 0: on a CPU that dropout forces SDPA's unfused kernel).

Printed per task: real (non-padding) tokens/s of each, sentcli / peer ratios, and the model
FLOP/s (6 per weight per token plus attention, padding not counted) as a share of a matmul
peak measured in the same run.

Usage: python -m bench.train_speed [--quick] [--device cpu|cuda] [--json OUT]
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentcli import api
from sentcli.config import ModelConfig
from sentcli.data.batching import collate, encode_rows, length_batches
from sentcli.data.tasks import cut_train, load_task
from sentcli.device import resolve_device, resolve_precision
from sentcli.model import training_flops_per_token
from sentcli.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
SIZE = {"n_layer": 4, "n_head": 4, "n_embd": 256}
OPT = {"lr": 1e-3, "betas": (0.9, 0.95), "weight_decay": 0.1}


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """FLOP/s of a square matmul loop in `dtype` (n = 2048 on CPU, 8192 on CUDA)."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    sync()
    return 2 * n**3 * count / (time.perf_counter() - start)


def hf_model(vocab: int, block: int, n_labels: int) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=SIZE["n_embd"],
        num_hidden_layers=SIZE["n_layer"],
        num_attention_heads=SIZE["n_head"],
        intermediate_size=4 * SIZE["n_embd"],
        max_position_embeddings=block,
        num_labels=n_labels,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=0,
    )
    return BertForSequenceClassification(config)


def peer_run(
    ids: list[np.ndarray],
    labels: np.ndarray,
    batches: list[np.ndarray],
    n_labels: int,
    vocab: int,
    block: int,
    device: torch.device,
    dtype: torch.dtype | None,
    warmup: int,
) -> float:
    """Real tokens/s of a plain BertForSequenceClassification loop over `batches`."""
    torch.manual_seed(0)
    model = hf_model(vocab, block, n_labels).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), **OPT)  # type: ignore[arg-type]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tokens, start = 0, 0.0
    for step, rows in enumerate(batches):
        if step == warmup:
            sync()
            tokens, start = 0, time.perf_counter()
        x, mask = collate([ids[i] for i in rows])
        y = torch.from_numpy(labels[rows])
        x, mask, y = x.to(device), mask.to(device), y.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(input_ids=x, attention_mask=mask.long(), labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(mask.sum())
    sync()
    return tokens / (time.perf_counter() - start)


def sentcli_run(
    task: str,
    tokenizer: Path,
    rows: int,
    block: int,
    batch: int,
    steps: int,
    device: str,
    precision: str,
) -> float:
    """Median real tokens/s of api.train_encoder's logged windows."""
    out = Path(tempfile.mkdtemp(prefix="train_speed_")) / "run"
    options = {
        **SIZE,
        "block_size": block,
        "dropout": 0.1,
        "batch_size": batch,
        "max_steps": steps,
        "eval_every": steps,
        "log_every": 5,
        "warmup": 10,
        "device": device,
        "precision": precision,
        "max_samples_per_task": rows,
        "max_eval_batches": 1,
    }
    result = api.train_encoder(task, out, tokenizer=tokenizer, options=options)
    return float(result.throughput["tokens_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, one round (~4 min)")
    parser.add_argument("--tasks", default="ag,imdb", help="ag, imdb or both (comma)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = resolve_device(args.device)
    fast = resolve_precision("auto", device)
    steps, warmup = (20, 5) if args.quick else (60, 10)
    rounds = 1 if args.quick else 2
    # a sentcli BPE tokenizer of 8,000 tokens on the shipped samples (as `make demo` builds)
    tokenizer = Path(tempfile.mkdtemp(prefix="train_speed_tok_")) / "tokenizer.json"
    atexit.register(shutil.rmtree, tokenizer.parent, ignore_errors=True)
    api.build_tokenizer([str(ROOT / "data" / "ag_news"), str(ROOT / "data" / "imdb")], tokenizer)
    tok = load_tokenizer(tokenizer)
    vocab = tok.get_vocab_size()
    peaks = {"fp32": matmul_peak(device, torch.float32)}
    if fast is not None:
        peaks["bf16"] = matmul_peak(device, fast)
    print(
        f"device {device}: measured matmul peak "
        + ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in peaks.items())
    )
    results: dict[str, Any] = {"device": str(device), "peaks": peaks, "tasks": {}}
    for key, name, source, block in (
        ("ag", "AG News", ROOT / "data" / "ag_news", 128),
        ("imdb", "IMDB", ROOT / "data" / "imdb", 256),
    ):
        if key not in args.tasks.split(","):
            continue
        td = load_task("t", str(source), None, None, 0.1, 1337)
        n = (steps + warmup) * args.batch_size
        cut_train(td, n, 1337)
        ids = encode_rows(tok, td.train, block)
        labels = np.asarray(td.train.with_format("numpy")["label"], dtype=np.int64)
        n_labels = len(td.label_names)
        lengths = np.array([len(x) for x in ids])
        rng = np.random.default_rng(0)
        shuffled = [
            rng.permutation(len(ids))[i : i + args.batch_size]
            for i in range(0, len(ids) - args.batch_size + 1, args.batch_size)
        ]
        bucketed = length_batches(lengths, args.batch_size, np.random.default_rng(0))
        bucketed = [b for b in bucketed if len(b) == args.batch_size]
        # sentcli reads the same rows from a folder of its own (no test split: no test pass)
        folder = Path(tempfile.mkdtemp(prefix="train_speed_data_"))
        td.train.to_csv(str(folder / "train.csv"), index=False)
        (folder / "labels.txt").write_text("\n".join(td.label_names) + "\n")
        rows: dict[str, list[float]] = {}
        precisions = [("fp32", None)] + ([("bf16", fast)] if fast is not None else [])
        for _ in range(rounds):  # alternate the sides (twice in full mode; best of each)
            for label, dtype in precisions:
                tps = sentcli_run(
                    f"t={folder}",
                    tokenizer,
                    n,
                    block,
                    args.batch_size,
                    steps + warmup,
                    args.device,
                    label,
                )
                rows.setdefault(f"sentcli {label}", []).append(tps)
                for batching, plan in (("padded", shuffled), ("bucketed", bucketed)):
                    tps = peer_run(
                        ids, labels, plan[: steps + warmup], n_labels, vocab, block, device,
                        dtype, warmup,
                    )  # fmt: skip
                    rows.setdefault(f"HF Bert {label} {batching}", []).append(tps)
        best = {k: max(v) for k, v in rows.items()}
        cfg = ModelConfig(vocab_size=vocab, block_size=block, **SIZE)  # type: ignore[arg-type]
        flops = training_flops_per_token(cfg, float(lengths.mean()), lm_head=False)
        padding = 1 - lengths.sum() / sum(
            len(b) * lengths[b].max() for b in shuffled[: steps + warmup]
        )
        print(
            f"\n{name}: {len(ids):,} texts, mean {lengths.mean():.0f} tokens (max {block}), "
            f"batch {args.batch_size}, {steps} timed steps; random batches are "
            f"{padding:.0%} padding"
        )
        print(f"{'':28}{'real tokens/s':>14}{'model GFLOP/s':>15}{'of peak':>9}")
        for key, tps in best.items():
            peak = peaks["bf16" if "bf16" in key else "fp32"]
            print(f"{key:28}{tps:>14,.0f}{tps * flops / 1e9:>15,.1f}{tps * flops / peak:>9.1%}")
        ratios = {}
        for label, _ in precisions:
            ratios[f"sentcli {label} / HF {label} padded (the peer loop)"] = (
                best[f"sentcli {label}"] / best[f"HF Bert {label} padded"]
            )
            ratios[f"sentcli {label} / HF {label} bucketed (same batches)"] = (
                best[f"sentcli {label}"] / best[f"HF Bert {label} bucketed"]
            )
        if fast is not None:
            ratios["sentcli bf16 / HF fp32 padded (the peer's default)"] = (
                best["sentcli bf16"] / best["HF Bert fp32 padded"]
            )
        for key, r in ratios.items():
            print(f"  {key:52} {r:5.2f}x")
        results["tasks"][name] = {"tokens_per_s": best, "ratios": ratios, "padding": padding}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
