"""Packing quantized states into low-bit safetensors checkpoints that standard loaders open.

- :func:`pack_gptq`: GPTQ format (``gptq`` v1 / ``gptq_v2``) for transformers LLMs;
- :func:`pack_compressed_tensors`: compressed-tensors ``pack-quantized`` for LLMs and timm ViTs;
- :func:`unpack`: a packed checkpoint back into a fake-quantized model and its states;
- :func:`verify_manifest`: SHA-256 check of every file (raises :class:`ManifestError`).
"""

from marr.packing.bitpack import pack_bits, packed_length, unpack_bits
from marr.packing.manifest import MANIFEST_NAME, ManifestError, verify_manifest, write_manifest
from marr.packing.pack import pack_compressed_tensors, pack_gptq
from marr.packing.provenance import PROVENANCE_NAME, build_provenance, read_provenance
from marr.packing.unpack import load_gptq_weights, load_tensors, unpack

__all__ = [
    "MANIFEST_NAME", "ManifestError", "PROVENANCE_NAME", "build_provenance", "load_gptq_weights", "load_tensors",
    "pack_bits", "pack_compressed_tensors", "pack_gptq", "packed_length", "read_provenance",
    "unpack", "unpack_bits", "verify_manifest", "write_manifest",
]
