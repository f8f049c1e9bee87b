"""The GPU path (skipped without CUDA; bench/gpu_check.sh runs these on a lent GPU):
bf16 autocast, --compile, no host/device sync inside the training loop between logs, and
embeddings that agree with the CPU's."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sentcli import api
from sentcli import checkpoint as ckpt
from sentcli.config import InferenceOptions
from sentcli.training import multitask

from helpers import FAST

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
GPU = {**FAST, "device": "cuda", "precision": "bf16", "batch_size": 16}


def tasks(topic_dir: Path, sentiment_dir: Path) -> list[api.TaskConfig]:
    return [
        api.TaskConfig("topic", str(topic_dir)),
        api.TaskConfig("sentiment", str(sentiment_dir)),
    ]


def test_no_host_sync_between_logs(
    tmp_path: Path,
    topic_dir: Path,
    sentiment_dir: Path,
    tokenizer_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Steps 2 … N-1 run with CUDA's sync debug mode set to error: any .item(), nonzero or
    blocking copy there fails the run."""
    steps = 12
    calls = {"n": 0}
    original = multitask.weighted_loss

    def watched(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            torch.cuda.set_sync_debug_mode("error")
        elif calls["n"] == steps:
            torch.cuda.set_sync_debug_mode("default")
        return original(*args, **kwargs)

    monkeypatch.setattr(multitask, "weighted_loss", watched)
    opts = {**GPU, "max_steps": steps, "log_every": steps, "schedule": "joint"}
    try:
        result = api.train_mtl(
            tasks(topic_dir, sentiment_dir), tmp_path / "m", tokenizer=tokenizer_path, options=opts
        )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert result.steps == steps and calls["n"] >= steps


def test_bf16_compiled_training_on_cuda_saves_fp32_weights(
    tmp_path: Path, topic_dir: Path, sentiment_dir: Path, tokenizer_path: Path
) -> None:
    opts = {**GPU, "max_steps": 8, "log_every": 2, "compile": True}
    result = api.train_mtl(
        tasks(topic_dir, sentiment_dir), tmp_path / "m", tokenizer=tokenizer_path, options=opts
    )
    weights = ckpt.load_weights(tmp_path / "m")[0]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())
    assert result.throughput["peak_memory_bytes"] > 0 and result.throughput["tokens_per_s"] > 0


def test_cuda_embeddings_match_the_cpu(
    tmp_path: Path, topic_dir: Path, tokenizer_path: Path
) -> None:
    run = tmp_path / "e"
    api.train_encoder(
        f"topic={topic_dir}", run, tokenizer=tokenizer_path, options={**FAST, "max_steps": 4}
    )
    texts = tmp_path / "in.txt"
    texts.write_text("Stocks fell sharply.\nThe team won the final.\n\nA new chip was announced.\n")
    vectors = {}
    for device, precision in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16")):
        out = tmp_path / f"{device}-{precision}.npy"
        options = InferenceOptions(device=device, precision=precision)
        api.embed(str(texts), out, run, options=options)
        vectors[device, precision] = np.load(out)
    base = vectors["cpu", "fp32"]
    for key, v in vectors.items():
        cos = (v * base).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(base, axis=1))
        assert cos.min() > (0.9999 if key[1] == "fp32" else 0.99), key
