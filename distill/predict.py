"""``python -m distill.predict ckpt=<ckpt>``: entities of new text, as canonical JSONL.

Input is one document per line (plain text, or JSON lines with a "text" field), from ``input=``
or stdin; output is one ``{"text", "entities": [{"start", "end", "type", "score"}]}`` record per
input line, in input order, to ``output=`` (written atomically) or stdout. Long texts are cut
into the same overlapping windows as in training (the checkpoint's ``max_length``/``stride``) and
the windows' predictions are merged back with :func:`distill.decode.merge_windows`.

The Python API is :class:`Predictor`::

    predictor = Predictor.from_path("outputs/teacher/<run>")           # or runtime="onnx"
    predictor.predict(["EU rejects German call to boycott British lamb."])

A checkpoint file, a run folder, or a ``format=hf`` export folder runs in PyTorch
(``runtime=torch``); an ONNX export folder runs in onnxruntime (``runtime=onnx`` or
``onnx-int8``). Every runtime decodes with the same code (:mod:`distill.decode`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from distill.checkpoint import LoadedModel, load_checkpoint, resolve
from distill.cli import entry, one_line_errors
from distill.data.document import Document
from distill.data.encoding import Window, encode_documents
from distill.decode import Prediction, merge_windows, threshold_spans, window_predictions
from distill.errors import CheckpointError, ConfigError, DataError
from distill.export import ONNX_FILES, read_export_meta, read_export_tokenizer

log = logging.getLogger("distill")

RUNTIMES = ("torch", "onnx", "onnx-int8")


class BelowError(logging.Filter):
    """Logging filter for the console handler: errors are printed once, by one_line_errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


# ----------------------------------------------------------------------------- runners

class TorchRunner:
    """SpanNER forward in PyTorch on NumPy inputs; returns the (B, C, n, n) logits tensor."""

    runtime = "torch"

    def __init__(self, model):
        self.model = model.eval()

    def __call__(self, input_ids, attention_mask, content_mask):
        with torch.inference_mode():
            return self.model(torch.as_tensor(input_ids), torch.as_tensor(attention_mask),
                              torch.as_tensor(content_mask))


class OnnxRunner:
    """An onnxruntime session of an exported model; returns the logits as a NumPy array.

    The intra-op threads do not spin-wait after a call (onnxruntime's default does): spinning
    keeps the cores busy for a while after each text, which steals them from whatever runs next
    -- the other models in an interleaved benchmark, the rest of a server -- for a gain of a few
    percent in back-to-back calls only."""

    def __init__(self, file: str | os.PathLike, runtime: str = "onnx", threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(f"runtime={runtime} needs onnxruntime (pip install onnxruntime)") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            raise CheckpointError(f"{file}: onnxruntime cannot load it "
                                  f"({' '.join(str(err).split())[:200]})") from None
        self.runtime, self.file = runtime, Path(file)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, input_ids, attention_mask, content_mask):
        feed = {"input_ids": np.asarray(input_ids, dtype=np.int64),
                "attention_mask": np.asarray(attention_mask, dtype=np.int64),
                "content_mask": np.asarray(content_mask, dtype=bool)}
        return self.session.run(None, {k: feed[k] for k in self.inputs})[0]


def is_onnx_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / ONNX_FILES["onnx"]).is_file()


def load_runner(path: str | os.PathLike, runtime: str = "torch", threads: int | None = None):
    """(runner, tokenizer or None, metadata, resolved path) for a checkpoint or export folder."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime={runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        loaded = load_checkpoint(path)  # ONNX folders are refused there with a hint
        return TorchRunner(loaded.model), loaded.tokenizer, loaded.meta, loaded.path
    folder = resolve(path)
    if not is_onnx_folder(folder):
        run_dir = folder if folder.is_dir() else folder.parent
        hint = (f"use its export: ckpt={run_dir / 'export'}" if is_onnx_folder(run_dir / "export")
                else f"make one with: python -m distill.export ckpt={path}"
                + (" quantize=int8" if runtime == "onnx-int8" else ""))
        raise CheckpointError(f"{path}: runtime={runtime} needs an ONNX export folder (with "
                              f"{ONNX_FILES['onnx']}); {hint}")
    file = folder / ONNX_FILES[runtime]
    if not file.is_file():
        raise CheckpointError(f"{folder}: no {file.name}; export with quantize=int8 for "
                              f"runtime={runtime}")
    meta = read_export_meta(folder)
    return OnnxRunner(file, runtime, threads), read_export_tokenizer(folder, meta), meta, folder


# ----------------------------------------------------------------------------- predictor

class Predictor:
    """Batched, windowed prediction with one runner (PyTorch or onnxruntime)."""

    def __init__(self, runner, tokenizer, meta: dict, path: str | os.PathLike | None = None,
                 threshold: float | None = None, flat: bool | None = None):
        if tokenizer is None:
            raise CheckpointError(f"{path}: no tokenizer (a random-weights shape export is for "
                                  "latency measurements only)")
        self.runner, self.tokenizer, self.meta = runner, tokenizer, meta
        self.path = Path(path) if path is not None else None
        self.labels = list(meta["labels"])
        data, decode = meta.get("data") or {}, meta.get("decode") or {}
        self.threshold = float(decode.get("threshold", 0.0) if threshold is None else threshold)
        self.flat = bool(decode.get("flat", data.get("flat", False)) if flat is None else flat)
        self.max_length = int(data.get("max_length") or min(tokenizer.model_max_length, 512))
        self.stride = int(data.get("stride") or self.max_length // 4)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @property
    def runtime(self) -> str:
        return self.runner.runtime

    @classmethod
    def from_path(cls, path: str | os.PathLike, runtime: str = "torch", threads: int | None = None,
                  threshold: float | None = None, flat: bool | None = None) -> "Predictor":
        """A checkpoint file, run folder or export folder; ``runtime`` torch, onnx or onnx-int8."""
        runner, tokenizer, meta, resolved = load_runner(path, runtime, threads)
        return cls(runner, tokenizer, meta, resolved, threshold, flat)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, **kwargs) -> "Predictor":
        return cls(TorchRunner(loaded.model), loaded.tokenizer, loaded.meta, loaded.path, **kwargs)

    # -- the steps, also used by the export parity check ----------------------------------
    def encode(self, texts: list[str]) -> list[Window]:
        docs = [Document(text) for text in texts]
        return encode_documents(docs, self.tokenizer, {}, self.max_length, self.stride,
                                labeled=False)

    @staticmethod
    def batches(windows: list[Window], batch_size: int) -> Iterator[list[Window]]:
        """Batches of windows of similar length (less padding); order does not matter."""
        ordered = sorted(windows, key=len)
        for lo in range(0, len(ordered), batch_size):
            yield ordered[lo : lo + batch_size]

    def collate(self, windows: list[Window]) -> dict[str, np.ndarray]:
        b, n = len(windows), max(len(w) for w in windows)
        input_ids = np.full((b, n), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((b, n), dtype=np.int64)
        content_mask = np.zeros((b, n), dtype=bool)
        for k, w in enumerate(windows):
            input_ids[k, : len(w)] = w.input_ids
            attention_mask[k, : len(w)] = 1
            content_mask[k, : len(w)] = w.content
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "content_mask": content_mask}

    def collect(self, logits, windows: list[Window], per_doc: dict[int, list]) -> None:
        """Decode a batch's logits into per-window predictions, grouped by document."""
        for rows, w in zip(threshold_spans(logits, self.threshold), windows):
            per_doc.setdefault(w.doc_index, []).append(window_predictions(rows, w.offsets, self.labels))

    def merge(self, per_doc: dict[int, list], n_docs: int) -> list[list[Prediction]]:
        return [merge_windows(per_doc.get(d, []), self.flat) for d in range(n_docs)]

    # -- the API ---------------------------------------------------------------------------
    def predict(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> list[list[Prediction]]:
        """Entities of each text (character offsets into it), in input order."""
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: must be at least 1")
        from tqdm import tqdm

        results: list[list[Prediction]] = []
        chunk = max(256, 8 * batch_size)  # documents encoded at a time (bounded memory)
        with tqdm(total=len(texts), unit="doc", file=sys.stderr, disable=not progress,
                  dynamic_ncols=True) as bar:
            for lo in range(0, len(texts), chunk):
                part = list(texts[lo : lo + chunk])
                per_doc: dict[int, list] = {}
                for batch in self.batches(self.encode(part), batch_size):
                    self.collect(self.runner(**self.collate(batch)), batch, per_doc)
                results.extend(self.merge(per_doc, len(part)))
                bar.update(len(part))
        return results


# ----------------------------------------------------------------------------- the command

def record(text: str, predictions: list[Prediction]) -> dict:
    return {"text": text,
            "entities": [{"start": p.start, "end": p.end, "type": p.type, "score": round(p.score, 4)}
                         for p in predictions]}


def read_input(path: str | None) -> list[Document]:
    """Documents of ``path`` (or stdin), via :func:`distill.data.readers.read_text`."""
    from distill.data.readers import read_text

    if path is not None:
        return read_text(path)
    data = sys.stdin.buffer.read()
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "stdin"
        file.write_bytes(data)
        try:
            return read_text(file)
        except DataError as err:
            raise DataError(str(err).replace(str(file), "<stdin>")) from None


def write_output(records: list[dict], path: str | None) -> None:
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if path is None:
        sys.stdout.write(lines)
        sys.stdout.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(cfg: DictConfig) -> int:
    if not cfg.get("ckpt"):
        raise ConfigError("ckpt: required, e.g. ckpt=outputs/teacher/<run> (or an export folder "
                          "with runtime=onnx)")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    docs = read_input(cfg.get("input"))
    predictor = Predictor.from_path(cfg.ckpt, cfg.runtime, cfg.get("threads"),
                                    cfg.get("threshold"), cfg.get("flat"))
    progress = cfg.get("progress")
    progress = cfg.get("input") is not None if progress is None else bool(progress)
    texts = [d.text for d in docs]
    predictions = predictor.predict(texts, int(cfg.batch_size), progress=progress)
    write_output([record(t, p) for t, p in zip(texts, predictions)], cfg.get("output"))
    if cfg.get("output"):
        log.info("%d documents, %d entities -> %s", len(texts), sum(map(len, predictions)),
                 cfg.output)
    return len(texts)


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    entry(main)
