"""Running the distill commands from tests: as a subprocess (a real, fresh process) or in-process
through the very same Hydra ``main`` (no interpreter start-up: ~10 s saved per call on a busy
2-core machine)."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass

from conftest import REPO
from distill.cli import entry

QUIET = ("+trainer.enable_progress_bar=false", "logger=none")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


def popen(module: str, *overrides: str, cwd=REPO) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", module, *overrides], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(module: str, *overrides: str, cwd=REPO, check: bool = True, timeout: int = 600) -> Result:
    """``python -m module overrides...`` in a fresh process."""
    proc = popen(module, *overrides, cwd=cwd)
    out, err = proc.communicate(timeout=timeout)
    result = Result(proc.returncode, out, err)
    if check and result.returncode != 0:
        raise AssertionError(f"{module} failed ({result.returncode}):\n{err[-3000:]}")
    return result


def run_many(*commands: tuple[str, ...], cwd=REPO, timeout: int = 600) -> list[Result]:
    """Several ``(module, *overrides)`` commands as concurrent processes."""
    procs = [popen(*command, cwd=cwd) for command in commands]
    outputs = [p.communicate(timeout=timeout) for p in procs]
    return [Result(p.returncode, *output) for p, output in zip(procs, outputs)]


def call(module: str, *overrides: str, check: bool = True) -> Result:
    """The command's Hydra ``main`` called in this process with ``sys.argv`` set: the same code
    path as the CLI (config composition, one-line errors, ``sys.exit``)."""
    main = importlib.import_module(module).main
    argv, err, out = sys.argv, io.StringIO(), io.StringIO()
    sys.argv = [module, *overrides]
    # Hydra finds ../conf relative to the file of a __main__ task function; imported, it would
    # look for a "conf" package instead.
    main_module = os.environ.get("HYDRA_MAIN_MODULE")
    os.environ["HYDRA_MAIN_MODULE"] = "__main__"
    code = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            entry(main)  # what ``python -m module`` runs
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
        if main_module is None:
            os.environ.pop("HYDRA_MAIN_MODULE", None)
        else:
            os.environ["HYDRA_MAIN_MODULE"] = main_module
    result = Result(code, out.getvalue(), err.getvalue())
    if check and result.returncode != 0:
        raise AssertionError(f"{module} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result
