"""SHA-256 manifest of every file of a checkpoint folder, and its verification."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST_NAME = "marr_manifest.json"
_BLOCK = 1 << 20


class ManifestError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or unexpected; ``files`` names them."""

    def __init__(self, message: str, files: list[str]):
        super().__init__(message)
        self.files = files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _listed_files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME
    )


def write_manifest(folder: str | Path) -> dict:
    """Hash every file under ``folder`` (except the manifest) and write ``marr_manifest.json``."""
    folder = Path(folder)
    files = {
        name: {"size": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
        for name in _listed_files(folder)
    }
    manifest = {"algorithm": "sha256", "files": files}
    tmp = folder / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp.replace(folder / MANIFEST_NAME)
    return manifest


def verify_manifest(folder: str | Path, *, allow_extra: bool = False) -> dict:
    """Check every file against ``marr_manifest.json``; raise :class:`ManifestError` naming the bad ones.

    Sizes are checked first (a truncated file is reported as such without hashing it).
    Files present but not listed are an error unless ``allow_extra``. Returns the manifest.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{folder}: no {MANIFEST_NAME}; not a marr checkpoint or written incompletely", [MANIFEST_NAME])
    try:
        manifest = json.loads(path.read_text())
        listed = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ManifestError(f"{path}: unreadable manifest ({err})", [MANIFEST_NAME]) from err
    problems: list[tuple[str, str]] = []
    for name, entry in sorted(listed.items()):
        file = folder / name
        if not file.is_file():
            problems.append((name, "missing"))
            continue
        size = file.stat().st_size
        if size != entry["size"]:
            kind = "truncated" if size < entry["size"] else "size changed"
            problems.append((name, f"{kind}: {size} bytes, manifest says {entry['size']}"))
        elif sha256_file(file) != entry["sha256"]:
            problems.append((name, "corrupted: SHA-256 mismatch"))
    if not allow_extra:
        problems += [(name, "not in the manifest") for name in _listed_files(folder) if name not in listed]
    if problems:
        detail = "; ".join(f"{name} ({why})" for name, why in problems)
        raise ManifestError(f"checkpoint {folder} failed verification: {detail}", [name for name, _ in problems])
    return manifest
