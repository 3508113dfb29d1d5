"""Shared fixtures: a tiny concat model trained for a few seconds on the embedded default."""
import pytest
import torch

from retree_core.weights import load_model
from tiny_models import export_tiny, train_tiny


# Tests use small models, where one thread is as fast as two and immune to a busy second core.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture(scope="session")
def tiny_weights(tiny_checkpoint, tmp_path_factory):
    return export_tiny(tiny_checkpoint, tmp_path_factory.mktemp("weights"))


@pytest.fixture()
def tiny_model(tiny_weights):
    return load_model(tiny_weights, role="concat")
