"""The precision option: resolved per device, bf16 autocast in training and sampling where it is native,
fp32 elsewhere, weights and losses in fp32, and files of older runs still read."""
import numpy as np
import pytest
import torch

from retree_core import precision
from retree_core.cli import build_parser
from retree_core.config import DiffusionConfig, TrainConfig, from_dict, net_config
from retree_core.nets import build_net
from retree_core.pipeline import generate
from retree_core.weights import LoadedModel

NATIVE = precision.bf16_supported("cpu")


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2"}))


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx512_bf16"}))


def test_auto_takes_bf16_only_where_it_is_native(native_bf16):
    assert precision.resolve("auto", "cpu") == "bf16"
    assert precision.resolve("fp32", "cpu") == "fp32"
    assert isinstance(precision.autocast("auto", "cpu"), torch.autocast)


def test_without_native_bf16_auto_is_fp32_and_bf16_is_refused(no_native_bf16):
    assert precision.resolve("auto", "cpu") == "fp32"
    assert not isinstance(precision.autocast("auto", "cpu"), torch.autocast)
    with pytest.raises(ValueError, match="no native bf16"):
        precision.resolve("bf16", "cpu")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        precision.resolve("fp16", "cpu")


def test_command_line_takes_the_option_for_train_generate_and_evaluate():
    parser = build_parser()
    assert parser.parse_args(["train"]).precision == TrainConfig.precision == "auto"
    assert parser.parse_args(["train", "--precision", "fp32"]).precision == "fp32"
    assert parser.parse_args(["generate", "--num", "1", "--precision", "bf16"]).precision == "bf16"
    assert parser.parse_args(["evaluate", "--data_root", "x"]).precision == precision.DEFAULT
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--precision", "fp16"])


def test_config_of_an_older_run_with_the_bf16_flag_still_reads():
    cfg = from_dict(TrainConfig, {"mode": "vessel", "bf16": False})
    assert cfg.mode == "vessel" and cfg.precision == "auto"
    with pytest.raises(ValueError, match="unknown fields"):
        from_dict(TrainConfig, {"bf16x": True})


def _autocast_seen_by_training(tmp_path, monkeypatch, run_in):
    """Whether the network ran under CPU autocast in a training step, and the dtype of its weights."""
    import retree_core.train as training

    seen = []
    real_build = training.build_net

    def record(module, inputs, output):
        if module.training:  # not the EMA's sample grid
            seen.append((torch.is_autocast_enabled("cpu"), output.dtype))

    def build(*args, **kwargs):
        net = real_build(*args, **kwargs)
        net.register_forward_hook(record)
        return net

    monkeypatch.setattr(training, "build_net", build)
    cfg = TrainConfig(mode="concat", preset="tiny", image_size=16, batch_size=2, max_steps=2, sample_interval=1000,
                      output_dir=str(tmp_path), progress=False, precision=run_in)
    state = torch.load(training.train(cfg), weights_only=True)
    assert all(v.dtype == torch.float32 for v in state["model"].values())  # master weights stay fp32
    return seen


def test_training_step_runs_in_bf16_autocast_where_native(tmp_path, monkeypatch, native_bf16):
    seen = _autocast_seen_by_training(tmp_path, monkeypatch, "auto")
    assert len(seen) == 2 and all(enabled for enabled, _ in seen)
    assert all(dtype == torch.float32 for _, dtype in seen)  # the output layer (and so the loss) stay fp32


def test_training_step_runs_in_fp32_without_native_bf16(tmp_path, monkeypatch, no_native_bf16):
    seen = _autocast_seen_by_training(tmp_path, monkeypatch, "auto")
    assert len(seen) == 2 and not any(enabled for enabled, _ in seen)


def _tiny_model(run_in: str) -> LoadedModel:
    cfg = net_config("tiny", "concat", 32)
    torch.manual_seed(0)
    net = build_net(cfg, DiffusionConfig()).eval().requires_grad_(False)
    return LoadedModel(net, cfg, DiffusionConfig(), "tiny", precision=run_in)


@pytest.mark.skipif(not NATIVE, reason="this CPU has no native bf16")
def test_bf16_sampling_is_close_to_fp32_but_not_the_same_computation():
    mask = np.zeros((32, 32), bool)
    mask[10:12, 4:28] = True
    fp32 = generate(_tiny_model("fp32"), mask, [0, 1], steps=8, guidance=1.0)
    bf16 = generate(_tiny_model("bf16"), mask, [0, 1], steps=8, guidance=1.0)
    assert fp32.dtype == bf16.dtype == torch.float32
    diff = (fp32 - bf16).abs()
    assert 0 < diff.max() and diff.mean() < 0.05  # images in [-1, 1]: within about 6 grey levels on average
    assert torch.equal(fp32, generate(_tiny_model("fp32"), mask, [0, 1], steps=8, guidance=1.0))
