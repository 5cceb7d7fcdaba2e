"""Data: wiki text splits, user text, calibration windows and images."""

from marr.data.calibration import (CalibrationSet, load_calibration, sample_token_windows,
                                   save_calibration, token_calibration_set, tokenize_documents)
from marr.data.hashing import tensor_sha256, text_sha256
from marr.data.images import (ArrayImageDataset, calibration_images, dataset_fingerprint,
                              fashion_mnist, fashion_mnist_dataset, image_folder, read_idx,
                              stratified_subset, timm_eval_transform)
from marr.data.recipes import llm_calibration, vit_calibration
from marr.data.splits import SPLITS, join_documents, split_documents, split_of
from marr.data.text import (load_text, load_text_split, read_hf_dataset_documents,
                            read_jsonl_documents, read_text_documents)
from marr.data.wiki import Article, parse_articles, wiki_articles, wiki_split, wiki_text

__all__ = [
    "Article", "ArrayImageDataset", "CalibrationSet", "SPLITS", "calibration_images",
    "dataset_fingerprint", "fashion_mnist", "fashion_mnist_dataset", "image_folder",
    "join_documents", "load_calibration", "load_text", "load_text_split", "parse_articles",
    "read_hf_dataset_documents", "read_idx", "read_jsonl_documents", "read_text_documents",
    "sample_token_windows", "save_calibration", "split_documents", "split_of",
    "stratified_subset", "tensor_sha256", "text_sha256", "timm_eval_transform",
    "llm_calibration", "token_calibration_set", "tokenize_documents", "vit_calibration", "wiki_articles", "wiki_split", "wiki_text",
]
