"""Prediction: entities of new text with any runner, windowed and merged as in training.

Input is one document per line (plain text, or JSON lines with a "text" field), from ``input=``
or stdin; output is one ``{"text", "entities": [{"start", "end", "type", "score"}]}`` record per
input line, in input order, to ``output=`` (written atomically) or stdout. Long texts are cut
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
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from distill.data.document import Document
from distill.data.encoding import Window, encode_documents
from distill.data.readers import read_text
from distill.deploy.runners import TorchRunner, load_runner
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
    write_atomic(path, lambda out: out.write(lines))


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
