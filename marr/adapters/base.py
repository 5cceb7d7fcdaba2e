"""What the engine needs to know about an architecture, and the registry of adapters.

An adapter says where the transformer blocks are, which linear modules each block has in which
sequential groups (modules of one group share an input and are solved together), and how to run
the model up to block 0. Block-call keyword arguments (rotary embeddings, masks) are captured
generically by hooking every block during one forward pass, so most adapters are a few lines.
"""

from __future__ import annotations

import torch
from torch import nn

_REGISTRY: list[type["Adapter"]] = []


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the wanted inputs are captured."""


class Adapter:
    """Base class: subclasses set ``name``, ``architectures`` (class names) and ``groups``."""

    name: str = ""
    architectures: tuple[str, ...] = ()
    groups: tuple[tuple[str, ...], ...] = ()
    blocks_path: str = ""
    # submodule -> the first group it contains: once that group (and every earlier one) is
    # solved, the submodule's output on the Q stream is final and later passes can reuse it
    reusable: dict[str, str] = {}
    # causal decoders: a position's block output depends only on earlier positions, so running a
    # block on the first P positions of a window gives exactly its output there (prefix scoring)
    causal: bool = False

    def __init__(self, model: nn.Module):
        self.model = model

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return type(model).__name__ in cls.architectures

    def blocks(self) -> nn.ModuleList:
        return self.model.get_submodule(self.blocks_path)

    def run_model(self, batch: torch.Tensor) -> None:
        """Run the model on one calibration batch (hooks stop it early)."""
        self.model(batch)

    def block_kwargs(self, example: torch.Tensor) -> list[dict]:
        """Keyword arguments every block is called with (per block: Gemma3 alternates masks).

        Captured from one forward pass on a single example; calibration windows share one length
        and carry no padding, so the tensors broadcast over any batch size.
        """
        captured: list[dict] = [dict() for _ in self.blocks()]
        handles = []
        for index, block in enumerate(self.blocks()):
            def hook(module, args, kwargs, index=index):
                captured[index] = {k: v for k, v in kwargs.items() if k not in ("hidden_states",)}
            handles.append(block.register_forward_pre_hook(hook, with_kwargs=True))
        try:
            with torch.no_grad():
                self.run_model(example)
        finally:
            for h in handles:
                h.remove()
        return captured

    def block0_inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """Hidden states entering block 0 for a batch of calibration inputs."""
        box: list[torch.Tensor] = []

        def hook(module, args, kwargs):
            box.append(args[0] if args else kwargs["hidden_states"])
            raise StopForward

        handle = self.blocks()[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad():
                self.run_model(batch)
        except StopForward:
            pass
        finally:
            handle.remove()
        return box[0]

    @staticmethod
    def call_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        out = block(hidden, **kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make an adapter discoverable by ``adapter_for``."""
    _REGISTRY.append(cls)
    return cls


def supported() -> list[str]:
    return sorted(f"{a.name} ({', '.join(a.architectures) or 'by structure'})" for a in _REGISTRY)


def adapter_for(model: nn.Module) -> Adapter:
    for cls in _REGISTRY:
        if cls.matches(model):
            return cls(model)
    raise NotImplementedError(
        f"unsupported architecture {type(model).__name__}; supported: {'; '.join(supported())}"
    )

