"""The comparison as text: the Markdown table, comparison.csv, comparison.md and its machine note."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from distill.report.runs import (
    COLUMNS,
    LATENCY_TOKENS,
    STUDENT,
    TEACHER,
    THROUGHPUT_BATCH,
    Failed,
    display_path,
    fmt_num,
    is_number,
)


def _pct(value, spread=None) -> str:
    """A fraction in %, with `` ± spread`` when it has one."""
    return _plus_minus(None if value is None else 100 * value,
                       None if spread is None else 100 * spread, ".2f")


def _params(value) -> str:
    if not is_number(value):
        return ""
    return f"{value / 1e6:.1f}M" if value >= 1e5 else f"{value / 1e3:.1f}k"


def kd_text(row: dict) -> str:
    if row["role"] == TEACHER:
        return "—"
    if row["kd"] != "KD":
        return "none"
    parts = []
    if row["kd_alpha"]:
        parts.append(f"α={fmt_num(row['kd_alpha'])} T={fmt_num(row['kd_temperature'])} "
                     f"{row['kd_loss'] or ''}".strip())
    if row["kd_beta"]:
        parts.append(f"β={fmt_num(row['kd_beta'])}")
    if row.get("kd_labels") in ("hard", "soft+hard"):
        parts.append("hard labels")
    return " ".join(parts)


def exact_match(row: dict) -> tuple[float | None, float | None]:
    """(exact-match, its spread over seeds): on test when the row has it, else dev."""
    split = "test" if row["test_exact_match"] is not None else "dev"
    return row[f"{split}_exact_match"], row.get(f"{split}_exact_match_spread")


def seeds_text(row: dict) -> str:
    """The seed of a run, or ``n=2: 1, 42`` for a row of several seeds."""
    if row.get("seeds"):
        seeds = row["seeds"].split(";")
        return f"n={len(seeds)}: {', '.join(seeds)}"
    return fmt_num(row.get("seed"))


def _plus_minus(value: float | None, spread: float | None, form: str) -> str:
    if value is None:
        return ""
    return format(value, form) + ("" if spread is None else f" ± {spread:{form.lstrip('+')}}")


MD_HEADER = ["model", "run", "seed", "role", "depth", "layers", "pruning", "init", "KD (α, T, loss)",
             "params", "dev F1", "test F1", "EM", "F1 retention %", "KD gain", "p50 ms (1×64)",
             "seq/s (32×64)", "speed-up"]


INT8_HEADER = ["int8 p50 ms", "int8 seq/s", "int8 speed-up"]


def markdown_table(rows: list[dict]) -> str:
    """The table; an ``int8 ΔF1`` column (int8 export minus fp32, points) when any run has an
    int8 export with a parity report, and int8 latency, throughput and speed-up columns when any
    run's int8 export was timed."""
    int8 = any(r.get("int8_f1_diff") is not None for r in rows)
    int8_speed = any(r.get("int8_p50_ms") is not None for r in rows)
    header = MD_HEADER + ["int8 ΔF1"] * int8 + INT8_HEADER * int8_speed
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < 9 else "---:" for i in range(len(header))) + "|"]
    for r in rows:
        cells = [
            r["name"], f"`{r['run']}`" if r["run"] else "", seeds_text(r), r["role"], fmt_num(r["depth"]),
            r["layers"] or "", r["pruning"] or "", r["init"] or "", kd_text(r), _params(r["params"]),
            _pct(r["dev_f1"], r.get("dev_f1_spread")), _pct(r["test_f1"], r.get("test_f1_spread")),
            _pct(*exact_match(r)),
            "" if r["retention_pct"] is None else
            _plus_minus(r["retention_pct"], r.get("retention_pct_spread"), ".1f")
            + (" (dev)" if r["retention_split"] == "dev" and r["role"] == STUDENT else ""),
            "" if r["kd_gain"] is None else _plus_minus(r["kd_gain"], r.get("kd_gain_spread"), "+.2f")
            + (" (dev)" if r["kd_gain_split"] == "dev" else ""),
            "" if r["p50_ms"] is None else f"{r['p50_ms']:.2f}",
            "" if r["throughput_per_s"] is None else f"{r['throughput_per_s']:.1f}",
            "" if r["speedup"] is None else f"{r['speedup']:.2f}×",
        ]
        if int8:
            cells.append("" if r.get("int8_f1_diff") is None else f"{r['int8_f1_diff']:+.2f}")
        if int8_speed:
            cells += ["" if r.get("int8_p50_ms") is None else f"{r['int8_p50_ms']:.2f}",
                      "" if r.get("int8_throughput_per_s") is None else f"{r['int8_throughput_per_s']:.1f}",
                      "" if r.get("int8_speedup") is None else f"{r['int8_speedup']:.2f}×"]
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


def write_markdown(rows: list[dict], failed: list[Failed], path: Path, table: str,
                   inputs: list[Path], notes: list[str], plots: list[str],
                   latency: dict | None, groups: list[dict] = ()) -> None:
    """``rows``: one per run (their notes are listed); ``groups``: the table's rows of several
    seeds, explained under the table when there are any."""
    n_teachers = sum(r["role"] == TEACHER for r in rows)
    datasets = sorted({r["data"] for r in rows if r["data"]})
    parts = ["# Teacher / student comparison", "",
             f"{len(rows)} models ({n_teachers} teacher{'s' * (n_teachers != 1)}, "
             f"{len(rows) - n_teachers} students)"
             + (f" on {', '.join(datasets)}" if datasets else "")
             + f", from {', '.join(f'`{display_path(p)}`' for p in inputs)}"
             + (f"; {len(groups)} configuration{'s' * (len(groups) != 1)} trained with several seeds,"
                f" one row each" if groups else "") + ".", "", table, "",
             "- F1, exact-match (EM) in %; EM is on the test split when the run has one, else dev.",
             "- F1 retention: student F1 / its teacher's F1 on the same split (test when both have"
             " one, else dev, marked), the teacher as evaluated in the student's own run.",
             "- KD gain: a KD student's F1 minus the same student's (same teacher, layers and init)"
             " trained without KD, in F1 points (test, else dev, marked): what distillation added;"
             " against the mean when that student was trained with several seeds.",
             ]
    if any(r.get("int8_f1_diff") is not None for r in rows):
        parts.append("- int8 ΔF1: the run's int8 ONNX export (`python -m distill.export ckpt=<run>"
                     " quantize=int8`) minus its fp32 export, dev F1 points on the export's parity"
                     " documents (`<run>/export/parity.json`).")
    if groups or any(r["kd_gain_spread"] is not None for r in rows):
        parts.append(
            "- mean ± spread: runs alike but for their seed are one row (seed column: n = how many"
            " seeds, and which): the mean over the seeds ± the spread, half their range"
            " ((max − min) / 2, not the standard deviation), so the interval spans every seed's"
            " value; params, latency and throughput are the mean over the seeds' models (one"
            " shape). KD gain: the KD mean minus the no-KD mean, ± the sum of both sides'"
            " half-ranges (the half-range of every KD seed − no-KD seed difference)."
            " comparison.csv has every run (with its seed) and these rows (note \"mean of n"
            " seeds\", `seeds`, `*_spread`).")
    if latency:
        parts.append(
            f"- Latency: CPU, measured by `distill.compare` for all models in one process,"
            f" interleaved, after {latency['warmup']} warm-up runs, {latency['repeats']} repeats, on"
            f" the same inputs: p50 at batch 1 × {LATENCY_TOKENS} tokens; throughput in sequences/s"
            f" at batch {THROUGHPUT_BATCH} × {LATENCY_TOKENS} tokens; speed-up = teacher p50 /"
            f" student p50. {latency['machine']}")
        if any(r.get("int8_p50_ms") is not None for r in rows):
            parts.append(
                "- int8 p50 / seq/s / speed-up: the run's int8 ONNX export (`<run>/export`, onnxruntime),"
                " timed in the same interleaved measurement; int8 speed-up = the teacher's int8 p50 /"
                " the student's int8 p50 (int8 on both sides; empty when the teacher has no int8"
                " export).")
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
