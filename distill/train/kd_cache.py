"""The teacher-logit store: the teacher's span logits of every training window, computed once per
(teacher, windows) and read by later epochs and later students.

A store is a folder ``<cache_dir>/<key>.store/`` of chunks of ``chunk_windows`` windows each:
``chunk-<k>.values.npy`` holds, window after window and type after type, the upper triangle
(i ≤ j) of the (types, n, n) logits in fp16 (or, sparse, only the spans that carry the teacher's
mass: see :class:`TeacherCache`), ``chunk-<k>.index.npy`` each segment's offset in it;
``meta.json``, written last, marks the store complete. Chunks are written atomically one at a time, so a build that is killed
continues where it stopped; under DDP rank r labels chunks r, r + world, ... on its own device
and every rank then reads all of them. Reading memory-maps the chunks (the store is never loaded
whole into RAM) and happens in the DataLoader's collate (:meth:`TeacherCache.collate`), in its
worker processes when ``data.num_workers`` > 0, not in ``training_step``.

The weights are hashed tensor by tensor (names in sorted order, dtype, shape, values) with the
head settings and encoder config, not the teacher's file bytes: a run's best.ckpt, its
``format=hf`` export folder and a re-saved checkpoint of the same weights share one entry.

A student with another tokenizer (:class:`~distill.train.alignment.CharAlignment`) gets a store
of the teacher's logits already on the student's span grid: the teacher reads its own
tokenization of each student window once, its logits are remapped, and a valid student span with
no teacher counterpart is stored as NaN, which reading turns back into the ``paired`` mask (the
key then also hashes the teacher's view of every window). Such a store is dense.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from pathlib import Path

import torch
import numpy as np

from distill.io.atomic import write_atomic
from distill.io.load import load_checkpoint
from distill.model.span_ner import SpanNER, span_mask

log = logging.getLogger("distill")

# Encoder config entries that do not change what the encoder computes.
VOLATILE_CONFIG = ("transformers_version", "_name_or_path", "architectures", "torch_dtype",
                   "dtype", "_attn_implementation_autoset")


def model_digest(model: SpanNER, digest) -> None:
    """Feed ``digest`` what determines the model's logits: its state-dict tensors in sorted name
    order, its head settings and its encoder config."""
    config = {k: v for k, v in model.encoder.config.to_dict().items() if k not in VOLATILE_CONFIG}
    digest.update(json.dumps([model.head_config, config], sort_keys=True, default=str).encode())
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())


def cache_key(teacher: SpanNER | str | os.PathLike, dataset, alignment=None) -> str:
    """The cache entry of a teacher (the model, or a checkpoint file, run folder or HF export
    folder holding it) on a dataset's windows (with an ``alignment``: as the teacher sees them)."""
    digest = hashlib.sha256()
    model_digest(teacher if isinstance(teacher, SpanNER) else load_checkpoint(teacher).model, digest)
    for window in dataset.windows:
        digest.update(repr((window.input_ids, window.content)).encode())
    if alignment is not None:
        digest.update(b"aligned")
        for view in alignment.views:
            digest.update(repr(view).encode())
    return digest.hexdigest()[:24]


def eval_key(teacher: SpanNER, splits: dict, settings: dict) -> str:
    """The cache entry of a teacher's dev/test metrics: its weights, the evaluation documents
    (text and gold entities) and windows of each split in ``splits`` (name -> ``Split``), and
    ``settings`` (decoding, device, batch size: whatever else the metrics depend on)."""
    digest = hashlib.sha256()
    model_digest(teacher, digest)
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name in sorted(splits):
        digest.update(f"split:{name}".encode())
        for doc in splits[name].docs:
            digest.update(repr((doc.text, doc.entities)).encode())
        for window in splits[name].windows:
            digest.update(repr((window.doc_index, window.input_ids, window.offsets,
                                window.content)).encode())
    return digest.hexdigest()[:24]


FORMAT = "distill-teacher-store/1"
META = "meta.json"


class TeacherCache:
    """The store of one teacher on one dataset's windows (see the module docstring).

    ``prepare`` builds what is missing (rank ``rank`` of ``world`` labels its share of the chunks)
    and opens the chunks; ``batch``/``collate`` give dense (B, C, n, n) logits padded with −inf.

    ``floor`` (``kd.store_floor``) makes the store sparse: per (window, type) only the spans whose
    teacher logit is at least ``floor`` are kept, with the exact log-mass of the others,
    ``lse_R = log Σ_{r∈R} e^{t_r}``; reading gives every dropped valid span the logit
    ``lse_R − log|R|``, which keeps the dropped mass exact at T = 1. The softmax-with-threshold KL
    then differs from the dense one by at most ``P_R · (log|R| + Δ_s)`` per (window, type), with
    ``P_R ≤ |R| e^floor`` the teacher's probability of the dropped spans and ``Δ_s`` the range of
    the student's logits over them (``tests/test_teacher_store.py`` checks it).

    ``alignment`` (a :class:`~distill.train.alignment.CharAlignment` of ``dataset``): the store
    of a student with another tokenizer (see the module docstring); dense only."""

    def __init__(self, folder: str | os.PathLike, teacher: SpanNER | str | os.PathLike, dataset,
                 batch_size: int = 64, chunk_windows: int = 4096, floor: float | None = None,
                 alignment=None):
        self.dataset, self.batch_size, self.chunk_windows = dataset, batch_size, int(chunk_windows)
        self.floor = None if floor is None else float(floor)
        if alignment is not None and self.floor is not None:
            raise ValueError("a store of aligned (cross-tokenizer) logits is dense: floor must be None")
        self.alignment = alignment
        suffix = "" if self.floor is None else f"-floor{self.floor:g}"
        self.path = Path(folder) / f"{cache_key(teacher, dataset, alignment)}{suffix}.store"
        self.build_seconds: float | None = None
        self.labelled_windows = 0  # by this process, in this run
        self._chunks: list | None = None
        self._triu: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- layout --------------------------------------------------------------------------
    @property
    def num_chunks(self) -> int:
        return max(1, -(-len(self.dataset) // self.chunk_windows))

    def chunk_files(self, k: int) -> dict[str, Path]:
        """``values`` (fp16), ``index`` (per (window, type) segment starts into values; written
        last, it marks the chunk done) and, when sparse, ``positions`` (int32 upper-triangle
        positions of the kept spans) and ``rest`` (fp32 logit of each dropped span)."""
        names = ["values", "index"] + (["positions", "rest"] if self.floor is not None else [])
        return {name: self.path / f"chunk-{k:05d}.{name}.npy" for name in names}

    def complete(self) -> bool:
        return (self.path / META).is_file()

    # -- building ------------------------------------------------------------------------
    def prepare(self, teacher, device, is_global_zero: bool = True, barrier=lambda: None,
                rank: int = 0, world: int = 1) -> None:
        """Label the missing chunks of this rank's share (all of them with one process), wait
        for the other ranks, mark the store complete (rank 0), open it."""
        if not self.complete():
            started = time.perf_counter()
            mine = [k for k in range(rank, self.num_chunks, world)
                    if not self.chunk_files(k)["index"].is_file()]
            if mine:
                self._build(teacher, device, mine)
            barrier()
            if is_global_zero:
                missing = [k for k in range(self.num_chunks)
                           if not self.chunk_files(k)["index"].is_file()]
                if missing:
                    raise RuntimeError(f"{self.path}: chunks {missing[:5]} were not written")
                json_meta = {"format": FORMAT, "windows": len(self.dataset),
                             "types": self.dataset.num_labels, "chunk_windows": self.chunk_windows,
                             "chunks": self.num_chunks, "dtype": "float16", "floor": self.floor}
                write_atomic(self.path / META, lambda h: json.dump(json_meta, h, indent=1))
            barrier()
            self.build_seconds = time.perf_counter() - started
            if is_global_zero:
                log.info("teacher logits cached in %.1f s (%d windows labelled here, %.1f windows/s): "
                         "%s, %.1f MB", self.build_seconds, self.labelled_windows,
                         self.labelled_windows / max(self.build_seconds, 1e-9), self.path,
                         self.bytes() / 1e6)
        self.open()

    @torch.no_grad()
    def _build(self, teacher, device, chunks: list[int]) -> None:
        teacher = teacher.to(device).eval()
        self.path.mkdir(parents=True, exist_ok=True)
        for k in chunks:
            lo, hi = k * self.chunk_windows, min(len(self.dataset), (k + 1) * self.chunk_windows)
            ids = list(range(lo, hi))
            by_length = sorted(ids, key=lambda i: len(self.dataset.windows[i]))  # little padding
            pieces: dict[int, list] = {}
            for start in range(0, len(ids), self.batch_size):
                part = by_length[start : start + self.batch_size]
                batch = self.dataset.collate(part)
                logits = self._label(teacher, device, batch, part)
                for row, index in enumerate(part):
                    i, j = self._indices(len(self.dataset.windows[index]))
                    pieces[index] = self._segments(logits[row, :, i, j])
            self._write_chunk(k, [pieces[i] for i in ids])
            self.labelled_windows += len(ids)

    def _label(self, teacher, device, batch: dict, part: list[int]) -> torch.Tensor:
        """The teacher's (B, C, n, n) float logits of the windows ``part`` on the student's grid
        (aligned: NaN at the valid spans with no teacher counterpart)."""
        if self.alignment is None:
            return teacher(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                           batch["content_mask"].to(device)).float().cpu()
        view = {k: v.to(device) for k, v in self.alignment.teacher_batch(part).items()}
        out = teacher(view["input_ids"], view["attention_mask"], view["content_mask"]).float()
        logits, paired = self.alignment.remap(out, part, batch["input_ids"].shape[1])
        valid = span_mask(batch["content_mask"].to(device))
        return logits.masked_fill(valid & ~paired, float("nan")).cpu()

    @staticmethod
    def paired(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An aligned store's (B, C, n, n) logits -> (logits with −inf for NaN, the (B, 1, n, n)
        ``paired`` mask: False where the teacher had no counterpart span)."""
        missing = torch.isnan(logits[:, :1])
        return logits.masked_fill(torch.isnan(logits), float("-inf")), ~missing

    def _segments(self, tri: torch.Tensor) -> list[tuple]:
        """Per type of one window's (C, T) upper triangle: (values, positions, rest logit)."""
        if self.floor is None:
            return [(row.half().numpy(), None, None) for row in tri]
        keep = tri >= self.floor  # −inf (invalid spans) is never kept
        rest = torch.isfinite(tri) & ~keep
        lse = torch.logsumexp(torch.where(rest, tri, float("-inf")), dim=1)
        count = rest.sum(dim=1)
        level = torch.where(count > 0, lse - torch.log(count.clamp_min(1).float()),
                            torch.tensor(float("-inf")))
        return [(tri[c][keep[c]].half().numpy(), keep[c].nonzero().flatten().int().numpy(),
                 float(level[c])) for c in range(tri.shape[0])]

    def _write_chunk(self, k: int, windows: list[list[tuple]]) -> None:
        segments = [seg for window in windows for seg in window]
        sizes = np.array([len(v) for v, _, _ in segments], dtype=np.int64)
        files = self.chunk_files(k)
        _save_npy(files["values"], np.concatenate([v for v, _, _ in segments]) if segments
                  else np.zeros(0, np.float16))
        if self.floor is not None:
            _save_npy(files["positions"], np.concatenate([p for _, p, _ in segments]) if segments
                      else np.zeros(0, np.int32))
            _save_npy(files["rest"], np.array([r for _, _, r in segments], dtype=np.float32))
        _save_npy(files["index"], np.concatenate([[0], np.cumsum(sizes)]))  # last: chunk done

    # -- reading -------------------------------------------------------------------------
    def open(self) -> None:
        meta = json.loads((self.path / META).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("windows") != len(self.dataset):
            raise RuntimeError(f"{self.path}: store does not match the dataset")
        self.chunk_windows = int(meta["chunk_windows"])
        self._chunks = None  # opened lazily, in each process (DataLoader workers included)

    def _open_chunks(self) -> list[dict]:
        if self._chunks is None:
            self._chunks = [{name: np.load(f, mmap_mode="r") for name, f in self.chunk_files(k).items()}
                            for k in range(self.num_chunks)]
        return self._chunks

    def __getstate__(self) -> dict:  # sent to DataLoader workers: without the open memory maps
        return {**self.__dict__, "_chunks": None}

    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.glob("chunk-*.npy"))

    def report(self) -> dict:
        """``kd.store`` of metrics.json."""
        return {"path": str(self.path), "bytes": self.bytes(), "windows": len(self.dataset),
                "bytes_per_window": round(self.bytes() / max(len(self.dataset), 1), 1),
                "floor": self.floor,
                "build_seconds": round(self.build_seconds, 2) if self.build_seconds is not None else None,
                "labelled_windows": self.labelled_windows}

    def _indices(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if n not in self._triu:
            self._triu[n] = tuple(torch.triu_indices(n, n))
        return self._triu[n]

    def window(self, index: int) -> torch.Tensor:
        """The (C, n(n+1)/2) float upper triangle of one window (dropped spans at their rest
        logit when sparse, invalid spans −inf)."""
        chunk = self._open_chunks()[index // self.chunk_windows]
        types = self.dataset.num_labels
        first = (index % self.chunk_windows) * types
        starts = chunk["index"][first : first + types + 1]
        values = torch.from_numpy(np.asarray(chunk["values"][starts[0] : starts[-1]], np.float32))
        if self.floor is None:
            return values.view(types, -1)
        window = self.dataset.windows[index]
        i, j = self._indices(len(window))
        content = torch.tensor(window.content, dtype=torch.bool)
        valid = content[i] & content[j]
        rest = torch.from_numpy(np.asarray(chunk["rest"][first : first + types], np.float32))
        out = torch.where(valid, rest[:, None], torch.tensor(float("-inf")))
        positions = torch.from_numpy(np.asarray(chunk["positions"][starts[0] : starts[-1]], np.int64))
        offsets = np.asarray(starts) - starts[0]
        for c in range(types):
            out[c, positions[offsets[c] : offsets[c + 1]]] = values[offsets[c] : offsets[c + 1]]
        return out

    def batch(self, window_ids, n: int) -> torch.Tensor:
        """(B, C, n, n) float logits of the given windows, padded with −inf."""
        ids = window_ids.tolist() if hasattr(window_ids, "tolist") else list(window_ids)
        out = torch.full((len(ids), self.dataset.num_labels, n, n), float("-inf"))
        for row, index in enumerate(ids):
            i, j = self._indices(len(self.dataset.windows[index]))
            out[row, :, i, j] = self.window(index)
        return out

    def collate(self, batch: dict) -> dict:
        """Add the batch's ``teacher_logits`` (what the DataLoader's collate calls)."""
        batch["teacher_logits"] = self.batch(batch["window_ids"], batch["input_ids"].shape[1])
        return batch


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    write_atomic(path, lambda handle: handle.write(buffer.getbuffer()), mode="wb")
