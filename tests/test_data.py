import gzip
import json
from pathlib import Path

import pytest

from sentcli.data import tasks
from sentcli.errors import DataError

from helpers import write_csv


def test_folder_with_labels_txt_and_integer_labels(topic_dir: Path) -> None:
    td = tasks.load_task("topic", str(topic_dir), val_fraction=0.25, seed=0)
    assert td.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert len(td.train) == 180 and len(td.validation) == 60 and len(td.test) == 80
    assert td.train.column_names == ["text", "label"]
    assert set(list(td.train["label"])) <= {0, 1, 2, 3}


def test_validation_split_is_seeded(topic_dir: Path) -> None:
    a = list(tasks.load_task("t", str(topic_dir), seed=3).validation["text"])
    b = list(tasks.load_task("t", str(topic_dir), seed=3).validation["text"])
    c = list(tasks.load_task("t", str(topic_dir), seed=4).validation["text"])
    assert a == b and a != c


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "parquet", "csv.gz"])
def test_file_formats_and_string_labels(tmp_path: Path, fmt: str) -> None:
    rows = [(f"review number {i}", "pos" if i % 2 else "neg") for i in range(20)]
    path = tmp_path / f"d.{fmt}"
    if fmt == "tsv":
        path.write_text("sentence\tsentiment\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"review": t, "class": y}) + "\n" for t, y in rows))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(
            pa.table({"content": [t for t, _ in rows], "target": [y for _, y in rows]}), path
        )
    else:
        with gzip.open(path, "wt") as f:
            f.write("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    td = tasks.load_task("s", str(path), val_fraction=0.2)
    assert td.label_names == ["neg", "pos"]
    text, label = td.train[0]["text"], td.train[0]["label"]
    assert int(text.split()[-1]) % 2 == label


def test_text_na_stays_a_text(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [("NA", 0), ("null", 1), ("fine", 0), ("ok", 1)])
    td = tasks.load_task("s", str(path), val_fraction=0.5)
    assert sorted(list(td.train["text"]) + list(td.validation["text"])) == [
        "NA",
        "fine",
        "null",
        "ok",
    ]


BAD = [
    ("missing.csv", None, "no such file"),
    ("empty.csv", b"", "the file is empty"),
    ("header_only.csv", b"text,label\n", "no rows"),
    ("latin1.csv", "text,label\ncaf\xe9 au lait,0\n".encode("latin-1"), "not UTF-8 (line 2)"),
    ("ragged.csv", b"text,label\na,0\nb,1,extra\n", "cannot be parsed"),
    ("nolabel.csv", b"text,stars\na,1\nb,2\n", "no label column found"),
    ("negative.csv", b"text,label\na,0\nb,-1\n", "row 2 has label -1, outside"),
    ("nulllabel.csv", b"text,label\na,0\nb,\n", "row 2 has no label"),
    ("notext.csv", b"body,label\na,0\nb,1\n", "no text column found"),
    ("one_class.csv", b"text,label\na,0\nb,0\n", "only one label"),
    ("data.xml", b"<a/>", "unsupported file type"),
]


@pytest.mark.parametrize("name,content,message", BAD, ids=[b[0] for b in BAD])
def test_bad_files_name_the_problem(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tasks.load_task("t", str(path))


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    whole = gzip.compress(b"text,label\n" + b"some text,0\n" * 2000)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        tasks.load_task("t", str(path))


def test_folder_without_train_file(tmp_path: Path) -> None:
    (tmp_path / "test.csv").write_text("text,label\na,0\n")
    with pytest.raises(DataError, match="no train"):
        tasks.load_task("t", str(tmp_path))


def test_label_beyond_labels_txt(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", [("a", 0), ("b", 1), ("c", 2)])
    (tmp_path / "labels.txt").write_text("neg\npos\n")
    with pytest.raises(DataError, match=r"row 3 has label 2, outside 0..1 \(2 label names\)"):
        tasks.load_task("t", str(tmp_path))


def test_string_label_unknown_to_labels_txt(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", [("a", "neg"), ("b", "pos"), ("c", "meh")])
    (tmp_path / "labels.txt").write_text("neg\npos\n")
    with pytest.raises(DataError, match="row 3 has label 'meh'"):
        tasks.load_task("t", str(tmp_path))


def test_hub_source_fails_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(DataError, match="hub cannot be reached"):
        tasks.load_task("t", "hf:ag_news")


def test_hub_source_offline_and_uncached(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config
    import huggingface_hub.constants

    # `datasets` reads the variable at import (already done here): set what it read, too
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="not in your cache.*pass a local file"):
        tasks.load_task("t", "hf:sentcli-test/no-such-dataset")


def test_task_spec_parsing() -> None:
    assert tasks.parse_task_spec("topic=data/ag_news") == ("topic", "data/ag_news")
    with pytest.raises(DataError, match="NAME=SOURCE"):
        tasks.parse_task_spec("data/ag_news")
