"""The comparison of a teacher and its students: run folders in, comparison.md/.csv and plots out.

:func:`compare` reads every run under the given folders (:mod:`distill.report.runs`), measures
CPU latency for all models in one process, interleaved, after warm-up and on the same inputs
(:mod:`distill.report.bench`), so the numbers are comparable with each other, and writes
``comparison.md``, ``comparison.csv`` (:mod:`distill.report.table`), ``f1_vs_latency.png``,
``f1_vs_depth.png`` and, when students were trained on several amounts of transfer text,
``f1_vs_transfer.png`` (:mod:`distill.report.plots`). A configuration trained with several seeds is
one row of the table and one point of the plots (mean ± spread); the CSV keeps every run and adds
that row. :func:`run` is ``python -m distill.compare`` (conf/compare.yaml): it checks the config,
compares and prints the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from distill.report.plots import plot_f1_vs_depth, plot_f1_vs_latency, plot_f1_vs_transfer
from distill.report.runs import (
    LATENCY_TOKENS,
    METRICS,
    THROUGHPUT_BATCH,
    CompareError,
    add_kd_gains,
    add_speedups,
    add_teachers,
    build_rows,
    display_path,
    join_notes,
    load_runs,
    seed_groups,
    table_rows,
    warn,
)
from distill.report.table import machine_note, markdown_table, write_csv, write_markdown


def measure_latency(rows: list[dict], repeats: int, warmup: int, runtime: str | None,
                    tokens: int = LATENCY_TOKENS, batch: int = THROUGHPUT_BATCH,
                    exports: bool = True) -> list[str]:
    """Fill p50/p95/throughput/runtime of ``rows`` in place and, with ``exports`` (unless
    ``runtime`` is already onnx-int8), ``int8_p50_ms``/``int8_throughput_per_s`` of the rows whose
    run has an int8 export (``<run>/export/model.int8.onnx``), every model in one interleaved
    measurement. Returns notes."""
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
            row["note"] = join_notes(row["note"], "no checkpoint recorded: latency not measured")
    # (row, spec, runtime, the row's keys for p50 and throughput)
    wanted = [(row, row["checkpoint"], runtime, "p50_ms", "throughput_per_s") for row in todo]
    if exports and runtime != "onnx-int8":
        wanted += [(row, row["int8_export"], "onnx-int8", "int8_p50_ms", "int8_throughput_per_s")
                   for row in rows if row.get("int8_export")]
    models, measured = [], []
    for row, spec, kind, p50_key, rate_key in tqdm(wanted, desc="loading models", unit="model",
                                                   file=sys.stderr, leave=False):
        if p50_key == "p50_ms" and not Path(spec).is_file():
            row["note"] = join_notes(row["note"], "checkpoint missing: latency not measured")
            warn(f"{spec}: checkpoint missing, latency not measured ({row['name']})")
            continue
        try:
            models.append(load_bench_model(spec, kind))
            measured.append((row, p50_key, rate_key))
        except Exception as err:  # noqa: BLE001 - one bad checkpoint must not sink the table
            message = " ".join(str(err).split())[:200]
            what = "latency" if p50_key == "p50_ms" else "int8 latency"
            row["note"] = join_notes(row["note"], f"{what} not measured: {message}")
            warn(f"{spec}: cannot load for {what} ({message})")
    if not models:
        return notes
    cases = [(1, tokens), (batch, tokens)]
    results = measure(models, cases, warmup=warmup, repeats=repeats, progress=True)
    for (b, t), per_model in zip(cases, _by_case(results, models, cases)):
        for (row, p50_key, rate_key), result in zip(measured, per_model):
            if result is None:
                continue
            if p50_key == "p50_ms":
                row["runtime"] = result.get("runtime")
            if (b, t) == (1, tokens):
                row[p50_key] = result.get("p50_ms")
                if p50_key == "p50_ms":
                    row["p95_ms"] = result.get("p95_ms")
            else:
                row[rate_key] = result.get("per_second")
    return notes


def undertrained_teachers(shown: list[dict]) -> list[str]:
    """A note for each teacher that one of its own students, trained on gold alone (from the
    teacher's layers), beats on dev F1: the teacher stopped learning too early (or the data is
    too small for its size), and a student distilled towards it aims below what it reaches
    without it -- the low-label studies in docs/results.md."""
    notes = []
    for teacher in shown:
        if teacher["role"] != "teacher" or teacher["dev_f1"] is None or not teacher["checkpoint"]:
            continue
        better = [r for r in shown if r["role"] == "student" and r["kd"] == "none"
                  and r["teacher_checkpoint"] == teacher["checkpoint"]
                  and r["dev_f1"] is not None and r["dev_f1"] > teacher["dev_f1"]]
        if better:
            best = max(better, key=lambda r: r["dev_f1"])
            notes.append(f"{teacher['name']} may be undertrained: {best['name']}, trained on gold "
                         f"alone from its layers, scores {100 * best['dev_f1']:.2f} dev F1 against "
                         f"its {100 * teacher['dev_f1']:.2f}; distilling towards it can cost F1 "
                         "(if its dev F1 was still rising, train it longer: trainer.max_epochs)")
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


def compare(paths: list[Path], output: Path | None = None, latency: bool = True,
            repeats: int = 20, warmup: int = 3, runtime: str | None = None,
            exports: bool = True) -> dict:
    """Build the comparison; returns {"rows" (one per run), "table_rows" (one per configuration:
    a group of seeds as its means), "groups" (those of them), "failed", "files", "table"}."""
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
        notes += measure_latency(rows, repeats=repeats, warmup=warmup, runtime=runtime,
                                 exports=exports)
    add_speedups(rows)
    add_kd_gains(rows)
    shown = table_rows(rows)
    add_speedups(shown, rows)
    add_kd_gains(shown, rows)
    for note in undertrained_teachers(shown):
        warn(note)
        notes.append(note)
    groups = [r for r in shown if r["seeds"]]
    if output is None:
        output = paths[0] if paths[0].is_dir() else paths[0].parent
    output.mkdir(parents=True, exist_ok=True)
    files = {"md": output / "comparison.md", "csv": output / "comparison.csv"}
    plots = []
    if plot_f1_vs_latency(shown, output / "f1_vs_latency.png"):
        plots.append("f1_vs_latency.png")
    if plot_f1_vs_depth(shown, output / "f1_vs_depth.png"):
        plots.append("f1_vs_depth.png")
    if plot_f1_vs_transfer(shown, output / "f1_vs_transfer.png"):
        plots.append("f1_vs_transfer.png")
    files.update({p: output / p for p in plots})
    table = markdown_table(shown)
    # every run, each group of seeds after its runs
    group_of = {id(unit[-1]): row for unit, row in zip(seed_groups(rows), shown) if len(unit) > 1}
    write_csv([r for run in rows for r in (run, group_of.get(id(run))) if r is not None], files["csv"])
    write_markdown(rows, failed, files["md"], table, paths, notes, plots,
                   {"warmup": warmup, "repeats": repeats, "machine": machine_note()} if latency else None,
                   groups)
    return {"rows": rows, "table_rows": shown, "groups": groups, "failed": failed, "files": files,
            "table": table}


def run(cfg: DictConfig) -> dict:
    """``python -m distill.compare runs=[...]``: :func:`compare` with the config's settings, then
    print the table, a line on failed runs (if any) and the files written."""
    latency, exports = cfg.get("latency"), cfg.get("exports", True)
    for key, value in (("latency", latency), ("exports", exports)):
        if not isinstance(value, bool):
            raise CompareError(f"{key} must be true or false, got {value!r}")
    result = compare(run_folders(cfg), Path(str(cfg.output)) if cfg.get("output") else None,
                     latency=latency, repeats=_count(cfg, "repeats", 1),
                     warmup=_count(cfg, "warmup", 0),
                     runtime=str(cfg.runtime) if cfg.get("runtime") else None, exports=exports)
    print(result["table"])
    if result["failed"]:
        print(f"\n{len(result['failed'])} failed or incomplete run(s): see "
              f"{display_path(result['files']['md'])}")
    print(f"\nwrote {', '.join(display_path(p) for p in result['files'].values())}")
    return result


def run_folders(cfg: DictConfig) -> list[Path]:
    """``cfg.runs`` (a list of folders, or one) as paths; an error when none is given."""
    runs = None if OmegaConf.is_missing(cfg, "runs") else cfg.runs
    if isinstance(runs, (ListConfig, list, tuple)):
        folders = [str(r) for r in runs]
    else:
        folders = [str(runs)] if runs not in (None, "") else []
    if not folders:
        raise CompareError("no run folder given: python -m distill.compare <run dir> [<run dir> ...] "
                           "or runs=[<run dir>,...]")
    return [Path(f) for f in folders]


def _count(cfg: DictConfig, key: str, least: int) -> int:
    """``cfg[key]``, an integer of at least ``least``, or an error."""
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise CompareError(f"{key} must be an integer >= {least}, got {value!r}")
    return value
