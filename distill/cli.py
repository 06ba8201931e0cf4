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


def _register_resolvers() -> None:
    from distill.encoder import package_dir

    if not OmegaConf.has_resolver("pkgdir"):
        OmegaConf.register_new_resolver("pkgdir", package_dir)


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


def write_json_atomic(path: str | os.PathLike, payload) -> None:
    """Write JSON to ``path`` via a temporary file and rename, so no reader ever sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
