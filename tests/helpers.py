"""What the tests share besides fixtures: the shipped data, tiny run settings, CSV helpers."""

import csv
import gzip
import importlib
import json
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16, "dropout": 0.0}
# Options for tiny, quick CPU runs through api.* and the CLI.
FAST = {**TINY, "device": "cpu", "precision": "fp32", "batch_size": 8, "warmup": 2}
# The same settings as command-line flags (plus --quiet).
FAST_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items() if k != "dropout"] + [
    "--quiet"
]


CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
"""CI installs every extra: there a missing one fails the tests that need it, never skips."""


def need(module: str, extra: str) -> ModuleType:
    """`module` of an optional extra: skipped without it, except in CI (a failure there)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        why = f"needs the {extra} extra ({module}: {e}); make install-bench installs it"
        if CI:
            pytest.fail(f"CI=true: {why}", pytrace=False)
        pytest.skip(why, allow_module_level=True)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere): what the tests expect
    the oneDNN paths from, independently of sentcli's own checks."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in info.splitlines() if x.startswith("flags")), "")
    return set(line.partition(":")[2].split())


FLAGS = cpu_flags()
NATIVE_BF16 = bool(FLAGS & {"avx512_bf16", "amx_bf16"})
"""x86 with bf16 instructions: where CPU bf16 inference fuses its linears."""
AMX = "amx_bf16" in FLAGS


def read_rows(path: Path, n: int) -> list[tuple[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [(row[0], row[1]) for _, row in zip(range(n), reader, strict=False)]


def write_csv(
    path: Path, rows: list[tuple[object, ...]], header: tuple[str, ...] = ("text", "label")
) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def task_dir(root: Path, dataset: str, n_train: int, n_test: int) -> Path:
    """A small real task folder: the first rows of a shipped dataset, and its labels.txt."""
    write_csv(root / "train.csv", read_rows(DATA / dataset / "train.csv.gz", n_train))
    write_csv(root / "test.csv", read_rows(DATA / dataset / "test.csv.gz", n_test))
    (root / "labels.txt").write_text((DATA / dataset / "labels.txt").read_text())
    return root


def digests(*roots: Path) -> dict[Path, str]:
    """The sha256 of every file under `roots`: what a refused command must leave as it was."""
    import hashlib

    files = (p for root in roots for p in sorted(root.rglob("*")) if p.is_file())
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_refused(result: object, message: str) -> None:
    """A refused command (a CliRunner result): exit 2, one `error:` line on stderr holding
    `message`, no traceback."""
    code, stderr = getattr(result, "exit_code"), getattr(result, "stderr")  # noqa: B009
    assert code == 2, getattr(result, "output")  # noqa: B009
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert message in lines[0], stderr
    assert "Traceback" not in getattr(result, "output")  # noqa: B009


TINY_BERT = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2}
TINY_BERT |= {"intermediate_size": 24, "max_position_embeddings": 40, "type_vocab_size": 2}


def make_bert(folder: Path, tokenizer: Tokenizer, pooling: str | None = None) -> Path:
    """A tiny BERT checkpoint in Hugging Face's layout (random weights, the test tokenizer;
    with `pooling`, the sentence-transformers files too)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "bert", "architectures": ["BertModel"], "hidden_act": "gelu"}
    config |= {"vocab_size": tokenizer.get_vocab_size(), "layer_norm_eps": 1e-12, **TINY_BERT}
    (folder / "config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(0)
    C, inner = TINY_BERT["hidden_size"], TINY_BERT["intermediate_size"]

    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.5

    w = {
        "embeddings.word_embeddings.weight": t(config["vocab_size"], C),
        "embeddings.position_embeddings.weight": t(40, C),
        "embeddings.token_type_embeddings.weight": t(2, C),
        "embeddings.LayerNorm.weight": 1 + t(C),
        "embeddings.LayerNorm.bias": t(C),
        "embeddings.position_ids": torch.arange(40)[None],
        "pooler.dense.weight": t(C, C),
        "pooler.dense.bias": t(C),
    }
    for i in range(2):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value"):
            w |= {p + name + ".weight": t(C, C), p + name + ".bias": t(C)}
        w |= {p + "attention.output.dense.weight": t(C, C), p + "attention.output.dense.bias": t(C)}
        w |= {p + "intermediate.dense.weight": t(inner, C), p + "intermediate.dense.bias": t(inner)}
        w |= {p + "output.dense.weight": t(C, inner), p + "output.dense.bias": t(C)}
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            w |= {p + ln + ".weight": 1 + t(C), p + ln + ".bias": t(C)}
    save_file({k: v.contiguous() for k, v in w.items()}, str(folder / "model.safetensors"))
    tokenizer.save(str(folder / "tokenizer.json"))
    if pooling:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
        ]
        (folder / "modules.json").write_text(json.dumps(modules))
        (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 32}')
        (folder / "1_Pooling").mkdir()
        keys = {"mean": "mean_tokens", "cls": "cls_token", "max": "max_tokens"}
        keys["sqrt"] = "mean_sqrt_len_tokens"
        modes = {f"pooling_mode_{k}": m == pooling for m, k in keys.items()}
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(modes))
    return folder
