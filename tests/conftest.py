"""Shared fixtures: a tiny concat model trained for a few seconds on the embedded default."""
import pytest
import torch

from retree_core.config import TrainConfig
from retree_core.train import train
from retree_core.weights import export_weights, load_model


# Tests use small models, where one thread is as fast as two and immune to a busy second core.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    cfg = TrainConfig(mode="concat", preset="tiny", image_size=16, batch_size=8, max_steps=120, lr=2e-3,
                      ema_decay=0.99, sample_interval=10_000, checkpoint_interval=10_000,
                      output_dir=str(out), progress=False)
    return train(cfg)


@pytest.fixture(scope="session")
def tiny_weights(tiny_checkpoint, tmp_path_factory):
    return export_weights(tiny_checkpoint, tmp_path_factory.mktemp("weights") / "concat")


@pytest.fixture()
def tiny_model(tiny_weights):
    return load_model(tiny_weights, role="concat")
