"""Per-block artifacts on disk: the FP statistics cache and the reconstruction run directory.

FP statistics (``hessians`` step), reused by every quantization config of a model:

    <dir>/manifest.json                 model id, calibration hash, dtypes, shapes, what is cached
    <dir>/block_NNN.safetensors         E.<module> per-sample FP output energies ‖W x‖² (what J needs
                                        of the FP Gram); X.<group> (FP inputs of every group) when
                                        cache_activations

Reconstruction run:

    <dir>/manifest.json                 model id, calibration hash, method config, engine version
    <dir>/block_NNN.safetensors         per module <name>.codes/scales/zeros/g_idx[/perm], per group
                                        grams.<group>.H/D; records (α, trajectory, J) in the metadata
    <dir>/streams_{0,1}.safetensors     FP and Q streams after the last finished block (double-buffered,
                                        so a crash while writing one never loses the other)

A block file is the commit marker of its block: it is written (atomically) after the streams.
A file that does not load (truncated, corrupted) counts as absent and is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from marr.io import DirectoryLock, save_tensors, write_json

log = logging.getLogger("marr.engine.store")


def block_file(root: Path, index: int) -> Path:
    return root / f"block_{index:03d}.safetensors"


def group_key(group: tuple[str, ...] | list[str]) -> str:
    """A stable tensor-name-safe key for a sequential group: its first module."""
    return group[0]


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes (safetensors itself stores no checksum)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def write_block(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a block file atomically, with a content checksum and a completion mark."""
    save_tensors(path, tensors, {**(metadata or {}), "sha256": tensors_digest(tensors), "complete": "1"})


def read_block(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """Tensors and metadata of a block file, or None if it is missing, unreadable or corrupted."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        if metadata.get("complete") != "1":
            raise ValueError("missing completion mark")
        if tensors_digest(tensors) != metadata.get("sha256"):
            raise ValueError("content checksum mismatch")
        return tensors, metadata
    except Exception as exc:  # truncated or corrupted: never silently used
        log.warning("%s is unreadable (%s): it will be recomputed", path, exc)
        return None


class ManifestMismatch(RuntimeError):
    pass


def check_manifest(root: Path, expected: dict[str, Any], what: str) -> bool:
    """True if root holds a manifest equal to ``expected``; raise if it holds a different one."""
    path = root / "manifest.json"
    if not path.exists():
        return False
    found = json.loads(path.read_text())
    diffs = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
    if diffs:
        raise ManifestMismatch(
            f"{root} holds {what} for a different setup ({', '.join(f'{k}: {found.get(k)!r} != {expected.get(k)!r}' for k in diffs[:3])}); "
            "use another directory or delete it"
        )
    return True


class FpStatsCache:
    """Read side of the FP statistics directory written by the hessians step."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"no FP statistics manifest at {manifest_path}")
        self.manifest = json.loads(manifest_path.read_text())

    def matches(self, model_id: str, calibration_hash: str) -> bool:
        return (self.manifest.get("model_id") == model_id
                and self.manifest.get("calibration_hash") == calibration_hash
                and self.manifest.get("complete") is True)

    def block(self, index: int) -> dict[str, torch.Tensor] | None:
        found = read_block(block_file(self.root, index))
        return None if found is None else found[0]


class RunStore:
    """Write/read side of a reconstruction run directory (holds the directory lock while open)."""

    def __init__(self, root: str | Path, manifest: dict[str, Any]):
        self.root = Path(root)
        self.manifest = manifest
        self._lock = DirectoryLock(self.root)

    def __enter__(self) -> "RunStore":
        self._lock.__enter__()
        if not check_manifest(self.root, self.manifest, "a reconstruction run"):
            write_json(self.root / "manifest.json", self.manifest)
        return self

    def __exit__(self, *exc) -> None:
        self._lock.__exit__(*exc)

    def finished_blocks(self, n_blocks: int) -> list[tuple[dict[str, torch.Tensor], dict[str, str]]]:
        """The readable block files 0..k-1 of the longest finished prefix whose streams exist."""
        done = []
        for index in range(n_blocks):
            found = read_block(block_file(self.root, index))
            if found is None:
                break
            done.append(found)
        while done and self.load_streams(len(done) - 1) is None:
            done.pop()  # the streams after that block are unusable: redo it
        return done

    def save_block(self, index: int, tensors: dict[str, torch.Tensor], records: list[dict]) -> None:
        write_block(block_file(self.root, index), tensors, {"records": json.dumps(records), "block": str(index)})

    def save_streams(self, index: int, fp: torch.Tensor | None, q: torch.Tensor) -> None:
        tensors = {"q": q}
        if fp is not None:
            tensors["fp"] = fp
        write_block(self.root / f"streams_{index % 2}.safetensors", tensors, {"block": str(index)})

    def load_streams(self, index: int) -> tuple[torch.Tensor | None, torch.Tensor] | None:
        found = read_block(self.root / f"streams_{index % 2}.safetensors")
        if found is None or found[1].get("block") != str(index):
            return None
        tensors = found[0]
        return tensors.get("fp"), tensors["q"]

    def cleanup_streams(self) -> None:
        for k in (0, 1):
            (self.root / f"streams_{k}.safetensors").unlink(missing_ok=True)


def load_run_states(root: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]], list[dict]]:
    """(manifest, {module name: state tensors}, records) of a finished run directory."""
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text())
    states: dict[str, dict[str, torch.Tensor]] = {}
    records: list[dict] = []
    for index in range(manifest["n_blocks"]):
        found = read_block(block_file(root, index))
        if found is None:
            raise FileNotFoundError(f"{block_file(root, index)} is missing or unreadable: the run is not finished")
        tensors, metadata = found
        block_records = json.loads(metadata["records"])
        records.extend(block_records)
        for rec in block_records:
            prefix = f"{rec['module']}."
            states[rec["name"]] = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return manifest, states, records
