"""Run folders of a comparison and one row per model: discovery, reading, names, retention,
KD gain, latency and speed-up.

Every ``metrics.json`` under the given folders is read (single runs and Hydra multirun sweeps,
nested folders included); a run folder without a usable one (failed, interrupted or still running)
becomes a :class:`Failed`, never skipped silently. Each student's teacher
(``metrics["teacher"]["checkpoint"]``) becomes a teacher run even when its own folder was not given
(deduplicated by checkpoint path). :func:`build_rows` gives the rows (columns :data:`COLUMNS`), in
table order (:func:`distill.report.compare.measure_latency` fills their latency).

Runs alike but for their seed (:data:`SEED_KEY`, distinct known seeds) are one configuration:
:func:`seed_groups` finds them, :func:`table_rows` gives the table's rows, a group of several
seeds as one row of means ± spread (half the range, (max − min) / 2: mean ± spread spans every
seed's value) and :func:`add_kd_gains` compares the means (± the sum of both sides' half-ranges).
Rows also hold keys outside :data:`COLUMNS`, not written to the CSV: ``model_name``,
``int8_export`` (the run's export folder with an int8 model, timed too) and ``group`` (the group's
name) on the runs of a group of several seeds.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from distill.errors import DistillError

METRICS = "metrics.json"
ERROR_FILE = "error.txt"  # a failed job's one-line error
BEST = "best.ckpt"
EXPORT = "export"  # <run>/export: python -m distill.export ckpt=<run> quantize=int8
INT8_FILE = "model.int8.onnx"  # distill.io.export_format.ONNX_FILES["onnx-int8"]
TEACHER, STUDENT = "teacher", "student"
PRUNING_ORDER = ("uniform", "bottom", "top", "explicit")
LATENCY_TOKENS = 64
THROUGHPUT_BATCH = 32

COLUMNS = [  # comparison.csv, in order
    "name", "run", "seed", "seeds", "role", "data", "extra_train", "unlabeled", "transfer_documents", "depth",
    "layers", "pruning", "width", "init", "kd", "kd_labels", "kd_alpha", "kd_temperature", "kd_loss", "kd_beta", "epochs",
    "params", "dev_f1", "dev_f1_spread",
    "test_f1", "test_f1_spread", "dev_exact_match", "dev_exact_match_spread", "test_exact_match",
    "test_exact_match_spread", "retention_pct", "retention_pct_spread", "retention_split", "kd_gain",
    "kd_gain_spread", "kd_gain_split", "p50_ms", "p95_ms", "throughput_per_s", "speedup", "runtime",
    "int8_f1_diff", "int8_p50_ms", "int8_throughput_per_s", "int8_speedup", "checkpoint",
    "teacher_checkpoint", "note",
]
# what makes runs one configuration trained with several seeds: the row but for its run folder,
# checkpoint, seed and metrics
SEED_KEY = ("role", "model_name", "teacher_checkpoint", "depth", "layers", "pruning", "width", "init", "kd",
            "kd_labels", "kd_alpha", "kd_temperature", "kd_loss", "kd_beta", "data", "extra_train",
            "unlabeled", "transfer_documents", "epochs")
# the metrics a group of seeds shows as mean ± spread (a ``<key>_spread`` column each)
SPREAD_KEYS = ("dev_f1", "test_f1", "dev_exact_match", "test_exact_match", "retention_pct")


class CompareError(DistillError):
    """Nothing to compare, or an argument that names no run."""


@dataclass
class Run:
    metrics: dict
    run_dir: Path | None
    source: str = "run"                     # run | beside checkpoint | from student
    row: dict = field(default_factory=dict)

    @property
    def role(self) -> str:
        return STUDENT if isinstance(self.metrics.get("teacher"), dict) else TEACHER

    @property
    def checkpoint(self) -> str | None:
        """This model's checkpoint (resolved path), or None if the run recorded none."""
        ckpt = self.metrics.get("checkpoint")
        if not ckpt and self.run_dir is not None and (self.run_dir / BEST).is_file():
            ckpt = self.run_dir / BEST
        return ckpt_key(ckpt) if ckpt else None

    @cached_property
    def hydra_config(self) -> dict:
        """The run's ``.hydra/config.yaml`` (unresolved), {} without one."""
        path = self.run_dir / ".hydra" / "config.yaml" if self.run_dir is not None else None
        if path is None or not path.is_file():
            return {}
        from omegaconf import OmegaConf
        try:
            config = OmegaConf.to_container(OmegaConf.load(path))
        except Exception as err:  # noqa: BLE001 - one unreadable config must not sink the table
            warn(f"{path}: unreadable ({type(err).__name__}), its seed and data not read")
            return {}
        return config if isinstance(config, dict) else {}

    @property
    def seed(self) -> int | None:
        """The run's seed: from metrics.json, else (older runs) its Hydra config; None if neither."""
        seed = self.metrics["seed"] if "seed" in self.metrics else self.hydra_config.get("seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    @property
    def training_extras(self) -> tuple[str | None, str | None]:
        """(extra gold-labelled training files, KD-only text) the run trained on besides the
        dataset's train split, each as its files joined with ";"; runs written before
        metrics.json recorded them are read from their Hydra config. The KD-only text is a path
        or a list of them (older runs), or read_transfer's record of it (``{"spec", "files": [...],
        "documents": ..., ...}``): then named by its ``spec``, else its files' basenames."""
        data = self.metrics.get("data") or {}
        if "extra_train" not in data:
            data = self.hydra_config.get("data") or data
        unlabeled = data.get("unlabeled")
        if isinstance(unlabeled, dict):  # as the user gave it (what older runs recorded), else files
            files = unlabeled.get("files")
            unlabeled = unlabeled.get("spec") or [
                Path(str(f)).name for f in ([files] if isinstance(files, str) else files or [])]
        return _joined(data.get("extra_train")), _joined(unlabeled)

    @property
    def teacher_checkpoint(self) -> str | None:
        if self.role != STUDENT:
            return None
        ckpt = self.metrics["teacher"].get("checkpoint")
        return ckpt_key(ckpt) if ckpt else None


@dataclass
class Failed:
    path: Path
    reason: str


def _joined(files) -> str | None:
    """A path or a list of them as one text (";" between), None for none."""
    files = [files] if isinstance(files, str) else files or []
    return ";".join(map(str, files)) or None


def ckpt_key(path) -> str:
    """A checkpoint's identity: its resolved path (a run folder means its best.ckpt)."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / BEST
    return str(p.resolve())


# ----------------------------------------------------------------------------- discovery

def is_run_dir(path: Path) -> bool:
    return (path / METRICS).is_file() or (path / ".hydra").is_dir()


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Every run folder (one with metrics.json or .hydra/) at or under ``paths``, in order."""
    found: dict[str, Path] = {}
    for root in paths:
        if root.is_file():
            if root.name != METRICS:
                raise CompareError(f"{root}: not a run folder or a {METRICS}")
            root = root.parent
        if not root.is_dir():
            raise CompareError(f"{root}: no such folder")
        for current, dirnames, _ in os.walk(root):
            here = Path(current)
            run = is_run_dir(here)
            if run:
                found.setdefault(str(here.resolve()), here)
            # hidden folders (.hydra, .cache) and a run's own logs hold no runs
            dirnames[:] = sorted(d for d in dirnames
                                 if not d.startswith(".") and not (run and d == "logs"))
    return list(found.values())


def read_metrics(path: Path) -> tuple[dict | None, str | None]:
    """(metrics, None) or (None, why it is unusable)."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        return None, f"unreadable {METRICS} ({type(err).__name__}: {err})"
    except json.JSONDecodeError as err:
        return None, f"invalid {METRICS} (not JSON: {err.msg} at line {err.lineno})"
    if not isinstance(metrics, dict):
        return None, f"invalid {METRICS} (not a JSON object)"
    dev = metrics.get("dev")
    if not isinstance(dev, dict) or not is_number(dev.get("f1")):
        return None, f"invalid {METRICS} (no dev F1)"
    if not isinstance(metrics.get("model"), dict):
        return None, f"invalid {METRICS} (no model summary)"
    return metrics, None


def last_error(run_dir: Path) -> str | None:
    """Why the run failed: the line of its ``error.txt`` (written by a failing job) when it has
    one, else the last ERROR line of its Hydra job log(s), if any."""
    message = _error_file_line(run_dir / ERROR_FILE)
    if message:
        return message
    for log in sorted(run_dir.glob("*.log")):
        try:
            with open(log, "rb") as handle:
                handle.seek(max(0, log.stat().st_size - 65536))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            continue
        for line in text.splitlines():
            match = re.search(r"\[ERROR\] - (.*)", line)
            if match:
                message = match.group(1).strip()
    return message


def _error_file_line(path: Path) -> str | None:
    """The last non-empty line of ``path`` (without a leading ``error:``), or None."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    return re.sub(r"^error:\s*", "", lines[-1]) or None


def load_runs(paths: list[Path]) -> tuple[list[Run], list[Failed]]:
    runs, failed = [], []
    for run_dir in find_run_dirs(paths):
        file = run_dir / METRICS
        if not file.is_file():
            reason = f"no {METRICS} (failed, interrupted or still running)"
            error = last_error(run_dir)
            failed.append(Failed(run_dir, f"{reason}; last error: {error}" if error else reason))
            continue
        metrics, reason = read_metrics(file)
        if metrics is None:
            failed.append(Failed(run_dir, reason))
        else:
            runs.append(Run(metrics, run_dir))
    return runs, failed


def add_teachers(runs: list[Run]) -> list[Run]:
    """``runs`` plus one teacher run per distinct student teacher not given (deduplicated by
    checkpoint): read from the metrics.json beside the checkpoint, else from the student's record."""
    teachers = {r.checkpoint: r for r in runs if r.role == TEACHER and r.checkpoint}
    out = list(runs)
    for student in (r for r in runs if r.role == STUDENT):
        key = student.teacher_checkpoint
        if key is None or key in teachers:
            continue
        beside = Path(key).parent / METRICS
        metrics = read_metrics(beside)[0] if beside.is_file() else None
        if metrics is not None and not isinstance(metrics.get("teacher"), dict):
            teacher = Run(metrics, beside.parent, source="beside checkpoint")
        else:
            block = student.metrics["teacher"]
            teacher = Run({"model": block.get("model") or {}, "dev": block.get("dev"),
                           **({"test": block["test"]} if block.get("test") else {}),
                           "data": student.metrics.get("data") or {}, "checkpoint": key},
                          Path(key).parent if Path(key).parent.is_dir() else None,
                          source="from student")
        teacher.metrics["checkpoint"] = key  # dedupe on the key the students use
        teachers[key] = teacher
        out.append(teacher)
    return out


# ----------------------------------------------------------------------------- rows

def is_number(value) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _f1(metrics: dict, split: str) -> float | None:
    block = metrics.get(split)
    value = block.get("f1") if isinstance(block, dict) else None
    return float(value) if is_number(value) else None


def _get(metrics: dict, split: str, key: str) -> float | None:
    block = metrics.get(split)
    value = block.get(key) if isinstance(block, dict) else None
    return float(value) if is_number(value) else None


def kd_used(kd: dict) -> bool:
    """Whether the student learnt from its teacher: soft targets (``alpha``), hidden states
    (``beta``) or the teacher's decoded spans as labels (``pseudo_labels``)."""
    return bool((kd.get("alpha") or 0) > 0 or (kd.get("beta") or 0) > 0 or kd.get("pseudo_labels"))


def kd_labels(kd: dict) -> str | None:
    """What the teacher's span scores taught: ``soft`` (the KL, ``alpha`` > 0), ``hard`` (its
    decoded spans as the gold of the transfer text, ``pseudo_labels``), ``soft+hard``; None
    for neither (no KD, or hidden states only)."""
    soft, hard = (kd.get("alpha") or 0) > 0, bool(kd.get("pseudo_labels"))
    return "soft+hard" if soft and hard else "soft" if soft else "hard" if hard else None


def transfer_documents(metrics: dict) -> int | None:
    """How many transfer documents the run read (``data.unlabeled.documents`` of metrics.json,
    after the drops and ``data.limit_unlabeled``); None when it read none or did not record it."""
    unlabeled = (metrics.get("data") or {}).get("unlabeled")
    count = unlabeled.get("documents") if isinstance(unlabeled, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def display_path(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return str(Path(os.path.abspath(path)).relative_to(Path.cwd()))
    except ValueError:
        return str(Path(os.path.abspath(path)))


def retention(student: Run, teacher: Run | None) -> tuple[float | None, str | None]:
    """Student F1 / its teacher's F1 (%), on test when both have it, else dev. The teacher's F1
    is the one measured in the student's own run (same evaluation data) when recorded."""
    block = student.metrics.get("teacher") or {}
    for split in ("test", "dev"):
        s = _f1(student.metrics, split)
        t = _f1(block, split)
        if t is None and teacher is not None:
            t = _f1(teacher.metrics, split)
        if s is not None and t:
            return 100.0 * s / t, split
    return None, None


def int8_f1_diff(run_dir: Path | None) -> float | None:
    """The int8 export's F1 minus the fp32 export's, in points, from ``<run>/export/parity.json``
    (``python -m distill.export ckpt=<run> quantize=int8``); None without one."""
    path = Path(run_dir) / EXPORT / "parity.json" if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        diff = (json.loads(path.read_text(encoding="utf-8")).get("onnx-int8") or {}).get("f1_diff")
    except (OSError, ValueError, AttributeError) as err:
        warn(f"{path}: unreadable ({type(err).__name__}), int8 F1 not shown")
        return None
    return 100 * diff if is_number(diff) else None


def int8_export(run_dir: Path | None) -> str | None:
    """``<run>/export`` when it holds an int8 ONNX model (its latency is measured too)."""
    folder = Path(run_dir) / EXPORT if run_dir is not None else None
    return str(folder) if folder is not None and (folder / INT8_FILE).is_file() else None


def build_rows(runs: list[Run]) -> list[dict]:
    teachers = {r.checkpoint: r for r in runs if r.role == TEACHER and r.checkpoint}
    for run in runs:
        m = run.metrics
        model = m.get("model") or {}
        row = {c: None for c in COLUMNS}
        where = run.run_dir or (Path(m["checkpoint"]).parent if m.get("checkpoint") else None)
        extra_train, unlabeled = run.training_extras
        row.update(role=run.role, run=display_path(where), seed=run.seed, model_name=model.get("name"),
                   epochs=(m.get("train") or {}).get("epochs"),
                   data=(m.get("data") or {}).get("name"),
                   # a width-pruned student: its parameters without the zeroed (pruned) heads
                   params=(m.get("student") or {}).get("params") or model.get("params"),
                   extra_train=extra_train, unlabeled=unlabeled,
                   transfer_documents=transfer_documents(m) if unlabeled else None,
                   dev_f1=_f1(m, "dev"), test_f1=_f1(m, "test"),
                   dev_exact_match=_get(m, "dev", "exact_match"),
                   test_exact_match=_get(m, "test", "exact_match"),
                   int8_f1_diff=int8_f1_diff(where), int8_export=int8_export(where),
                   checkpoint=run.checkpoint, note=None)
        if run.role == TEACHER:
            row.update(depth=model.get("layers"), layers="all", pruning="", init="", kd="",
                       retention_pct=100.0, retention_split="test" if row["test_f1"] is not None else "dev")
            if run.source != "run":
                row["note"] = f"teacher {run.source}"
        else:
            s, kd = m.get("student") or {}, m.get("kd") or {}
            layers = s.get("layers")
            row.update(depth=s.get("depth", model.get("layers")),
                       layers=",".join(str(i) for i in layers) if isinstance(layers, list) else layers,
                       pruning=s.get("pruning"), width=width_text(s), init=s.get("init"),
                       kd="KD" if kd_used(kd) else "none", kd_labels=kd_labels(kd),
                       kd_alpha=kd.get("alpha"),
                       kd_temperature=kd.get("temperature"), kd_loss=kd.get("loss"),
                       kd_beta=kd.get("beta"), teacher_checkpoint=run.teacher_checkpoint)
            row["retention_pct"], row["retention_split"] = retention(
                run, teachers.get(run.teacher_checkpoint))
        run.row = row
    name_rows([r.row for r in runs])
    return [r.row for r in sort_runs(runs)]


def width_text(student: dict) -> str | None:
    """A width-pruned student's heads and FFN neurons kept per layer (``student.heads``,
    ``student.ffn``) and, when not by gradient, the importance that chose them: ``h6 ffn768``;
    None for a student of full width."""
    heads, ffn = student.get("heads"), student.get("ffn")
    if heads is None and ffn is None:
        return None
    text = " ".join(part for part in (f"h{heads}" if heads is not None else "",
                                      f"ffn{ffn}" if ffn is not None else "") if part)
    importance = student.get("importance")
    return text + (f" {importance}" if importance not in (None, "gradient") else "")


def name_rows(rows: list[dict]) -> None:
    """Short, unique labels for the table and the plots: one per configuration (the runs of a
    group of several seeds share it as ``group`` and add `` seed=N`` to it)."""
    units = seed_groups(rows)
    for unit in units:
        name = _base_name(unit[0])
        for row in unit:
            row["name"] = name
    for refine in (_transfer_suffix, _kd_suffix, _epochs_suffix, _run_suffix):
        # units sharing a name get this refinement's suffix, unless it tells none of them apart
        clashes: dict[str, list[list[dict]]] = {}
        for unit in units:
            clashes.setdefault(unit[0]["name"], []).append(unit)
        for same in clashes.values():
            suffixes = [refine(unit) for unit in same]
            if len(same) < 2 or len(set(suffixes)) < 2:
                continue
            for unit, suffix in zip(same, suffixes):
                for row in unit:
                    row["name"] += suffix
    for unit in (u for u in units if len(u) > 1):
        for row in unit:
            row["group"] = row["name"]
            row["name"] += f" seed={row['seed']}"


def _base_name(row: dict) -> str:
    if row["role"] == TEACHER:
        name = f"teacher {row['depth']}L" if row["depth"] is not None else "teacher"
    else:
        name = (f"{row['depth']}L {row['pruning']}" + (f" {row['width']}" if row.get("width") else "")
                + f" {'KD' if row['kd'] == 'KD' else 'no-KD'}")
        if row["kd_labels"] in ("hard", "soft+hard"):
            name += f" {row['kd_labels']}"
        if row["init"] not in (None, "teacher"):
            name += f" init={row['init']}"
    for key, what in (("extra_train", "gold"), ("unlabeled", "KD text")):
        if row[key]:
            name += "".join(f" +{Path(f).stem} ({what})" for f in row[key].split(";"))
    return name


def _transfer_suffix(unit: list[dict]) -> str:
    count = unit[0]["transfer_documents"]
    return f" ({count} docs)" if count is not None else ""


def _kd_suffix(unit: list[dict]) -> str:
    row = unit[0]
    if row["role"] == TEACHER or row["kd"] != "KD":
        return ""
    return f" α={fmt_num(row['kd_alpha'])} T={fmt_num(row['kd_temperature'])}"


def _epochs_suffix(unit: list[dict]) -> str:
    epochs = unit[0].get("epochs")
    return f" {epochs} ep" if epochs is not None else ""


def _run_suffix(unit: list[dict]) -> str:
    names = [Path(r["run"]).name or r["run"] for r in unit if r["run"]]
    return f" ({','.join(names)})" if names else ""


# ----------------------------------------------------------------------------- seeds

def seed_groups(rows: list[dict]) -> list[list[dict]]:
    """``rows`` as configurations, in order (a group where its first run is): the runs alike in
    :data:`SEED_KEY` form one group when their seeds are all known and distinct (else, e.g. a
    sweep over a setting the rows do not show, each run stands alone)."""
    by_key: dict[tuple, list[dict]] = {}
    for row in rows:
        by_key.setdefault(tuple(row.get(k) for k in SEED_KEY), []).append(row)
    units, placed = [], set()
    for row in rows:
        members = by_key[tuple(row.get(k) for k in SEED_KEY)]
        seeds = [m["seed"] for m in members]
        if len(members) < 2 or None in seeds or len(set(seeds)) < len(seeds):
            units.append([row])
        elif id(members[0]) not in placed:
            placed.add(id(members[0]))
            units.append(members)
    return units


def table_rows(rows: list[dict]) -> list[dict]:
    """The table's rows: each run alone, a group of several seeds as one row of means
    (:func:`seed_row`)."""
    return [unit[0] if len(unit) == 1 else seed_row(unit) for unit in seed_groups(rows)]


def seed_row(members: list[dict]) -> dict:
    """One row for the runs of a configuration trained with several seeds: F1, exact-match and
    retention as the mean with ``<key>_spread`` half their range; params, latency and
    throughput the mean (the same model shape); ``seeds`` the seeds, ``note`` "mean of n seeds".
    Speed-up and KD gain are left to :func:`add_speedups` and :func:`add_kd_gains`."""
    first = members[0]
    row = {c: None for c in COLUMNS} | {k: first.get(k) for k in SEED_KEY}
    row.update(name=first.get("group") or first["name"], run=runs_label(members),
               seeds=";".join(str(s) for s in sorted(m["seed"] for m in members)),
               note=f"mean of {len(members)} seeds",
               runtime=next((m["runtime"] for m in members if m["runtime"]), None))
    for key in SPREAD_KEYS:
        row[key], row[f"{key}_spread"] = mean_spread([m[key] for m in members])
    splits = {m["retention_split"] for m in members}
    if len(splits) == 1:
        row["retention_split"] = splits.pop()
    else:  # some seeds against test, some against dev: no one number
        row["retention_pct"] = row["retention_pct_spread"] = None
    if row["role"] == TEACHER:
        row["retention_pct_spread"] = None  # 100 % by definition
    for key in ("params", "p50_ms", "p95_ms", "throughput_per_s", "int8_f1_diff", "int8_p50_ms",
                "int8_throughput_per_s"):
        values = [m[key] for m in members if is_number(m[key])]
        row[key] = sum(values) / len(values) if values else None
    if all(isinstance(m["params"], int) for m in members):
        row["params"] = round(row["params"])
    return row


def mean_spread(values: list) -> tuple[float | None, float | None]:
    """(mean, half the range) of ``values``; (None, None) unless every value is a number."""
    if not values or not all(is_number(v) for v in values):
        return None, None
    return sum(values) / len(values), (max(values) - min(values)) / 2


def several_seeds(rows: list[dict]) -> bool:
    return len({r["seed"] for r in rows if r["seed"] is not None}) > 1


def runs_label(rows: list[dict]) -> str:
    """The run folders of ``rows``: one as it is, several with one parent as ``parent/{a,b}``,
    else joined with ";"."""
    runs = [r["run"] for r in rows if r["run"]]
    if len(runs) < 2:
        return runs[0] if runs else ""
    parents = {str(Path(r).parent) for r in runs}
    if len(parents) > 1:
        return ";".join(runs)
    return str(Path(parents.pop()) / ("{" + ",".join(Path(r).name for r in runs) + "}"))


def sort_runs(runs: list[Run]) -> list[Run]:
    """Each teacher first, then its students by depth (desc), pruning, KD before no KD."""
    order = {}
    for run in runs:  # teachers in order of appearance (given, then found through students)
        key = run.checkpoint if run.role == TEACHER else run.teacher_checkpoint
        order.setdefault(key, len(order))
    # teachers before any student group so a lone teacher is not placed after students
    teachers_first = sorted(order, key=lambda k: (not any(
        r.role == TEACHER and r.checkpoint == k for r in runs), order[k]))
    group = {k: i for i, k in enumerate(teachers_first)}

    def key(run: Run):
        row = run.row
        owner = run.checkpoint if run.role == TEACHER else run.teacher_checkpoint
        pruning = row["pruning"] or ""
        return (group[owner], run.role != TEACHER, -(row["depth"] or 0),
                PRUNING_ORDER.index(pruning) if pruning in PRUNING_ORDER else len(PRUNING_ORDER),
                pruning, row["kd"] != "KD", str(row["kd_labels"] or ""), -(row["kd_alpha"] or 0), row["kd_temperature"] or 0,
                str(row["kd_loss"] or ""), str(row["init"] or ""), row["transfer_documents"] or 0,
                row["run"] or "")

    return sorted(runs, key=key)


def student_key(row: dict) -> tuple:
    """What makes two students the same student but for how they learnt: teacher, gold training
    data, kept layers, width and init."""
    return (row["teacher_checkpoint"], row["data"], row["extra_train"], row["layers"], row.get("width"),
            row["init"])


def no_kd_baselines(rows: list[dict]) -> dict[tuple, list[dict]]:
    """For each :func:`student_key`, its no-KD runs of the schedule (epochs) best on dev: the
    student trained without its teacher for as long as it pays, so that a gain is not just a
    longer schedule."""
    schedules: dict[tuple, dict] = {}  # same student -> {epochs: its no-KD runs}
    for row in rows:
        if row["role"] == STUDENT and row["kd"] == "none":
            schedules.setdefault(student_key(row), {}).setdefault(row.get("epochs"), []).append(row)

    def dev_mean(group: list[dict]) -> float:
        mean = mean_spread([r["dev_f1"] for r in group])[0]
        return float("-inf") if mean is None else mean

    return {key: max(groups.values(), key=dev_mean) for key, groups in schedules.items()}


def add_kd_gains(rows: list[dict], runs: list[dict] | None = None) -> None:
    """``kd_gain``: a KD student's F1 minus that of the same student trained without KD (same
    teacher, gold training data, kept layers and init; the mean when there are several, e.g.
    seeds; of the schedule best on dev when it was trained for several), in F1 points, on test when both have it, else dev. What the distillation term itself
    bought (with its KD-only text, if any: a student without KD cannot use unlabeled text).
    ``runs``: the per-run rows the no-KD twins come from (default ``rows``); a row of several
    seeds compares its mean. ``kd_gain_spread``, when either side has several seeds: the sum of
    both sides' half-ranges (the half-range of every KD run − no-KD run difference)."""
    baselines = no_kd_baselines(rows if runs is None else runs)
    for row in rows:
        base = baselines.get(student_key(row)) if row["role"] == STUDENT and row["kd"] == "KD" else None
        if not base:
            continue
        for split in ("test", "dev"):
            ours, (theirs, spread) = row[f"{split}_f1"], mean_spread([b[f"{split}_f1"] for b in base])
            if ours is not None and theirs is not None:
                row["kd_gain"] = 100.0 * (ours - theirs)
                row["kd_gain_split"] = split
                if row[f"{split}_f1_spread"] is not None or several_seeds(base):
                    row["kd_gain_spread"] = 100.0 * ((row[f"{split}_f1_spread"] or 0.0) + spread)
                break


def add_speedups(rows: list[dict], runs: list[dict] | None = None) -> None:
    """``speedup``: the teacher's p50 (from ``runs``, default ``rows``) / the row's p50;
    ``int8_speedup`` the same with both int8 exports' p50 (the same runtime on both sides)."""
    for p50_key, key in (("p50_ms", "speedup"), ("int8_p50_ms", "int8_speedup")):
        p50 = {r["checkpoint"]: r.get(p50_key) for r in (rows if runs is None else runs)
               if r["role"] == TEACHER and r["checkpoint"]}
        for row in rows:
            if row["role"] == TEACHER:
                row[key] = 1.0 if row.get(p50_key) else None
            else:
                t = p50.get(row["teacher_checkpoint"])
                row[key] = t / row[p50_key] if t and row.get(p50_key) else None


# ----------------------------------------------------------------------------- helpers

def fmt_num(value, digits: int = 3) -> str:
    """A number for the table and the row names (3 significant digits for a float)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def join_notes(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)

