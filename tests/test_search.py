"""search: exact top-k against brute force, the output formats, the corpus cache (reused,
never stale, never half-written) and bad input."""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sentcli import api
from sentcli.cli import app
from sentcli.config import InferenceOptions
from sentcli.errors import ConfigError
from sentcli.inference import search as search_mod
from sentcli.inference.outputs import escape_tsv
from sentcli.inference.search import CorpusIndex, top_k

from helpers import DATA, assert_refused

runner = CliRunner()


def index_of(vectors: np.ndarray) -> CorpusIndex:
    offsets = np.zeros(len(vectors) + 1, dtype=np.int64)
    return CorpusIndex(Path("."), vectors, offsets, np.zeros(0, np.uint8), None)


def test_top_k_is_exact_across_corpus_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((1000, 16)).astype(np.float32)
    corpus[500] = corpus[10]  # a tie: the lower row comes first
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    queries[0] = corpus[10]
    monkeypatch.setattr(search_mod, "SCORE_BLOCK", 7 * 256)  # 4 blocks of 256 rows
    scores, rows = top_k(index_of(corpus), queries, k=5)
    full = queries @ corpus.T
    for q in range(7):
        expect = sorted(range(1000), key=lambda i: (-full[q, i], i))[:5]
        assert rows[q].tolist() == expect
        np.testing.assert_allclose(scores[q], full[q, expect], rtol=1e-6)
    assert rows[0, :2].tolist() == [10, 500]
    s, r = top_k(index_of(corpus[:3]), queries, k=10)  # k above the corpus size
    assert s.shape == r.shape == (7, 3)


def test_tsv_fields_escape_tabs_newlines_and_backslashes() -> None:
    assert escape_tsv("a\tb\nc\\d\re") == "a\\tb\\nc\\\\d\\re"


def corpus_file(tmp_path: Path) -> Path:
    lines = (DATA / "sentences.txt").read_text("utf-8").splitlines()
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join([*lines, "tab\there", "back\\slash"]) + "\n", "utf-8")
    return path


def test_search_formats_threshold_and_stdin(tmp_path: Path) -> None:
    corpus, cache = corpus_file(tmp_path), tmp_path / "cache"
    queries = tmp_path / "q.txt"
    queries.write_text("A child is riding a horse.\ntab\there\n", "utf-8")
    args = ["search", str(queries), "--corpus", str(corpus), "--cache", str(cache), "-k", "3"]
    tsv = runner.invoke(app, args)
    assert tsv.exit_code == 0, tsv.output
    lines = tsv.stdout.splitlines()
    assert len(lines) == 6 and all(len(x.split("\t")) == 5 for x in lines)
    first = lines[0].split("\t")
    assert first[:2] == ["1", "1"] and first[3:] == ["2", "A child is riding a horse."]
    assert lines[3].split("\t")[3:] == ["9", "tab\\there"]  # the exact text ranks first
    got = runner.invoke(app, [*args, "--format", "jsonl", "--threshold", "0.99"])
    objs = [json.loads(x) for x in got.stdout.splitlines()]
    assert {(o["query"], o["row"], o["text"]) for o in objs} >= {(2, 9, "tab\there")}
    assert all(o["score"] >= 0.99 for o in objs) and len(objs) < 6
    piped = runner.invoke(app, [*args[:1], "-", *args[2:], "-k", "1"], input="tab\there\n")
    assert piped.exit_code == 0 and piped.stdout.split("\t")[3] == "9"


def test_corpus_vectors_are_cached_and_never_stale(tmp_path: Path) -> None:
    corpus, cache = corpus_file(tmp_path), tmp_path / "cache"

    def run() -> search_mod.CorpusIndex:
        out = tmp_path / "result.tsv"
        return api.search(str(corpus), str(corpus), out, k=1, cache=cache)[1]

    first = run()
    assert first.built is not None and first.built.stats.texts == 10
    folders = sorted((cache / "search").iterdir())
    assert [f.name for f in folders] == [first.folder.name]  # no temporary folder left
    again = run()
    assert again.built is None and again.folder == first.folder
    np.testing.assert_array_equal(again.rows(3, 99), np.asarray(first.vectors)[3:])  # read
    rows = (tmp_path / "result.tsv").read_text("utf-8").splitlines()
    assert [r.split("\t")[3] for r in rows] == [str(i) for i in range(1, 11)]  # itself first
    corpus.write_text("only one line now\n", "utf-8")  # same name, new bytes
    changed = run()
    assert changed.built is not None and changed.folder != first.folder
    assert len(changed) == 1
    assert (
        (tmp_path / "result.tsv").read_text("utf-8").splitlines()[0].endswith("only one line now")
    )


def _truncate(folder: Path) -> None:
    (folder / "vectors.npy").write_bytes((folder / "vectors.npy").read_bytes()[:40])


def _garbage(name: str) -> Callable[[Path], int]:
    return lambda folder: (folder / name).write_bytes(b"not what sentcli wrote" * 10)


def _split_utf8(folder: Path, row: int = 1) -> None:
    """The bytes around `row`'s start become an é: an offset inside a character."""
    at = int(np.load(folder / "offsets.npy")[row])
    data = bytearray((folder / "texts.bin").read_bytes())
    data[at - 1 : at + 1] = "é".encode()
    (folder / "texts.bin").write_bytes(bytes(data))


DAMAGE = {
    "truncated vectors": (_truncate, "has an unreadable vectors.npy (ValueError)"),
    "garbage vectors": (_garbage("vectors.npy"), "has an unreadable vectors.npy"),
    "garbage offsets": (_garbage("offsets.npy"), "has an unreadable offsets.npy"),
    "garbage meta": (_garbage("meta.json"), "has an unreadable meta.json"),
    "another width": (lambda f: np.save(f / "vectors.npy", np.ones((10, 768), "f4")), "(10, 768)"),
    "one dimension": (lambda f: np.save(f / "vectors.npy", np.ones(3840, "f4")), "(3840,)"),
    "fewer rows": (lambda f: np.save(f / "vectors.npy", np.ones((2, 384), "f4")), "(2, 384)"),
    "float64": (lambda f: np.save(f / "vectors.npy", np.ones((10, 384))), "float64 vectors"),
    "no vectors": (lambda f: (f / "vectors.npy").unlink(), "has no vectors.npy"),
    "no texts": (lambda f: (f / "texts.bin").unlink(), "has no texts.bin"),
    "no meta": (lambda f: (f / "meta.json").unlink(), "has no meta.json"),
    "cut texts": (lambda f: (f / "texts.bin").write_bytes(b"x"), "do not match its texts.bin"),
    "no blank rows": (lambda f: (f / "blank.npy").unlink(), "has no blank.npy"),
    "a file": (lambda f: (shutil.rmtree(f), f.write_text("x")), "is not a folder"),
    "split UTF-8": (_split_utf8, "split a UTF-8 character"),
    "split UTF-8, last row": (lambda f: _split_utf8(f, -2), "split a UTF-8 character"),
    "offsets one short": (
        lambda f: np.save(f / "offsets.npy", np.load(f / "offsets.npy")[:-1]),
        "holds (10,) text offsets for 10 rows",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cache_folder_is_embedded_again_and_said_so(tmp_path: Path, damage: str) -> None:
    corpus, cache = corpus_file(tmp_path), tmp_path / "cache"
    args = ["search", str(corpus), "--corpus", str(corpus), "-k", "2", "--cache", str(cache)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    (folder,) = (cache / "search").iterdir()
    harm, reason = DAMAGE[damage]
    harm(folder)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.stdout == first.stdout  # the same results, from a rebuilt index
    warning = [line for line in again.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and reason in warning[0], again.stderr
    assert "embedded again" in warning[0] and "indexed the corpus" in again.stderr
    assert [f.name for f in (cache / "search").iterdir()] == [folder.name]
    third = runner.invoke(app, args)  # and the rebuilt folder is reused, without a warning
    assert third.exit_code == 0 and "rows from the cache" in third.stderr
    assert "warning" not in third.stderr and third.stdout == first.stdout


def test_an_unreadable_cache_folder_is_an_error_not_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus, cache = corpus_file(tmp_path), tmp_path / "cache"
    api.search(str(corpus), str(corpus), tmp_path / "r.tsv", k=1, cache=cache)
    (folder,) = (cache / "search").iterdir()

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(folder / "vectors.npy"))

    monkeypatch.setattr(search_mod.np, "load", denied)
    with pytest.raises(PermissionError):  # the CLI reports it as an unreadable input
        api.search(str(corpus), str(corpus), tmp_path / "r.tsv", k=1, cache=cache)
    assert sorted(p.name for p in folder.iterdir()) == [
        "blank.npy", "meta.json", "offsets.npy", "texts.bin", "vectors.npy"
    ]  # fmt: skip


def test_the_cache_key_covers_the_tokenizer(tmp_path: Path) -> None:
    corpus, model = corpus_file(tmp_path), tmp_path / "model"
    shutil.copytree(api.DEFAULT_MODEL, model)
    opts = InferenceOptions()
    key = search_mod.corpus_key(corpus, None, model, None, opts)
    assert search_mod.corpus_key(corpus, None, model, None, opts) == key
    tok = json.loads((model / "tokenizer.json").read_text("utf-8"))
    tok["normalizer"]["lowercase"] = not tok["normalizer"]["lowercase"]
    (model / "tokenizer.json").write_text(json.dumps(tok), "utf-8")  # same weights and config
    assert search_mod.corpus_key(corpus, None, model, None, opts) != key


BAD_SEARCH = [
    (["--corpus", "{tmp}/missing.txt"], "no such file"),
    (["--corpus", "-"], "the corpus must be a file"),
    (["--corpus", "{corpus}", "-k", "0"], "-k must be at least 1"),
    (["--corpus", "{corpus}", "--threshold", "2"], "between -1 and 1"),
    (["--corpus", "{corpus}", "-o", "{corpus}"], "is the input file"),
    (
        ["--corpus", "{corpus}", "--corpus-column", "text"],
        "is read as one text per line; --corpus-column applies to .csv",
    ),
    (["--corpus", "{corpus}", "--model", "{tmp}/nope"], "is not a run folder"),
    (["--corpus", "{corpus}", "--cache", "{corpus}/sub"], "cannot write the corpus cache"),
]


@pytest.mark.parametrize("extra,message", BAD_SEARCH)
def test_bad_search_input_exits_2_before_any_embedding(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    corpus, cache = corpus_file(tmp_path), tmp_path / "cache"
    before = corpus.read_bytes()
    values = {"tmp": tmp_path, "corpus": corpus}
    args = ["search", str(corpus), "--cache", str(cache), *[a.format(**values) for a in extra]]
    result = runner.invoke(app, args)
    assert_refused(result, message)
    assert not cache.exists() and corpus.read_bytes() == before
    missing = runner.invoke(app, ["search", str(tmp_path / "nope.txt"), "--corpus", str(corpus)])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_a_table_corpus_takes_the_queries_text_column_by_default(tmp_path: Path) -> None:
    corpus = tmp_path / "faq.csv"
    corpus.write_text("id,question\n1,How do I get a refund?\n2,Where is my parcel?\n")
    queries = tmp_path / "q.csv"
    queries.write_text("question\nI want my money back\n")
    args = ["search", str(queries), "--corpus", str(corpus), "--text-column", "question"]
    result = runner.invoke(app, [*args, "--cache", str(tmp_path / "cache"), "-k", "2"])
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert sorted(r[4] for r in rows) == ["How do I get a refund?", "Where is my parcel?"]


def test_top_k_of_many_queries_goes_in_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    corpus = rng.standard_normal((2000, 16)).astype(np.float32)
    queries = rng.standard_normal((1000, 16)).astype(np.float32)
    monkeypatch.setattr(search_mod, "SCORE_BLOCK", 1 << 16)  # groups of 63 queries
    scores, rows = top_k(index_of(corpus), queries, k=3)
    full = queries @ corpus.T
    np.testing.assert_array_equal(rows[:, 0], full.argmax(axis=1))
    np.testing.assert_allclose(scores[:, 0], full.max(axis=1), rtol=1e-6)
    assert rows.shape == (1000, 3) and (np.diff(scores, axis=1) <= 0).all()


def test_blank_corpus_rows_keep_their_numbers_and_are_never_returned(tmp_path: Path) -> None:
    """An empty and a whitespace-only corpus line: rows stay numbered as the file's lines,
    neither is ever a result (their vector of no words is close to many queries), and one
    warning says so; a blank query line gets its results and is counted as blank."""
    corpus, cache = tmp_path / "corpus.txt", tmp_path / "cache"
    lines = (DATA / "sentences.txt").read_text("utf-8").splitlines()
    corpus.write_text("\n".join([lines[0], "", lines[1], "   ", *lines[2:]]) + "\n", "utf-8")
    queries = tmp_path / "q.txt"
    queries.write_text("A child rides a horse.\n \n", "utf-8")
    args = ["search", str(queries), "--corpus", str(corpus), "-k", "20", "--cache", str(cache)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == ["1"] * 8 + ["2"] * 8  # every non-blank row, per query
    assert {int(r[3]) for r in rows} == {1, 3, *range(5, 11)}  # never rows 2 and 4
    assert rows[0][3] in ("1", "3")  # the horse sentences keep their line numbers
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: 2 of 10 corpus rows are blank (empty or whitespace) and are never returned",
        "warning: 1 of 2 texts were blank (empty or whitespace); each still has its row, in "
        "input order",
    ]


def test_a_corpus_that_changes_while_it_is_embedded_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache is named by the corpus's bytes as hashed: vectors of other bytes must not be
    stored under that name. A rewrite during the embedding is refused (exit 2), nothing is
    cached, and the next search embeds the file as it now is."""
    corpus, cache = corpus_file(tmp_path), tmp_path / "cache"
    real = search_mod.run_inference

    def rewritten_meanwhile(*args: object, **kwargs: object) -> object:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        corpus.write_text("a new first line\n" + corpus.read_text("utf-8"), "utf-8")
        return out

    monkeypatch.setattr(search_mod, "run_inference", rewritten_meanwhile)
    args = ["search", str(corpus), "--corpus", str(corpus), "-k", "1", "--cache", str(cache)]
    result = runner.invoke(app, args)
    assert_refused(result, "changed while it was embedded; nothing was cached")
    assert not list((cache / "search").iterdir())
    monkeypatch.undo()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and again.stdout.splitlines()[0].endswith("a new first line")


def test_half_built_indexes_of_killed_searches_are_swept(tmp_path: Path) -> None:
    import socket

    corpus, cache = corpus_file(tmp_path), tmp_path / "cache"
    host = socket.gethostname()
    (cache / "search" / f"abc.tmp{host}-999999999").mkdir(parents=True)  # no such process
    (cache / "search" / f"abc.tmp{host}-1").mkdir()  # pid 1 is alive: left alone
    (cache / "search" / "abc.tmpother-host-999999999").mkdir()  # another machine's: left
    api.search(str(corpus), str(corpus), tmp_path / "r.tsv", k=1, cache=cache)
    left = sorted(p.name for p in (cache / "search").iterdir())
    assert len(left) == 3 and f"abc.tmp{host}-999999999" not in left


def test_top_k_is_exact_and_skips_blank_rows_in_every_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Brute force against blocks of 256 rows: blank rows (at a block's start and end)
    never come back, and asking for more than the corpus's other rows gives them all."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((700, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[[3, 256, 511, 600]] + 0.01
    blank = np.array([0, 255, 256, 511, 699], dtype=np.int64)
    index = index_of(vectors)
    index.blank = blank
    monkeypatch.setattr(search_mod, "SCORE_BLOCK", 1024)  # small blocks: many of them
    scores, rows = top_k(index, queries, 5)
    full = queries @ vectors.T
    full[:, blank] = -np.inf
    want = np.argsort(-full, axis=1, kind="stable")[:, :5]
    assert np.array_equal(rows, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, 1), rtol=1e-6)
    everything = top_k(index, queries[:1], 10_000)[1]
    assert everything.shape == (1, 695) and not set(everything[0]) & set(blank.tolist())
    assert top_k(index, queries[:0], 3)[0].shape == (0, 3)
    index.blank = np.arange(700, dtype=np.int64)  # nothing to return
    s, r = top_k(index, queries, 3)
    assert s.shape == r.shape == (4, 0) and s.dtype == np.float32 and r.dtype == np.int64


def test_json_lines_round_scores_to_six_places_and_keep_the_text(tmp_path: Path) -> None:
    corpus, cache = corpus_file(tmp_path), tmp_path / "cache"
    queries = tmp_path / "q.txt"
    queries.write_text("Un enfant monte à cheval.\n", "utf-8")
    out = tmp_path / "hits.jsonl"
    api.search(str(queries), str(corpus), out, k=2, fmt="jsonl", cache=cache)
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [r["rank"] for r in rows] == [1, 2] and all(r["query"] == 1 for r in rows)
    assert all(isinstance(r["score"], float) and r["score"] == round(r["score"], 6) for r in rows)
    assert all(len(str(r["score"]).split(".")[1]) <= 6 for r in rows)
    meta = json.loads(next((cache / "search").iterdir()).joinpath("meta.json").read_text())
    assert meta["column"] is None and meta["model"] == str(api.DEFAULT_MODEL.resolve())
    assert meta["corpus"] == str(corpus.resolve()) and meta["rows"] == 10


def test_a_row_cut_outside_the_checked_sample_is_a_damaged_cache_not_a_crash(
    tmp_path: Path,
) -> None:
    """open_index checks a sample of the offsets; a row it did not check that cuts a UTF-8
    character is refused with the cache folder to delete when it is read."""
    texts = np.frombuffer("aé".encode(), dtype=np.uint8)  # a, then é's two bytes
    offsets = np.array([0, 2, 3], dtype=np.int64)  # row 0 ends inside é
    index = CorpusIndex(tmp_path, np.zeros((2, 4), np.float32), offsets, texts, None)
    with pytest.raises(ConfigError, match=f"corpus cache {tmp_path} is damaged"):
        index.text(0)
    offsets[1] = 1
    assert (index.text(0), index.text(1)) == ("a", "é")


def test_every_row_start_of_a_corpus_up_to_the_sample_size_is_checked(tmp_path: Path) -> None:
    """A cut inside a character at row 5 of 60 (which 50 evenly spaced rows would miss) is
    found when the index is opened: up to SPLIT_SAMPLE rows, every row's start is read."""
    corpus, cache = tmp_path / "corpus.txt", tmp_path / "cache"
    corpus.write_text("".join(f"line {i} of the corpus\n" for i in range(60)), "utf-8")
    api.search(str(corpus), str(corpus), tmp_path / "r.tsv", k=1, cache=cache)
    (folder,) = (cache / "search").iterdir()
    width = search_mod.open_index(folder, 384).vectors.shape[1]
    _split_utf8(folder, 5)
    with pytest.raises(search_mod.DamagedIndex, match="split a UTF-8 character"):
        search_mod.open_index(folder, width)


def test_a_corpus_gone_while_embedded_counts_as_changed(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\n")
    read = search_mod._stamp(corpus)
    assert not search_mod._moved(corpus, read)
    corpus.unlink()
    assert search_mod._moved(corpus, read)


def test_a_full_disk_while_indexing_is_one_error_and_leaves_no_half_built_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of space while the index is written: ConfigError naming the cache and the way out,
    the half-built folder removed; another OS error is raised as it is (also removed)."""
    import errno

    corpus, cache = corpus_file(tmp_path), tmp_path / "cache"

    def fail(code: int) -> Callable[..., None]:
        def publish(*args: object) -> None:
            raise OSError(code, os.strerror(code))

        return publish

    monkeypatch.setattr(search_mod, "_publish", fail(errno.ENOSPC))
    with pytest.raises(ConfigError) as full:
        api.search(str(corpus), str(corpus), tmp_path / "r.tsv", k=1, cache=cache)
    assert str(full.value).startswith(f"the corpus cache in {cache} is on a full disk; free some")
    assert list((cache / "search").iterdir()) == []
    monkeypatch.setattr(search_mod, "_publish", fail(errno.EIO))
    with pytest.raises(OSError) as other:
        api.search(str(corpus), str(corpus), tmp_path / "r.tsv", k=1, cache=cache)
    assert other.value.errno == errno.EIO and list((cache / "search").iterdir()) == []
