"""Model adapters: one small file per architecture family, registered with ``@register``."""

from marr.adapters import gemma3, llama, qwen2, vit  # noqa: F401  (registration)
from marr.adapters.base import Adapter, StopForward, adapter_for, register, supported

__all__ = ["Adapter", "StopForward", "adapter_for", "register", "supported"]
