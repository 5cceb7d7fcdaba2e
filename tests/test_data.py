"""Data: the split rule, text loaders, calibration windows, image sources."""

from __future__ import annotations

import gzip
import json
import os
import random

import numpy as np
import pytest
import torch

from marr.data import (ArrayImageDataset, calibration_images, fashion_mnist, load_calibration,
                       load_text, load_text_split, parse_articles, read_idx, sample_token_windows,
                       save_calibration, split_documents, split_of, stratified_subset,
                       tensor_sha256, timm_eval_transform, token_calibration_set, wiki_split)
from marr.data.images import fashion_mnist_dir
from tests.tiny_models import tiny_corpus, tiny_tokenizer, single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


# --- split rule -------------------------------------------------------------------------------

def test_split_rule_is_exact():
    assert [split_of(i) for i in range(12)] == [
        "calibration", "calibration", "calibration", "test", "calibration", "calibration",
        "calibration", "holdout", "calibration", "calibration", "calibration", "calibration"]
    parts = split_documents(list(range(100)))
    assert parts["test"] == list(range(3, 100, 10)) and parts["holdout"] == list(range(7, 100, 10))
    assert len(parts["calibration"]) == 80


def _raw_articles(n=57, seed=0):
    rng = random.Random(seed)
    titles = [f"Title {rng.random():.8f}" for _ in range(n)]
    return {t: {"title": t, "extract": f"Text of {t}."} for t in titles}


def test_wiki_split_is_deterministic_and_disjoint(tmp_path):
    raw = _raw_articles()
    shuffled = dict(sorted(raw.items(), key=lambda kv: random.Random(1).random()))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(raw))
    b.write_text(json.dumps(shuffled))
    splits_a = {s: wiki_split(s, path=a) for s in ("calibration", "holdout", "test")}
    splits_b = {s: wiki_split(s, path=b) for s in ("calibration", "holdout", "test")}
    assert splits_a == splits_b  # input order does not matter: sorted by title
    sets = [set(v) for v in splits_a.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(map(len, sets)) == len(raw)
    titles = sorted(raw)
    assert splits_a["test"][0] == f"Text of {titles[3]}."


def test_parse_articles_drops_empty_and_sorts():
    arts = parse_articles([{"title": "b", "extract": "x"}, {"title": "a", "extract": " y "},
                           {"title": "c", "extract": ""}])
    assert [(a.title, a.text) for a in arts] == [("a", "y"), ("b", "x")]


def test_text_sources(tmp_path):
    docs = [f"document {i}" for i in range(20)]
    txt = tmp_path / "t.txt"
    txt.write_text("\n\n".join(docs))
    jl = tmp_path / "t.jsonl"
    jl.write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    assert load_text_split(str(txt), "test") == ["document 3", "document 13"]
    assert load_text_split({"jsonl": str(jl), "field": "body"}, "holdout") == ["document 7", "document 17"]
    assert load_text({"text_file": str(txt)}, "test") == "document 3\n\ndocument 13"
    with pytest.raises(KeyError, match="no field 'text'"):
        load_text_split({"jsonl": str(jl)}, "test")
    with pytest.raises(ValueError, match="split 'train'"):
        load_text_split(str(txt), "train")
    with pytest.raises(ValueError, match="unknown keys"):
        load_text_split({"csv": "x"}, "test")


# --- calibration windows ----------------------------------------------------------------------

def test_windows_reproducible_from_seed():
    tokens = torch.arange(5000)
    a = sample_token_windows(tokens, 16, 64, seed=3)
    b = sample_token_windows(tokens, 16, 64, seed=3)
    c = sample_token_windows(tokens, 16, 64, seed=4)
    assert a.shape == (16, 64) and a.dtype == torch.int64
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(16, 63, dtype=torch.int64))  # contiguous
    with pytest.raises(ValueError, match="fewer than one window"):
        sample_token_windows(torch.arange(10), 1, 64)


def test_token_calibration_set_roundtrip(tmp_path):
    tok = tiny_tokenizer()
    docs = tiny_corpus(60)
    calib = token_calibration_set(tok, docs, n_windows=8, window_len=32, seed=0)
    again = token_calibration_set(tok, docs, n_windows=8, window_len=32, seed=0)
    assert calib.sha256 == again.sha256 == tensor_sha256(calib.data)
    import hashlib
    assert calib.sha256 == hashlib.sha256(calib.data.numpy().astype("<i8").tobytes()).hexdigest()
    path = save_calibration(tmp_path / "calib.safetensors", calib)
    loaded = load_calibration(path)
    assert torch.equal(loaded.data, calib.data) and loaded.meta["seed"] == 0
    assert loaded.meta["window_len"] == 32 and loaded.sha256 == calib.sha256
    with_bos = token_calibration_set(tok, docs, n_windows=4, window_len=32, seed=0, bos_token_id=1)
    assert with_bos.data.shape == (4, 32) and bool((with_bos.data[:, 0] == 1).all())


def test_corrupt_calibration_file_is_detected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"data": torch.ones(2, 4, dtype=torch.int64)}, str(path), metadata={"sha256": "0" * 64})
    with pytest.raises(ValueError, match="corrupt"):
        load_calibration(path)


# --- images -------------------------------------------------------------------------------------

def _write_idx(path, array: np.ndarray):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def test_read_idx_and_fashion_mnist_layout(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (30, 28, 28), dtype=np.uint8)
    labels = (np.arange(30) % 10).astype(np.uint8)
    for stem, arr in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        _write_idx(tmp_path / f"{stem}.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    x, y = fashion_mnist("train", root=tmp_path)
    assert x.shape == (30, 28, 28) and y.dtype == np.int64 and list(y[:3]) == [0, 1, 2]
    with pytest.raises(ValueError, match="not one of"):
        fashion_mnist("val", root=tmp_path)


def test_stratified_subset_is_balanced_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    idx = stratified_subset(labels, 100, seed=0)
    assert len(idx) == 100 and np.bincount(labels[idx]).tolist() == [10] * 10
    np.testing.assert_array_equal(idx, stratified_subset(labels, 100, seed=0))
    assert not np.array_equal(idx, stratified_subset(labels, 100, seed=1))


def test_calibration_images_use_model_preprocessing():
    config = {"input_size": [3, 56, 56], "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5],
              "std": [0.5, 0.5, 0.5], "crop_pct": 1.0, "crop_mode": "center"}
    rng = np.random.default_rng(0)
    dataset = ArrayImageDataset(rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
                                np.arange(20) % 10, timm_eval_transform(config))
    calib = calibration_images(dataset, n=8, seed=0)
    assert calib.data.shape == (8, 3, 56, 56)
    assert torch.equal(calib.data[:, 0], calib.data[:, 1])   # grayscale expanded to RGB
    assert float(calib.data.min()) >= -1.0 - 1e-5 and float(calib.data.max()) <= 1.0 + 1e-5
    assert calibration_images(dataset, n=8, seed=0).sha256 == calib.sha256


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist():
    assert fashion_mnist_dir().is_dir()
    x, y = fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and np.bincount(y).tolist() == [1000] * 10


# --- real wiki ---------------------------------------------------------------------------------

@pytest.mark.real_assets
def test_real_wiki_split_sizes():
    test, holdout, calib = (wiki_split(s) for s in ("test", "holdout", "calibration"))
    assert (len(test), len(holdout), len(calib)) == (1003, 1003, 8027)
    assert test[0].startswith("The 14th Dalai Lama")


def test_llm_calibration_from_user_text(tmp_path):
    from marr.data import llm_calibration

    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(tiny_corpus(50)))
    tok = tiny_tokenizer()
    a = llm_calibration(tok, {"text_file": str(path)}, n_windows=4, window_len=16, seed=1)
    b = llm_calibration(tok, str(path), n_windows=4, window_len=16, seed=1)
    assert a.data.shape == (4, 16) and a.sha256 == b.sha256
    assert a.meta["source_documents"] == 40 and a.meta["split"] == "calibration"


def test_vit_calibration_from_image_folder(tmp_path):
    from PIL import Image

    from marr.data import vit_calibration

    rng = np.random.default_rng(0)
    (tmp_path / "cls").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8)).save(tmp_path / "cls" / f"{i}.png")
    config = {"input_size": [3, 28, 28], "interpolation": "bilinear", "mean": [0.5] * 3,
              "std": [0.5] * 3, "crop_pct": 1.0, "crop_mode": "center"}
    calib = vit_calibration(config, str(tmp_path), n_images=3, seed=0)
    assert calib.data.shape == (3, 3, 28, 28) and calib.meta["image_source"] == str(tmp_path)
