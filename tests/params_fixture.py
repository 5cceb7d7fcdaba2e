"""A small valid params.yaml mapping (tiny models) that the reliability and fuzz tests mutate:
the tiny pipeline project's params, with the packaged wiki text as the text source."""

from __future__ import annotations

from tests.pipeline_fixture import tiny_params


def valid_params() -> dict:
    params = tiny_params("wiki")
    params["models"]["tiny-llm"]["eval"]["lm_eval"] = False
    return params
