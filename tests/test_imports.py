"""The layering (docs/development.md, Layout): imports go one way, cli → api →
{training, inference} → library → foundation, read from the source with ast (nothing is
imported)."""

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "sentcli"
LAYERS = {
    "cli": 4,
    "__main__": 4,
    "api": 3,
    "training": 2,
    "inference": 2,
    "data": 1,
    "model": 1,
    "freeze": 1,
    "checkpoint": 1,
    "metrics": 1,
    "tokenizer": 1,
    "hf": 1,
    "objectives": 1,
    "config": 0,
    "events": 0,
    "device": 0,
    "dist": 0,
    "files": 0,
    "heap": 0,
    "errors": 0,
    "__init__": 0,
}
UI = ("typer", "rich", "click")


def _part(module: str) -> str:
    """sentcli.training.loop → training; sentcli → __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name).is_dir()


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            if node.module == "sentcli":  # from sentcli import api, dist, … (modules only)
                names += [f"sentcli.{a.name}" for a in node.names if _is_module(a.name)]
    return names


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        out[".".join(rel.parts)] = path
    return out


def test_every_module_has_a_layer() -> None:
    assert {_part(m) for m in _modules()} <= set(LAYERS)


def test_imports_go_one_way() -> None:
    upward = []
    for module, path in _modules().items():
        mine = _part(module)
        for name in _imports(path):
            if not name.startswith("sentcli"):
                continue
            theirs = _part(name) if name != "sentcli" else "__init__"
            if LAYERS[theirs] > LAYERS[mine]:
                upward.append(f"{module} imports {name}")
    assert upward == []


def test_the_cli_reaches_the_library_only_through_api() -> None:
    """cli/ uses api and the foundation's vocabulary (config, events, errors), nothing below."""
    allowed = ("sentcli.cli", "sentcli.api", "sentcli.config", "sentcli.events", "sentcli.errors")
    found = [
        f"{m} imports {n}"
        for m, p in _modules().items()
        if _part(m) == "cli"
        for n in _imports(p)
        if n.startswith("sentcli.") and not n.startswith(allowed)
    ]
    assert found == []


def test_inference_never_imports_training() -> None:
    found = [
        f"{m} imports {n}"
        for m, p in _modules().items()
        if _part(m) == "inference"
        for n in _imports(p)
        if n.startswith("sentcli.training")
    ]
    assert found == []


def test_only_the_cli_prints_with_typer_or_rich() -> None:
    found = [
        f"{m} imports {n}"
        for m, p in _modules().items()
        if LAYERS[_part(m)] < LAYERS["cli"]
        for n in _imports(p)
        if n.split(".")[0] in UI
    ]
    assert found == []


HEAVY = ("torch", "datasets", "sklearn", "numpy", "tokenizers", "matplotlib")
STARTUP = """
import sys
from sentcli.cli import app
for args in (["--help"], ["--version"], ["no-such-command"], ["embed", "--help"]):
    sys.argv = ["sentcli", *args]
    try:
        app()
    except SystemExit:
        pass
print("heavy:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def test_help_version_and_unknown_commands_import_no_heavy_library() -> None:
    """--help, --version and a typo must answer at once (4 s with torch, sklearn and
    datasets imported up front; 0.2 s without)."""
    import subprocess
    import sys

    code = STARTUP.format(heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "heavy:"  # none of HEAVY was imported
