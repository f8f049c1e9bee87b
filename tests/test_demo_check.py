"""scripts/demo_check.py: the demo's self-check passes a sound demo and names what fails."""

import json
import shutil
from pathlib import Path

import pytest

from scripts import demo_check
from sentcli.inference.embed import DEFAULT_MODEL


def demo(root: Path, topic: float, sentiment: float, sts: float) -> Path:
    """A demo folder: summaries with these scores; the default model stands for the STS run
    (each of its sentences' nearest neighbour in data/sentences.txt is the partner)."""
    scores = {"mtl": {"topic": {"accuracy": topic}, "sentiment": {"accuracy": sentiment}}}
    scores["sts"] = {"sts": {"spearman": sts}}
    for run, test in scores.items():
        (root / run / "report").mkdir(parents=True, exist_ok=True)
        (root / run / "report" / "summary.json").write_text(json.dumps({"test": test}))
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(DEFAULT_MODEL / name, root / "sts" / name)
    return root


def test_a_sound_demo_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo_check.problems(demo(tmp_path, 0.855, 0.77, 0.73)) == []


def test_a_score_under_its_floor_and_a_wrong_neighbour_fail_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = demo(tmp_path, 0.84, 0.50, 0.73)
    lines = (demo_check.ROOT / "data" / "sentences.txt").read_text().splitlines()
    swapped = tmp_path / "data"
    swapped.mkdir()
    (swapped / "sentences.txt").write_text("\n".join([lines[0], lines[2], lines[1], lines[3]]))
    monkeypatch.setattr(demo_check, "ROOT", tmp_path)  # pairs 1-3 and 2-4 now sit apart
    monkeypatch.setattr("sys.argv", ["demo_check", str(folder)])
    with pytest.raises(SystemExit) as stop:
        demo_check.main()
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("demo check failed: ")
    assert "mtl sentiment accuracy 0.5000 is under its floor 0.72" in err[0]
    assert "sentence 1's nearest is 3, not its paraphrase 2" in err[0]


@pytest.mark.slow
def test_the_freeze_table_trains_what_each_mode_says(
    tmp_path: Path, tokenizer_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scripts import freeze_table
    from sentcli import api
    from sentcli.config import TaskConfig

    data = freeze_table.ROOT / "data"
    tiny = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32, "max_steps": 2}
    api.train_mtl(
        [TaskConfig(t, str(data / d)) for t, d in freeze_table.TASKS.items()],
        tmp_path / "mtl", tokenizer=tokenizer_path, options=tiny,
    )  # fmt: skip
    specs = freeze_table.sources(tmp_path)
    assert not any(
        (tmp_path / "freeze-data" / d / "test.csv.gz").exists() for d in ("ag_news", "imdb")
    )
    rows = {m: freeze_table.run(tmp_path, m, 2, specs) for m in freeze_table.MODES}
    heads = 16 * 4 + 4 + 16 * 2 + 2  # topic: 4 labels, sentiment: 2
    assert rows["backbone"]["trainable"] == heads
    assert rows["none"]["trainable"] - rows["head:topic"]["trainable"] == 16 * 4 + 4
    lines = (tmp_path / "mtl" / "metrics.jsonl").read_text().splitlines()
    last = [json.loads(x) for x in lines if '"eval"' in x][-1]["metrics"]
    for r in rows.values():
        assert set(r["accuracy"]) == {"topic", "sentiment"} and r["seconds"] > 0
        for t, (_, was) in r["accuracy"].items():  # the rows the multi-task run held out
            assert was == last[f"{t}/accuracy"]
