"""Mask-conditioned super-resolution: SSIM/PSNR, the network's shapes, its losses and critic in the shared
training loop (with resume), evaluation against bicubic, and its use by generate and synthesis."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retree_core.checkpoint import load_checkpoint
from retree_core.cli import main
from retree_core.config import TrainConfig, net_config
from retree_core.evaluate import evaluate_sr
from retree_core.nets import build_net
from retree_core.config import ConfigError
from retree_core.superres import (SRObjective, choose_sr, distracted_masks, fits, high_pass, noisy_input, psnr,
                                  shipped_path, sr_forward, ssim, upscale)
from retree_core.train import train
from retree_core.weights import LoadedModel, export_weights, load_model
from test_evaluate import seed_dataset  # noqa: F401  (fixture: a two-image dataset in the seed layout)

torch.set_num_threads(1)


def test_ssim_and_psnr():
    rng = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 32, 32, generator=rng) * 2 - 1
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-5)
    noisy = (a + 0.3 * torch.randn(a.shape, generator=rng)).clamp(-1, 1)
    assert float(ssim(a, noisy)) < float(ssim(a, (a + 0.05 * torch.randn(a.shape, generator=rng)).clamp(-1, 1))) < 1
    smooth = F.avg_pool2d(a, 5, stride=1, padding=2)  # a photograph-like image and a near copy: the
    near = smooth + 0.01 * torch.randn(smooth.shape, generator=rng)  # variances bf16 would round away
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as training runs the loss under --precision bf16
        under_autocast = float(ssim(smooth, near))
    assert under_autocast == pytest.approx(float(ssim(smooth, near)), abs=1e-6)
    x = np.zeros((4, 4, 3), np.uint8)
    y = x.copy()
    y[0, 0, 0] = 255  # MSE = 255^2 / 48
    assert psnr(x, y) == pytest.approx(10 * np.log10(48), abs=1e-9)
    assert psnr(x, x) == float("inf")


def tiny_sr(size=32, scale=4) -> LoadedModel:
    torch.manual_seed(0)
    cfg = net_config("tiny", "sr", size, sr_scale=scale)
    return LoadedModel(build_net(cfg).eval(), cfg, None, "test")


def test_sr_network_reads_image_and_full_size_mask():
    model = tiny_sr()
    assert model.net_cfg.input_channels == 4 and model.net_cfg.image_channels == 3 and not model.net_cfg.input_skip
    lr = torch.rand(2, 3, 8, 8) * 2 - 1
    mask = torch.where(torch.rand(2, 1, 32, 32) > 0.8, 1.0, -1.0)
    out = sr_forward(model.net, lr, mask)
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1
    other = sr_forward(model.net, lr, -mask)
    assert not torch.allclose(out, other)  # the mask is an input
    images = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    big = upscale(model, images, mask[0, 0].numpy() > 0)
    assert big.shape == (32, 32, 3) and big.dtype == np.uint8
    with pytest.raises(ValueError, match="multiples of 2"):
        upscale(model, images, np.ones((33, 33), bool))
    with pytest.raises(ValueError, match="sr_scale 3"):
        net_config("tiny", "sr", 32, sr_scale=3)
    assert fits(model, 8) and not fits(model, 16) and not fits(None, 8)


def test_critic_learns_and_the_generator_loss_has_every_term(tmp_path, seed_dataset):
    seg_cfg = TrainConfig(mode="segment", preset="tiny", image_size=32, batch_size=2, max_steps=2,
                          data_root=[str(seed_dataset)], output_dir=str(tmp_path / "seg"), progress=False,
                          sample_interval=100, checkpoint_interval=100)
    segmenter = export_weights(train(seg_cfg), tmp_path / "segment")
    cfg = TrainConfig(mode="sr", preset="tiny", image_size=32, sr_scale=4, lr=1e-3, perceptual_net=str(segmenter))
    objective = SRObjective(cfg, torch.device("cpu"))
    net = build_net(cfg.net())
    batch = {"image": torch.rand(2, 3, 32, 32) * 2 - 1, "mask": torch.where(torch.rand(2, 1, 32, 32) > 0.8, 1.0, -1.0)}
    items = [(0, 11), (1, 12)]
    loss, parts = objective.generator_loss(net, batch, torch.device("cpu"), items)
    assert set(parts) == {"l1", "ssim", "adversarial", "perceptual"} and loss.requires_grad
    loss.backward()
    assert all(p.grad is None for p in objective.disc.parameters())  # the generator step leaves the critic alone
    first = objective.discriminator_step()
    for _ in range(15):
        objective.generator_loss(net, batch, torch.device("cpu"), items)
        last = objective.discriminator_step()
    assert last < first  # with the generator fixed, the critic learns to tell real from upscaled
    with pytest.raises(ValueError, match="perceptual_weight 0"):
        SRObjective(TrainConfig(mode="sr", perceptual_net=str(tmp_path / "missing.safetensors")), torch.device("cpu"))


def test_the_critic_sees_a_grain_of_a_grey_level():
    """A photograph and the same with its fine texture smoothed away differ by a grey level or two: the critic
    must tell them apart (on the image alone it stayed at chance on real photographs)."""
    rng = torch.Generator().manual_seed(0)
    smooth = F.avg_pool2d(torch.rand(8, 3, 40, 40, generator=rng), 9, stride=1) * 2 - 1  # (8, 3, 32, 32)
    textured = smooth + 0.01 * torch.randn(smooth.shape, generator=rng)
    assert torch.allclose(high_pass(torch.full((1, 3, 8, 8), 0.3)), torch.zeros(1, 3, 8, 8), atol=1e-6)
    objective = SRObjective(TrainConfig(mode="sr", preset="tiny", image_size=32, lr=1e-3, perceptual_weight=0),
                            torch.device("cpu"))
    mask = -torch.ones(8, 1, 32, 32)
    losses = []
    for _ in range(60):
        objective._pair = (textured, smooth, mask)  # (real, super-resolved, mask), as generator_loss leaves it
        losses.append(objective.discriminator_step())
    assert np.mean(losses[-10:]) < 0.3 < np.mean(losses[:3])
    before = {k: v.clone() for k, v in objective.disc.state_dict().items()}
    earlier = objective.state_dict()  # a checkpoint of the earlier critic (image and mask in: 4 channels)
    earlier["disc"] = {**{k: v + 1 for k, v in earlier["disc"].items()}, "net.0.weight": torch.zeros(32, 4, 4, 4)}
    objective.load_state_dict(earlier)  # resumes with a new critic instead of failing or mixing the two
    assert all(torch.equal(v, before[k]) for k, v in objective.disc.state_dict().items())


def test_input_noise_is_per_item_reproducible_and_bounded():
    lr = torch.zeros(3, 3, 16, 16)
    items = [(0, 5), (1, 6), (2, 7)]
    assert noisy_input(lr, items, 0.0) is lr  # off: the input is the downsampled photograph
    a, b = noisy_input(lr, items, 0.2), noisy_input(lr, items, 0.2)
    assert torch.equal(a, b)  # drawn from each item's seed: a resumed run sees the same noise
    assert torch.equal(noisy_input(lr[1:2], items[1:2], 0.2)[0], a[1])  # whatever the batch it is in
    stds = a.flatten(1).std(dim=1)
    assert (stds > 0).all() and (stds < 0.25).all() and len(set(stds.tolist())) == 3  # a std per item
    assert not torch.equal(noisy_input(lr, [(0, 8), (1, 9), (2, 10)], 0.2), a)


def test_mask_distractors_add_the_next_items_vessels_and_the_critic_sees_the_true_mask():
    masks = -torch.ones(3, 1, 8, 8)
    masks[0, :, 2], masks[1, :, :, 1], masks[2, :, 5] = 1, 1, 1  # a row, a column, a row
    items = [(0, 10), (1, 11), (2, 12)]
    assert distracted_masks(masks, items, 0.0) is masks
    every = distracted_masks(masks, items, 1.0)
    for i in range(3):
        assert torch.equal(every[i], torch.maximum(masks[i], masks[(i + 1) % 3].flip(-1)))
    assert torch.equal(masks[0, 0, 2], torch.ones(8))  # the input is left as it was
    some = [distracted_masks(masks, [(0, seed)] * 3, 0.5)[0] for seed in range(40)]
    changed = sum(not torch.equal(m, masks[0]) for m in some)
    assert 10 < changed < 30 and torch.equal(distracted_masks(masks, items, 0.5), distracted_masks(masks, items, 0.5))
    with pytest.raises(ConfigError, match="sr_mask_distractors"):
        TrainConfig(mode="segment", sr_mask_distractors=0.5).check()

    cfg = TrainConfig(mode="sr", preset="tiny", image_size=32, sr_scale=4, perceptual_weight=0.0,
                      sr_mask_distractors=1.0)
    model, hr = tiny_sr(), torch.rand(3, 3, 32, 32) * 2 - 1
    batch = {"image": hr, "mask": F.interpolate(masks, size=(32, 32))}
    objective = SRObjective(cfg, torch.device("cpu"))
    distracted, _ = objective.generator_loss(model.net, batch, torch.device("cpu"), items)
    assert torch.equal(objective._pair[2], batch["mask"])  # the critic judges against the true mask
    plain, _ = SRObjective(dataclasses.replace(cfg, sr_mask_distractors=0.0), torch.device("cpu")
                           ).generator_loss(model.net, batch, torch.device("cpu"), items)
    assert float(distracted.detach()) != float(plain.detach())  # the network was given the distracted masks


def test_train_sr_learns_and_resumes_with_its_critic(tmp_path, seed_dataset):
    common = dict(mode="sr", preset="tiny", image_size=32, crop_px=None, sr_scale=4, batch_size=2, lr=2e-3,
                  data_root=[str(seed_dataset)], perceptual_weight=0.0, sample_interval=4, checkpoint_interval=4,
                  output_dir=str(tmp_path / "run"), progress=False)
    ckpt = train(TrainConfig(max_steps=4, **common))
    state = load_checkpoint(ckpt)
    assert set(state["sr"]) == {"disc", "disc_optimizer"}
    assert (tmp_path / "run" / "samples" / "step_0000004.png").exists()
    train(TrainConfig(max_steps=30, resume=True, **common))
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert {"l1", "ssim", "adversarial", "discriminator"} <= set(rows[-1])
    assert np.mean([r["l1"] for r in rows[-5:]]) < np.mean([r["l1"] for r in rows[:5]])
    weights = export_weights(ckpt.parent / "last.ckpt", tmp_path / "w" / "sr")
    report = evaluate_sr(str(weights), [str(seed_dataset)], "all")
    assert len(report.rows) == 2 and report.picture is not None
    assert all(np.isfinite(row["psnr_bicubic"]) and 0 < row["ssim_sr"] <= 1 for row in report.rows)
    assert main(["evaluate", "--sr", str(weights), "--data_root", str(seed_dataset), "--split", "all",
                 "--output_dir", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["kind"] == "sr"
    with pytest.raises(ValueError, match="crop_px 20 must be a multiple of 8"):
        train(TrainConfig(max_steps=1, **{**common, "crop_px": 20}))


def test_generate_evaluation_and_synthesis_use_a_fitting_sr_model(tmp_path, tiny_weights, seed_dataset, monkeypatch):
    from retree_core.config import SampleConfig
    from retree_core.pipeline import FundusPipeline
    from retree_studio.synthesis import SynthesisConfig, synthesise_pairs

    generator = load_model(tiny_weights)  # 16 px concat
    common = dict(mode="sr", preset="tiny", image_size=64, sr_scale=4, batch_size=2, max_steps=1,
                  perceptual_weight=0.0, sample_interval=10, checkpoint_interval=10, progress=False)
    sr_path = export_weights(train(TrainConfig(output_dir=str(tmp_path / "sr"), prediction="eps", **common)),
                             tmp_path / "sr64")
    # continuing a file: its diffusion recipe does not matter to a super-resolution model (no noise schedule)
    assert train(TrainConfig(output_dir=str(tmp_path / "sr2"), init_weights=str(sr_path), **common)).exists()
    # nor does its factor: an x4 file starts an x8 run (the network reads the bicubic-enlarged input)
    x8 = export_weights(train(TrainConfig(output_dir=str(tmp_path / "sr8"), init_weights=str(sr_path),
                                          **{**common, "sr_scale": 8})), tmp_path / "sr8")
    assert load_model(x8).net_cfg.sr_input_px == 8
    with pytest.raises(ValueError, match="channels"):  # another network is still refused
        train(TrainConfig(output_dir=str(tmp_path / "sr3"), init_weights=str(sr_path), **{**common, "preset": "lean"}))
    assert choose_sr(str(sr_path), 16) is not None and choose_sr("none", 16) is None
    with pytest.raises(ValueError, match="upscales 16 px images, but the generator makes 32"):
        choose_sr(str(sr_path), 32)
    # auto: the shipped file that fits the generator's size, the one named after its role first
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for source, stem in ((sr_path, "sr"), (x8, "sr_x8"), (tiny_weights, "concat")):
        for suffix in (".safetensors", ".json"):
            if source.with_suffix(suffix).exists():
                shutil.copy(source.with_suffix(suffix), shipped / f"{stem}{suffix}")
    (shipped / "broken.safetensors").write_bytes(b"not a model")  # skipped, as the catalogue skips it
    assert shipped_path("sr", 16, shipped).name == "sr.safetensors"
    assert shipped_path("sr", 8, shipped).name == "sr_x8.safetensors"
    assert shipped_path("sr", 32, shipped) is None and shipped_path("treesr", 16, shipped) is None
    monkeypatch.setattr("retree_core.weights.WEIGHTS_DIR", shipped)
    assert choose_sr("auto", 8).net_cfg.sr_scale == 8 and choose_sr("auto", 16).net_cfg.sr_scale == 4
    assert choose_sr("auto", 32) is None
    out = tmp_path / "gen"
    assert main(["generate", "--weights", str(tiny_weights), "--mode", "concat", "--num", "2", "--trees",
                 "procedural", "--steps", "2", "--sr", str(sr_path), "--output_dir", str(out)]) == 0
    from PIL import Image
    for name in ("images/img_00000.png", "masks/seg_00000.png"):
        assert Image.open(out / name).size == (64, 64)
    sr = load_model(sr_path)
    items = list(synthesise_pairs(FundusPipeline(generator, sr), None,
                                  SynthesisConfig(count=1, trees="procedural", sample=SampleConfig(steps=2)),
                                  tmp_path / "pairs.zip"))
    assert items[0].image.shape == (64, 64, 3) and items[0].mask.shape == (64, 64)
    from retree_core.evaluate import ClassicalSegmenter, GenerationOptions, evaluate_generator

    report = evaluate_generator(FundusPipeline.load(str(tiny_weights), sr=str(sr_path)), [str(seed_dataset)],
                                ClassicalSegmenter(), "all", GenerationOptions(SampleConfig(steps=2)))
    assert report.settings["output_px"] == 64 and report.arrays["generated"].shape == (2, 64, 64, 3)
    assert report.arrays["real"].shape == (2, 64, 64, 3) and "super-resolved to 64 px" in report.title
