"""``python -m distill.compare runs=[<run dir>,...]``: one table (and two plots) of a teacher and
its students (Hydra config: conf/compare.yaml; the comparing is :mod:`distill.report.compare`).

The positional form works too: ``python -m distill.compare <run dir> [<run dir> ...] [--output X]
[--no-latency] [--repeats N] [--warmup N] [--runtime R]`` (see :func:`hydra_overrides`).
"""

from __future__ import annotations

import os
import re
import sys

import hydra
from omegaconf import DictConfig

from distill.cli import entry, one_line_errors
from distill.report.compare import run
from distill.report.runs import CompareError

# the positional form's options and the config key each sets
OPTIONS = {"--output": "output", "--repeats": "repeats", "--warmup": "warmup", "--runtime": "runtime"}
NUMBERS = {"repeats", "warmup"}  # passed unquoted, so Hydra reads them as integers
# Hydra's own flags that take the next argument as their value (--info takes one of INFO)
HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
                     "-cn", "--config-dir", "-cd", "--experimental-rerun"}
INFO = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


@hydra.main(version_base="1.3", config_path="../conf", config_name="compare")
@one_line_errors
def app(cfg: DictConfig) -> None:
    run(cfg)


def hydra_overrides(argv: list[str]) -> list[str]:
    """The Hydra command line for ``argv`` in either form. Every argument without ``=`` that is
    no Hydra flag (nor a flag's value) is a run folder: together they become one ``runs=[...]``
    override, first. ``--output X``, ``--repeats N``, ``--warmup N`` and ``--runtime R`` (also
    written ``--output=X``) become ``output=X`` and so on, ``--no-latency`` ``latency=false``;
    Hydra overrides and flags pass through as they are, in order."""
    out, folders, args = [], [], list(argv)
    while args:
        arg = args.pop(0)
        name, has_value, value = arg.partition("=")
        if arg == "--no-latency":
            out.append("latency=false")
        elif name in OPTIONS:
            if not has_value:
                if not args:
                    raise CompareError(f"{arg}: give a value")
                value = args.pop(0)
            key = OPTIONS[name]
            out.append(f"{key}={value if key in NUMBERS else quoted(value)}")
        elif arg.startswith("-"):
            out.append(arg)
            if args and (arg in HYDRA_VALUE_FLAGS or arg in ("--info", "-i") and args[0] in INFO):
                out.append(args.pop(0))
        elif has_value:
            out.append(arg)
        else:
            folders.append(arg)
    if folders and any(o.partition("=")[0].lstrip("+~") == "runs" for o in out):
        raise CompareError("give the run folders either as arguments or as runs=[...], not both")
    return ([f"runs=[{','.join(quoted(f) for f in folders)}]"] if folders else []) + out


def quoted(value: str) -> str:
    """``value`` as a quoted Hydra override value, read back verbatim (commas, spaces, brackets
    and quotes included): backslashes before a quote or at the end are doubled, quotes escaped."""
    return "'" + re.sub(r"(\\+)(?='|$)", r"\1\1", value).replace("'", "\\'") + "'"


def main(argv: list[str] | None = None) -> int:
    """``python -m distill.compare`` on ``argv`` (default: ``sys.argv[1:]``), in this process;
    returns the exit status: 0, or 2 after one ``error: ...`` line on stderr."""
    try:
        overrides = hydra_overrides(sys.argv[1:] if argv is None else argv)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    saved_argv, saved_module = sys.argv, os.environ.get("HYDRA_MAIN_MODULE")
    sys.argv = [sys.argv[0] if sys.argv else __name__, *overrides]
    # Hydra finds ../conf from this file's path only for a __main__ task function
    os.environ["HYDRA_MAIN_MODULE"] = "__main__"
    try:
        entry(app)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        sys.argv = saved_argv
        if saved_module is None:
            del os.environ["HYDRA_MAIN_MODULE"]
        else:
            os.environ["HYDRA_MAIN_MODULE"] = saved_module
    return 0


if __name__ == "__main__":
    sys.exit(main())
