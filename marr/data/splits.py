"""The document split rule shared by every text source.

Documents are ordered (the wiki by title) and assigned by index: i % 10 == 3 → test,
i % 10 == 7 → holdout, everything else → calibration. Published comparisons use exactly
this rule, so it is not configurable.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

T = TypeVar("T")
SPLITS = ("calibration", "holdout", "test")


def split_of(index: int) -> str:
    r = index % 10
    return "test" if r == 3 else "holdout" if r == 7 else "calibration"


def split_documents(documents: Sequence[T]) -> dict[str, list[T]]:
    """Partition ordered documents into calibration / holdout / test lists."""
    parts: dict[str, list[T]] = {name: [] for name in SPLITS}
    for i, doc in enumerate(documents):
        parts[split_of(i)].append(doc)
    return parts


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    return split


def join_documents(documents: Sequence[str], separator: str = "\n\n") -> str:
    """Concatenate documents as PTQ papers do for WikiText-2 (blank line between them)."""
    return separator.join(documents)
