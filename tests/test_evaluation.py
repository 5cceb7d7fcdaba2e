"""Evaluation: perplexity vs direct computation, lm-eval local task, probes, sizes, metrics."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from marr.data import ArrayImageDataset, join_documents, timm_eval_transform
from marr.evaluation import (LinearProbe, checkpoint_size, evaluate_classifier, evaluate_perplexity,
                             evaluate_probe, extract_features, feature_fidelity, fit_or_load_probe,
                             flatten, make_eval_windows, model_size, perplexity, run_lm_eval,
                             topk_accuracy, write_metrics)
from tests.tiny_models import tiny_corpus, tiny_llama, tiny_tokenizer, tiny_vit, single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

REQUIRED = {"eval_data_sha256", "wall_time_s", "model_size_bytes", "bits_per_weight"}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def llama(tok):
    return tiny_llama(len(tok))


# --- perplexity ---------------------------------------------------------------------------------

def test_perplexity_equals_direct_computation(tok, llama):
    docs = tiny_corpus(10)
    L = 40
    ids = torch.tensor(tok(join_documents(docs), add_special_tokens=False).input_ids)
    n = ids.numel() // L
    batch = next(b for b in (3, 4, 5, 7) if n % b)   # an uneven last batch
    metrics = evaluate_perplexity(llama, tok, docs, window_len=L, batch_size=batch, bos=False)
    losses = []
    with torch.no_grad():
        for i in range(n):   # one window at a time, HF's own shifted loss
            window = ids[i * L:(i + 1) * L][None]
            losses.append(llama(window, labels=window).loss.item())
    direct = math.exp(sum(losses) / len(losses))
    assert metrics["perplexity"] == pytest.approx(direct, rel=1e-5)
    assert metrics["n_windows"] == n and metrics["n_scored_tokens"] == n * (L - 1)
    assert metrics["n_tokens"] == ids.numel()
    assert REQUIRED <= set(metrics) and metrics["bits_per_weight"] == pytest.approx(32.0)


def test_perplexity_with_bos_per_window(tok, llama):
    ids = torch.arange(3, 103)
    windows = make_eval_windows(ids, 11, bos_token_id=1)
    assert windows.shape == (10, 11) and bool((windows[:, 0] == 1).all())
    assert torch.equal(windows[:, 1:].reshape(-1), ids)
    got = perplexity(llama, ids, window_len=11, bos_token_id=1)
    with torch.no_grad():
        logits = llama(windows).logits
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    assert got["perplexity"] == pytest.approx(math.exp(nll.item()), rel=1e-5)
    assert got["n_scored_tokens"] == 100 and got["bos_per_window"] is True


def test_bos_auto_follows_tokenizer(llama):
    bos_tok = tiny_tokenizer(add_bos=True)
    m = evaluate_perplexity(llama, bos_tok, tiny_corpus(10), window_len=32, bos="auto", max_windows=2)
    assert m["bos_per_window"] is True and m["n_windows"] == 2
    with pytest.raises(ValueError, match="bos must be"):
        evaluate_perplexity(llama, bos_tok, "some text", window_len=4, bos="yes")


# --- lm-eval --------------------------------------------------------------------------------------

def test_lm_eval_local_task_matches_direct_loglikelihood(tok, llama):
    docs = [d for d in tiny_corpus(12) if len(tok(d).input_ids) < 120][:4]
    metrics = run_lm_eval(llama, tok, documents=docs, max_length=128, batch_size=2)
    assert REQUIRED <= set(metrics) and metrics["n_documents"] == len(docs)
    word_ppl = metrics["lm_eval/marr_wiki/word_perplexity"]
    bpb = metrics["lm_eval/marr_wiki/bits_per_byte"]
    # docs shorter than the context: one rolling window each, conditioned on the prefix token
    total, words, n_bytes = 0.0, 0, 0
    with torch.no_grad():
        for doc in docs:
            ids = torch.tensor([[tok.bos_token_id] + tok(doc, add_special_tokens=False).input_ids])
            logp = llama(ids).logits.log_softmax(-1)[0, :-1]
            total += logp.gather(1, ids[0, 1:, None]).sum().item()
            words += len(re.split(r"\s+", doc))
            n_bytes += len(doc.encode())
    assert word_ppl == pytest.approx(math.exp(-total / words), rel=1e-3)
    assert bpb == pytest.approx(-total / n_bytes / math.log(2), rel=1e-3)
    assert all(isinstance(k, str) and "," not in k for k in metrics)


def test_lm_eval_on_checkpoint_folder_and_dict_task(tok, llama, tmp_path):
    from marr.evaluation import local_task_config
    from marr.evaluation.lm_eval_runner import write_documents_jsonl

    docs = tiny_corpus(3)
    llama.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    in_memory = run_lm_eval(llama, tok, documents=docs, max_length=128)
    task = local_task_config(write_documents_jsonl(docs, tmp_path / "d.jsonl"), task_name="my_task")
    from_folder = run_lm_eval(str(tmp_path / "ckpt"), documents=docs, tasks=["marr_wiki", task],
                              max_length=128)
    expected = in_memory["lm_eval/marr_wiki/word_perplexity"]
    assert from_folder["lm_eval/marr_wiki/word_perplexity"] == pytest.approx(expected, rel=1e-5)
    assert from_folder["lm_eval/my_task/word_perplexity"] == pytest.approx(expected, rel=1e-5)


def test_lm_eval_local_task_needs_documents(tok, llama):
    with pytest.raises(ValueError, match="needs `documents`"):
        run_lm_eval(llama, tok)


# --- sizes and metrics files -------------------------------------------------------------------------

def test_model_size_counts_tied_weights_once():
    emb = torch.nn.Embedding(100, 16)
    head = torch.nn.Linear(16, 100, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head, "fc": torch.nn.Linear(16, 8)})
    size = model_size(model)
    assert size["model_size_bytes"] == 4 * (100 * 16 + 16 * 8 + 8)
    assert size["n_weights"] == 100 * 16 + 16 * 8
    assert size["linear_bits_per_weight"] == pytest.approx(32.0 * (128 + 8) / 128)


def test_model_size_of_packed_linear():
    class Packed(torch.nn.Module):   # 3-bit weights packed into int32, one fp16 scale per 128
        def __init__(self, n_in, n_out):
            super().__init__()
            self.in_features, self.out_features = n_in, n_out
            self.register_buffer("qweight", torch.zeros(n_in * 3 // 32, n_out, dtype=torch.int32))
            self.register_buffer("scales", torch.zeros(n_in // 128, n_out, dtype=torch.float16))

    size = model_size(Packed(256, 64))
    assert size["linear_bits_per_weight"] == pytest.approx(3 + 16 / 128)


def test_checkpoint_size(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(10, 10)}, str(tmp_path / "model.safetensors"))
    size = checkpoint_size(tmp_path)
    assert size["n_weights"] == 100 and size["checkpoint_size_bytes"] > 400
    assert checkpoint_size(tmp_path, n_weights=800)["bits_per_weight"] == pytest.approx(
        8 * size["checkpoint_size_bytes"] / 800)


def test_checkpoint_size_counts_packed_weights(tmp_path):
    from safetensors.torch import save_file

    n_in, n_out, bits = 256, 64, 3
    save_file({"l.qweight": torch.zeros(n_in * bits // 32, n_out, dtype=torch.int32),
               "l.scales": torch.zeros(2, n_out, dtype=torch.float16),
               "l.qzeros": torch.zeros(2, n_out * bits // 32, dtype=torch.int32),
               "l.g_idx": torch.zeros(n_in, dtype=torch.int32),
               "c.weight_packed": torch.zeros(n_out, n_in * 4 // 32, dtype=torch.int32),
               "c.weight_shape": torch.tensor([n_out, n_in]),
               "c.weight_scale": torch.zeros(n_out, 2, dtype=torch.float16),
               "norm.weight": torch.zeros(n_in)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"bits": bits}}))
    size = checkpoint_size(tmp_path)
    assert size["n_weights"] == 2 * n_in * n_out + n_in
    # packed modules only: codes + scales + zeros + g_idx bytes over the 2 · n_in · n_out weights
    packed_bytes = (n_in * bits // 32 * n_out * 4 + 2 * n_out * 2 + 2 * n_out * bits // 32 * 4 + n_in * 4
                    + n_out * n_in * 4 // 32 * 4 + 2 * n_out * 2 + 2 * 8)
    assert size["quantized_bits_per_weight"] == pytest.approx(8 * packed_bytes / (2 * n_in * n_out))
    assert size["bits_per_weight"] > size["quantized_bits_per_weight"]


def test_flat_metrics_file(tmp_path):
    path = write_metrics(tmp_path / "m.json", {"a": {"b": 1.5, "c": [1, 2]}, "d": float("nan")})
    assert json.loads(path.read_text()) == {"a/b": 1.5, "a/c": [1, 2], "d": None}
    assert flatten({"x": {"y": {"z": 1}}}) == {"x/y/z": 1}


# --- vision ----------------------------------------------------------------------------------------

def _separable_images(n=40, seed=0):
    """Class 0: dark images, class 1: bright ones (a probe must separate them)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    base = np.where(labels[:, None, None] == 1, 200, 40)
    images = np.clip(base + rng.integers(-30, 30, (n, 28, 28)), 0, 255).astype(np.uint8)
    return ArrayImageDataset(images, labels, None)


DATA_CONFIG = {"input_size": [3, 28, 28], "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
               "std": [0.229, 0.224, 0.225], "crop_pct": 1.0, "crop_mode": "center"}


def test_probe_pipeline_end_to_end(tmp_path):
    fp = tiny_vit(28)
    quant = copy.deepcopy(fp)
    with torch.no_grad():
        for p in quant.parameters():
            p.add_(0.05 * torch.randn_like(p))
    transform = timm_eval_transform(DATA_CONFIG)
    train = _separable_images(40, seed=0)
    train.transform = transform
    test = _separable_images(20, seed=1)
    test.transform = transform
    probe_path = tmp_path / "probe.safetensors"
    probe = fit_or_load_probe(fp, train, probe_path, batch_size=16, seed=0)
    assert probe_path.is_file() and probe.meta["n_train"] == 40 and probe.meta["feature_dim"] == 64
    again = fit_or_load_probe(fp, train, probe_path)   # loaded, not retrained
    torch.testing.assert_close(again.weight, probe.weight)
    metrics = evaluate_probe(probe, fp, test, quant_model=quant, batch_size=8, dataset_hash="h")
    assert metrics["fp_top1"] == 1.0 and 0.0 <= metrics["top1"] <= 1.0
    assert 0.0 < metrics["feature_cosine"] < 1.0 and metrics["feature_rel_mse"] > 0
    assert metrics["n_images"] == 20 and REQUIRED <= set(metrics)
    same = evaluate_probe(probe, fp, test, quant_model=fp, batch_size=8)
    assert same["top1"] == same["fp_top1"] and same["feature_cosine"] == pytest.approx(1.0)
    assert same["feature_rel_mse"] == pytest.approx(0.0, abs=1e-12)


def test_probe_training_is_seeded():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(60, 5, generator=g)
    labels = (feats[:, 0] > 0).long()
    a = LinearProbe(*[getattr(_train(feats, labels), k) for k in ("weight", "bias", "mean", "std")], {})
    b = _train(feats, labels)
    torch.testing.assert_close(a.weight, b.weight)
    assert (b.logits(feats).argmax(1) == labels).float().mean() > 0.95


def _train(feats, labels):
    from marr.evaluation import train_linear_probe
    return train_linear_probe(feats, labels, seed=7, max_iter=50)


def test_probe_weight_decay_sweep_prefers_regularisation_on_noise():
    from marr.evaluation import train_linear_probe

    g = torch.Generator().manual_seed(1)
    feats = torch.randn(200, 50, generator=g)
    labels = (feats[:, 0] + 0.5 * torch.randn(200, generator=g) > 0).long()   # 1 useful dim, 49 noise
    probe = train_linear_probe(feats, labels, weight_decay=(1e-5, 1e-1), seed=0, max_iter=100)
    sweep = probe.meta["weight_decay_sweep"]
    assert set(sweep) == {"1e-05", "0.1"} and probe.meta["weight_decay"] == 0.1
    assert sweep["0.1"] >= sweep["1e-05"]
    single = train_linear_probe(feats, labels, weight_decay=1e-3, max_iter=20)
    assert single.meta["weight_decay"] == 1e-3 and single.meta["weight_decay_sweep"] == {}


def test_topk_and_fidelity_numbers():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    acc = topk_accuracy(logits, labels, ks=(1, 2))
    assert acc == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3)}
    ref = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    fid = feature_fidelity(ref, torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
    assert fid["feature_cosine"] == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert fid["feature_rel_mse"] == pytest.approx(1 / 5)


def test_classifier_topk_on_image_folder(tmp_path):
    from PIL import Image

    from marr.data import image_folder

    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    dataset = image_folder(tmp_path, timm_eval_transform(DATA_CONFIG))
    model = tiny_vit(28, num_classes=3)
    metrics = evaluate_classifier(model, dataset, batch_size=4, ks=(1, 2))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        expected = topk_accuracy(model(images), torch.tensor(dataset.targets), ks=(1, 2))
    assert metrics["top1"] == pytest.approx(expected["top1"]) and metrics["n_images"] == 9
    assert metrics["top2"] == pytest.approx(expected["top2"])
    feats, labels = extract_features(model, dataset, mode="cls", batch_size=4)
    assert feats.shape == (9, 32) and labels.tolist() == dataset.targets
