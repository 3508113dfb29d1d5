"""A tiny concat model trained in seconds on the embedded example: the tests' fixtures (conftest.py) and
the benchmarks that run the app without shipped weights (bench/load_test.py) use the same one."""
from __future__ import annotations

from pathlib import Path

from retree_core.config import TrainConfig
from retree_core.train import train
from retree_core.weights import export_weights


def train_tiny(out_dir: str | Path, max_steps: int = 120) -> Path:
    """Train the tiny model into `out_dir`; return its checkpoint."""
    cfg = TrainConfig(mode="concat", preset="tiny", image_size=16, batch_size=8, max_steps=max_steps, lr=2e-3,
                      ema_decay=0.99, sample_interval=10_000, checkpoint_interval=10_000,
                      output_dir=str(out_dir), progress=False)
    return train(cfg)


def export_tiny(checkpoint: Path, weights_dir: str | Path) -> Path:
    """`weights_dir/concat.safetensors` (+ .json) from a checkpoint: the app's default concat model."""
    return export_weights(checkpoint, Path(weights_dir) / "concat")
