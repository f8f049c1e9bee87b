"""Every example of each command's --help runs as written, in order, in a scratch folder
holding the shipped data/ (the harness is test_examples.py's)."""

from pathlib import Path

import pytest
from test_examples import help_examples, run_example

CASES = help_examples()


@pytest.mark.slow
@pytest.mark.parametrize("example", CASES, ids=[f"help:{c[:60]}" for c in CASES])
def test_help_example_runs_as_written(
    example: str, scratch: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(scratch["help"])
    run_example(example, scratch["help"], [])
