"""Atomic writes: a file (JSON, checkpoint, logits) or a whole folder appears complete or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from distill.errors import ConfigError


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


class staged_folder:
    """``with staged_folder(out) as tmp:`` -- build a folder beside its destination ``out``; on
    success it replaces ``out`` (whose old contents go), on error it is removed. ``out`` may be
    missing, empty or a folder holding ``marker`` (a previous output, a ``kind`` of folder);
    anything else is refused."""

    def __init__(self, output: Path, marker: str, kind: str = "output folder"):
        self.output, self.marker, self.kind = Path(output), marker, kind

    def __enter__(self) -> Path:
        out = self.output
        if out.exists() and not out.is_dir():
            raise ConfigError(f"output={out}: exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not (out / self.marker).is_file():
            raise ConfigError(f"output={out}: exists, is not empty and is not an {self.kind} (no "
                              f"{self.marker}; refusing to overwrite it); choose another output")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
        return self.tmp

    def __exit__(self, kind, value, tb):
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        umask = current_umask()
        self.tmp.chmod(0o777 & ~umask)  # mkdtemp/mkstemp make private files
        for file in self.tmp.iterdir():
            file.chmod(0o666 & ~umask)
        old = None
        if self.output.exists():
            old = self.output.with_name(f".{self.output.name}.{os.getpid()}.old")
            os.replace(self.output, old)
        os.replace(self.tmp, self.output)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False
