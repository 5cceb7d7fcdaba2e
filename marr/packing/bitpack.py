"""Dense little-endian bit-stream packing of small unsigned integers into int32 words.

Along the packed axis, value ``i`` occupies bits ``[i*b, (i+1)*b)`` of the stream and word ``k``
holds stream bits ``[32k, 32k+32)``, lowest bits first. For b in {2, 4, 8} no value crosses a
word; for b = 3 (and 5, 6, 7) values straddle words, so 32 values fill exactly b words. This is
the layout of GPTQ ``qweight``/``qzeros`` and of compressed-tensors ``pack-quantized`` (>= 0.20;
compressed-tensors additionally offsets signed values by 2^(b-1) before packing).
A length that does not fill whole words is padded with zero bits (``ceil(n*b/32)`` words).
"""

from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 1 << 24  # bounds the int64 working copy to ~128 MB


def packed_length(n: int, bits: int) -> int:
    """Number of int32 words holding ``n`` values of ``bits`` bits."""
    return -(-n * bits // 32)


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"bits={bits!r}: must be an integer in 1..8")


def _pack_2d(values: torch.Tensor, bits: int) -> torch.Tensor:
    """values: n × m int64 in [0, 2^bits) → words × m int32, packed along dim 0."""
    n, m = values.shape
    n_words = packed_length(n, bits)
    pos = torch.arange(n, dtype=torch.int64) * bits
    word, offset = pos // 32, pos % 32
    # bits of one word never overlap, so a sum is an OR; a value that crosses into the next
    # word leaves its high bits above bit 31 of its own word's 64-bit accumulator
    acc = torch.zeros(n_words + 1, m, dtype=torch.int64)
    acc.index_add_(0, word, values << offset[:, None])
    low = acc[:n_words] & 0xFFFFFFFF
    spill = torch.cat([torch.zeros(1, m, dtype=torch.int64), acc[: n_words - 1] >> 32])
    words = low | spill
    words = torch.where(words >= 1 << 31, words - (1 << 32), words)
    return words.to(torch.int32)


def _unpack_2d(words: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """words: n_words × m int32 → n × m int64, unpacked along dim 0."""
    n_words, m = words.shape
    if n_words != packed_length(n, bits):
        raise ValueError(
            f"packed axis has {n_words} words; {n} values of {bits} bits need {packed_length(n, bits)}"
        )
    u = words.to(torch.int64) & 0xFFFFFFFF
    nxt = torch.cat([u[1:], torch.zeros(1, m, dtype=torch.int64)])
    pairs = u | (nxt << 32)  # 64-bit window starting at each word
    pos = torch.arange(n, dtype=torch.int64) * bits
    word, offset = pos // 32, pos % 32
    return (pairs.index_select(0, word) >> offset[:, None]) & ((1 << bits) - 1)


def _columns_per_chunk(rows: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(rows, 1))


def pack_bits(values: torch.Tensor, bits: int, dim: int = 0) -> torch.Tensor:
    """Pack integers in [0, 2^bits) along ``dim`` of a 2-D tensor into int32 words."""
    _check_bits(bits)
    if values.ndim != 2:
        raise ValueError(f"pack_bits expects a 2-D tensor, got shape {tuple(values.shape)}")
    if values.dtype.is_floating_point or values.dtype == torch.bool:
        raise TypeError(f"pack_bits expects an integer tensor, got {values.dtype}")
    v = values.to(torch.int64)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= 1 << bits):
        raise ValueError(
            f"values out of range for {bits} bits: min {int(v.min())}, max {int(v.max())} (allowed 0..{(1 << bits) - 1})"
        )
    if dim in (1, -1):
        v = v.T
    elif dim != 0:
        raise ValueError(f"dim={dim}: must be 0 or 1")
    step = _columns_per_chunk(v.shape[0])
    out = torch.cat([_pack_2d(v[:, j : j + step], bits) for j in range(0, max(v.shape[1], 1), step)], dim=1)
    return (out.T if dim in (1, -1) else out).contiguous()


def unpack_bits(words: torch.Tensor, bits: int, n: int, dim: int = 0) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``n`` values per packed axis, returned as uint8."""
    _check_bits(bits)
    if words.ndim != 2 or words.dtype != torch.int32:
        raise ValueError(f"unpack_bits expects a 2-D int32 tensor, got {words.dtype} {tuple(words.shape)}")
    w = words
    if dim in (1, -1):
        w = w.T
    elif dim != 0:
        raise ValueError(f"dim={dim}: must be 0 or 1")
    step = _columns_per_chunk(n)
    out = torch.cat([_unpack_2d(w[:, j : j + step], bits, n) for j in range(0, max(w.shape[1], 1), step)], dim=1)
    out = out.to(torch.uint8)
    return (out.T if dim in (1, -1) else out).contiguous()
