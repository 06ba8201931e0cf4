"""The comparison's plots (matplotlib, written as PNG): F1 vs CPU latency with its Pareto front,
F1 vs student depth by pruning strategy, and F1 vs the amount of transfer text. A row of several
seeds is its mean, with an error bar of its spread (half the range)."""

from __future__ import annotations

import math
from pathlib import Path

from distill.report.runs import (
    LATENCY_TOKENS,
    PRUNING_ORDER,
    STUDENT,
    TEACHER,
    mean_spread,
    no_kd_baselines,
    student_key,
)


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
    """F1 vs p50 latency, one marker per model and the Pareto front; models whose int8 export was
    timed (``int8_p50_ms``) get a second, hollow marker there, joined to the first, and the int8
    points their own (dashed) front. False when no row has both F1 and a latency."""
    split = plot_split(rows)
    rows = [r for r in rows if r[f"{split}_f1"] is not None
            and (r["p50_ms"] is not None or r.get("int8_p50_ms") is not None)]
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    styles = ((TEACHER, None, "*", "black", "teacher"), (STUDENT, "KD", "o", "tab:blue", "student (KD)"),
              (STUDENT, "none", "s", "tab:orange", "student (no KD)"))
    int8 = any(r.get("int8_p50_ms") is not None for r in rows)
    for key, runtime in (("p50_ms", "PyTorch" if int8 else None), ("int8_p50_ms", "int8 ONNX")):
        shown = [r for r in rows if r.get(key) is not None]
        if not shown:
            continue
        points = [(r[key], 100 * r[f"{split}_f1"]) for r in shown]
        hollow = key != "p50_ms"
        for role, kd, marker, color, label in styles:
            sel = [i for i, r in enumerate(shown) if r["role"] == role and (kd is None or r["kd"] == kd)]
            if sel:
                ax.scatter([points[i][0] for i in sel], [points[i][1] for i in sel], marker=marker,
                           s=160 if marker == "*" else 50, zorder=3,
                           facecolors="none" if hollow else color, edgecolors=color,
                           label=f"{label}, {runtime}" if runtime else label)
                _error_bars(ax, [shown[i] for i in sel], [points[i][0] for i in sel], split, color)
        front = pareto_front(points)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="tab:red",
                linewidth=1.5, linestyle="--" if hollow else "-", marker="o", markersize=12,
                markerfacecolor="none", zorder=2,
                label=f"Pareto front, {runtime}" if runtime else "Pareto front")
        for (x, y), row in zip(points, shown):
            if hollow and row["p50_ms"] is not None:
                ax.plot([row["p50_ms"], x], [y, y], color="grey", linestyle=":", linewidth=0.8, zorder=1)
                continue  # named at its PyTorch point
            # a KD student and its no-KD twin sit at the same latency: label one above, one below
            below = row["role"] == STUDENT and row["kd"] != "KD"
            ax.annotate(row["name"], (x, y), textcoords="offset points",
                        xytext=(5, -9 if below else 4), fontsize=7)
    if int8:
        ax.set_xscale("log")
    ax.margins(x=0.15, y=0.08)
    return _save(plt, fig, ax, path, f"CPU latency p50, batch 1 × {LATENCY_TOKENS} tokens (ms)",
                 f"{split} F1 (%)", f"{split} F1 vs CPU latency")


def plot_f1_vs_depth(rows: list[dict], path: Path) -> bool:
    """Student F1 vs depth, a line per pruning strategy and KD or not, teachers as horizontal
    lines; False when there is nothing to plot."""
    split = plot_split(rows)
    students = [r for r in rows if r["role"] == STUDENT and r[f"{split}_f1"] is not None
                and r["depth"] is not None]
    teachers = [r for r in rows if r["role"] == TEACHER and r[f"{split}_f1"] is not None]
    if not students and not teachers:
        return False
    plt = _pyplot()
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
            _error_bars(ax, sel, [r["depth"] for r in sel], split, color)
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
    return _save(plt, fig, ax, path, "student depth (layers)", f"{split} F1 (%)",
                 f"{split} F1 vs depth, by pruning strategy")


def plot_f1_vs_transfer(rows: list[dict], path: Path) -> bool:
    """Student F1 vs the number of transfer documents its teacher labelled for it
    (``transfer_documents``), one line per student (teacher, gold data, layers) and kind of
    labels (soft, hard), starting at 0 from the same student trained on gold alone (the no-KD
    schedule best on dev); its teacher as a horizontal line. Several configurations at one
    amount (e.g. epochs): the line joins the one best on dev, the others are faint points. False
    unless some student was trained with at least two amounts (0 counts)."""
    split = plot_split(rows)
    students = [r for r in rows if r["role"] == STUDENT and r[f"{split}_f1"] is not None]
    baselines = no_kd_baselines(students)
    lines: dict[tuple, list[dict]] = {}
    for r in students:
        if r["kd"] == "KD" and r["transfer_documents"]:
            lines.setdefault((student_key(r), r["kd_labels"] or "soft"), []).append(r)
    amounts: dict[tuple, set] = {}
    for (key, _), sel in lines.items():
        amounts.setdefault(key, {0} if key in baselines else set()).update(
            r["transfer_documents"] for r in sel)
    keys = [k for k, xs in amounts.items() if len(xs) >= 2]
    if not keys:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = plt.get_cmap("tab10")
    teachers = {r["checkpoint"]: r for r in rows if r["role"] == TEACHER and r[f"{split}_f1"] is not None}
    k = 0
    for key in keys:
        base = baselines.get(key)
        start = None
        if base:
            start = mean_spread([b[f"{split}_f1"] for b in base])[0]
            ax.scatter([0], [100 * start], marker="s", color="black", zorder=3)
            _error_bars(ax, base[:1], [0], split, "black")
            ax.annotate(f"{base[0]['depth']}L gold only", (0, 100 * start), textcoords="offset points",
                        xytext=(5, -9), fontsize=7)
        for (line_key, labels), sel in lines.items():
            if line_key != key:
                continue
            best: dict[int, dict] = {}
            for r in sel:
                x = r["transfer_documents"]
                if x not in best or (r["dev_f1"] or 0) > (best[x]["dev_f1"] or 0):
                    best[x] = r
            xs = sorted(best)
            color = colors(k % 10)
            k += 1
            ax.plot(([0] if start is not None else []) + xs,
                    ([100 * start] if start is not None else []) + [100 * best[x][f"{split}_f1"] for x in xs],
                    marker="o", color=color, label=f"{sel[0]['depth']}L {sel[0]['pruning'] or ''}, KD {labels}")
            _error_bars(ax, [best[x] for x in xs], xs, split, color)
            if len({best[x]["unlabeled"] for x in xs}) > 1:  # text from several sources: name them
                for x in xs:
                    names = "+".join(Path(f).stem for f in (best[x]["unlabeled"] or "").split(";"))
                    ax.annotate(names, (x, 100 * best[x][f"{split}_f1"]), textcoords="offset points",
                                xytext=(4, 4), fontsize=7, color=color)
            rest = [r for r in sel if best[r["transfer_documents"]] is not r]
            if rest:
                ax.scatter([r["transfer_documents"] for r in rest], [100 * r[f"{split}_f1"] for r in rest],
                           marker="o", color=color, alpha=0.4, s=18)
        teacher = teachers.get(key[0])
        if teacher is not None:
            ax.axhline(100 * teacher[f"{split}_f1"], color="black", linestyle=":", linewidth=1.2,
                       label=f"teacher ({teacher['name']})")
    positive = sorted({x for key in keys for x in amounts[key] if x > 0})
    ax.set_xscale("symlog", linthresh=positive[0])
    ax.set_xlim(0, positive[-1] * 1.4)
    return _save(plt, fig, ax, path, "transfer documents labelled by the teacher (0: gold only)",
                 f"{split} F1 (%)", f"{split} F1 vs the amount of transfer text")


def plot_latency_vs_length(rows: list[dict], path: Path) -> bool:
    """p50 latency per text at batch 1 against the number of tokens, one line per model and
    runtime (``distill.bench`` rows), both axes logarithmic."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["batch"] == 1:
            series.setdefault(f"{r['model']} ({r['runtime']})", []).append((r["tokens"], r["p50_ms"]))
    for label, points in series.items():
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    return _save(plt, fig, ax, path, "tokens", "p50 latency per text (ms)",
                 "Latency vs length (batch 1)")


def _error_bars(ax, rows: list[dict], xs: list[float], split: str, color) -> None:
    """Error bars (± the spread over seeds) at the rows that have one."""
    bars = [(x, 100 * r[f"{split}_f1"], 100 * r[f"{split}_f1_spread"]) for x, r in zip(xs, rows)
            if r.get(f"{split}_f1_spread") is not None]
    if bars:
        x, y, err = zip(*bars)
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor=color, capsize=3, linewidth=1, zorder=2)


def _pyplot():
    """matplotlib.pyplot, drawing off screen (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> bool:
    """Label, grid and legend ``ax``, write ``fig`` to ``path`` (PNG, 120 dpi) and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
