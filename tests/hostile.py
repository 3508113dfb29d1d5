"""Hostile files shared by the tests: a checkpoint holding a pickled object that would act if unpickled."""
from __future__ import annotations

import os
from pathlib import Path

import torch


class Payload:
    """Creates the folder `marker` when unpickled; loading code must refuse it instead."""

    def __init__(self, marker: str | Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def pickled_checkpoint(path: str | Path, marker: str | Path) -> Path:
    """A .ckpt shaped like a training checkpoint with a Payload inside."""
    torch.save({"model": {}, "ema": {}, "step": 1, "config": {}, "extra": Payload(marker)}, path)
    return Path(path)
