import json

import pytest

from sentcli.config import (
    ModelConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
    build_configs,
    read_config_file,
)
from sentcli.errors import CheckpointError, ConfigError


def test_run_config_json_round_trip() -> None:
    cfg = RunConfig(
        "encoder",
        ModelConfig(n_layer=2, n_embd=32, n_head=2),
        TrainConfig(lr=3e-4, epochs=2),
        tasks=[TaskConfig("topic", "data/ag_news", None, "label", ["a", "b"])],
        init="runs/lm",
    )
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_invalid_values_are_collected_into_one_error() -> None:
    with pytest.raises(ConfigError) as e:
        ModelConfig(n_embd=30, n_head=4, dropout=1.5)
    assert "divisible" in str(e.value) and "dropout" in str(e.value)
    with pytest.raises(ConfigError, match="batch_size must be at least 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="device must be one of"):
        TrainConfig(device="tpu")


def test_flags_override_file_override_defaults(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("lr = 0.01\nn-layer = 3\nbatch_size = 4\n")
    model, train = build_configs(read_config_file(path), {"lr": 0.5, "seed": None})
    assert (train.lr, train.batch_size, train.seed, model.n_layer) == (0.5, 4, 1337, 3)


def test_unknown_option_in_file_is_refused(tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"n_layers": 3}')
    with pytest.raises(ConfigError, match="unknown option.*n_layers.*valid:"):
        build_configs(read_config_file(path), {})


def test_newer_format_version_is_refused() -> None:
    d = RunConfig("lm", ModelConfig(), TrainConfig()).to_dict()
    d["format_version"] = 99
    with pytest.raises(CheckpointError, match="newer than this sentcli"):
        RunConfig.from_dict(d)


def test_runs_written_before_attn_dropout_keep_dropout_on_attention() -> None:
    d = RunConfig("lm", ModelConfig(dropout=0.2), TrainConfig()).to_dict()
    assert d["model"]["attn_dropout"] == 0.0  # new runs: off unless asked for
    del d["model"]["attn_dropout"]  # a config.json from an earlier version
    assert RunConfig.from_dict(d).model.attn_dropout == 0.2


def test_train_options_name_every_config_field() -> None:
    """api's `options` type (TrainOptions, a TypedDict mypy checks) mirrors ModelConfig and
    TrainConfig: a field added to one must be added to the other."""
    from dataclasses import fields

    from sentcli.config import ModelConfig, TrainConfig, TrainOptions

    names = [f.name for f in fields(ModelConfig)] + [f.name for f in fields(TrainConfig)]
    assert list(TrainOptions.__annotations__) == names
