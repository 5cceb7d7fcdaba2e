"""Text sources: the embedded wiki, a user text file, a JSONL file, or an HF dataset.

Every source yields an ordered list of documents; `load_text_split` applies the shared
split rule (`marr.data.splits`) unless the source already names its own split.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

from marr.data.splits import check_split, join_documents, split_documents
from marr.data.wiki import wiki_split

log = logging.getLogger("marr.data.text")


def read_text_documents(path: str | Path, separator: str = "\n\n") -> list[str]:
    """A plain text file as documents separated by blank lines (empty ones dropped)."""
    text = Path(path).read_text(encoding="utf-8")
    return [d.strip() for d in text.split(separator) if d.strip()]


def read_jsonl_documents(path: str | Path, field: str = "text") -> list[str]:
    """One document per JSON line, taken from `field`."""
    docs = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if field not in record:
                raise KeyError(f"{path}:{line_no}: no field {field!r}; fields: {sorted(record)}")
            if str(record[field]).strip():
                docs.append(str(record[field]).strip())
    return docs


def read_hf_dataset_documents(name: str, config: str | None = None, split: str = "test",
                              field: str = "text") -> list[str]:
    """Documents from a Hugging Face dataset (network or local dataset cache needed).

    WikiText-style datasets store one line per row; rows are returned as they are and
    empty rows dropped.
    """
    import datasets

    rows = datasets.load_dataset(name, config, split=split)
    if field not in rows.column_names:
        raise KeyError(f"dataset {name}/{config} split {split} has no column {field!r}; "
                       f"columns: {rows.column_names}")
    return [r for r in rows[field] if r and r.strip()]


def load_text_split(source: "str | Mapping[str, Any]" = "wiki", split: str = "test",
                    cache_dir=None) -> list[str]:
    """Documents of one split from a text source.

    `source`: ``"wiki"`` (embedded), a path to ``.txt``/``.jsonl``, or a mapping
    ``{"wiki": true}``, ``{"text_file": path}``, ``{"jsonl": path, "field": "text"}``,
    ``{"hf_dataset": name, "config": ..., "field": "text", "hf_split": "test"}``.
    An `hf_split` takes the dataset's own split as the requested one (no re-splitting).
    """
    check_split(split)
    if isinstance(source, str):
        if source == "wiki":
            return wiki_split(split, cache_dir)
        path = Path(source)
        if path.suffix == ".jsonl":
            source = {"jsonl": source}
        elif path.is_file():
            source = {"text_file": source}
        else:
            raise ValueError(f"text source {source!r} is neither 'wiki' nor an existing .txt/.jsonl file")
    allowed = {"wiki", "text_file", "jsonl", "hf_dataset", "config", "field", "hf_split"}
    unknown = set(source) - allowed
    if unknown:
        raise ValueError(f"text source has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    if source.get("wiki"):
        return wiki_split(split, cache_dir)
    if "text_file" in source:
        docs = read_text_documents(source["text_file"])
    elif "jsonl" in source:
        docs = read_jsonl_documents(source["jsonl"], source.get("field", "text"))
    elif "hf_dataset" in source:
        if source.get("hf_split"):
            return read_hf_dataset_documents(source["hf_dataset"], source.get("config"),
                                             source["hf_split"], source.get("field", "text"))
        docs = read_hf_dataset_documents(source["hf_dataset"], source.get("config"), "train",
                                         source.get("field", "text"))
    else:
        raise ValueError(f"text source needs one of 'wiki', 'text_file', 'jsonl', 'hf_dataset'; got {dict(source)}")
    return split_documents(docs)[split]


def load_text(source="wiki", split: str = "test", cache_dir=None) -> str:
    """One split as a single string joined with blank lines."""
    return join_documents(load_text_split(source, split, cache_dir))
