"""``python -m distill.compare <run dirs…>``: one table (and two plots) of a teacher and its students.

Every ``metrics.json`` under the given folders is read (single runs and Hydra multirun sweeps,
nested folders included). Each student's teacher (``metrics["teacher"]["checkpoint"]``) becomes the
teacher row even when its own run folder was not given (deduplicated by checkpoint path). CPU
latency is measured here, for all models in one process, interleaved, after warm-up and on the
same inputs (:mod:`distill.bench`), so the numbers are comparable with each other.

Writes ``comparison.md``, ``comparison.csv``, ``f1_vs_latency.png`` and ``f1_vs_depth.png`` (to
``--output``, default: the first folder given) and prints the markdown table. Run folders without a
usable ``metrics.json`` (failed, interrupted or still running) are listed, never skipped silently.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import DistillError

METRICS = "metrics.json"
BEST = "best.ckpt"
TEACHER, STUDENT = "teacher", "student"
PRUNING_ORDER = ("uniform", "bottom", "top", "explicit")
LATENCY_TOKENS = 64
THROUGHPUT_BATCH = 32

COLUMNS = [  # comparison.csv, in order
    "name", "run", "role", "data", "extra_train", "unlabeled", "depth", "layers", "pruning", "init", "kd", "kd_alpha",
    "kd_temperature", "kd_loss", "kd_beta", "params", "dev_f1", "test_f1", "dev_exact_match",
    "test_exact_match", "retention_pct", "retention_split", "kd_gain", "kd_gain_split", "p50_ms", "p95_ms",
    "throughput_per_s", "speedup", "runtime", "checkpoint", "teacher_checkpoint", "note",
]


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

    @property
    def training_extras(self) -> tuple[str | None, str | None]:
        """(extra gold-labelled training files, KD-only text file) the run trained on besides
        the dataset's train split; runs written before metrics.json recorded them are read from
        their Hydra config."""
        data = self.metrics.get("data") or {}
        if "extra_train" not in data and self.run_dir is not None:
            hydra_cfg = self.run_dir / ".hydra" / "config.yaml"
            if hydra_cfg.is_file():
                from omegaconf import OmegaConf
                data = OmegaConf.to_container(OmegaConf.load(hydra_cfg).get("data") or {})
        extra = data.get("extra_train") or []
        extra = [extra] if isinstance(extra, str) else extra
        return ";".join(map(str, extra)) or None, data.get("unlabeled") or None

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
    if not isinstance(dev, dict) or not _is_number(dev.get("f1")):
        return None, f"invalid {METRICS} (no dev F1)"
    if not isinstance(metrics.get("model"), dict):
        return None, f"invalid {METRICS} (no model summary)"
    return metrics, None


def last_error(run_dir: Path) -> str | None:
    """The last ERROR line of the run's Hydra job log(s), if any."""
    message = None
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

def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _f1(metrics: dict, split: str) -> float | None:
    block = metrics.get(split)
    value = block.get("f1") if isinstance(block, dict) else None
    return float(value) if _is_number(value) else None


def _get(metrics: dict, split: str, key: str) -> float | None:
    block = metrics.get(split)
    value = block.get(key) if isinstance(block, dict) else None
    return float(value) if _is_number(value) else None


def kd_used(kd: dict) -> bool:
    return bool((kd.get("alpha") or 0) > 0 or (kd.get("beta") or 0) > 0)


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


def build_rows(runs: list[Run]) -> list[dict]:
    teachers = {r.checkpoint: r for r in runs if r.role == TEACHER and r.checkpoint}
    for run in runs:
        m = run.metrics
        model = m.get("model") or {}
        row = {c: None for c in COLUMNS}
        where = run.run_dir or (Path(m["checkpoint"]).parent if m.get("checkpoint") else None)
        extra_train, unlabeled = run.training_extras
        row.update(role=run.role, run=display_path(where),
                   data=(m.get("data") or {}).get("name"), params=model.get("params"),
                   extra_train=extra_train, unlabeled=unlabeled,
                   dev_f1=_f1(m, "dev"), test_f1=_f1(m, "test"),
                   dev_exact_match=_get(m, "dev", "exact_match"),
                   test_exact_match=_get(m, "test", "exact_match"),
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
                       pruning=s.get("pruning"), init=s.get("init"),
                       kd="KD" if kd_used(kd) else "none", kd_alpha=kd.get("alpha"),
                       kd_temperature=kd.get("temperature"), kd_loss=kd.get("loss"),
                       kd_beta=kd.get("beta"), teacher_checkpoint=run.teacher_checkpoint)
            row["retention_pct"], row["retention_split"] = retention(
                run, teachers.get(run.teacher_checkpoint))
        run.row = row
    name_rows([r.row for r in runs])
    return [r.row for r in sort_runs(runs)]


def name_rows(rows: list[dict]) -> None:
    """Short, unique labels for the table and the plots."""
    for row in rows:
        if row["role"] == TEACHER:
            row["name"] = f"teacher {row['depth']}L" if row["depth"] is not None else "teacher"
        else:
            name = f"{row['depth']}L {row['pruning']} {'KD' if row['kd'] == 'KD' else 'no-KD'}"
            if row["init"] not in (None, "teacher"):
                name += f" init={row['init']}"
            row["name"] = name
        for key, what in (("extra_train", "gold"), ("unlabeled", "KD text")):
            if row[key]:
                row["name"] += "".join(f" +{Path(f).stem} ({what})" for f in row[key].split(";"))
    for refine in (_kd_suffix, _run_suffix):
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["name"]] = counts.get(row["name"], 0) + 1
        for row in rows:
            if counts[row["name"]] > 1:
                row["name"] += refine(row)


def _kd_suffix(row: dict) -> str:
    if row["role"] == TEACHER or row["kd"] != "KD":
        return ""
    return f" α={_num(row['kd_alpha'])} T={_num(row['kd_temperature'])}"


def _run_suffix(row: dict) -> str:
    return f" ({Path(row['run']).name or row['run']})" if row["run"] else ""


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
                pruning, row["kd"] != "KD", -(row["kd_alpha"] or 0), row["kd_temperature"] or 0,
                str(row["kd_loss"] or ""), str(row["init"] or ""), row["run"] or "")

    return sorted(runs, key=key)


# ----------------------------------------------------------------------------- latency

def measure_latency(rows: list[dict], repeats: int, warmup: int, runtime: str | None,
                    tokens: int = LATENCY_TOKENS, batch: int = THROUGHPUT_BATCH) -> list[str]:
    """Fill p50/p95/throughput/runtime of ``rows`` in place (and speed-up). Returns notes."""
    notes = []
    try:
        from distill.report.bench import load_bench_model, measure
    except ImportError as err:
        warn(f"latency not measured: distill.bench is unavailable ({err})")
        return [f"Latency not measured: distill.bench is unavailable ({err})."]
    from tqdm import tqdm

    todo = [r for r in rows if r["checkpoint"]]
    for row in rows:
        if not row["checkpoint"]:
            row["note"] = _join(row["note"], "no checkpoint recorded: latency not measured")
    models, measured = [], []
    for row in tqdm(todo, desc="loading models", unit="model", file=sys.stderr, leave=False):
        if not Path(row["checkpoint"]).is_file():
            row["note"] = _join(row["note"], "checkpoint missing: latency not measured")
            warn(f"{row['checkpoint']}: checkpoint missing, latency not measured ({row['name']})")
            continue
        try:
            models.append(load_bench_model(row["checkpoint"], runtime))
            measured.append(row)
        except Exception as err:  # noqa: BLE001 - one bad checkpoint must not sink the table
            message = " ".join(str(err).split())[:200]
            row["note"] = _join(row["note"], f"latency not measured: {message}")
            warn(f"{row['checkpoint']}: cannot load for latency ({message})")
    if not models:
        return notes
    cases = [(1, tokens), (batch, tokens)]
    results = measure(models, cases, warmup=warmup, repeats=repeats, progress=True)
    for (b, t), per_model in zip(cases, _by_case(results, models, cases)):
        for row, result in zip(measured, per_model):
            if result is None:
                continue
            row["runtime"] = result.get("runtime")
            if (b, t) == (1, tokens):
                row["p50_ms"], row["p95_ms"] = result.get("p50_ms"), result.get("p95_ms")
            else:
                row["throughput_per_s"] = result.get("per_second")
    return notes


def _by_case(results: list[dict], models: list, cases: list[tuple[int, int]]) -> list[list]:
    """For each case, the result row of each model (in ``models`` order). Rows are matched by
    model name when the names are unique, else by order within the case."""
    names = [str(getattr(m, "name", "")) for m in models]
    unique = all(names) and len(set(names)) == len(names)
    out = []
    for b, t in cases:
        case_rows = [r for r in results if (r.get("batch"), r.get("tokens")) == (b, t)]
        if unique and {str(r.get("model")) for r in case_rows} == set(names):
            by_name = {str(r.get("model")): r for r in case_rows}
            out.append([by_name[n] for n in names])
        else:
            out.append(case_rows[: len(models)] + [None] * (len(models) - len(case_rows)))
    return out


def add_kd_gains(rows: list[dict]) -> None:
    """``kd_gain``: a KD student's F1 minus that of the same student trained without KD (same
    teacher, gold training data, kept layers and init; the mean when there are several), in F1
    points, on test when both have it, else dev. What the distillation term itself bought (with
    its KD-only text, if any: a student without KD cannot use unlabeled text)."""
    def same_student(row: dict) -> tuple:
        return (row["teacher_checkpoint"], row["data"], row["extra_train"], row["layers"], row["init"])

    baselines: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["role"] == STUDENT and row["kd"] == "none":
            baselines.setdefault(same_student(row), []).append(row)
    for row in rows:
        base = baselines.get(same_student(row)) if row["role"] == STUDENT and row["kd"] == "KD" else None
        if not base:
            continue
        for split in ("test", "dev"):
            ours, theirs = row[f"{split}_f1"], [b[f"{split}_f1"] for b in base]
            if ours is not None and all(t is not None for t in theirs):
                row["kd_gain"] = 100.0 * (ours - sum(theirs) / len(theirs))
                row["kd_gain_split"] = split
                break


def add_speedups(rows: list[dict]) -> None:
    p50 = {r["checkpoint"]: r["p50_ms"] for r in rows if r["role"] == TEACHER}
    for row in rows:
        if row["role"] == TEACHER:
            row["speedup"] = 1.0 if row["p50_ms"] else None
        else:
            t = p50.get(row["teacher_checkpoint"])
            row["speedup"] = t / row["p50_ms"] if t and row["p50_ms"] else None


# ----------------------------------------------------------------------------- output

def _num(value, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _params(value) -> str:
    if not _is_number(value):
        return ""
    return f"{value / 1e6:.1f}M" if value >= 1e5 else f"{value / 1e3:.1f}k"


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b


def kd_text(row: dict) -> str:
    if row["role"] == TEACHER:
        return "—"
    if row["kd"] != "KD":
        return "none"
    text = f"α={_num(row['kd_alpha'])} T={_num(row['kd_temperature'])} {row['kd_loss'] or ''}".strip()
    if row["kd_beta"]:
        text += f" β={_num(row['kd_beta'])}"
    return text


def exact_match(row: dict) -> float | None:
    return row["test_exact_match"] if row["test_exact_match"] is not None else row["dev_exact_match"]


MD_HEADER = ["model", "run", "role", "depth", "layers", "pruning", "init", "KD (α, T, loss)",
             "params", "dev F1", "test F1", "EM", "F1 retention %", "KD gain", "p50 ms (1×64)",
             "seq/s (32×64)", "speed-up"]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(MD_HEADER) + " |",
             "|" + "|".join("---" if i < 8 else "---:" for i in range(len(MD_HEADER))) + "|"]
    for r in rows:
        cells = [
            r["name"], f"`{r['run']}`" if r["run"] else "", r["role"], _num(r["depth"]),
            r["layers"] or "", r["pruning"] or "", r["init"] or "", kd_text(r), _params(r["params"]),
            _pct(r["dev_f1"]), _pct(r["test_f1"]), _pct(exact_match(r)),
            "" if r["retention_pct"] is None else
            f"{r['retention_pct']:.1f}" + (" (dev)" if r["retention_split"] == "dev" and r["role"] == STUDENT else ""),
            "" if r["kd_gain"] is None else
            f"{r['kd_gain']:+.2f}" + (" (dev)" if r["kd_gain_split"] == "dev" else ""),
            "" if r["p50_ms"] is None else f"{r['p50_ms']:.2f}",
            "" if r["throughput_per_s"] is None else f"{r['throughput_per_s']:.1f}",
            "" if r["speedup"] is None else f"{r['speedup']:.2f}×",
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else
                             round(row[k], 6) if isinstance(row[k], float) else row[k]
                             for k in COLUMNS})


def plot_split(rows: list[dict]) -> str:
    """The split the plots use: test if every row has a test F1, else dev."""
    return "test" if rows and all(r["test_f1"] is not None for r in rows) else "dev"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower latency and higher F1), by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_f1_vs_latency(rows: list[dict], path: Path) -> bool:
    split = plot_split(rows)
    rows = [r for r in rows if r["p50_ms"] is not None and r[f"{split}_f1"] is not None]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r["p50_ms"], 100 * r[f"{split}_f1"]) for r in rows]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for role, kd, marker, color, label in ((TEACHER, None, "*", "black", "teacher"),
                                           (STUDENT, "KD", "o", "tab:blue", "student (KD)"),
                                           (STUDENT, "none", "s", "tab:orange", "student (no KD)")):
        sel = [i for i, r in enumerate(rows) if r["role"] == role and (kd is None or r["kd"] == kd)]
        if sel:
            ax.scatter([points[i][0] for i in sel], [points[i][1] for i in sel], marker=marker,
                       s=160 if marker == "*" else 50, color=color, label=label, zorder=3)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="tab:red",
            linewidth=1.5, marker="o", markersize=12, markerfacecolor="none", zorder=2,
            label="Pareto front")
    for (x, y), row in zip(points, rows):
        # a KD student and its no-KD twin sit at the same latency: label one above, one below
        below = row["role"] == STUDENT and row["kd"] != "KD"
        ax.annotate(row["name"], (x, y), textcoords="offset points", xytext=(5, -9 if below else 4),
                    fontsize=7)
    ax.margins(x=0.15, y=0.08)
    ax.set_xlabel(f"CPU latency p50, batch 1 × {LATENCY_TOKENS} tokens (ms)")
    ax.set_ylabel(f"{split} F1 (%)")
    ax.set_title(f"{split} F1 vs CPU latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_f1_vs_depth(rows: list[dict], path: Path) -> bool:
    split = plot_split(rows)
    students = [r for r in rows if r["role"] == STUDENT and r[f"{split}_f1"] is not None
                and r["depth"] is not None]
    teachers = [r for r in rows if r["role"] == TEACHER and r[f"{split}_f1"] is not None]
    if not students and not teachers:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    prunings = sorted({r["pruning"] or "" for r in students},
                      key=lambda p: (PRUNING_ORDER.index(p) if p in PRUNING_ORDER else 99, p))
    colors = plt.get_cmap("tab10")
    for k, pruning in enumerate(prunings):
        for kd, style, marker in (("KD", "-", "o"), ("none", "--", "s")):
            sel = sorted((r for r in students if (r["pruning"] or "") == pruning and r["kd"] == kd),
                         key=lambda r: r["depth"])
            if not sel:
                continue
            # every run is a point; the line joins the best run of each depth (sweeps with
            # several KD settings per depth, e.g. Optuna trials, give several points)
            best: dict[int, float] = {}
            for r in sel:
                best[r["depth"]] = max(best.get(r["depth"], -1.0), 100 * r[f"{split}_f1"])
            color = colors(k % 10)
            ax.plot(list(best), list(best.values()), linestyle=style, marker=marker, color=color,
                    label=f"{pruning or '?'}, {'KD' if kd == 'KD' else 'no KD'}")
            if len(best) < len(sel):
                ax.scatter([r["depth"] for r in sel], [100 * r[f"{split}_f1"] for r in sel],
                           marker=marker, color=color, alpha=0.4, s=18)
    for k, teacher in enumerate(teachers):
        ax.axhline(100 * teacher[f"{split}_f1"], color="black", linestyle=(":", "-.")[k % 2],
                   linewidth=1.2, label=teacher["name"] if len(teachers) == 1 else
                   f"{teacher['name']} ({Path(teacher['run']).name})")
    depths = sorted({r["depth"] for r in students})
    if depths:
        ax.set_xticks(depths)
    ax.set_xlabel("student depth (layers)")
    ax.set_ylabel(f"{split} F1 (%)")
    ax.set_title(f"{split} F1 vs depth, by pruning strategy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_markdown(rows: list[dict], failed: list[Failed], path: Path, table: str,
                   inputs: list[Path], notes: list[str], plots: list[str],
                   latency: dict | None) -> None:
    n_teachers = sum(r["role"] == TEACHER for r in rows)
    datasets = sorted({r["data"] for r in rows if r["data"]})
    parts = ["# Teacher / student comparison", "",
             f"{len(rows)} models ({n_teachers} teacher{'s' * (n_teachers != 1)}, "
             f"{len(rows) - n_teachers} students)"
             + (f" on {', '.join(datasets)}" if datasets else "")
             + f", from {', '.join(f'`{display_path(p)}`' for p in inputs)}.", "", table, "",
             "- F1, exact-match (EM) in %; EM is on the test split when the run has one, else dev.",
             "- F1 retention: student F1 / its teacher's F1 on the same split (test when both have"
             " one, else dev, marked), the teacher as evaluated in the student's own run.",
             "- KD gain: a KD student's F1 minus the same student's (same teacher, layers and init)"
             " trained without KD, in F1 points (test, else dev, marked): what distillation added.",
             ]
    if latency:
        parts.append(
            f"- Latency: CPU, measured by `distill.compare` for all models in one process,"
            f" interleaved, after {latency['warmup']} warm-up runs, {latency['repeats']} repeats, on"
            f" the same inputs: p50 at batch 1 × {LATENCY_TOKENS} tokens; throughput in sequences/s"
            f" at batch {THROUGHPUT_BATCH} × {LATENCY_TOKENS} tokens; speed-up = teacher p50 /"
            f" student p50. {latency['machine']}")
    else:
        parts.append("- Latency not measured (`--no-latency`).")
    parts += [f"- {n}" for n in notes]
    notes_rows = [r for r in rows if r["note"]]
    parts += [f"- {r['name']}: {r['note']}" for r in notes_rows]
    parts.append("")
    for plot in plots:
        parts += [f"![{plot}]({plot})", ""]
    parts += ["## Failed or incomplete runs", ""]
    if failed:
        parts += ["| run | reason |", "|---|---|"]
        parts += [f"| `{display_path(f.path)}` | {f.reason.replace('|', chr(92) + '|')} |"
                  for f in failed]
    else:
        parts.append("None.")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


def machine_note() -> str:
    import platform

    try:
        import torch

        threads = f", torch {torch.__version__} with {torch.get_num_threads()} threads"
    except ImportError:  # pragma: no cover
        threads = ""
    return f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs{threads}."


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- CLI

def compare(paths: list[Path], output: Path | None = None, latency: bool = True,
            repeats: int = 20, warmup: int = 3, runtime: str | None = None) -> dict:
    """Build the comparison; returns {"rows", "failed", "files", "table"}."""
    runs, failed = load_runs(paths)
    for f in failed:
        warn(f"failed or incomplete run: {display_path(f.path)}: {f.reason}")
    if not runs:
        where = ", ".join(str(p) for p in paths)
        if failed:
            raise CompareError(f"no completed run under {where} ({len(failed)} failed or incomplete)")
        raise CompareError(f"no run found under {where} (no {METRICS} and no .hydra/ run folder)")
    runs = add_teachers(runs)
    rows = build_rows(runs)
    notes = []
    if latency:
        notes += measure_latency(rows, repeats=repeats, warmup=warmup, runtime=runtime)
    add_speedups(rows)
    add_kd_gains(rows)
    if output is None:
        output = paths[0] if paths[0].is_dir() else paths[0].parent
    output.mkdir(parents=True, exist_ok=True)
    files = {"md": output / "comparison.md", "csv": output / "comparison.csv"}
    plots = []
    if plot_f1_vs_latency(rows, output / "f1_vs_latency.png"):
        plots.append("f1_vs_latency.png")
    if plot_f1_vs_depth(rows, output / "f1_vs_depth.png"):
        plots.append("f1_vs_depth.png")
    files.update({p: output / p for p in plots})
    table = markdown_table(rows)
    write_csv(rows, files["csv"])
    write_markdown(rows, failed, files["md"], table, paths, notes, plots,
                   {"warmup": warmup, "repeats": repeats, "machine": machine_note()} if latency else None)
    return {"rows": rows, "failed": failed, "files": files, "table": table}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m distill.compare",
        description="Compare a teacher and its students: reads every metrics.json under the given "
                    "run/multirun folders, measures CPU latency, writes comparison.md/.csv and plots.")
    parser.add_argument("dirs", nargs="+", type=Path, help="run folders, multirun sweep folders or "
                        "any folder above them (searched recursively)")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the report (default: the first folder given)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per model and case")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs per model and case")
    parser.add_argument("--runtime", default=None,
                        help="bench runtime passed to distill.bench.load_bench_model (default: its own)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = compare(args.dirs, args.output, latency=not args.no_latency,
                         repeats=args.repeats, warmup=args.warmup, runtime=args.runtime)
    except DistillError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        return 2
    print(result["table"])
    if result["failed"]:
        print(f"\n{len(result['failed'])} failed or incomplete run(s): see "
              f"{display_path(result['files']['md'])}")
    print(f"\nwrote {', '.join(display_path(p) for p in result['files'].values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
