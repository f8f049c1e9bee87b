"""Vectors at scale: Matryoshka prefixes (the loss on each prefix, re-normalised; --dims),
int8 codes from fixed calibration ranges, binary vectors, and the persistent index (round
trip, rescoring, the model's fingerprint, --overwrite, bad input)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from sentcli import api
from sentcli.cli import app
from sentcli.config import InferenceOptions, ModelConfig, TaskConfig, TaskKind, TrainConfig
from sentcli.dist import Dist
from sentcli.errors import ConfigError
from sentcli.inference import ann
from sentcli.inference import vectors as qv
from sentcli.inference.embed import DEFAULT_MODEL
from sentcli.inference.outputs import RangeSink
from sentcli.model import MultiTaskModel
from sentcli.objectives import Batch, objective
from sentcli.objectives.matryoshka import Matryoshka, prefix
from sentcli.objectives.scored import cosent

from helpers import DATA, assert_refused

runner = CliRunner()


def unit(rows: int, dims: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((rows, dims)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_prefix_is_re_normalised_and_the_pipeline_cuts_before_normalising() -> None:
    v = unit(5, 32) * np.arange(1, 6, dtype=np.float32)[:, None]  # lengths 1..5
    cut = prefix(v, 8)
    assert cut.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(cut, v[:, :8] / np.linalg.norm(v[:, :8], axis=1, keepdims=True))


def scored_spec() -> TaskConfig:
    return TaskConfig("sts", "x", kind=TaskKind.scored, pair_columns=["a", "b"])


def test_matryoshka_loss_is_the_weighted_sum_of_the_inner_loss_on_each_prefix(
    tiny_config: ModelConfig,
) -> None:
    train = TrainConfig(matryoshka_dims=[32, 16, 8], matryoshka_weights=[1.0, 2.0, 0.5])
    wrapped = objective(scored_spec(), train)
    assert isinstance(wrapped, Matryoshka)
    assert objective(TaskConfig("topic", "x"), train).outputs == "logits"  # heads: unwrapped
    torch.manual_seed(0)
    model = MultiTaskModel(tiny_config, {})  # 32 wide
    ids = torch.randint(4, tiny_config.vocab_size, (8, 6))
    mask = torch.ones_like(ids, dtype=torch.bool)
    target = torch.tensor([0.0, 1, 2, 3])
    batch = Batch("sts", ids, mask, 4, 4, target, wrapped)
    with torch.no_grad():
        got = wrapped.loss(model, batch)
        a, b = torch.split(model.embed(ids, mask), 4)
        expect = sum(
            w * cosent(F.cosine_similarity(a[:, :d], b[:, :d], dim=-1), target, 20.0)
            for d, w in [(32, 1.0), (16, 2.0), (8, 0.5)]
        )
    assert float(got) == pytest.approx(float(expect), rel=1e-5)
    assert objective(scored_spec(), TrainConfig(matryoshka_dims=[32, 8])).head(32) is None
    with pytest.raises(ConfigError, match="64: the model's vectors are 32 wide"):
        objective(scored_spec(), TrainConfig(matryoshka_dims=[64, 8])).head(32)


@pytest.mark.parametrize(
    ("dims", "weights", "message"),
    [
        ([64, 128], [], "strictly descending"),
        ([64, 0], [], "positive integers"),
        ([64, 32], [1.0], "one weight per width"),
        ([64, 32], [1.0, -1.0], "positive numbers"),
    ],
)
def test_bad_matryoshka_settings_are_refused(
    dims: list[int], weights: list[float], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(matryoshka_dims=dims, matryoshka_weights=weights)


def test_matryoshka_metrics_score_each_narrower_prefix() -> None:
    wrapped = objective(scored_spec(), TrainConfig(matryoshka_dims=[16, 4]))
    a, b = unit(50, 16, 1), unit(50, 16, 2)
    gold = np.random.default_rng(3).random(50)
    m = wrapped.metrics([a, b], gold)
    assert set(m) == {"spearman", "pearson", "spearman@4", "pearson@4"}
    inner = objective(scored_spec()).metrics([prefix(a, 4), prefix(b, 4)], gold)
    assert m["spearman@4"] == inner["spearman"]
    plain = objective(scored_spec())  # the wrapper is the inner kind to --best-by and the run
    assert wrapped.headline == plain.headline == "spearman" and wrapped.spec == plain.spec
    assert prefix(a.astype(np.float16), 4).dtype == np.float32  # a memory-mapped f16 corpus


def test_matryoshka_validation_loss_is_the_weighted_sum_over_the_prefixes() -> None:
    from sentcli.objectives import Encoded

    train = TrainConfig(matryoshka_dims=[16, 4], matryoshka_weights=[1.0, 2.0])
    wrapped = objective(scored_spec(), train)
    assert isinstance(wrapped, Matryoshka)
    inner = wrapped.inner
    a, b = unit(40, 16, 1), unit(40, 16, 2)
    gold = np.random.default_rng(3).random(40).astype(np.float32)
    enc = Encoded([[], []], gold)
    got = wrapped.scores(None, enc, [a, b], False)  # type: ignore[arg-type]
    full = inner.scores(None, enc, [a, b], False)["val_loss"]  # type: ignore[arg-type]
    cut4 = inner.scores(None, enc, [a[:, :4], b[:, :4]], False)["val_loss"]  # type: ignore[arg-type]
    assert got["val_loss"] == pytest.approx(full + 2.0 * cut4, rel=1e-6)
    assert got["spearman@4"] == inner.metrics([prefix(a, 4), prefix(b, 4)], gold)["spearman"]


def test_int8_codes_of_a_row_do_not_depend_on_its_batch() -> None:
    calib = unit(500, 24)
    ranges = qv.Ranges.of(calib, "m")
    batch = unit(64, 24, 5) * 1.5  # some values beyond the ranges: clipped, not rescaled
    alone = np.stack([qv.int8(batch[i : i + 1], ranges)[0] for i in range(64)])
    together = qv.int8(batch, ranges)
    assert together.dtype == np.int8 and np.array_equal(alone, together)
    assert together.max() == 127 and together.min() == -127  # clipped, not wrapped
    # dequantized codes come back within half a step of the (in-range) values
    inside = qv.int8(calib, ranges)
    err = np.abs(qv.dequantize(inside, ranges) - calib)
    assert np.all(err <= ranges.scale() / 2 + 1e-7)
    # a query's codes do not depend on its batch either (each row scaled on its own)
    mixed = unit(4, 24, 6) * np.array([[0.1], [1.0], [3.0], [0.5]], dtype=np.float32)
    one = np.stack([qv.int8_query(mixed[i : i + 1], ranges)[0] for i in range(4)])
    assert qv.int8_query(mixed, ranges).dtype == np.int8
    assert np.array_equal(qv.int8_query(mixed, ranges), one)
    # the scaled int8 query ranks codes as the float query ranks the dequantized vectors
    q = unit(3, 24, 9)
    ints = qv.int8_query(q, ranges).astype(np.int64) @ inside.astype(np.int64).T
    floats = q @ qv.dequantize(inside, ranges).T
    for i in range(3):
        top = np.argsort(-floats[i])[:10]
        assert set(np.argsort(-ints[i], kind="stable")[:10]) & set(top) >= set(top[:7])


def test_binary_packs_signs_eight_to_a_byte() -> None:
    v = np.array([[1, -1, 0.5, -0.1, 0, 2, -3, 4, 1, 1]], dtype=np.float32)
    bits = qv.binary(v)
    assert bits.dtype == np.uint8 and bits.shape == (1, 2)
    assert np.unpackbits(bits, axis=1)[0, :10].tolist() == [1, 0, 1, 0, 0, 1, 0, 1, 1, 1]
    # with ranges: each dimension's sign about its calibration mean, each row on its own
    batch = unit(50, 10, 3) + np.linspace(-0.5, 0.5, 10, dtype=np.float32)
    ranges = qv.Ranges.of(batch, "abc")
    assert ranges.center == pytest.approx(batch.mean(axis=0).tolist(), abs=1e-6)
    centred = np.unpackbits(qv.binary(batch, ranges), axis=1)[:, :10]
    assert np.array_equal(centred, batch > np.asarray(ranges.center, dtype=np.float32))
    assert np.array_equal(qv.binary(batch[7:8], ranges), qv.binary(batch, ranges)[7:8])
    some = np.array([1, 4, 9, 30])  # an index calibrates on the rows it holds (not blank ones)
    assert qv.Ranges.of(batch, "abc", some) == qv.Ranges.of(batch[some], "abc")
    assert qv.dequantize(qv.int8(batch, ranges), ranges).dtype == np.float32
    with pytest.raises(ConfigError, match="calibration needs at least one text; give a non-empty"):
        qv.Ranges.from_sink(RangeSink(), "abc")
    # half the rows above each mean, where plain signs are one-sided on shifted dimensions
    assert 0.3 < centred.mean() < 0.7 and np.unpackbits(qv.binary(batch), axis=1).mean() > 0


def test_ranges_files_round_trip_and_damaged_ones_are_refused(tmp_path: Path) -> None:
    ranges = qv.Ranges.of(unit(40, 8), "abc")
    path = tmp_path / "r.json"
    with pytest.raises(ConfigError, match="no such ranges file; make one with sentcli calibrate"):
        qv.Ranges.load(path)
    assert len(qv.fingerprint(DEFAULT_MODEL)) == 32  # what ranges files and indexes hold
    ranges.save(path)
    assert qv.Ranges.load(path) == ranges and ranges.center is not None
    d = json.loads(path.read_text())
    older = {k: v for k, v in d.items() if k != "center"}  # written before the means
    path.write_text(json.dumps(older))
    assert qv.Ranges.load(path).center is None
    path.write_text(json.dumps(d | {"center": d["center"][:3]}))
    with pytest.raises(ConfigError, match="damaged"):
        qv.Ranges.load(path)
    d["low"] = d["low"][:3]
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="damaged"):
        qv.Ranges.load(path)
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not a ranges file"):
        qv.Ranges.load(path)
    with pytest.raises(
        ConfigError,
        match=r"another model's vectors; calibrate with this model \(sentcli calibrate CORPUS "
        r"--model RUN\)",
    ):
        ranges.check("other", 8, "the ranges")
    path.write_text(ranges.to_json().replace('"version": 1', '"version": 2'))
    with pytest.raises(
        ConfigError, match="ranges format version 2 is not 1; calibrate again with this sentcli"
    ):
        qv.Ranges.load(path)
    good = json.loads(ranges.to_json())
    for broken in (  # no dimensions; a missing key
        good | {"dims": 0, "low": [], "high": [], "center": []},
        {k: v for k, v in good.items() if k != "low"},
    ):
        path.write_text(json.dumps(broken))
        with pytest.raises(ConfigError, match="damaged"):
            qv.Ranges.load(path)
    empty = r"^calibration needs at least one text; give a non-empty corpus$"
    with pytest.raises(ConfigError, match=empty):
        qv.Ranges.of(np.zeros((0, 8), dtype=np.float32), "abc")


def test_matryoshka_wrapper_hands_its_inner_objective_every_argument() -> None:
    calls: list[tuple[object, ...]] = []

    class Inner:
        outputs, views, scorable, headline = "vectors", 1, True, "spearman"
        spec = scored_spec()

        def head(self, width: int) -> None:
            return None

        def load(self, *args: object) -> tuple[object, ...]:
            calls.append(("load", *args))
            return args

        def encode(self, *args: object) -> tuple[object, ...]:
            calls.append(("encode", *args))
            return args

    wrapped = Matryoshka(Inner(), [8, 4], [], Dist())  # type: ignore[arg-type]
    assert wrapped.weights == [1.0, 1.0] and wrapped.outputs == "vectors"  # equal by default
    wrapped.load("shape", "splits", "names", True)  # type: ignore[arg-type]
    wrapped.encode("ds", "tok", 16, "targets")  # type: ignore[arg-type]
    assert calls == [
        ("load", "shape", "splits", "names", True),
        ("encode", "ds", "tok", 16, "targets"),
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """600 unit vectors of the default model's width, in 30 tight clusters (so that a
    small graph finds every true neighbour), with their texts."""
    root = tmp_path_factory.mktemp("corpus")
    centres = np.repeat(unit(30, 384, 4), 20, axis=0)
    v = centres + 0.3 * unit(600, 384, 5)
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    np.save(root / "v.npy", v)
    (root / "t.txt").write_text("".join(f"row {i}\n" for i in range(600)), "utf-8")
    return root / "v.npy", root / "t.txt", v


def brute(index: ann.AnnIndex, v: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Every query's similarity to every row as the graph stores them (f16 cosine, the i8
    inner product of the scaled query, or 1 - 2·Hamming/D), by brute force."""
    if index.dtype == "i8":
        assert index.ranges is not None
        codes = qv.int8(v, index.ranges).astype(np.int64)
        ip = qv.int8_query(q, index.ranges).astype(np.int64) @ codes.T
        return ann._similarity((1 - ip).astype(np.float32), q, index)
    if index.dtype == "b1":
        bq, bv = qv.binary(q, index.ranges), qv.binary(v, index.ranges)  # about the means
        diff = np.unpackbits(bq[:, None, :] ^ bv[None, :, :], axis=2)
        return np.asarray(1 - 2 * diff.sum(axis=2) / v.shape[1], dtype=np.float32)
    return q @ v.astype(np.float16).astype(np.float32).T


@pytest.mark.parametrize("dtype", ["f16", "i8", "b1"])
def test_an_index_round_trips_and_rescoring_returns_the_float_top_k(
    tmp_path: Path, corpus: tuple[Path, Path, np.ndarray], dtype: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(ann, "BUILD_THREADS", 1)
    npy, texts, v = corpus
    meta, _ = api.index_build(str(npy), tmp_path / "x.index", dtype=dtype, texts=str(texts))
    assert meta["rows"] == meta["indexed"] == 600 and meta["dims"] == 384
    index = ann.open_index(tmp_path / "x.index")  # memory-mapped from disk
    assert index.text(17) == "row 17" and index.f16.dtype == np.float16
    if dtype != "f16":  # i8's steps, b1's thresholds: calibrated on the corpus at build
        assert index.ranges is not None and index.ranges.center is not None
    meta_path = tmp_path / "x.index" / ann.META
    assert json.loads(meta_path.read_text())["version"] == 2  # b1 bits about the means
    for version, opens in ((1, True), (3, False)):  # 1: built before the means, still read
        meta_path.write_text(json.dumps(meta | {"version": version}))
        if opens:
            ann.open_index(tmp_path / "x.index")
        else:
            with pytest.raises(ConfigError, match="index version 3 is not 2; build it again"):
                ann.open_index(tmp_path / "x.index")
    meta_path.write_text(json.dumps(meta))
    if dtype == "b1":  # its bits' thresholds: without them it would answer, wrongly
        saved = (tmp_path / "x.index" / ann.RANGES).read_bytes()
        (tmp_path / "x.index" / ann.RANGES).unlink()
        with pytest.raises(ConfigError, match="is damaged"):
            ann.open_index(tmp_path / "x.index")
        (tmp_path / "x.index" / ann.RANGES).write_bytes(saved)
    q = v[::30] + 0.1 * unit(20, 384, 8)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    # one thread builds the same graph every time: the loaded index answers as the graph
    # built in memory from the same vectors does
    from usearch.index import Index

    mem = Index(ndim=384, metric=ann.METRIC[dtype], dtype=dtype, connectivity=16)
    mem.add(np.arange(600), ann._codes(v, dtype, index.ranges), threads=1)
    found = mem.search(ann._codes(q, dtype, index.ranges, query=True), 5)
    scores, rows = ann.search(index, q, 5, 0)
    assert np.array_equal(np.sort(rows, axis=1), np.sort(np.asarray(found.keys), axis=1))
    want = ann._similarity(np.asarray(found.distances, dtype=np.float32), q, index)
    np.testing.assert_allclose(scores, -np.sort(-want, axis=1), rtol=1e-6)
    if dtype != "b1":  # and, on these clusters, what a brute-force search finds
        full = brute(index, v, q)
        np.testing.assert_allclose(scores, -np.sort(-full, axis=1)[:, :5], rtol=1e-4)
    # rescoring: the exact top 5 by the f16 vectors' cosine among the graph's 5×4 candidates
    scores, rows = ann.search(index, q, 5, 4)
    cands = index.graph.search(ann._codes(q, dtype, index.ranges, query=True), 20).keys
    f16 = v.astype(np.float16).astype(np.float32)
    for j in range(20):
        cos = f16[cands[j]] @ q[j]
        top = cands[j][np.lexsort((cands[j], -cos))][:5]
        assert rows[j].tolist() == top.tolist()
        np.testing.assert_allclose(scores[j], f16[top] @ q[j], rtol=1e-5)


def test_index_search_from_the_command_line_and_its_refusals(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    shutil.copy(DATA / "sentences.txt", corpus)
    idx = tmp_path / "c.index"
    built = runner.invoke(app, ["index", "build", str(corpus), "-o", str(idx), "--quiet"])
    assert built.exit_code == 0, built.output
    assert "i8, 384 dims, 8 rows" in built.stdout
    q = tmp_path / "q.txt"
    q.write_text("A child is riding a horse.\n", "utf-8")
    got = runner.invoke(app, ["search", str(q), "--index", str(idx), "-k", "1", "--rescore", "2"])
    assert got.exit_code == 0, got.output
    assert got.stdout.split("\t")[3:] == ["2", "A child is riding a horse.\n"]
    assert_refused(
        runner.invoke(app, ["index", "build", str(corpus), "-o", str(idx)]), "pass --overwrite"
    )
    again = runner.invoke(app, ["index", "build", str(corpus), "-o", str(idx), "--overwrite"])
    assert again.exit_code == 0, again.output
    # a model other than the index's is refused (the fingerprint covers the tokenizer too)
    other = tmp_path / "other"
    shutil.copytree(DEFAULT_MODEL, other)
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text() + " ")
    assert_refused(
        runner.invoke(app, ["search", str(q), "--index", str(idx), "--model", str(other)]),
        "was built with another model",
    )
    assert_refused(runner.invoke(app, ["search", str(q)]), "--corpus FILE (exact) or --index")
    assert_refused(
        runner.invoke(app, ["search", str(q), "--index", str(tmp_path)]), "not a complete sentcli"
    )
    (tmp_path / "file").write_text("x")
    assert_refused(
        runner.invoke(app, ["index", "build", str(corpus), "-o", str(tmp_path / "file")]),
        "is a file",
    )
    assert_refused(
        runner.invoke(
            app, ["index", "build", str(corpus), "-o", str(tmp_path / "n"), "--dims", "999"]
        ),
        "--dims 999",
    )


def test_the_default_model_is_trained_for_its_prefixes(tmp_path: Path) -> None:
    saved = json.loads((DEFAULT_MODEL / "config.json").read_text())
    assert saved["train"]["matryoshka_dims"] == [384, 256, 128, 64, 32]
    out = tmp_path / "v.npy"
    got = runner.invoke(app, ["embed", str(DATA / "sentences.txt"), "--dims", "32", "-o", str(out)])
    assert got.exit_code == 0, got.output
    assert "warning" not in got.stderr and np.load(out).shape == (8, 32)


def test_dims_cut_and_warn_and_quantized_embeddings(tmp_path: Path) -> None:
    out = tmp_path / "v.npy"
    got = runner.invoke(app, ["embed", str(DATA / "sentences.txt"), "--dims", "48", "-o", str(out)])
    assert got.exit_code == 0, got.output
    assert "was not trained for --dims 48" in got.stderr
    v = np.load(out)
    assert v.shape == (8, 48)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert_refused(
        runner.invoke(app, ["embed", str(DATA / "sentences.txt"), "--dims", "385"]),
        "the model's vectors are 384 wide",
    )
    ranges = tmp_path / "r.json"
    cal = runner.invoke(app, ["calibrate", str(DATA / "sentences.txt"), "-o", str(ranges)])
    assert cal.exit_code == 0, cal.output
    codes = tmp_path / "c.npy"
    args = ["embed", str(DATA / "sentences.txt"), "--quantize", "int8", "--ranges", str(ranges)]
    assert runner.invoke(app, [*args, "-o", str(codes)]).exit_code == 0
    c = np.load(codes)
    full = np.load(api.embed(str(DATA / "sentences.txt"), tmp_path / "f.npy").output or "")
    assert c.dtype == np.int8 and np.array_equal(c, qv.int8(full, qv.Ranges.load(ranges)))
    assert_refused(
        runner.invoke(app, ["embed", str(DATA / "sentences.txt"), "--quantize", "int8"]),
        "needs --ranges",
    )
    assert_refused(runner.invoke(app, [*args, "--dims", "64"]), "calibrate with --dims 64")
    bits = tmp_path / "b.npy"
    b = ["embed", str(DATA / "sentences.txt"), "--quantize", "binary", "-o", str(bits)]
    assert runner.invoke(app, b).exit_code == 0
    assert np.array_equal(np.load(bits), qv.binary(full))
    centred = [
        "embed",
        str(DATA / "sentences.txt"),
        "--quantize",
        "binary",
        "--ranges",
        str(ranges),
    ]
    assert runner.invoke(app, [*centred, "-o", str(tmp_path / "cb.npy")]).exit_code == 0
    assert np.array_equal(np.load(tmp_path / "cb.npy"), qv.binary(full, qv.Ranges.load(ranges)))


def test_evaluate_scores_a_prefix(tmp_path: Path) -> None:
    full = api.evaluate(None, [TaskConfig("sts", str(DATA / "stsb"))], plots=tmp_path)
    cut = api.evaluate(None, [TaskConfig("sts", str(DATA / "stsb"))], plots=tmp_path, dims=48)
    assert cut["dims"] == 48 and "not trained for --dims 48" in cut["warning"]
    assert cut["tasks"]["sts"]["spearman"] < full["tasks"]["sts"]["spearman"]
    trained = api.evaluate(None, [TaskConfig("sts", str(DATA / "stsb"))], plots=tmp_path, dims=64)
    assert trained["dims"] == 64 and "warning" not in trained  # the default model's widths


def test_matryoshka_training_records_its_widths(tmp_path: Path, tokenizer_path: Path) -> None:
    opts = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32, "max_steps": 2}
    opts |= {"matryoshka_dims": [16, 8, 4], "max_samples_per_task": 64, "eval_every": 2}
    result = api.train_encoder(
        f"sts={DATA / 'stsb'}", tmp_path / "m", tokenizer=tokenizer_path, options=opts
    )
    assert result.config.train.matryoshka_dims == [16, 8, 4]
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["train"]["matryoshka_dims"] == [16, 8, 4]
    rows = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["metrics"] for r in rows if r.get("kind") == "eval"]
    assert {"sts/spearman@8", "sts/spearman@4"} <= set(evals[-1])
    # the trained widths are not warned about; others are
    emb = InferenceOptions(dims=8)
    events: list[object] = []
    res = api.embed(
        str(DATA / "sentences.txt"), tmp_path / "v.npy", tmp_path / "m", options=emb,
        on_event=events.append,
    )  # fmt: skip
    assert np.load(res.output or "").shape == (8, 8)
    assert not [e for e in events if type(e).__name__ == "InferWarning"]


def test_log_to_tensorboard_writes_the_scalars_of_metrics_jsonl(
    tmp_path: Path, tokenizer_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sentcli.training.tracking import scalars

    opts = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32, "max_steps": 4}
    opts |= {"max_samples_per_task": 64, "eval_every": 2, "log_every": 2, "log_to": "tensorboard"}
    api.train_mtl(
        [TaskConfig("sts", str(DATA / "stsb")), TaskConfig("topic", str(DATA / "ag_news"))],
        tmp_path / "m", tokenizer=tokenizer_path, options=opts,
    )  # fmt: skip
    events = EventAccumulator(str(tmp_path / "m" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    rows = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    want = {(t, r["step"], v) for r in rows for t, v in scalars(r).items()}
    assert {"train/loss/sts", "train/loss/topic", "train/lr", "eval/sts/spearman"} <= tags
    assert any(t.startswith("grad_norm/") and t.endswith("/max") for t in tags)
    got = {(t, e.step, e.value) for t in tags for e in events.Scalars(t)}
    assert {(t, s) for t, s, _ in got} == {(t, s) for t, s, _ in want}  # every number, once
    for t, s, v in want:  # stored as float32
        assert any(g[:2] == (t, s) and g[2] == pytest.approx(v, rel=1e-6) for g in got)


def test_keep_best_keeps_the_evaluation_with_the_lowest_mean_validation_loss(
    tmp_path: Path, tokenizer_path: Path
) -> None:
    from sentcli import checkpoint as ckpt
    from sentcli.metrics import best_eval, history_of, selection_score

    assert selection_score({"a/val_loss": 1.0, "b/val_loss": 3.0, "a/accuracy": 0.9}) == 2.0
    assert selection_score({"val_loss": 0.5}) == 0.5 and selection_score({"x": 1.0}) is None
    opts = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32, "max_steps": 8}
    opts |= {"max_samples_per_task": 64, "eval_every": 1, "lr": 0.05, "keep_best": True}
    result = api.train_mtl(
        [TaskConfig("sts", str(DATA / "stsb")), TaskConfig("topic", str(DATA / "ag_news"))],
        tmp_path / "m", tokenizer=tokenizer_path, options=opts,
    )  # fmt: skip
    rows = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    evals = [(selection_score(r["metrics"]), r["step"]) for r in rows if r["kind"] == "eval"]
    score, step = min(e for e in evals if e[1] > 0)  # evaluations during training
    assert ckpt.best_score(tmp_path / "m") == pytest.approx(score)
    assert best_eval(history_of(rows)) == (step, pytest.approx(score))  # the step losses.png marks
    best, best_step = ckpt.load_weights(tmp_path / "m", ckpt.BEST)
    assert best_step == step
    _, model, _, loaded_step = ckpt.load_run(tmp_path / "m")  # later loads take the best
    assert loaded_step == step
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    last, last_step = ckpt.load_weights(tmp_path / "m")  # the last weights stay for --resume
    assert last_step == result.steps
    assert result.test["topic"]["accuracy"] >= 0  # the test pass ran on the best weights
