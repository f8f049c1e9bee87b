"""embed and predict: order, streaming, formats, precision, the default model, bad input."""

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from typer.testing import CliRunner

from sentcli import api
from sentcli.checkpoint import load_run
from sentcli.cli import app
from sentcli.config import Activation, InferenceOptions, ModelConfig
from sentcli.errors import ConfigError
from sentcli.inference import embed as inference_embed
from sentcli.inference import onednn
from sentcli.inference.embed import apply_batched, prepare, vector_fn
from sentcli.inference.quantize import Int8Linear
from sentcli.model import MultiTaskModel, SelfAttention, sdpa
from sentcli.tokenizer import encode

from helpers import AMX, DATA, FAST, NATIVE_BF16, assert_refused, digests, read_rows, write_csv

runner = CliRunner()


@pytest.fixture(scope="module")
def mtl_run(
    tmp_path_factory: pytest.TempPathFactory,
    tokenizer_path: Path,
    topic_dir: Path,
    sentiment_dir: Path,
) -> Path:
    run_dir = tmp_path_factory.mktemp("embed") / "mtl"
    tasks = [
        api.TaskConfig("topic", str(topic_dir)),
        api.TaskConfig("sentiment", str(sentiment_dir)),
    ]
    api.train_mtl(tasks, run_dir, tokenizer=tokenizer_path, options={**FAST, "max_steps": 6})
    return run_dir


@pytest.fixture(scope="module")
def lines() -> list[str]:
    """Real texts of many lengths (some past the 16-token block), with empty lines."""
    texts = [t for t, _ in read_rows(DATA / "ag_news" / "test.csv.gz", 60)]
    texts += [t[:20] for t in texts[:10]]
    for i in (0, 7, 33, len(texts)):
        texts.insert(i, "")
    return texts


@pytest.fixture(scope="module")
def lines_file(tmp_path_factory: pytest.TempPathFactory, lines: list[str]) -> Path:
    path = tmp_path_factory.mktemp("lines") / "in.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def reference(run_dir: Path, texts: list[str], normalize: bool = True) -> np.ndarray:
    """Each text alone, by hand: its token ids cut to the 16-token block (keeping [EOS]), the
    trunk's hidden states with no mask, their plain mean, L2-normalised. None of embed's own
    code (encode, prepare, batching, pooling) computes it."""
    _, model, tok, _ = load_run(run_dir)
    model.eval()
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tok.encode(text).ids
            ids = ids if len(ids) <= 16 else ids[:15] + ids[-1:]
            v = model.trunk(torch.tensor([ids]))[0].mean(dim=0)
            out.append((v / v.norm() if normalize else v).numpy())
    return np.stack(out)


def embed(run_dir: Path, source: str, output: Path | None = None, **kw: Any) -> object:
    normalize = kw.pop("normalize", True)
    options = InferenceOptions(**{"precision": "fp32", "device": "cpu", **kw})
    return api.embed(source, output, run_dir, normalize=normalize, options=options)


def test_order_and_vectors_hold_across_chunks_and_batches(
    mtl_run: Path, lines: list[str], lines_file: Path, tmp_path: Path
) -> None:
    ref = reference(mtl_run, lines)
    for batch_size, chunk_size in ((1, 1), (4, 7), (64, 1024)):
        out = tmp_path / f"v{batch_size}.npy"
        result = embed(mtl_run, str(lines_file), out, batch_size=batch_size, chunk_size=chunk_size)
        got = np.load(out)
        assert got.shape == (len(lines), 16) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-5)
        assert result.stats.texts == len(lines)  # type: ignore[attr-defined]
    # an empty line gets the vector of the empty text, and the same one wherever it stands
    empty = [i for i, t in enumerate(lines) if t == ""]
    np.testing.assert_allclose(got[empty], np.repeat(got[empty[:1]], len(empty), 0), atol=1e-6)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_stdin_to_stdout_json_lines_in_order(mtl_run: Path, lines: list[str]) -> None:
    stdin = "\n".join(lines) + "\n"
    args = ["embed", "-", "-m", str(mtl_run), "--precision", "fp32", "--batch-size", "3"]
    result = runner.invoke(app, args, input=stdin)
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == lines
    np.testing.assert_allclose(
        np.array([r["embedding"] for r in rows]), reference(mtl_run, lines), atol=1e-5
    )
    assert "texts/s" in result.stderr and "tokens/s" in result.stderr


def test_jsonl_csv_tsv_outputs_parse_and_equal_npy(
    mtl_run: Path, lines: list[str], lines_file: Path, tmp_path: Path
) -> None:
    embed(mtl_run, str(lines_file), tmp_path / "v.npy", normalize=False)
    npy = np.load(tmp_path / "v.npy")
    assert not np.allclose(np.linalg.norm(npy, axis=1), 1.0)
    args = ["embed", str(lines_file), "-m", str(mtl_run), "--device", "cpu", "-q"]
    cli_out = tmp_path / "cli.npy"
    result = runner.invoke(
        app, [*args, "--precision", "fp32", "--no-normalize", "-o", str(cli_out)]
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(cli_out), npy, atol=1e-6)  # the flag reaches the API
    for ext in ("jsonl", "csv", "tsv"):
        embed(mtl_run, str(lines_file), tmp_path / f"v.{ext}", normalize=False)
    rows = [json.loads(x) for x in (tmp_path / "v.jsonl").read_text("utf-8").splitlines()]
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), npy, atol=1e-6)
    assert [r["text"] for r in rows] == lines
    import csv

    for ext, delimiter in (("csv", ","), ("tsv", "\t")):
        with open(tmp_path / f"v.{ext}", encoding="utf-8", newline="") as f:
            table = list(csv.reader(f, delimiter=delimiter))
        assert table[0] == ["text"] + [f"dim_{i}" for i in range(16)]
        assert [r[0] for r in table[1:]] == lines
        np.testing.assert_allclose(np.array(table[1:])[:, 1:].astype(float), npy, atol=1e-6)


def test_table_inputs_with_text_and_id_columns(mtl_run: Path, tmp_path: Path) -> None:
    rows = read_rows(DATA / "imdb" / "test.csv.gz", 12)
    texts = [t for t, _ in rows]
    write_csv(tmp_path / "in.csv", [(f"r{i}", t) for i, t in enumerate(texts)], ("key", "review"))
    pq.write_table(pa.table({"doc": texts, "key": list(range(12))}), tmp_path / "in.parquet")
    with open(tmp_path / "in.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(texts))
    ref = reference(mtl_run, texts)
    cases = [
        ("in.csv", {"id_column": "key"}, [f"r{i}" for i in range(12)]),
        ("in.parquet", {"text_column": "doc", "id_column": "key"}, list(range(12))),
        ("in.jsonl", {"id_column": "n"}, list(range(12))),
    ]
    for name, kw, ids in cases:
        out = tmp_path / f"{name}.jsonl"
        embed(mtl_run, str(tmp_path / name), out, **kw)
        got = [json.loads(x) for x in out.read_text("utf-8").splitlines()]
        assert [g["id"] for g in got] == ids
        np.testing.assert_allclose(np.array([g["embedding"] for g in got]), ref, atol=1e-5)


def test_a_byte_order_mark_is_not_part_of_the_text(mtl_run: Path, tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello world\n")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbftext,label\nhello world,0\n")
    for name in ("bom.txt", "bom.csv"):
        result = runner.invoke(app, ["embed", str(tmp_path / name), "-m", str(mtl_run), "-q"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["text"] == "hello world"


def test_truncation_is_reported(mtl_run: Path, lines_file: Path, lines: list[str]) -> None:
    args = ["embed", str(lines_file), "-m", str(mtl_run), "--max-length", "8", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    _, _, tok, _ = load_run(mtl_run)
    cut = sum(len(s) > 8 for s in encode(tok, lines))
    assert cut > 0 and f"{cut:,} of {len(lines):,} texts were longer than 8 tokens" in result.stderr


def test_bf16_and_int8_stay_close_to_fp32(mtl_run: Path, lines_file: Path, tmp_path: Path) -> None:
    vectors = {}
    for p in ("fp32", "bf16", "int8"):
        embed(mtl_run, str(lines_file), tmp_path / f"{p}.npy", precision=p)
        vectors[p] = np.load(tmp_path / f"{p}.npy")
    for p in ("bf16", "int8"):
        cos = (vectors[p] * vectors["fp32"]).sum(axis=1)
        assert cos.min() > 0.95, (p, cos.min())  # a 16-wide toy model; bench/ reports real ones
        assert not np.array_equal(vectors[p], vectors["fp32"]), p  # it ran at its precision


def test_predict_labels_match_evaluate(mtl_run: Path, topic_dir: Path, tmp_path: Path) -> None:
    import csv

    with open(topic_dir / "test.csv", encoding="utf-8", newline="") as f:
        table = list(csv.reader(f))[1:]
    (tmp_path / "t.txt").write_text("\n".join(t for t, _ in table) + "\n", encoding="utf-8")
    args = ["predict", str(tmp_path / "t.txt"), "-m", str(mtl_run), "--task", "topic"]
    result = runner.invoke(app, [*args, "--precision", "fp32", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    names = (topic_dir / "labels.txt").read_text().split("\n")[:4]
    predicted = []
    for line in result.stdout.splitlines():
        label, p1, second, p2 = line.split("\t")
        assert label in names and second in names and label != second
        assert 1.0 >= float(p1) >= float(p2) >= 0.0
        predicted.append(names.index(label))
    evaluation = api.evaluate(mtl_run, device="cpu")["tasks"]["topic"]
    confusion = np.zeros((4, 4), dtype=int)
    for (_, y), p in zip(table, predicted, strict=True):
        confusion[int(y), p] += 1
    assert confusion.tolist() == evaluation["confusion"]


def test_predict_jsonl_with_ids(mtl_run: Path, tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv", [("a", "great film"), ("b", "dull, too long")], ("id", "text"))
    args = ["predict", str(tmp_path / "in.csv"), "-m", str(mtl_run), "--task", "sentiment"]
    result = runner.invoke(app, [*args, "--id-column", "id", "--format", "jsonl", "-q"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    assert all(r["label"] in ("neg", "pos") and 0.5 <= r["probability"] <= 1 for r in rows)


def test_predict_tsv_escapes_ids_with_tabs_and_newlines(mtl_run: Path, tmp_path: Path) -> None:
    ids = [("a\tb", "great film"), ("c\nd", "dull"), ("e\\f", "fine")]
    write_csv(tmp_path / "in.csv", ids, ("id", "text"))
    args = ["predict", str(tmp_path / "in.csv"), "-m", str(mtl_run), "--task", "sentiment"]
    result = runner.invoke(app, [*args, "--id-column", "id", "-q"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3  # one line per row: 3 rows in, 3 lines out
    assert [x.split("\t")[0] for x in lines] == ["a\\tb", "c\\nd", "e\\\\f"]


def test_default_model_lookup_order(
    mtl_run: Path, lines_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(api.MODEL_ENV, raising=False)
    monkeypatch.setattr(inference_embed, "DEFAULT_MODEL", tmp_path / "none")
    with pytest.raises(ConfigError, match="no model: pass --model"):
        api.resolve_model(None)
    monkeypatch.setattr(inference_embed, "DEFAULT_MODEL", mtl_run)
    assert api.resolve_model(None) == (mtl_run, "the default model")
    monkeypatch.setenv(api.MODEL_ENV, str(tmp_path / "env-run"))
    assert api.resolve_model(None)[0] == tmp_path / "env-run"
    assert api.resolve_model(tmp_path / "flag")[0] == tmp_path / "flag"
    result = runner.invoke(app, ["embed", str(lines_file)])  # $SENTCLI_MODEL wins, and is wrong
    assert result.exit_code == 2 and "$SENTCLI_MODEL" in result.output


def test_shipped_default_model_embeds_and_predicts(tmp_path: Path) -> None:
    if not (api.DEFAULT_MODEL / "config.json").is_file():
        pytest.fail("the default model is missing from the package: run `make default-model`")
    result = runner.invoke(
        app,
        ["predict", "-", "--task", "sentiment", "-q"],
        input="a wonderful, moving film with superb acting\nutterly boring "
        "waste of time, the worst movie I have seen\n",
    )
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["pos", "neg"]
    result = runner.invoke(
        app, ["embed", "-", "-q", "-o", str(tmp_path / "v.npy")], input="stocks fell sharply\n\n"
    )
    assert result.exit_code == 0 and np.load(tmp_path / "v.npy").shape[0] == 2


def test_closed_pipe_ends_quietly(mtl_run: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("a short line of text\n" * 20000, encoding="utf-8")
    cmd = [sys.executable, "-m", "sentcli", "embed", str(big), "-m", str(mtl_run), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    assert json.loads(first)["text"] == "a short line of text"
    assert proc.stderr.read() == b""


def test_a_slow_producer_gets_each_answer_while_stdin_stays_open(mtl_run: Path) -> None:
    """`tail -f log | sentcli predict -`: each line is answered before the next one is
    written (input used to be read 4,096 lines at a time)."""
    import select

    cmd = [sys.executable, "-m", "sentcli", "predict", "-", "-m", str(mtl_run), "-q"]
    proc = subprocess.Popen(
        [*cmd, "--task", "sentiment"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    for text in (b"a wonderful film\n", b"dull and far too long\n"):
        proc.stdin.write(text)
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 120)  # a bound, not a timing
        assert ready, "no answer while stdin is open"
        label, prob = proc.stdout.readline().decode().rstrip("\n").split("\t")
        assert label in ("neg", "pos") and 0.5 <= float(prob) <= 1
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0 and proc.stdout.read() == b""


def test_a_reader_that_leaves_ends_a_stream_whose_stdin_stays_open(mtl_run: Path) -> None:
    """`tail -f log | sentcli predict - | head -n 1`: after head leaves, the next answer's
    write fails and sentcli exits 0 at once, though stdin is still open (its reader thread
    is blocked on a read; it must not hold the exit, nor abort it)."""
    cmd = [sys.executable, "-m", "sentcli", "predict", "-", "-m", str(mtl_run), "-q"]
    proc = subprocess.Popen(
        [*cmd, "--task", "sentiment"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(b"a wonderful film\n")
    proc.stdin.flush()
    assert proc.stdout.readline().split(b"\t")[0] in (b"neg", b"pos")
    proc.stdout.close()  # the reader leaves
    proc.stdin.write(b"another line\n")
    proc.stdin.flush()
    try:
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    assert proc.stderr.read() == b""  # no "Fatal Python error", no traceback
    proc.stdin.close()


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, mtl_run: Path) -> Path:
    root = tmp_path_factory.mktemp("bad-embed")
    (root / "empty.txt").write_text("")
    (root / "latin1.txt").write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    (root / "ok.txt").write_text("hello\n")
    (root / "notarun").mkdir()
    write_csv(root / "ragged.csv", [("a", "b"), ("c",)], ("text", "x"))
    (root / "bad.jsonl").write_text('{"text": "a"}\nnot json\n')
    return root


BAD = [
    (["embed", "{bad}/missing.txt"], "no such file"),
    (["embed", "{bad}/empty.txt"], "the file is empty"),
    (["embed", "{bad}/latin1.txt", "-o", "{tmp}/v.npy"], "line 2 is not UTF-8"),
    (["embed", "{data}/ag_news/test.csv.gz", "--text-column", "body"], "no column 'body'"),
    (["embed", "{bad}/ok.txt", "--text-column", "text"], "one text per line"),
    (["embed", "{bad}/ragged.csv", "-o", "{tmp}/v.npy"], "row 2 has 1 field(s)"),
    (["embed", "{bad}/bad.jsonl", "-o", "{tmp}/v.npy"], "line 2 is not JSON"),
    (["embed", "{bad}/ok.txt", "-m", "{bad}/notarun"], "missing config.json"),
    (["embed", "{bad}/ok.txt", "-m", "{bad}/nothere"], "not a run folder"),
    (["embed", "{bad}/ok.txt", "-o", "{tmp}/v.bin"], "unknown output format"),
    (["embed", "{bad}/ok.txt", "-o", "{tmp}/no/dir/v.npy"], "does not exist"),
    (["embed", "{bad}/ok.txt", "--batch-size", "0"], "at least 1"),
    (["embed", "{bad}/ok.txt", "--max-length", "999"], "reads 2 to 16 tokens"),
    (["embed", "-", "-o", "{tmp}/v.npy"], "stdin: no input"),
    (["predict", "{bad}/ok.txt", "--task", "stars"], "no task 'stars'"),
    (["predict", "{bad}/ok.txt"], "pass --task topic or sentiment"),
    (["predict", "{bad}/ok.txt", "--task", "topic", "--top-k", "0"], "at least 1"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_exits_2_and_writes_nothing(
    args: list[str], message: str, bad_inputs: Path, mtl_run: Path, tmp_path: Path
) -> None:
    values = {"bad": bad_inputs, "data": DATA, "tmp": tmp_path}
    argv = [a.format(**values) for a in args]
    if "-m" not in argv:
        argv += ["-m", str(mtl_run)]
    before = digests(bad_inputs, mtl_run)
    result = runner.invoke(app, argv, input="")
    assert_refused(result, message)
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file
    assert digests(bad_inputs, mtl_run) == before


def test_failure_keeps_the_previous_output(mtl_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.npy"
    out.write_bytes(b"previous")
    stdin = "fine\n" * 3000 + "caf\xe9\n"  # the bad line comes after the first chunks
    result = runner.invoke(
        app, ["embed", "-", "-m", str(mtl_run), "-o", str(out)], input=stdin.encode("latin-1")
    )
    assert result.exit_code == 2 and "line 3001 is not UTF-8" in result.output
    assert out.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_fused_linears_compute_what_the_plain_model_does(activation: str) -> None:
    """fuse_linears moves each MLP's GELU into its first Linear: the same vectors (fp32 here,
    so any CPU checks the rewiring), the same state dict, nothing left as nn.Linear."""
    config = ModelConfig(vocab_size=300, block_size=40, n_layer=2, n_head=2, n_embd=32)
    config.causal, config.dropout, config.activation = False, 0.0, Activation(activation)
    torch.manual_seed(0)
    plain = MultiTaskModel(config, {"t": 3}).eval()
    fused = copy.deepcopy(plain)
    onednn.fuse_linears(fused.trunk, rows=64)
    assert not any(isinstance(m, nn.Linear) for m in fused.trunk.modules())
    assert not any(isinstance(m, nn.GELU) for m in fused.trunk.modules())
    assert fused.state_dict().keys() == plain.state_dict().keys()
    ids = torch.randint(3, 300, (5, 40))
    mask = torch.arange(40)[None, :] < torch.tensor([40, 33, 7, 1, 20])[:, None]
    with torch.inference_mode():
        want, got = plain.embed(ids, mask), fused.embed(ids, mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the MLP's first Linear applies this activation, not the other: at pre-activations of
    # a few units exact and tanh GELU differ by ~1e-3 (near 0, inside any tolerance)
    mlp = plain.trunk.h[0].mlp
    x = 3 * torch.randn(64, 32)
    with torch.inference_mode():
        pre = mlp.c_fc(x)
        other = "none" if activation == "gelu_tanh" else "tanh"
        assert (F.gelu(pre, approximate=other) - mlp.act(pre)).abs().max() > 1e-4
        torch.testing.assert_close(fused.trunk.h[0].mlp.c_fc(x), mlp.act(pre), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_attention_equals_sdpa(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunked batched-matmul attention gives SDPA's output, with and without padding,
    when the scores are cut into chunks (one head, several, a last short one) and when not;
    causal attention and autograd are left to SDPA."""
    torch.manual_seed(0)
    B, nh, T, hs = 3, 4, 37, 8
    q, k, v = (torch.randn(B, nh, T, hs, dtype=dtype) for _ in range(3))
    padded = (torch.arange(T)[None, :] < torch.tensor([T, 20, 1])[:, None])[:, None, None, :]
    full = torch.ones(B, 1, 1, T, dtype=torch.bool)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for per_chunk in [T * T, 5 * T * T, 1 << 18]:
        monkeypatch.setattr(onednn, "SCORES_PER_CHUNK", per_chunk)
        for mask in [padded, full, None]:
            want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            with torch.inference_mode():
                got = onednn.matmul_attention(q, k, v, mask, False, 0.0)
            assert got.shape == want.shape and got.dtype == dtype
            torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    with torch.no_grad():
        causal = onednn.matmul_attention(q, k, v, padded, True, 0.0)
        assert torch.equal(causal, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    # with autograd on, it is the training attention (the chunked form writes into buffers)
    q.requires_grad_(True)
    got = onednn.matmul_attention(q, k, v, padded, False, 0.0)
    assert torch.equal(got, sdpa(q, k, v, padded, False, 0.0))
    got.sum().backward()
    assert q.grad is not None


def test_cpu_bf16_fuses_where_native_and_stays_close_to_fp32(mtl_run: Path) -> None:
    """Expected from the CPU's flags (/proc/cpuinfo), not from sentcli's own checks: with
    AVX512-BF16 or AMX every trunk Linear is a FusedLinear, and without AMX attention runs as
    batched matmuls; elsewhere bf16 runs as plain (emulated) Linear layers and SDPA."""
    config, model, tok, _ = load_run(mtl_run)
    texts = ["a short text", "and a much longer one, with words " * 3]
    seqs = encode(tok, texts, config.model.block_size)
    cpu = torch.device("cpu")
    prepare(model, cpu, "bf16")
    kinds = {type(m) for m in model.trunk.modules()}
    if NATIVE_BF16:
        assert onednn.FusedLinear in kinds and nn.Linear not in kinds and nn.GELU not in kinds
    else:
        assert onednn.FusedLinear not in kinds and nn.Linear in kinds
    attends = {m.attention for m in model.modules() if isinstance(m, SelfAttention)}
    assert attends == {onednn.matmul_attention if NATIVE_BF16 and not AMX else sdpa}
    assert all(type(h) is nn.Linear for h in model.heads.values())  # heads stay Linear
    bf16 = apply_batched(vector_fn(model, True), seqs, 2, cpu)
    _, model, _, _ = load_run(mtl_run)
    prepare(model, cpu, "fp32")
    fp32 = apply_batched(vector_fn(model, True), seqs, 2, cpu)
    assert (bf16 * fp32).sum(axis=1).min() > 0.99 and not np.array_equal(bf16, fp32)


def test_int8_replaces_every_trunk_linear_and_only_those(mtl_run: Path) -> None:
    config, model, _, _ = load_run(mtl_run)
    prepare(model, torch.device("cpu"), "int8")
    trunk = [m for m in model.trunk.modules() if isinstance(m, nn.Linear | Int8Linear)]
    assert len(trunk) == 4 * config.model.n_layer  # QKV, attention out, MLP up and down
    assert all(isinstance(m, Int8Linear) for m in trunk)
    assert all(type(h) is nn.Linear for h in model.heads.values())


def test_embed_under_torchrun_equals_one_process(
    mtl_run: Path, lines: list[str], lines_file: Path, tmp_path: Path
) -> None:
    """The fast tier's torchrun: 2 CPU processes (gloo) each embed their share (strided rows,
    in batches of 5) and the main rank writes one .npy in input order, equal to one
    process's."""
    import os

    out = tmp_path / "two.npy"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    args = ["embed", str(lines_file), "-m", str(mtl_run), "--precision", "fp32"]
    args += ["--batch-size", "5", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launch, "--nproc-per-node", "2", "-m", "sentcli", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(f"embedded {len(lines)} texts") == 1, done.stderr  # one report
    embed(mtl_run, str(lines_file), tmp_path / "one.npy")
    np.testing.assert_allclose(np.load(out), np.load(tmp_path / "one.npy"), rtol=0, atol=1e-6)


def test_a_torch_without_onednns_private_ops_falls_back_to_plain_bf16(
    mtl_run: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The fused linears and matmul attention call torch functions that are not public API.
    Where one is missing, CPU bf16 runs plain Linear layers and SDPA, says so in one debug
    line, and still gives the vectors (close to fp32)."""
    import logging

    monkeypatch.setattr(onednn, "PRIVATE", (*onednn.PRIVATE, (torch.ops.mkldnn, "_gone_op")))
    onednn.private_ops_present.cache_clear()
    try:
        config, model, tok, _ = load_run(mtl_run)
        with caplog.at_level(logging.DEBUG, logger=onednn.__name__):
            prepare(model, torch.device("cpu"), "bf16")
        assert [r.getMessage() for r in caplog.records].count(
            f"torch {torch.__version__} has no _gone_op: CPU bf16 inference runs plain Linear "
            "layers and SDPA"
        ) == 1
        kinds = {type(m) for m in model.trunk.modules()}
        assert onednn.FusedLinear not in kinds and nn.Linear in kinds
        assert {m.attention for m in model.modules() if isinstance(m, SelfAttention)} == {sdpa}
        seqs = encode(tok, ["a short text", "and a longer one, with words " * 3], 16)
        bf16 = apply_batched(vector_fn(model, True), seqs, 2, torch.device("cpu"))
        _, model, _, _ = load_run(mtl_run)
        prepare(model, torch.device("cpu"), "fp32")
        fp32 = apply_batched(vector_fn(model, True), seqs, 2, torch.device("cpu"))
        assert (bf16 * fp32).sum(axis=1).min() > 0.99
    finally:
        onednn.private_ops_present.cache_clear()  # the next test checks the real torch again
