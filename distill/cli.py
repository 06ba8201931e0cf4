"""What every command-line entry point shares: Hydra resolvers, logging and one-line errors."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from distill.errors import DistillError

log = logging.getLogger("distill")


def resume_dir(resume, default: str) -> str:
    """Resolver for ``hydra.run.dir`` (``${resume_dir:${resume},<default>}``): the folder of
    ``resume`` (a run dir, or a checkpoint in one) when it exists, else ``default`` -- so a
    resumed run writes into the folder of the run it continues."""
    if resume:
        path = Path(str(resume))
        if path.is_dir():
            return str(path)
        if path.is_file():
            return str(path.parent)
    return default


def _register_resolvers() -> None:
    from distill.model.offline import joined_split_zip, package_dir

    if not OmegaConf.has_resolver("pkgdir"):
        OmegaConf.register_new_resolver("pkgdir", package_dir)
    if not OmegaConf.has_resolver("splitzip"):
        OmegaConf.register_new_resolver("splitzip", joined_split_zip)
    if not OmegaConf.has_resolver("resume_dir"):
        OmegaConf.register_new_resolver("resume_dir", resume_dir)


_register_resolvers()


ERROR_FILE = "error.txt"


class SweepJobFailed(DistillError):
    """A job of a Hydra multirun failed. Raised instead of exiting, so that Hydra records the
    failure and runs the sweep's other jobs; the sweep then ends with exit status 2."""


def _sweep_job_dir() -> Path | None:
    """The output folder of the running multirun job, None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def _record_failure(job_dir: Path, message: str) -> None:
    """``<job dir>/error.txt``: the job's one error line, listed by ``distill.compare``."""
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / ERROR_FILE).write_text(message + "\n", encoding="utf-8")
    except OSError as err:
        log.warning("could not write %s: %s", job_dir / ERROR_FILE, err)


def one_line_errors(main):
    """Wrap a Hydra task function: a :class:`DistillError` (or a Hydra/OmegaConf config error)
    becomes ``error: <message>`` on stderr and exit status 2, with no traceback.

    In a multirun the job's error line also goes to ``<job dir>/error.txt`` (an unexpected
    exception's last line too) and the job raises :class:`SweepJobFailed` rather than exiting:
    Hydra records the failed job and runs the others; :func:`entry` ends the sweep with status 2."""

    @functools.wraps(main)
    def wrapper(cfg):
        job_dir = _sweep_job_dir()
        try:
            return main(cfg)
        except DistillError as err:
            message = " ".join(str(err).split("\n"))
        except Exception as err:  # config interpolation errors surface lazily
            from omegaconf.errors import OmegaConfBaseException

            if not isinstance(err, OmegaConfBaseException):
                if job_dir is not None:
                    _record_failure(job_dir, f"{type(err).__name__}: {' '.join(str(err).split())}")
                raise
            message = f"config: {' '.join(str(err).split())}"
        log.error(message)
        print(f"error: {message}", file=sys.stderr, flush=True)
        if job_dir is not None:
            _record_failure(job_dir, message)
            raise SweepJobFailed(message) from None
        sys.exit(2)

    return wrapper


def entry(main) -> None:
    """Run a Hydra ``main`` as a command (``if __name__ == "__main__": entry(main)``): errors in
    composing the config -- an unknown config group option such as ``data=nope``, an override of
    a key that does not exist -- also become one ``error: config: ...`` line and exit status 2,
    instead of Hydra's multi-line report and status 1. ``HYDRA_FULL_ERROR=1`` still gives the
    full traceback. A multirun whose jobs failed (each one ran; see :func:`one_line_errors`) exits
    with status 2 after the last job."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if os.environ.get("HYDRA_FULL_ERROR"):
        return main()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # makes Hydra re-raise instead of printing and exiting
    try:
        main()
    except SweepJobFailed as err:
        print(f"error: sweep: a job failed ({err}); every job ran, each failed one has its "
              f"error line in its run dir's {ERROR_FILE}", file=sys.stderr, flush=True)
        sys.exit(2)
    except (HydraException, OmegaConfBaseException) as err:
        message = " ".join(str(err).split()).split(" Config search path:")[0]
        print(f"error: config: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def objective(cfg, metrics: dict) -> float | None:
    """``metrics[split][key]`` for ``optimized_metric: split/key`` (e.g. ``dev/f1``): what a Hydra
    task function returns so a sweeper (Optuna) can optimise it; None when not set."""
    if not cfg.get("optimized_metric"):
        return None
    split, key = cfg.optimized_metric.split("/")
    return metrics[split][key]


class BelowError(logging.Filter):
    """Logging filter for the console handler: errors are printed once, by one_line_errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR
