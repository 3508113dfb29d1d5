"""Training recipes: v prediction and min-SNR weighting against hand-computed values, files of today's
recipe sampling exactly as before, and the equal-compute recipe study end to end on the tiny preset."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from retree_core.config import DiffusionConfig, from_dict, net_config
from retree_core.diffusion import NoiseSchedule, diffusion_loss
from retree_core.nets import build_net
from retree_core.nets.unet import eps_skip_coefficients
from retree_core.pipeline import generate
from retree_core.samplers import dpmpp_2m, guided, make_generators, randn
from retree_core.weights import LoadedModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def schedule_at(prediction="v", weighting="min_snr", gamma=5.0):
    s = NoiseSchedule(DiffusionConfig(prediction=prediction, loss_weighting=weighting, min_snr_gamma=gamma))
    t = int(torch.argmin((s.alpha_bar - 0.8).abs()))  # a timestep with alpha_bar close to 0.8
    return s, torch.tensor([t]), float(s.alpha_bar[t])


def test_v_target_and_its_conversion_to_noise_by_hand():
    s, t, ab = schedule_at()
    x0, eps = torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), -1.0)
    v = s.target(x0, t, eps)
    assert torch.allclose(v, torch.full_like(v, math.sqrt(ab) * -1.0 - math.sqrt(1 - ab) * 0.5), atol=1e-6)
    x_t = s.add_noise(x0, t, eps)
    assert torch.allclose(s.eps_fn(lambda x, tt: v)(x_t, t), eps, atol=1e-5)  # v -> eps is exact


def test_min_snr_weights_by_hand():
    s, t, ab = schedule_at(gamma=2.0)
    snr = ab / (1 - ab)  # about 4, above gamma
    assert s.item_weights(t).item() == pytest.approx(2.0 / (snr + 1), rel=1e-5)
    eps_s = NoiseSchedule(DiffusionConfig(loss_weighting="min_snr", min_snr_gamma=2.0))
    assert eps_s.item_weights(t).item() == pytest.approx(2.0 / snr, rel=1e-5)
    late = torch.tensor([999])  # SNR far below gamma: the v weight is SNR / (SNR + 1), the eps weight 1
    assert eps_s.item_weights(late).item() == pytest.approx(1.0)
    assert NoiseSchedule(DiffusionConfig()).item_weights(t) is None


def test_item_weighted_loss_by_hand():
    cfg = DiffusionConfig(l1_weight=0.0)
    pred, target = torch.zeros(2, 1, 1, 2), torch.tensor([[[[1.0, 1.0]]], [[[2.0, 2.0]]]])
    assert diffusion_loss(pred, target, cfg, item_weight=torch.tensor([0.5, 0.25])).item() == pytest.approx(
        (0.5 * 1 + 0.25 * 4) / 2)


def test_v_skip_is_the_best_linear_estimate_by_hand():
    ab = torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)
    c = eps_skip_coefficients(ab, sigma_data=0.5, prediction="v")
    assert c[0].item() == pytest.approx(math.sqrt(0.25) * 0.75 / (0.5 * 0.25 + 0.5))  # 0.6
    assert c[1].item() == pytest.approx(0.0) and c[2].item() == pytest.approx(0.0)


def test_unknown_recipe_values_are_refused_with_their_names():
    with pytest.raises(ValueError, match="unknown prediction 'x0'"):
        DiffusionConfig(prediction="x0")
    with pytest.raises(ValueError, match="unknown loss_weighting"):
        DiffusionConfig(loss_weighting="snr")


def test_a_file_of_todays_recipe_samples_exactly_as_the_plain_sampler_does():
    old = {"schedule": "linear", "timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "l1_weight": 1.0,
           "mse_weight": 1.0, "p_uncond": 0.1}  # a DiffusionConfig as files before the recipe fields hold it
    diff = from_dict(DiffusionConfig, old)
    assert diff.prediction == "eps" and diff.loss_weighting == "uniform"
    cfg = net_config("tiny", "concat", 16)
    torch.manual_seed(0)
    net = build_net(cfg, diff).eval().requires_grad_(False)
    mask = np.zeros((16, 16), bool)
    mask[8, 2:14] = True
    ours = generate(LoadedModel(net, cfg, diff, "tiny"), mask, [3, 4], steps=6, guidance=2.0)
    gens = make_generators([3, 4])
    cond = torch.from_numpy(np.stack([mask, mask])[:, None]).float() * 2 - 1
    plain = dpmpp_2m(guided(net, cond, 2.0), randn((2, 3, 16, 16), gens), NoiseSchedule(diff), 6, generators=gens)
    assert torch.equal(ours, plain)
    schedule = NoiseSchedule(diff)
    fn = guided(net, cond, 2.0)
    assert schedule.eps_fn(fn) is fn  # nothing is added on the eps path


def test_recipe_study_end_to_end_on_the_tiny_preset(tmp_path):
    import recipes

    out = tmp_path / "study"
    assert recipes.main(["--preset", "tiny", "--image_size", "32", "--max_steps", "2", "--recipes", "today",
                         "v_min_snr", "--sr", "none", "--eval_seeds", "1", "--segmenter", "classical",
                         "--precision", "fp32", "--out", str(out)]) == 0
    results = json.loads((out / "recipes.json").read_text())
    assert [r["recipe"] for r in results] == ["today", "v_min_snr"]
    assert all(r["steps"] == 2 and r["images_seen"] == 16 and 0 <= r["fidelity"] <= 1 for r in results)
    saved = json.loads(Path(results[1]["checkpoint"]).with_name("log.jsonl").read_text().splitlines()[0])
    assert saved["step"] == 1
    state = torch.load(results[1]["checkpoint"], weights_only=True)
    assert state["config"]["diffusion"]["prediction"] == "v"
    assert "| v_min_snr | 2 | 16 |" in (out / "recipes.md").read_text()
    assert (out / "recipes.png").stat().st_size > 0


def test_recipe_study_image_budget_and_cooldown(tmp_path):
    import recipes
    from retree_core.config import TrainConfig

    out = tmp_path / "study"
    assert recipes.main(["--preset", "tiny", "--image_size", "32", "--images", "64", "--recipes", "today_cooldown",
                         "batch16_lr1e-3", "--sr", "none", "--eval_seeds", "1", "--segmenter", "classical",
                         "--precision", "fp32", "--out", str(out)]) == 0
    results = {r["recipe"]: r for r in json.loads((out / "recipes.json").read_text())}
    assert (results["today_cooldown"]["steps"], results["batch16_lr1e-3"]["steps"]) == (8, 4)  # 64 images each
    assert all(r["images_seen"] == 64 for r in results.values())
    rates = [json.loads(r)["lr"] for r in (out / "today_cooldown" / "log.jsonl").read_text().splitlines()]
    assert rates == pytest.approx([5e-4] * 7 + [2.5e-4])  # the last quarter (2 steps) falls towards 0
    with pytest.raises(SystemExit, match="needs a step or image budget"):
        recipes.recipe_config("today_cooldown", TrainConfig(max_steps=recipes.NO_STEP_BUDGET), 5.0, None, tmp_path)


def test_each_recipe_is_scored_through_the_first_sr_that_fits_its_size(tmp_path):
    import recipes
    from retree_core.config import TrainConfig
    from retree_core.train import train
    from retree_core.weights import export_weights

    sr = export_weights(train(TrainConfig(mode="sr", preset="tiny", image_size=64, sr_scale=4, batch_size=2,
                                          max_steps=1, perceptual_weight=0.0, progress=False,
                                          output_dir=str(tmp_path / "run"))), tmp_path / "sr16")
    assert recipes.fitting_sr(["auto", str(sr)], 16).net_cfg.sr_input_px == 16  # the shipped sr takes 128 px
    assert recipes.fitting_sr(["none", str(sr)], 16) is None
    assert recipes.fitting_sr([str(sr)], 32) is None
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(sr.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable safetensors file"):  # refused, not skipped
        recipes.fitting_sr([str(broken), str(sr)], 16)
    assert recipes.recipe_config("base_64px", TrainConfig(), None, 9600, tmp_path).image_size == 64


def test_new_runs_default_to_the_winning_recipe_and_continue_old_files_with_theirs(tmp_path):
    from retree_core.config import TrainConfig
    from retree_core.train import train
    from retree_core.weights import export_weights

    cfg = TrainConfig()
    assert (cfg.prediction, cfg.loss_weighting, cfg.l1_weight) == ("v", "min_snr", 0.0)
    assert DiffusionConfig().prediction == "eps"  # files without the field are read as they were trained
    common = dict(mode="concat", preset="tiny", image_size=16, batch_size=2, max_steps=1, sample_interval=100,
                  progress=False, precision="fp32")
    paper = dict(prediction="eps", loss_weighting="uniform", l1_weight=1.0)  # the shipped files' recipe
    old = export_weights(train(TrainConfig(output_dir=str(tmp_path / "old"), **paper, **common)), tmp_path / "old")
    with pytest.raises(ValueError, match="prediction 'eps' .this run: 'v'.*add --prediction eps"):
        train(TrainConfig(output_dir=str(tmp_path / "v"), init_weights=str(old), **common))
    assert train(TrainConfig(output_dir=str(tmp_path / "eps"), init_weights=str(old), **paper, **common)).exists()
