"""One function per command: configs → recipe or pipeline → result. They validate first,
then work; they return values, raise `SentcliError` and report progress only through the
`on_event` callback (sentcli.events)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from sentcli import checkpoint as ckpt
from sentcli import files
from sentcli.config import (
    Device,
    ExportFormat,
    InferenceOptions,
    LabelFormat,
    ModelConfig,
    Objective,
    Resume,
    RunConfig,
    RunKind,
    TaskConfig,
    TokenizerKind,
    choices,
    merge_configs,
    read_config_file,
)
from sentcli.data.batching import iter_text_batches
from sentcli.data.tasks import load_texts, parse_task_spec
from sentcli.device import resolve_device, resolve_precision
from sentcli.errors import ConfigError, DataError
from sentcli.events import OnEvent, TextsRead, TrainWarning
from sentcli.inference.embed import (
    DEFAULT_MODEL,
    MODEL_ENV,
    InferenceResult,
    label_pipeline,
    resolve_model,
    run_inference,
    vector_pipeline,
)
from sentcli.inference.outputs import VECTOR_FORMATS, check_plot
from sentcli.inference.search import CorpusIndex, run_search
from sentcli.inference.similarity import cosine_matrix, pair_cosines
from sentcli.metrics import plot_matrix, plot_scatter
from sentcli.model import MultiTaskModel
from sentcli.objectives import objective
from sentcli.tokenizer import UNK_ID, TokenizerSummary, encode, load_tokenizer, train_tokenizer
from sentcli.training.distill import check_teacher
from sentcli.training.evaluate import evaluate_head, evaluate_pairs
from sentcli.training.lm import train_lm
from sentcli.training.multitask import train_tasks
from sentcli.training.runner import TrainResult, read_report, resume_config

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
    output = _path(output)
    data = _sources(data)
    if kind not in {k.value for k in TokenizerKind}:
        raise ConfigError(f"unknown tokenizer kind {kind!r}; use one of {choices(TokenizerKind)}")
    if vocab_size < 64:
        raise ConfigError(f"--vocab-size {vocab_size} is too small; use at least 64")
    if min_frequency < 1:
        raise ConfigError(f"--min-frequency must be at least 1 (got {min_frequency})")
    if not output.parent.is_dir():
        raise ConfigError(f"output folder {output.parent} does not exist; create it first")
    if output.is_dir():
        raise ConfigError(f"-o {output} is a folder; give the tokenizer's file name")
    for given in data:
        if output.exists() and Path(given).exists() and output.samefile(given):
            raise ConfigError(f"-o {output} is an input of the tokenizer; write it elsewhere")
    in_run = all((output.parent / n).is_file() for n in (ckpt.CONFIG, ckpt.WEIGHTS))
    if output.exists() and in_run and not overwrite:
        raise ConfigError(
            f"-o {output} is the tokenizer of the run in {output.parent}, whose model was "
            "trained with it; write the new one elsewhere (--overwrite replaces it anyway)"
        )
    files.check_writable(output)
    sources = load_texts(data, text_column)

    def batches() -> Any:
        seen = 0
        for _, ds in sources:
            for batch in iter_text_batches(ds):
                seen += len(batch)
                if on_event:
                    on_event(TextsRead(seen))
                yield batch

    tok = train_tokenizer(batches(), kind, vocab_size, min_frequency, lowercase)
    texts = tokens = unk = 0
    for _, ds in sources:
        for batch in iter_text_batches(ds, 10_000):
            for ids in encode(tok, batch):
                texts += 1
                tokens += len(ids) - 2  # [BOS] and [EOS] are not the text's tokens
                unk += int(np.count_nonzero(ids == UNK_ID))
    if texts == 0:
        raise DataError(f"no non-empty texts in {', '.join(data)}; give files with text")
    files.write_text(output, tok.to_str())
    return TokenizerSummary(tok.get_vocab_size(), texts, tokens, unk)


def pretrain(
    data: list[str],
    output: StrPath,
    tokenizer: StrPath | None = None,
    options: dict[str, Any] | None = None,
    config_file: StrPath | None = None,
    text_column: str | None = None,
    resume: Resume = False,
    overwrite: bool = False,
    on_event: OnEvent = None,
) -> TrainResult:
    """Pretrain a language model (next-token by default, or masked-LM) into run folder
    `output`. `options` holds ModelConfig/TrainConfig fields (None: not given)."""
    output = _path(output)
    data = _sources(data)
    tokenizer = _maybe(tokenizer)
    config_file = _maybe(config_file)
    with ckpt.run_lock(output):  # one writer per run folder
        inputs = [*data, *_given(tokenizer, config_file)]
        resume, overwrite = ckpt.resume_or_start(output, resume, overwrite, inputs)
        ckpt.check_run_dir(output, overwrite, resume, inputs)
        if resume:
            config = resume_config(output, RunKind.lm, options, config_file, on_event)
            tok = ckpt.load_run_tokenizer(output, config)
        else:
            if tokenizer is None:
                raise ConfigError(
                    "pretrain needs --tokenizer (build one with sentcli build-tokenizer)"
                )
            tok = load_tokenizer(tokenizer)
            model_cfg, train_cfg, _ = merge_configs(options or {}, config_file, None)
            model_cfg.vocab_size = tok.get_vocab_size()
            model_cfg.causal = train_cfg.objective == Objective.clm
            config = RunConfig(RunKind.lm, model_cfg, train_cfg, data=[_absolute(d) for d in data])
        return train_lm(config, tok, output, text_column, resume, on_event)


def train_encoder(
    task: str | TaskConfig,
    output: StrPath,
    init: StrPath | None = None,
    tokenizer: StrPath | None = None,
    options: dict[str, Any] | None = None,
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
    elif task or resume is not True:  # --resume auto may start the run: it needs its task
        name, source = parse_task_spec(task)
        specs = [
            TaskConfig(
                name, source, text_column, label_column,
                pair_columns=list(pair_columns or []), score_column=score_column,
            )
        ]  # fmt: skip
    return _train_tasks(
        RunKind.encoder, specs, output, init, tokenizer, options, config_file, resume,
        overwrite, on_event,
    )  # fmt: skip


def train_mtl(
    tasks: Sequence[TaskConfig | str] | TaskConfig | str,
    output: StrPath,
    init: StrPath | None = None,
    tokenizer: StrPath | None = None,
    options: dict[str, Any] | None = None,
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
    return _train_tasks(
        RunKind.mtl, specs, output, init, tokenizer, options, config_file, resume, overwrite,
        on_event,
    )  # fmt: skip


def _absolute(source: str) -> str:
    """A local source's absolute path (hf:NAME and missing paths as given)."""
    return str(Path(source).resolve()) if Path(source).exists() else source


def _given(*paths: str | Path | None) -> list[str | Path]:
    return [p for p in paths if p]


def _warn_other_tasks(given: list[TaskConfig], saved: list[TaskConfig], on_event: OnEvent) -> None:
    """A resumed run keeps its own tasks: say so when the command names others."""
    own = {(t.name, _absolute(t.source)) for t in saved}
    other = [f"{t.name}={t.source}" for t in given if (t.name, _absolute(t.source)) not in own]
    if other and on_event:
        kept = ", ".join(f"{t.name}={t.source}" for t in saved)
        message = f"--resume continues with the run's own tasks ({kept}); ignored: --task "
        on_event(TrainWarning(message + ", --task ".join(other)))


def _train_tasks(
    kind: RunKind,
    specs: list[TaskConfig],
    output: Path,
    init: Path | None,
    tokenizer: Path | None,
    options: dict[str, Any] | None,
    config_file: Path | None,
    resume: Resume,
    overwrite: bool,
    on_event: OnEvent,
) -> TrainResult:
    """The classifier training behind train-encoder (one task) and train-mtl (several)."""
    with ckpt.run_lock(output):  # one writer per run folder
        # a teacher given only in --config is an input too (--overwrite must not delete it)
        from_file = read_config_file(config_file) if config_file is not None else {}
        teacher = (options or {}).get("teacher") or from_file.get("teacher")
        inputs = [s.source for s in specs] + _given(init, tokenizer, config_file, teacher)
        resume, overwrite = ckpt.resume_or_start(output, resume, overwrite, inputs)
        ckpt.check_run_dir(output, overwrite, resume, inputs)
        if resume:
            saved = resume_config(output, kind, options, config_file, on_event)
            _warn_other_tasks(specs, saved.tasks, on_event)
            tok = ckpt.load_run_tokenizer(output, saved)
            # the command's kind and this sentcli's version, as when the run was started
            config = RunConfig(
                kind,
                saved.model,
                saved.train,
                saved.tasks,
                init=saved.init,
                imported=saved.imported,
            )
            return train_tasks(config, tok, output, True, None, on_event)
        names = [s.name for s in specs]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"give each task once, as --task NAME=SOURCE (got {names})")
        if (init is None) == (tokenizer is None):
            raise ConfigError("give exactly one of --init RUN (pretrained) or --tokenizer FILE")
        source: nn.Module | None = None
        imported = None
        base: ModelConfig | None = None
        if init is not None:
            init_config, source, tok, _ = ckpt.load_run(init)
            base = init_config.model
            imported = init_config.imported  # its tokenizer's special tokens are not ours
        else:
            assert tokenizer is not None
            tok = load_tokenizer(tokenizer)
        model_cfg, train_cfg, given = merge_configs(options or {}, config_file, base)
        if init is None:
            model_cfg.vocab_size = tok.get_vocab_size()
        # Encoders attend both ways, also from a causal LM: on AG News that scored 1.1 points
        # above keeping the LM's causal mask (docs/benchmarks.md).
        if "causal" not in given:
            model_cfg.causal = False
        if train_cfg.teacher is not None:
            train_cfg.teacher = check_teacher(train_cfg.teacher)
        unknown = sorted(set(train_cfg.task_weights) - set(names))
        if unknown:
            raise ConfigError(
                f"--task-weight names unknown task(s) {', '.join(unknown)}; tasks: "
                f"{', '.join(names)}"
            )
        ref = str(init) if init else None
        # local sources are recorded absolute, so evaluate works from any folder
        specs = [replace(t, source=_absolute(t.source)) for t in specs]
        config = RunConfig(kind, model_cfg, train_cfg, list(specs), init=ref, imported=imported)
        return train_tasks(config, tok, output, False, source, on_event)


def evaluate(
    model_dir: StrPath | None,
    tasks: list[TaskConfig] | None = None,
    batch_size: int = 64,
    device: str = Device.auto,
    plots: StrPath | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Each task of a run on the given sources or the test splits the run recorded.
    Classification (the run's heads): accuracy, macro-F1, per-class precision/recall/F1 and
    the confusion matrix. Similarity (scored or positive pairs; any run that embeds, the
    default model when `model_dir` is None): Spearman and Pearson of cosine, or recall@1 and
    MRR; a scatter of cosine against score goes to `plots` (default: the run's report/).
    `precision` None: the run's training precision."""
    model_dir = _maybe(model_dir)
    plots = _maybe(plots)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {batch_size})")
    if plots is not None:  # made with its parents when needed: probe the nearest that exists
        files.check_writable(plots, files.existing_folder(plots))
    path, origin = resolve_model(model_dir)
    config, model, tok, _ = ckpt.load_run(path)
    known = {t.name: t for t in config.tasks}
    own = {t.name: objective(t) for t in config.tasks}  # plain text: no gold to score against
    specs = tasks or [
        t for t in config.tasks if own[t.name].outputs == "logits" or own[t.name].scorable
    ]
    for t in specs if not tasks else []:
        if not t.source.startswith("hf:") and not Path(t.source).exists():
            raise ConfigError(
                f"task {t.name}'s recorded source {t.source} does not exist here (moved, or "
                f"recorded relative to another folder); pass --task {t.name}=SOURCE"
            )
    heads = list(model.heads) if isinstance(model, MultiTaskModel) else []
    no_heads = (
        f"{path} has no task heads (a pretraining or import-hf run); evaluate a run of "
        "train-encoder or train-mtl, or give --task NAME=SOURCE with sentence pairs"
    )
    if not specs:
        raise ConfigError(no_heads)
    dev = resolve_device(device)
    dtype = resolve_precision(precision or config.train.precision, dev)
    model.to(dev)
    results: dict[str, Any] = {}
    for s in specs:
        same = s.name in known and known[s.name].source == _absolute(s.source)
        spec = known[s.name] if same else s
        if s.name in heads and own[s.name].outputs == "logits":
            results[s.name] = evaluate_head(model, tok, known[s.name], s, batch_size, dev, dtype)
            continue
        unknown = (
            f"{s.source} holds labelled texts, but task {s.name} of {path} is a "
            f"{known[s.name].kind} similarity task without a head; give it sentence pairs"
            if s.name in known
            else f"{path} has no task {s.name}; its tasks: {', '.join(known)}"
        )
        split, metrics, cos, gold = evaluate_pairs(
            model, tok, spec, config.model.block_size, batch_size, dev, dtype,
            unknown if known else no_heads,
        )  # fmt: skip
        if cos is not None and gold is not None:
            folder = plots or (Path("report") if origin == "the default model" else path / "report")
            title = f"{s.name} ({split}, Spearman {100 * metrics['spearman']:.1f})"
            target = folder / f"similarity_{s.name}.png"
            try:  # a read-only run folder: the scores still count, the plot is said missing
                folder.mkdir(parents=True, exist_ok=True)
                plot_scatter(target, cos, gold, title)
                metrics["plot"] = str(target)
            except OSError as e:
                metrics["plot_error"] = f"{target} not written ({e.strerror or e})"
        results[s.name] = {"source": s.source, "split": split, **metrics}
    return {"model": str(path), "tasks": results}


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
    options: InferenceOptions | None = None,
    on_event: OnEvent = None,
) -> InferenceResult:
    """Sentence vectors of every input row, in input order, to `output` (.npy, .jsonl, .csv,
    .tsv; written atomically) or as JSON lines to `options.stdout`."""
    output = _maybe(output)
    model = _maybe(model)
    make = vector_pipeline(normalize, output)
    opts = options or InferenceOptions()
    return run_inference(input, output, model, VECTOR_FORMATS, opts, make, on_event)


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


def import_hf(checkpoint: StrPath, output: StrPath, overwrite: bool = False) -> dict[str, Any]:
    """Convert a local Hugging Face BERT-family checkpoint folder (sentence-transformers
    layout too) into a sentcli run folder without task heads: embed uses it as it is, and
    train-encoder/train-mtl --init fine-tune it."""
    checkpoint = _path(checkpoint)
    output = _path(output)
    with ckpt.run_lock(output):  # one writer per run folder
        from sentcli.hf import import_checkpoint

        ckpt.check_run_dir(output, overwrite, resume=False, inputs=[checkpoint])
        run, model, tok, info = import_checkpoint(checkpoint)
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
    ex.check_output(output, overwrite, path)  # before the lock makes the parent folder
    with ckpt.run_lock(output):  # one writer per export folder, as per run folder
        if format == ExportFormat.onnx:
            meta = ex.export_onnx(path, output, normalize, quantize, overwrite)
        else:
            meta = ex.export_sentence_transformers(path, output, normalize, overwrite)
    return {**meta, "output": str(output)}
