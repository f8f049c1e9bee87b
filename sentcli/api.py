"""One function per command: configs → recipe or pipeline → result. They validate first,
then work; they return values, raise `SentcliError` and report progress only through the
`on_event` callback (sentcli.events)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sentcli import checkpoint as ckpt
from sentcli import files, hf
from sentcli.config import (
    Device,
    ExportFormat,
    InferenceOptions,
    LabelFormat,
    Resume,
    RunKind,
    TaskConfig,
    TokenizerKind,
    TrainOptions,
    choices,
)
from sentcli.data.tasks import parse_task_spec
from sentcli.errors import ConfigError
from sentcli.events import OnEvent
from sentcli.inference import ann
from sentcli.inference.embed import (
    DEFAULT_MODEL,
    MODEL_ENV,
    InferenceResult,
    label_pipeline,
    quantizer,
    range_pipeline,
    resolve_model,
    run_inference,
    vector_pipeline,
)
from sentcli.inference.outputs import VECTOR_FORMATS, RangeSink, check_output, check_plot
from sentcli.inference.search import CorpusIndex, run_search
from sentcli.inference.similarity import cosine_matrix, pair_cosines
from sentcli.inference.vectors import Ranges, fingerprint
from sentcli.metrics import best_eval, plot_matrix, score_text
from sentcli.tokenizer import TokenizerSummary
from sentcli.training import vocab
from sentcli.training.evaluate import evaluate_run
from sentcli.training.runner import TrainResult, read_report
from sentcli.training.start import start_lm, start_tasks

StrPath = str | Path
"""A path given as a string or a Path (each function turns it into a Path)."""


def _path(p: StrPath) -> Path:
    return Path(p)


def _maybe(p: StrPath | None) -> Path | None:
    return None if p is None else Path(p)


def _sources(data: list[str] | str | Path) -> list[str]:
    """`data` as a list of sources; a bare string would be read letter by letter."""
    if isinstance(data, str | Path):
        raise ConfigError(
            f"give the sources as a list ([{str(data)!r}]), not one string: each letter of "
            "a string would be read as a source"
        )
    return [str(d) for d in data]


__all__ = [
    "DEFAULT_MODEL",
    "MODEL_ENV",
    "InferenceOptions",
    "InferenceResult",
    "TaskConfig",
    "TrainResult",
    "build_tokenizer",
    "embed",
    "evaluate",
    "export",
    "import_hf",
    "parse_task_spec",
    "predict",
    "pretrain",
    "report",
    "resolve_model",
    "search",
    "similarity",
    "similarity_matrix",
    "train_encoder",
    "train_mtl",
]


def build_tokenizer(
    data: list[str],
    output: StrPath,
    kind: str = TokenizerKind.bpe,
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = False,
    text_column: str | None = None,
    on_event: OnEvent = None,
    overwrite: bool = False,
) -> TokenizerSummary:
    """Train a tokenizer on the texts of `data` and write it to `output` (tokenizer.json;
    replacing a run folder's own tokenizer needs `overwrite`)."""
    return vocab.build_tokenizer(
        _sources(data), _path(output), kind, vocab_size, min_frequency, lowercase, text_column,
        on_event, overwrite,
    )  # fmt: skip


def pretrain(
    data: list[str],
    output: StrPath,
    tokenizer: StrPath | None = None,
    options: TrainOptions | None = None,
    config_file: StrPath | None = None,
    text_column: str | None = None,
    resume: Resume = False,
    overwrite: bool = False,
    on_event: OnEvent = None,
) -> TrainResult:
    """Pretrain a language model (next-token by default, or masked-LM) into run folder
    `output`. `options` holds ModelConfig/TrainConfig fields (None: not given)."""
    return start_lm(
        _sources(data), _path(output), _maybe(tokenizer), options, _maybe(config_file),
        text_column, resume, overwrite, on_event,
    )  # fmt: skip


def train_encoder(
    task: str | TaskConfig | None,
    output: StrPath,
    init: StrPath | None = None,
    tokenizer: StrPath | None = None,
    options: TrainOptions | None = None,
    config_file: StrPath | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    resume: Resume = False,
    overwrite: bool = False,
    on_event: OnEvent = None,
    *,
    pair_columns: list[str] | None = None,
    score_column: str | None = None,
) -> TrainResult:
    """Train a sentence encoder on one task (`NAME=SOURCE`, or a TaskConfig, as train_mtl
    takes them): a classification head, or a
    similarity objective when the source holds pairs or plain text (data/pairs.py); from a
    pretrained run (`init`) or from scratch with a tokenizer."""
    output = _path(output)
    init = _maybe(init)
    tokenizer = _maybe(tokenizer)
    config_file = _maybe(config_file)
    specs = []
    if isinstance(task, TaskConfig):
        specs = [task]
    elif not task and resume is not True:
        raise ConfigError("give --task NAME=SOURCE (a task to train, or --resume a run)")
    elif task:  # --resume auto may start the run: it needs its task
        name, source = parse_task_spec(task)
        specs = [
            TaskConfig(
                name, source, text_column, label_column,
                pair_columns=list(pair_columns or []), score_column=score_column,
            )
        ]  # fmt: skip
    return start_tasks(
        RunKind.encoder, specs, output, init, tokenizer, options, config_file, resume,
        overwrite, on_event,
    )  # fmt: skip


def train_mtl(
    tasks: Sequence[TaskConfig | str] | TaskConfig | str,
    output: StrPath,
    init: StrPath | None = None,
    tokenizer: StrPath | None = None,
    options: TrainOptions | None = None,
    config_file: StrPath | None = None,
    resume: Resume = False,
    overwrite: bool = False,
    on_event: OnEvent = None,
) -> TrainResult:
    """Multi-task training: one shared encoder, one head per task, the freeze modes and task
    schedule of the options (see TrainConfig). A task is a TaskConfig or `NAME=SOURCE`."""
    output = _path(output)
    init = _maybe(init)
    tokenizer = _maybe(tokenizer)
    config_file = _maybe(config_file)
    many = [tasks] if isinstance(tasks, TaskConfig | str) else list(tasks)
    specs = [t if isinstance(t, TaskConfig) else TaskConfig(*parse_task_spec(t)) for t in many]
    return start_tasks(
        RunKind.mtl, specs, output, init, tokenizer, options, config_file, resume, overwrite,
        on_event,
    )  # fmt: skip


def evaluate(
    model_dir: StrPath | None,
    tasks: list[TaskConfig] | None = None,
    batch_size: int = 64,
    device: str = Device.auto,
    plots: StrPath | None = None,
    precision: str | None = None,
    dims: int | None = None,
) -> dict[str, Any]:
    """Each task of a run on the given sources or the test splits the run recorded.
    Classification (the run's heads): accuracy, macro-F1, per-class precision/recall/F1 and
    the confusion matrix. Similarity (scored or positive pairs; any run that embeds, the
    default model when `model_dir` is None): Spearman and Pearson of cosine, or recall@1 and
    MRR; a scatter of cosine against score goes to `plots` (default: the run's report/).
    `precision` None: the run's training precision. `dims`: similarity tasks score the
    vectors' first `dims` dimensions, re-normalised (heads always read the whole vector)."""
    folder = _maybe(plots)
    return evaluate_run(_maybe(model_dir), tasks, batch_size, device, folder, precision, dims)


def report(run_dir: StrPath) -> dict[str, Any]:
    """Re-read a finished or interrupted run: its evaluations, test results and gradient
    norms; rewrites the plots in report/."""
    run_dir = _path(run_dir)
    return read_report(run_dir)


def embed(
    input: str,
    output: StrPath | None = None,
    model: StrPath | None = None,
    *,
    normalize: bool = True,
    quantize: str | None = None,
    ranges: StrPath | None = None,
    options: InferenceOptions | None = None,
    on_event: OnEvent = None,
) -> InferenceResult:
    """Sentence vectors of every input row, in input order, to `output` (.npy, .jsonl, .csv,
    .tsv; written atomically) or as JSON lines to `options.stdout`. `quantize`: "int8"
    (codes by the calibrated `ranges` file of `calibrate`) or "binary" (one bit a dimension,
    8 a byte: above the `ranges` file's means, or above 0 without one)."""
    output = _maybe(output)
    model = _maybe(model)
    opts = options or InferenceOptions()
    codes = quantizer(quantize, _maybe(ranges), model, opts.dims, normalize)
    make = vector_pipeline(normalize, output, opts.dims, codes)
    return run_inference(input, output, model, VECTOR_FORMATS, opts, make, on_event)


def calibrate(
    corpus: str,
    output: StrPath,
    model: StrPath | None = None,
    *,
    options: InferenceOptions | None = None,
    on_event: OnEvent = None,
) -> tuple[Ranges, InferenceResult]:
    """Per-dimension ranges of the model's normalised vectors (their first `options.dims`)
    and their means over a calibration corpus, for `embed --quantize int8|binary` and i8
    and b1 indexes; written to
    `output` (JSON, atomically)."""
    out, path = _path(output), _maybe(model)
    check_output(out, (".json",), [corpus])
    opts = replace(options or InferenceOptions(), stdout=io.BytesIO())  # nothing on stdout
    sink = RangeSink()
    result = run_inference(corpus, None, path, (), opts, range_pipeline(opts.dims, sink), on_event)
    if sink.rows == 0:
        raise ConfigError(f"{corpus} holds no texts; calibrate on a few thousand of the corpus's")
    where, _ = resolve_model(path)
    ranges = Ranges.from_sink(sink, fingerprint(where))
    ranges.save(out)
    return ranges, result


def predict(
    input: str,
    output: StrPath | None = None,
    model: StrPath | None = None,
    task: str | None = None,
    *,
    top_k: int = 1,
    fmt: str = LabelFormat.tsv,
    options: InferenceOptions | None = None,
    on_event: OnEvent = None,
) -> InferenceResult:
    """The `top_k` labels of `task` and their probabilities for every input row, in input
    order, as TSV or JSON lines."""
    output = _maybe(output)
    model = _maybe(model)
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1 (got {top_k})")
    if fmt not in {f.value for f in LabelFormat}:
        raise ConfigError(f"--format {fmt}: use tsv or jsonl")
    make = label_pipeline(task, top_k, fmt)
    formats = (".tsv", ".txt") if fmt == "tsv" else (".jsonl",)
    opts = options or InferenceOptions()
    return run_inference(input, output, model, formats, opts, make, on_event)


def similarity(
    first: str,
    second: str | None = None,
    output: StrPath | None = None,
    model: StrPath | None = None,
    *,
    pair_columns: list[str] | None = None,
    options: InferenceOptions | None = None,
    on_event: OnEvent = None,
) -> InferenceResult:
    """The cosine of each text pair, in input order, one per line (to `output` or stdout).
    Pairs: two line files read together, a table with two text columns, or one line file
    (`-`: stdin) of text1<TAB>text2 lines."""
    output = _maybe(output)
    model = _maybe(model)
    opts = options or InferenceOptions()
    return pair_cosines(first, second, output, model, pair_columns, opts, on_event)


def similarity_matrix(
    file: str,
    model: StrPath | None = None,
    *,
    plot: StrPath | None = None,
    options: InferenceOptions | None = None,
    on_event: OnEvent = None,
) -> tuple[list[str], np.ndarray, InferenceResult]:
    """The texts of a line file of a few sentences and their cosine matrix (a heatmap to
    `plot`)."""
    model = _maybe(model)
    plot = _maybe(plot)
    if plot is not None:
        check_plot(plot, [file])
    texts, matrix, result = cosine_matrix(file, model, options or InferenceOptions(), on_event)
    if plot is not None and texts:  # no texts: a torchrun rank other than the main one
        plot_matrix(plot, texts, matrix)
    return texts, matrix, result


def search(
    queries: str,
    corpus: str,
    output: StrPath | None = None,
    model: StrPath | None = None,
    *,
    k: int = 10,
    threshold: float | None = None,
    fmt: str = LabelFormat.tsv,
    corpus_column: str | None = None,
    cache: StrPath | None = None,
    options: InferenceOptions | None = None,
    on_event: OnEvent = None,
) -> tuple[InferenceResult, CorpusIndex]:
    """Each query's `k` most similar corpus rows by cosine (exact), as TSV or JSON lines.
    The corpus's vectors are computed once into `cache` (default $SENTCLI_CACHE, else
    ~/.cache/sentcli) under a hash of the corpus, the model and the settings."""
    output = _maybe(output)
    model = _maybe(model)
    cache = _maybe(cache)
    opts = options or InferenceOptions()
    where = cache or files.cache_root()
    return run_search(
        queries, corpus, output, model, k, threshold, fmt, corpus_column, opts, where, on_event
    )


def index_build(
    corpus: str,
    output: StrPath,
    model: StrPath | None = None,
    *,
    dtype: str = "i8",
    overwrite: bool = False,
    texts: str | None = None,
    ranges: StrPath | None = None,
    connectivity: int = 16,
    options: InferenceOptions | None = None,
    on_event: OnEvent = None,
) -> tuple[dict[str, Any], InferenceResult | None]:
    """A persistent HNSW index of `corpus` (a text file or table, or a .npy of the vectors
    `embed` wrote, with `texts` its rows) in folder `output`: f16, i8 (per-dimension ranges
    from the corpus itself or `ranges`) or b1 (1-bit) vectors, the f16 vectors for
    rescoring, the texts and the model's fingerprint. Returns the index's metadata."""
    opts = options or InferenceOptions()
    return ann.build(
        corpus, _path(output), _maybe(model), dtype, overwrite, opts, on_event, texts,
        _maybe(ranges), connectivity,
    )  # fmt: skip


def search_index(
    queries: str,
    index: StrPath,
    output: StrPath | None = None,
    model: StrPath | None = None,
    *,
    k: int = 10,
    rescore: int = 0,
    ef: int = ann.EF,
    threshold: float | None = None,
    fmt: str = LabelFormat.tsv,
    options: InferenceOptions | None = None,
    on_event: OnEvent = None,
) -> tuple[InferenceResult, ann.AnnIndex]:
    """Each query's `k` best rows of an index built by `index_build` (approximate; with
    `rescore` K, the top k·K candidates re-ranked by the float query's cosine with their
    f16 vectors; `ef`: the graph's search breadth). The model must be the index's."""
    opts = options or InferenceOptions()
    return ann.run_index_search(
        queries, _path(index), _maybe(output), _maybe(model), k, rescore, threshold, fmt, opts,
        on_event, ef,
    )  # fmt: skip


def import_hf(checkpoint: StrPath, output: StrPath, overwrite: bool = False) -> dict[str, Any]:
    """Convert a local Hugging Face BERT-family checkpoint folder (sentence-transformers
    layout too) into a sentcli run folder without task heads: embed uses it as it is, and
    train-encoder/train-mtl --init fine-tune it."""
    checkpoint = _path(checkpoint)
    output = _path(output)
    with ckpt.run_lock(output):  # one writer per run folder
        ckpt.check_run_dir(output, overwrite, resume=False, inputs=[checkpoint])
        run, model, tok, info = hf.import_checkpoint(checkpoint)
        ckpt.create_run_dir(output)
        ckpt.save_run(output, run, model, tok, step=0)
        return {**info, "run": str(output), "vocab_size": run.model.vocab_size}


def export(
    run_dir: StrPath | None,
    output: StrPath,
    format: str = ExportFormat.onnx,
    quantize: bool = False,
    normalize: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a run (the default model when `run_dir` is None) for use outside sentcli: an
    ONNX graph with tokenizer.json (`quantize`: also onnxruntime's int8 version), or a
    sentence-transformers folder (BERT-shaped runs). Returns the export's description."""
    output = _path(output)
    run_dir = _maybe(run_dir)
    from sentcli.inference import export as ex

    path, _ = resolve_model(run_dir)
    if format not in {f.value for f in ExportFormat}:
        raise ConfigError(f"unknown export format {format!r}; use one of {choices(ExportFormat)}")
    if quantize and format != ExportFormat.onnx:
        raise ConfigError("--quantize int8 applies to --format onnx; drop it")
    ckpt.check_export_dir(output, overwrite, path)  # before the lock makes the parent folder
    with ckpt.run_lock(output):  # one writer per export folder, as per run folder
        if format == ExportFormat.onnx:
            meta = ex.export_onnx(path, output, normalize, quantize, overwrite)
        else:
            meta = hf.export_sentence_transformers(path, output, normalize, overwrite)
    return {**meta, "output": str(output)}


def kept_step(result: TrainResult) -> tuple[int, str] | None:
    """The step of the evaluation a --keep-best run kept, by its --best-by rule, and its
    score as text; None: no evaluation during training had a score."""
    rule = result.config.train.best_by
    best = best_eval(result.history, rule)
    return None if best is None else (best[0], score_text(best[1], rule))
