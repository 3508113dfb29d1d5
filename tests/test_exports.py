"""What other tools read: pairs in nnU-Net's layout, the generation settings stored with each image, and
ONNX graphs of the diffusion models that compute what the engine computes."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from retree_core.cli import main
from retree_core.config import SampleConfig, TrainConfig
from retree_core.images import read_settings
from retree_core.pipeline import FundusPipeline
from retree_core.precision import DEFAULT as PRECISION
from retree_core.train import train
from retree_core.weights import export_weights, load_model


@pytest.fixture()
def masks(tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    for name in ("a", "b"):
        arr = np.zeros((40, 40), np.uint8)
        arr[18:22] = 255
        arr[:, 5 if name == "a" else 30] = 255
        Image.fromarray(arr).save(folder / f"seg_{name}.png")
    return folder


def test_pairs_in_nnunets_layout_with_their_settings(tiny_weights, masks, tmp_path):
    assert main(["generate", "--weights", str(tiny_weights), "--masks", str(masks), "--steps", "2", "--seed", "7",
                 "--layout", "nnunet", "--dataset_id", "502", "--dataset_name", "Fundus", "--sr", "none",
                 "--output_dir", str(tmp_path / "out")]) == 0
    root = tmp_path / "out" / "Dataset502_Fundus"
    dataset = json.loads((root / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "R", "1": "G", "2": "B"} and dataset["file_ending"] == ".png"
    assert dataset["labels"] == {"background": 0, "vessel": 1} and dataset["numTraining"] == 2
    for name, seed in (("a", 7), ("b", 8)):
        image = Image.open(root / "imagesTr" / f"retree_{name}_0000.png")
        label = np.asarray(Image.open(root / "labelsTr" / f"retree_{name}.png"))
        assert image.mode == "RGB" and image.size == label.shape[::-1] == (16, 16)
        assert set(np.unique(label)) == {0, 1}  # label values, not 0/255 pictures
        settings = read_settings(root / "imagesTr" / f"retree_{name}_0000.png")
        assert settings["seed"] == seed and settings["steps"] == 2 and settings["role"] == "concat"
        assert settings["model"] == "concat" and settings["sampler"] == "dpmpp" and settings["sr"] is None
    index = json.loads((root / "generation.json").read_text())
    assert index["seeds"] == {"imagesTr/retree_a_0000.png": 7, "imagesTr/retree_b_0000.png": 8}
    assert "seed" not in index["settings"] and index["settings"]["guidance"] == 1.0


def test_the_seed_layout_keeps_its_files_and_gains_the_settings(tiny_weights, masks, tmp_path):
    assert main(["generate", "--weights", str(tiny_weights), "--masks", str(masks), "--steps", "2",
                 "--output_dir", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["img_a.png", "img_b.png"]
    assert np.asarray(Image.open(out / "masks" / "seg_a.png")).max() == 255
    pipe = FundusPipeline.load(str(tiny_weights), precision=PRECISION)  # as generate loads it
    expected = {**pipe.settings(SampleConfig(steps=2)), "seed": 1}
    assert read_settings(out / "images" / "img_b.png") == json.loads(json.dumps(expected))


def test_bad_nnunet_names_are_refused(tiny_weights, masks, tmp_path, capsys):
    assert main(["generate", "--weights", str(tiny_weights), "--masks", str(masks), "--layout", "nnunet",
                 "--dataset_name", "no spaces", "--output_dir", str(tmp_path)]) == 2  # a usage error
    assert "an nnU-Net dataset needs" in capsys.readouterr().err


@pytest.fixture(scope="module")
def v_vessel_weights(tmp_path_factory):
    """A tiny unconditional vessel model trained with v-prediction (the ONNX graph converts v to eps)."""
    out = tmp_path_factory.mktemp("v_vessel")
    cfg = TrainConfig(mode="vessel", preset="tiny", image_size=16, batch_size=4, max_steps=3, prediction="v",
                      sample_interval=10_000, checkpoint_interval=10_000, output_dir=str(out / "run"),
                      progress=False)
    return export_weights(train(cfg), out / "vessel")


@pytest.mark.parametrize("which", ["concat", "vessel_v"])
def test_onnx_graphs_compute_the_engines_noise_prediction(which, tiny_weights, v_vessel_weights, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (requirements-dev.txt)")
    pytest.importorskip("onnx", reason="onnx is not installed (requirements-dev.txt)")
    weights = tiny_weights if which == "concat" else v_vessel_weights
    assert main(["export", "--format", "onnx", "--checkpoint", str(weights), "--out", str(tmp_path / which)]) == 0
    model = load_model(weights)
    g = torch.Generator().manual_seed(0)
    channels = model.net_cfg.image_channels
    x = torch.randn(3, channels, 16, 16, generator=g)
    t = torch.tensor([999, 500, 3])
    mask = torch.sign(torch.randn(3, 1, 16, 16, generator=g))
    feed = {"x_t": x.numpy(), "t": t.numpy()}
    if model.net_cfg.conditional:
        feed["mask"] = mask.numpy()
    from retree_core.diffusion import NoiseSchedule

    with torch.no_grad():  # the samplers' own path: diffusion.eps_fn around the network
        expected = NoiseSchedule(model.diffusion_cfg).eps_fn(
            lambda xt, tt: model.net(xt, tt, mask if model.net_cfg.conditional else None))(x, t).numpy()
    got = ort.InferenceSession(str(tmp_path / f"{which}.onnx")).run(None, feed)[0]
    assert got.shape == expected.shape and np.allclose(got, expected, atol=1e-4)
    from retree_core.onnx_export import read_metadata

    meta = read_metadata(tmp_path / f"{which}.onnx")
    assert json.loads(meta["diffusion"])["prediction"] == model.diffusion_cfg.prediction and meta["output"] == "eps"
    assert meta["role"] == model.net_cfg.role and int(meta["image_size"]) == 16


def test_onnx_export_refuses_the_segmenter_and_safetensors_options(tiny_weights, tmp_path, capsys):
    assert main(["export", "--format", "onnx", "--checkpoint", str(tiny_weights), "--out", str(tmp_path / "x"),
                 "--fp32"]) == 2
    assert "for safetensors files" in capsys.readouterr().err
