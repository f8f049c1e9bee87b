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
from sentcli.events import StepLog
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


# --- host overhead: a step so small that FLOPs cannot hide what runs around it ----------

HOST = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8}
"""Batch 2 × 8 tokens, 1 layer, width 16: a step is a few hundred microseconds of kernels."""


class BareBlock(torch.nn.Module):
    """One Pre-LN block as a plain PyTorch script writes it (fused QKV, SDPA, GELU MLP)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.qkv, self.proj = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
        self.up, self.down = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (
            t.view(B, T, self.heads, C // self.heads).transpose(1, 2)
            for t in self.qkv(self.ln1(x)).split(C, dim=2)
        )
        causal = mask is None
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, mask, is_causal=causal)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.down(torch.nn.functional.gelu(self.up(self.ln2(x))))


class Bare(torch.nn.Module):
    """Embedding, one block, then masked mean pooling + a linear head (`labels` classes) or
    a language-model head (labels = 0: next-token prediction over the vocabulary)."""

    def __init__(self, vocab: int, block: int, width: int, heads: int, labels: int) -> None:
        super().__init__()
        self.tok, self.pos = torch.nn.Embedding(vocab, width), torch.nn.Embedding(block, width)
        self.block, self.ln = BareBlock(width, heads), torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, labels or vocab)
        self.lm = labels == 0
        if self.lm:  # tied, as sentcli's (and nanoGPT's) language model
            self.head.weight = self.tok.weight

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        keys = None if self.lm else mask[:, None, None, :]
        h = self.ln(self.block(x, keys))
        if self.lm:
            return torch.nn.functional.cross_entropy(self.head(h).flatten(0, 1), y.flatten())
        m = mask.unsqueeze(-1).float()
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return torch.nn.functional.cross_entropy(self.head(pooled), y)


def bare_step_ms(
    vocab: int, labels: int, steps: int, fused: bool, device: str = "cpu", warmup: int = 50
) -> float:
    """Milliseconds per step of the bare loop (pre-made batches on the device: no
    tokenization, no collation), AdamW (`fused`: its one-kernel form, as sentcli's) and
    clipping at 1.0, fp32."""
    torch.manual_seed(0)
    T, B, W = HOST["block_size"], 2, HOST["n_embd"]
    model = Bare(vocab, T, W, HOST["n_head"], labels).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), **OPT, fused=fused or None)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(0)
    shape = (B, T) if labels == 0 else (B,)  # next tokens, or one label a text
    data = [
        (
            torch.randint(vocab, (B, T), generator=g),
            torch.ones(B, T, dtype=torch.bool),
            torch.randint(labels or vocab, shape, generator=g),
        )
        for _ in range(64)
    ]
    data = [tuple(t.to(device) for t in batch) for batch in data]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    start = 0.0
    for step in range(steps + warmup):
        if step == warmup:
            sync()
            start = time.perf_counter()
        ids, mask, y = data[step % len(data)]
        loss = model(ids, mask, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    return (time.perf_counter() - start) * 1000 / steps


def sentcli_step_ms(
    kind: str, tokenizer: Path, steps: int, device: str = "cpu", log_every: int = 100
) -> float:
    """Milliseconds per step of sentcli's own command (api), read from its step logs: the
    time between the first log and the last over the steps between them (evaluation,
    saving and start-up excluded)."""
    out = Path(tempfile.mkdtemp(prefix="host_")) / "run"
    logs: list[tuple[int, float]] = []

    def on_event(event: object) -> None:
        if isinstance(event, StepLog):
            logs.append((event.step, event.elapsed))

    options = {
        **HOST, "dropout": 0.0, "batch_size": 2, "max_steps": steps, "eval_every": steps,
        "log_every": log_every, "warmup": 10, "device": device, "precision": "fp32",
        "max_eval_batches": 1,
    }  # fmt: skip
    if kind != "pretrain":
        options["max_samples_per_task"] = 4 * steps
    ag, imdb = ROOT / "data" / "ag_news", ROOT / "data" / "imdb"
    if kind == "pretrain":
        api.pretrain([str(imdb)], out, tokenizer=tokenizer, options=options, on_event=on_event)
    elif kind == "train-encoder":
        api.train_encoder(
            f"topic={ag}", out, tokenizer=tokenizer, options=options, on_event=on_event
        )
    else:
        tasks = [f"topic={ag}", f"sentiment={imdb}"]
        api.train_mtl(tasks, out, tokenizer=tokenizer, options=options, on_event=on_event)
    shutil.rmtree(out.parent, ignore_errors=True)
    (s0, t0), (s1, t1) = logs[0], logs[-1]
    return (t1 - t0) * 1000 / (s1 - s0)


def host_overhead(steps: int, rounds: int, device: str = "cpu") -> dict[str, Any]:
    """sentcli's step time for pretrain, train-encoder and train-mtl (two tasks) against the
    bare loop of the same size, alternating, best of `rounds`."""
    tokenizer = Path(tempfile.mkdtemp(prefix="host_tok_")) / "tokenizer.json"
    atexit.register(shutil.rmtree, tokenizer.parent, ignore_errors=True)
    api.build_tokenizer([str(ROOT / "data" / "ag_news"), str(ROOT / "data" / "imdb")], tokenizer)
    vocab = load_tokenizer(tokenizer).get_vocab_size()
    torch.set_num_threads(1)  # kernels this small run on one thread; the host is the cost
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for fused in (True, False):
            name = "" if fused else ", for-loop AdamW"
            times.setdefault(f"bare classifier{name}", []).append(
                bare_step_ms(vocab, 4, steps, fused, device)
            )
            times.setdefault(f"bare LM{name}", []).append(
                bare_step_ms(vocab, 0, steps, fused, device)
            )
        for kind in ("pretrain", "train-encoder", "train-mtl"):
            times.setdefault(kind, []).append(sentcli_step_ms(kind, tokenizer, steps, device))
    best = {k: min(v) for k, v in times.items()}
    print(
        f"\nhost overhead: batch 2 × {HOST['block_size']} tokens, {HOST['n_layer']} layer, width "
        f"{HOST['n_embd']}, fp32, {device} (1 CPU thread), {steps} steps, best of {rounds}"
    )
    print(f"{'':34}{'ms/step':>9}{'÷ bare':>8}  (bare: the loop of the same kind, fused AdamW)")
    ratios = {}
    for k, ms in best.items():
        bare = best["bare LM" if k == "pretrain" or k.startswith("bare LM") else "bare classifier"]
        ratios[k] = ms / bare
        print(f"{k:34}{ms:>9.3f}{ms / bare:>7.2f}x")
    return {"ms_per_step": best, "ratio_to_bare": ratios, "steps": steps, "device": device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, one round (~4 min)")
    parser.add_argument("--tasks", default="ag,imdb", help="ag, imdb or both (comma)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--host", action="store_true", help="only the host-overhead table (batch 2 x 8, width 16)"
    )
    parser.add_argument("--host-steps", type=int, default=600)
    args = parser.parse_args()
    if args.host:
        results = host_overhead(args.host_steps, 1 if args.quick else 5, args.device)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return
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
