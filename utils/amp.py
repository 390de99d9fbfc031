"""Mixed precision (``--amp``): autocast for a run, and the parts that always compute in float32."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` with ``amp_dtype``, or nothing when mixed precision is off."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def autocast_off(device: torch.device) -> torch.autocast:
    """Autocast turned off on ``device``: under ``--amp`` the ops inside run in float32 (cast the inputs with
    ``.float()``, a no-op on float32 tensors, so full-precision runs are unchanged). For the parts whose rounding
    moves the arg-max box: the co-attention softmax, the confidence product, the location score, the phrase."""
    return torch.autocast(device.type, enabled=False)


def outputs_to_float32(outputs: dict) -> dict:
    """Model outputs in float32 (losses and decoding run in full precision under autocast)."""
    def cast(value: Any) -> Any:
        if isinstance(value, Tensor):
            return value.float()
        if isinstance(value, list):
            return [cast(v) for v in value]
        return value
    return {key: cast(value) for key, value in outputs.items()}
