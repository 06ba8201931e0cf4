"""What every command-line entry point shares: Hydra resolvers, logging and one-line errors."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
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
    from distill.encoder import joined_split_zip, package_dir

    if not OmegaConf.has_resolver("pkgdir"):
        OmegaConf.register_new_resolver("pkgdir", package_dir)
    if not OmegaConf.has_resolver("splitzip"):
        OmegaConf.register_new_resolver("splitzip", joined_split_zip)
    if not OmegaConf.has_resolver("resume_dir"):
        OmegaConf.register_new_resolver("resume_dir", resume_dir)


_register_resolvers()


def one_line_errors(main):
    """Wrap a Hydra task function: a :class:`DistillError` (or a Hydra/OmegaConf config error)
    becomes ``error: <message>`` on stderr and exit status 2, with no traceback."""

    @functools.wraps(main)
    def wrapper(cfg):
        try:
            return main(cfg)
        except DistillError as err:
            message = " ".join(str(err).split("\n"))
        except Exception as err:  # config interpolation errors surface lazily
            from omegaconf.errors import OmegaConfBaseException

            if not isinstance(err, OmegaConfBaseException):
                raise
            message = f"config: {' '.join(str(err).split())}"
        log.error(message)
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)

    return wrapper


def entry(main) -> None:
    """Run a Hydra ``main`` as a command (``if __name__ == "__main__": entry(main)``): errors in
    composing the config -- an unknown config group option such as ``data=nope``, an override of
    a key that does not exist -- also become one ``error: config: ...`` line and exit status 2,
    instead of Hydra's multi-line report and status 1. ``HYDRA_FULL_ERROR=1`` still gives the
    full traceback."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if os.environ.get("HYDRA_FULL_ERROR"):
        return main()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # makes Hydra re-raise instead of printing and exiting
    try:
        main()
    except (HydraException, OmegaConfBaseException) as err:
        message = " ".join(str(err).split()).split(" Config search path:")[0]
        print(f"error: config: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write, mode: str = "w") -> None:
    """Call ``write(handle)`` on a temporary file in ``path``'s folder, fsync it, give it the
    usual permissions (mkstemp makes 0600 files) and rename it over ``path``, then fsync the
    folder: readers see the old file or the new one, never half a file, even after a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_json_atomic(path: str | os.PathLike, payload) -> None:
    """Write ``payload`` as JSON to ``path`` with :func:`write_atomic`."""
    def dump(handle) -> None:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")

    write_atomic(path, dump)


def objective(cfg, metrics: dict) -> float | None:
    """``metrics[split][key]`` for ``optimized_metric: split/key`` (e.g. ``dev/f1``): what a Hydra
    task function returns so a sweeper (Optuna) can optimise it; None when not set."""
    if not cfg.get("optimized_metric"):
        return None
    split, key = cfg.optimized_metric.split("/")
    return metrics[split][key]
