"""The one place that decides which torch device a model runs on."""

from __future__ import annotations

import torch


class DeviceUnavailable(ValueError):
    """The device asked for is not on this machine, or is no device; the message says what to set instead."""


def resolve_device(name: str = "auto") -> str:
    """Map ``auto|cpu|cuda|cuda:N`` to a device string torch accepts.

    >>> resolve_device("cpu")
    'cpu'
    """
    name = (name or "auto").lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {name!r} requested but CUDA is not available on this machine; set "
                                "HYBRIDREC_DEVICE (or the command's --device) to cpu or auto")
    if name not in {"cpu"} and not name.startswith("cuda"):
        raise DeviceUnavailable(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N")
    return name
