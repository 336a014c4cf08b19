"""The device names every config accepts, checked when the config is built, before any work."""

from __future__ import annotations

import re

DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICES = "auto, cpu, cuda, cuda:N or mps"


def check_device(device: object, name: str = "device") -> None:
    """Refuse a device torch would only reject at run time (``tpu``), or one of the wrong type."""
    if not isinstance(device, str) or not DEVICE_RE.fullmatch(device):
        raise ValueError(f"{name} must be {DEVICES}. Found: {device!r}")
