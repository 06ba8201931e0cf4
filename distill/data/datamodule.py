"""LightningDataModule: read splits, tokenize into windows, batch by length.

Batches are built per batch in the collate function (dynamic padding, dense (B, C, n, n) gold
tensor for just that batch). Batches hold at most ``batch_size`` windows of similar length
(:class:`BucketBatchSampler`); for evaluation a document's windows come in consecutive batches
(a long document spans several) and on one DDP rank, which merges and scores it once all are in.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import Container, OmegaConf
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from distill.data.document import Document, join_every
from distill.data.encoding import AlignmentReport, Window, encode_documents
from distill.data.readers import read_split
from distill.data.transfer import read_transfer
from distill.errors import ConfigError, DataError

log = logging.getLogger("distill")

SPLITS = ("train", "dev", "test")
PADDING = -1  # the window index of the padding batch (a copy of window 0 that nothing scores)


@dataclass
class Split:
    """A split's documents and their windows."""

    name: str
    path: str
    docs: list[Document]
    windows: list[Window] | None = None
    report: AlignmentReport | None = None


class WindowDataset(Dataset):
    """Windows of one split; items are window indices, the collate function builds the batch."""

    def __init__(self, windows: list[Window], docs: list[Document], num_labels: int, pad_id: int):
        self.windows, self.docs, self.num_labels, self.pad_id = windows, docs, num_labels, pad_id
        self.doc_windows: dict[int, int] = {}  # document -> its number of windows
        for w in windows:
            self.doc_windows[w.doc_index] = self.doc_windows.get(w.doc_index, 0) + 1

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> dict:
        if list(indices) == [PADDING]:  # an evaluation rank without documents: see the sampler
            batch = self.collate([0])
            return batch | {"padding": True, "gold": {}, "doc_windows": {}}
        windows = [self.windows[i] for i in indices]
        b, n = len(windows), max(len(w) for w in windows)
        input_ids = torch.full((b, n), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros(b, n, dtype=torch.long)
        content_mask = torch.zeros(b, n, dtype=torch.bool)
        targets = torch.zeros(b, self.num_labels, n, n, dtype=torch.bool)
        for k, w in enumerate(windows):
            input_ids[k, : len(w)] = torch.tensor(w.input_ids)
            attention_mask[k, : len(w)] = 1
            content_mask[k, : len(w)] = torch.tensor(w.content)
            for c, i, j in w.spans:
                targets[k, c, i, j] = True
        doc_indices = [w.doc_index for w in windows]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "content_mask": content_mask,
            "targets": targets,
            "labeled": torch.tensor([w.labeled for w in windows]),
            "window_ids": torch.tensor(indices),
            "doc_indices": doc_indices,
            "offsets": [w.offsets for w in windows],
            "gold": {d: [(e.start, e.end, e.type) for e in self.docs[d].entities]
                     for d in dict.fromkeys(doc_indices)},
            "doc_windows": {d: self.doc_windows[d] for d in dict.fromkeys(doc_indices)},
        }


class BucketBatchSampler(Sampler[list[int]]):
    """Length-bucketed batches of at most ``batch_size`` windows; a group (a document, for
    evaluation) stays on one DDP rank and in consecutive batches, but may span several.

    Groups are shuffled (when ``shuffle``), sharded across DDP ranks (training pads by repeating
    groups so every rank has the same number of batches; evaluation does not pad, so every
    document is scored exactly once), then sorted by length inside pools of ``pool`` batches,
    their windows laid end to end and cut into batches of ``batch_size`` windows."""

    def __init__(self, lengths: list[int], groups: list[int], batch_size: int, shuffle: bool,
                 seed: int = 0, pool: int = 50, transfer: tuple[int, int] | None = None):
        self.lengths, self.batch_size, self.shuffle, self.seed, self.pool = (
            lengths, batch_size, shuffle, seed, pool)
        members: dict[int, list[int]] = {}
        for index, group in enumerate(groups):
            members.setdefault(group, []).append(index)
        self.groups = list(members.values())
        # (gold groups, transfer groups per epoch): groups from ``gold`` on are transfer text, of
        # which each epoch takes the next ``per_epoch`` (cycling through them over the epochs)
        self.transfer = transfer
        self.epoch = 0
        self.skip = 0  # batches of the next iteration to leave out (a resumed epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> BucketBatchSampler:
        """Lightning calls ``set_epoch`` on ``dataloader.batch_sampler.sampler``, not on the batch
        sampler itself: without this, every epoch would repeat the first one's order."""
        return self

    def _epoch_groups(self) -> list[list[int]]:
        """This epoch's groups: all of them, or with ``transfer`` the gold ones and this epoch's
        share of the transfer text, a fixed-seed permutation walked epoch after epoch."""
        if self.transfer is None:
            return list(self.groups)
        gold, per_epoch = self.transfer
        extra = self.groups[gold:]
        if not extra:
            return list(self.groups)
        order = list(range(len(extra)))
        random.Random(self.seed).shuffle(order)
        start = self.epoch * per_epoch
        picked = [order[(start + k) % len(order)] for k in range(min(per_epoch, len(order)))]
        return self.groups[:gold] + [extra[k] for k in picked]

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        groups = self._epoch_groups()
        if self.shuffle:
            rng.shuffle(groups)
        world, rank = _world()
        if world > 1:
            if self.shuffle:  # training: equal batch counts on every rank
                groups += groups[: (-len(groups)) % world]
            groups = groups[rank::world]
            if not groups and self.groups:  # fewer documents than ranks: one batch scored by no
                return [[PADDING]]          # one, so that this rank still joins the metric sync
        batches: list[list[int]] = []
        span = self.batch_size * self.pool
        for lo in range(0, len(groups), span):
            pool = sorted(groups[lo : lo + span], key=lambda g: max(self.lengths[i] for i in g))
            windows = [i for group in pool for i in group]
            batches += [windows[b : b + self.batch_size] for b in range(0, len(windows), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self):
        skip, self.skip = self.skip, 0
        yield from self._batches()[skip:]

    def __len__(self) -> int:
        return len(self._batches())


class CollateThen:
    """A DataLoader ``collate_fn``: ``collate``, then ``hook`` on the batch (picklable, so it runs
    in the loader's worker processes)."""

    def __init__(self, collate, hook):
        self.collate, self.hook = collate, hook

    def __call__(self, indices):
        return self.hook(self.collate(indices))


class ResumableLoader(DataLoader):
    """The training loader, checkpointable mid-epoch: Lightning saves its ``state_dict`` (epoch and
    batches served) with every checkpoint and hands it back on resume, so the resumed epoch goes on
    with the batches the interrupted one had not reached instead of starting over."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.served, self.resume_state = 0, None

    def __iter__(self):
        sampler, state = self.batch_sampler, self.resume_state
        self.resume_state = None
        self.served = state["batches"] if state and state["epoch"] == sampler.epoch else 0
        sampler.skip = self.served
        for batch in super().__iter__():
            self.served += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.batch_sampler.epoch, "batches": self.served}

    def load_state_dict(self, state: dict) -> None:
        self.resume_state = dict(state)


def _plain(value):
    """Hydra passes DictConfig/ListConfig values; the data module keeps plain dicts and lists."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class NERDataModule(pl.LightningDataModule):
    """Reads the configured splits; :meth:`encode` tokenizes them once the tokenizer is known.

    ``holdout`` carves a fixed-seed evaluation set out of the train file (for datasets without
    a public train split, e.g. CMeEE: ``train: dev.json``, ``holdout: 1000``). ``extra_train``
    names more gold-labelled training files in the canonical JSONL format (e.g. the output of
    ``distill.augment``), appended to the train split after the holdout and ``limit_train``;
    ``unlabeled`` names text that only the distillation term sees. ``join_train=k`` joins every
    k consecutive training documents (after the limit, before the extra files) into one, so a
    model trained on sentences also sees multi-sentence windows, as long documents are predicted."""

    def __init__(self, dir: str, train: str, dev: str | None = None, test: str | None = None,
                 format: str = "jsonl", options: dict | None = None, flat: bool = False,
                 limit_train: int | None = None, limit_eval: int | None = None,
                 max_length: int = 256, stride: int = 64, batch_size: int = 32,
                 eval_batch_size: int = 64, num_workers: int = 0, holdout: int | None = None,
                 holdout_seed: int = 0, unlabeled: str | list[str] | None = None, seed: int = 0,
                 name: str | None = None, extra_train: str | list[str] | None = None,
                 limit_unlabeled: int | None = None, unlabeled_encoding: str | None = None,
                 unlabeled_unit: str | None = None, transfer_ratio: float | None = None,
                 join_train: int | None = None):
        super().__init__()
        options, extra_train = _plain(options), _plain(extra_train)
        self.dir, self.format, self.options = Path(str(dir)), format, dict(options or {})
        self.files = {"train": train, "dev": dev, "test": test}
        self.flat, self.limit_train, self.limit_eval = flat, limit_train, limit_eval
        self.max_length, self.stride = max_length, stride
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.holdout, self.holdout_seed, self.unlabeled, self.seed = holdout, holdout_seed, _plain(unlabeled), seed
        # transfer text (distill.data.transfer): how much, decoded how, cut into documents how
        self.limit_unlabeled, self.unlabeled_encoding = limit_unlabeled, unlabeled_encoding
        self.unlabeled_unit = unlabeled_unit
        if transfer_ratio is not None and not float(transfer_ratio) > 0:
            raise ConfigError(f"data.transfer_ratio={transfer_ratio}: expected a number > 0 (or null)")
        self.transfer_ratio = None if transfer_ratio is None else float(transfer_ratio)
        if join_train is not None and (type(join_train) is not int or join_train < 1):
            raise ConfigError(f"data.join_train={join_train!r}: expected an integer >= 1 (or null)")
        self.join_train = join_train
        # a function of each collated train batch, run in the loader (its workers too): the
        # student's teacher-logit store adds the teacher's logits there (TeacherCache.collate)
        self.train_batch_hook = None
        self.unlabeled_counts: dict | None = None  # what read_transfer kept and dropped
        self.name = name
        self.extra_train = [extra_train] if isinstance(extra_train, str) else list(extra_train or [])
        self.splits: dict[str, Split] = {}
        self.unlabeled_split: Split | None = None
        self.labels: list[str] = []
        self.tokenizer = None

    # -- reading ---------------------------------------------------------------------------
    def path(self, split: str) -> Path:
        return self.dir / self.files[split]

    def read(self, labels: list[str] | None = None) -> list[str]:
        """Read every configured split; return the label set (from train unless ``labels``)."""
        if self.splits:
            return self.labels
        if not self.files["train"]:
            raise ConfigError("data.train: a train file is required")
        train_docs = read_split(self.format, self.path("train"), **self.options)
        if self.holdout:
            if self.holdout >= len(train_docs):
                raise ConfigError(f"data.holdout={self.holdout} must be smaller than the "
                                  f"{len(train_docs)} documents of {self.path('train')}")
            order = list(range(len(train_docs)))
            random.Random(self.holdout_seed).shuffle(order)
            held = set(order[: self.holdout])
            self.splits["dev"] = Split("dev", f"{self.path('train')} (held out)",
                                       [d for k, d in enumerate(train_docs) if k in held])
            train_docs = [d for k, d in enumerate(train_docs) if k not in held]
        train_docs = train_docs[: self.limit_train]
        if self.join_train and self.join_train > 1:
            joined = join_every(train_docs, self.join_train)
            log.info("train: %d documents joined %d at a time into %d (data.join_train)",
                     len(train_docs), self.join_train, len(joined))
            train_docs = joined
        for path in self.extra_train:
            extra = read_split("jsonl", path)
            log.info("train: + %d gold-labelled documents (%d entities) from %s", len(extra),
                     sum(len(d.entities) for d in extra), path)
            train_docs = train_docs + extra
        self.splits["train"] = Split("train", " + ".join([str(self.path("train")), *self.extra_train]),
                                     train_docs)
        for split in ("dev", "test"):
            if self.files[split] and split not in self.splits:
                docs = read_split(self.format, self.path(split), **self.options)
                self.splits[split] = Split(split, str(self.path(split)), docs)
        for split in ("dev", "test"):
            if split in self.splits:
                self.splits[split].docs = self.splits[split].docs[: self.limit_eval]
        if "dev" not in self.splits:
            raise ConfigError("data.dev: an evaluation split is required (or set data.holdout)")
        self.labels = sorted({e.type for d in self.splits["train"].docs for e in d.entities})
        if labels is not None:
            unknown = sorted(set(self.labels) - set(labels))
            if unknown:
                raise DataError(f"{self.splits['train'].path}: labels {unknown} are not in the model's "
                                f"label set {list(labels)}")
            self.labels = list(labels)
        if not self.labels:
            raise DataError(f"{self.splits['train'].path}: no entities in the training split")
        for split in ("dev", "test"):
            if split in self.splits:
                self._check_labels(self.splits[split])
        if self.unlabeled:  # after dev/test: transfer text equal to their text is dropped
            eval_texts = [d.text for s in ("dev", "test") if s in self.splits for d in self.splits[s].docs]
            docs, self.unlabeled_counts = read_transfer(
                self.unlabeled, self.unlabeled_encoding, self.limit_unlabeled, eval_texts,
                self.unlabeled_unit)
            spec = self.unlabeled if isinstance(self.unlabeled, str) else " + ".join(self.unlabeled)
            self.unlabeled_split = Split("unlabeled", spec, docs)
        return self.labels

    def _check_labels(self, split: Split) -> None:
        known = set(self.labels)
        for doc in split.docs:
            for entity in doc.entities:
                if entity.type not in known:
                    raise DataError(f"{doc.source or split.path}: label {entity.type!r} does not "
                                    f"occur in the training data (known: {sorted(known)})")

    # -- encoding --------------------------------------------------------------------------
    def encode(self, tokenizer, again: bool = False) -> None:
        """Tokenize every split into windows and log alignment/vocabulary coverage (splits
        already encoded are kept, unless ``again``: e.g. the student's pruned tokenizer)."""
        self.tokenizer = tokenizer
        label_ids = {label: k for k, label in enumerate(self.labels)}
        for split in list(self.splits.values()) + ([self.unlabeled_split] if self.unlabeled_split else []):
            if split.windows is not None and not again:
                continue
            split.report = AlignmentReport()
            split.windows = encode_documents(
                split.docs, tokenizer, label_ids, self.max_length, self.stride,
                labeled=split.name != "unlabeled", report=split.report)
            split.report.log(f"{split.name} ({split.path})")

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            raise RuntimeError("NERDataModule.encode(tokenizer) must run before training")

    def dataset(self, split: str) -> WindowDataset:
        s = self.splits[split]
        windows, docs = s.windows, s.docs
        if split == "train" and self.unlabeled_split is not None:
            shift = len(docs)
            extra = [Window(w.doc_index + shift, w.input_ids, w.offsets, w.content, [], False)
                     for w in self.unlabeled_split.windows]
            windows, docs = windows + extra, docs + self.unlabeled_split.docs
        return WindowDataset(windows, docs, len(self.labels), self.tokenizer.pad_token_id)

    def loader(self, split: str, shuffle: bool | None = None) -> DataLoader:
        dataset = self.dataset(split)
        training = split == "train" if shuffle is None else shuffle
        groups = list(range(len(dataset))) if training else [w.doc_index for w in dataset.windows]
        transfer = None
        if split == "train" and self.transfer_ratio is not None and self.unlabeled_split is not None:
            transfer = (len(self.splits["train"].windows), self._transfer_share())
        sampler = BucketBatchSampler(
            [len(w) for w in dataset.windows], groups,
            self.batch_size if training else self.eval_batch_size, shuffle=training, seed=self.seed,
            transfer=transfer)
        collate = dataset.collate
        if split == "train" and self.train_batch_hook is not None:
            collate = CollateThen(collate, self.train_batch_hook)
        return (ResumableLoader if training else DataLoader)(
            dataset, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def train_windows_per_epoch(self) -> int:
        """Training windows an epoch holds: gold, plus the transfer text (all of it, or its
        ``transfer_ratio`` share)."""
        gold = len(self.splits["train"].windows)
        if self.unlabeled_split is None:
            return gold
        transfer = len(self.unlabeled_split.windows)
        if self.transfer_ratio is not None:
            transfer = min(transfer, self._transfer_share())
        return gold + transfer

    def _transfer_share(self) -> int:
        """Transfer windows per epoch under ``transfer_ratio``: ratio x the gold windows."""
        return max(1, round(self.transfer_ratio * len(self.splits["train"].windows)))

    def train_dataloader(self):
        return self.loader("train")

    def val_dataloader(self):
        return self.loader("dev")

    def test_dataloader(self):
        return self.loader("test")

    def config(self) -> dict:
        """What a checkpoint must remember to window new text the same way, and to let a student
        train and evaluate on the same documents (files, holdout, limits)."""
        return {"name": self.name, "max_length": self.max_length, "stride": self.stride,
                "flat": self.flat, "format": self.format, "options": self.options,
                "dir": str(self.dir), "files": self.files, "holdout": self.holdout,
                "holdout_seed": self.holdout_seed, "limit_train": self.limit_train,
                "limit_eval": self.limit_eval, "extra_train": self.extra_train,
                "unlabeled": self.unlabeled, "limit_unlabeled": self.limit_unlabeled,
                "unlabeled_encoding": self.unlabeled_encoding, "unlabeled_unit": self.unlabeled_unit,
                "transfer_ratio": self.transfer_ratio, "join_train": self.join_train}

    def unlabeled_report(self) -> dict | None:
        """What the transfer text gave (for metrics.json): the spec, read_transfer's counts
        (files read, documents kept, empty / duplicate / dev-test / over-limit units left out)
        and the windows cut from the documents (None before :meth:`encode`); None without any."""
        if self.unlabeled_split is None:
            return None
        windows = self.unlabeled_split.windows
        return {"spec": self.unlabeled, **(self.unlabeled_counts or {}),
                "windows": None if windows is None else len(windows)}
