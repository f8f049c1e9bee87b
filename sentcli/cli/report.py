"""`sentcli report`: re-render a run's tables from its files and rewrite its plots."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from sentcli.cli._util import app, err, handle_errors, out
from sentcli.cli.render import grad_table, lm_table, loss_table, print_test_results


@app.command("report")
@handle_errors
def report_cli(
    run: Annotated[Path, typer.Argument(file_okay=False, help="Run folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Re-render a finished or interrupted run's tables and rewrite its plots.

    Shows the per-task loss table, the confusion matrices and the gradient-norm summary
    (a language-model run: its evaluations), from metrics.jsonl and report/summary.json.

    Example: sentcli report runs/mtl
    """
    from sentcli import api  # imported here: --help stays free of torch

    result = api.report(run)
    if as_json:
        out.print_json(json.dumps(result))
        return
    if result["interrupted"]:
        err.print(f"{run} was interrupted at step {result['steps']}; resume it with --resume")
    if result["kind"] == "lm":
        out.print(lm_table(result["history"]))
    else:
        out.print(loss_table(result["history"], result["tasks"]))
        print_test_results(result["test"], result["test_splits"])
    rows = result["grad_norms"]
    if rows:
        out.print(grad_table(rows))
    if result["plot_error"]:
        err.print(f"[yellow]warning:[/] {escape(result['plot_error'])}")
    else:
        out.print(f"plots rewritten in {run / 'report'}")
