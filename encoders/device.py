"""The one place that decides which torch device a model runs on."""

from __future__ import annotations

import re

import torch


class DeviceUnavailable(ValueError):
    """The device asked for is not on this machine, or is no device; the message says what to set instead."""


def is_device_name(name: str) -> bool:
    """Whether ``name`` names a device at all (auto, cpu, cuda, cuda:N), on this machine or another.

    >>> is_device_name("cuda:1"), is_device_name("gpu")
    (True, False)
    """
    return name.lower() in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", name.lower()) is not None


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
    if not is_device_name(name):
        raise DeviceUnavailable(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N")
    return name
