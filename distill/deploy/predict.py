"""Prediction: entities of new text with any runner, windowed and merged as in training.

Input is one document per line (plain text, or JSON lines with a "text" field), from ``input=``
or stdin; output is one ``{"text", "entities": [{"start", "end", "type", "score"}]}`` record per
input line, in input order, to ``output=`` (written atomically) or stdout. The input is streamed:
read, predicted and written a chunk of lines at a time (memory does not grow with the file),
after a first pass that checks every line (a bad line fails before anything is written).
``device=cuda`` runs a PyTorch model (or an ONNX one, with onnxruntime-gpu) on the GPU. Long texts are cut
into the same overlapping windows as in training (the checkpoint's ``max_length``/``stride``) and
the windows' predictions are merged back with :func:`distill.eval.decode.merge_windows`.

The Python API is :class:`Predictor`::

    predictor = Predictor.from_path("outputs/teacher/<run>")           # or runtime="onnx"
    predictor.predict(["EU rejects German call to boycott British lamb."])

A checkpoint file, a run folder, or a ``format=hf`` export folder runs in PyTorch
(``runtime=torch``); an ONNX export folder runs in onnxruntime (``runtime=onnx`` or
``onnx-int8``). Every runtime decodes with the same code (:mod:`distill.eval.decode`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice, tee
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from distill.data.document import Document
from distill.data.encoding import Window, encode_documents
from distill.data.readers import iter_text
from distill.deploy.runners import TorchRunner, load_runner, resolve_device
from distill.errors import CheckpointError, ConfigError, DataError
from distill.eval.decode import Prediction, collect_windows, merge_windows
from distill.io.atomic import write_atomic
from distill.io.checkpoint import LoadedModel

log = logging.getLogger("distill")


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
                  threshold: float | None = None, flat: bool | None = None,
                  device: str | None = None) -> "Predictor":
        """A checkpoint file, run folder or export folder; ``runtime`` torch, onnx or onnx-int8;
        ``device`` cpu (default) or cuda."""
        runner, tokenizer, meta, resolved = load_runner(path, runtime, threads, device)
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

    def collect(self, logits, windows: list[Window], per_doc: dict[int, tuple[list, list]]) -> None:
        """Decode a batch's logits into per-window predictions, grouped by document with the
        windows' offsets (what :func:`merge_windows` needs to pick each span's window)."""
        collect_windows(per_doc, logits, [w.offsets for w in windows], [w.doc_index for w in windows],
                        self.labels, self.threshold)

    def merge(self, per_doc: dict[int, tuple[list, list]], n_docs: int) -> list[list[Prediction]]:
        merged = []
        for d in range(n_docs):
            predictions, offsets = per_doc.get(d, ([], []))
            merged.append(merge_windows(predictions, self.flat, offsets))
        return merged

    # -- the API ---------------------------------------------------------------------------
    def predict(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> list[list[Prediction]]:
        """Entities of each text (character offsets into it), in input order."""
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts")
        return list(self.stream(texts, batch_size, progress, total=len(texts)))

    def stream(self, texts: Iterable[str], batch_size: int = 32, progress: bool = False,
               total: int | None = None) -> Iterator[list[Prediction]]:
        """:meth:`predict` over any iterable, lazily: texts are read, predicted and yielded a
        chunk at a time, so memory is bounded by the chunk, not by the input."""
        if isinstance(texts, str):
            raise TypeError("stream takes an iterable of texts")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: must be at least 1")
        from tqdm import tqdm

        chunk = max(256, 8 * batch_size)  # documents encoded at a time (bounded memory)
        texts = iter(texts)
        with tqdm(total=total, unit="doc", file=sys.stderr, disable=not progress,
                  dynamic_ncols=True) as bar:
            while part := list(islice(texts, chunk)):
                per_doc: dict[int, list] = {}
                for batch in self.batches(self.encode(part), batch_size):
                    self.collect(self.runner(**self.collate(batch), threshold=self.threshold), batch,
                                 per_doc)
                yield from self.merge(per_doc, len(part))
                bar.update(len(part))


# ----------------------------------------------------------------------------- the command

def record(text: str, predictions: list[Prediction]) -> dict:
    return {"text": text,
            "entities": [{"start": p.start, "end": p.end, "type": p.type, "score": round(p.score, 4)}
                         for p in predictions]}


@contextmanager
def input_file(path: str | None) -> Iterator[Path]:
    """``path``, or stdin copied (in blocks) to a temporary file: the input is read twice, once
    to check every line before any output and once to predict, both line by line. Errors about
    the copy name ``<stdin>``."""
    if path is not None:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "stdin"
        with open(file, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        try:
            yield file
        except DataError as err:
            raise DataError(str(err).replace(str(file), "<stdin>")) from None


def count_input(file: Path) -> int:
    """Check every line of ``file`` (a bad line at 9,000 fails before anything is written)."""
    return sum(1 for _ in iter_text(file))


def write_records(records: Iterable[dict], path: str | None) -> None:
    """One JSON line per record, as they come: to stdout (flushed per line), or to ``path``
    atomically (the file appears complete or not at all)."""
    def write(out) -> None:
        for r in records:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
            if out is sys.stdout:
                out.flush()

    if path is None:
        write(sys.stdout)
        sys.stdout.flush()
    else:
        write_atomic(path, write)


def run(cfg: DictConfig) -> int:
    if not cfg.get("ckpt"):
        raise ConfigError("ckpt: required, e.g. ckpt=outputs/teacher/<run> (or an export folder "
                          "with runtime=onnx)")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    resolve_device(cfg.get("device"))
    with input_file(cfg.get("input")) as file:
        total = count_input(file)
        predictor = Predictor.from_path(cfg.ckpt, cfg.runtime, cfg.get("threads"),
                                        cfg.get("threshold"), cfg.get("flat"), cfg.get("device"))
        progress = cfg.get("progress")
        progress = cfg.get("input") is not None if progress is None else bool(progress)
        entities = 0

        def records() -> Iterator[dict]:
            nonlocal entities
            kept, fed = tee(d.text for d in iter_text(file))  # tee holds at most one chunk
            stream = predictor.stream(fed, int(cfg.batch_size), progress, total)
            for text, predictions in zip(kept, stream, strict=True):
                entities += len(predictions)
                yield record(text, predictions)

        write_records(records(), cfg.get("output"))
    if cfg.get("output"):
        log.info("%d documents, %d entities -> %s", total, entities, cfg.output)
    return total
