"""Device and dtype selection for the engine."""

from __future__ import annotations

import re

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu``; ``cuda`` / ``cuda:K``.

    An explicit CUDA request without a usable GPU raises ``RuntimeError``.
    """
    spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", spec):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {spec!r} was requested but no CUDA GPU is usable here "
                "(torch.cuda.is_available() is False); use device 'auto' or 'cpu'"
            )
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {spec!r} was requested but only {torch.cuda.device_count()} "
                "CUDA device(s) exist"
            )
        return dev
    raise ValueError(f"unknown device {spec!r}; allowed: 'auto', 'cpu', 'cuda', 'cuda:<index>'")


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; allowed: {sorted(DTYPES)}")
    return DTYPES[name]
