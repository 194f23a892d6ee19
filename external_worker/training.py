"""What both trainers (the radiance field's and the feature field's) share."""

from __future__ import annotations

import torch


def device() -> torch.device:
    """The device the worker trains and queries on: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
