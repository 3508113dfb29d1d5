"""The dataset-style condition: each data root a style, "any" the unconditional path of every model."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retree_core.checkpoint import load_checkpoint
from retree_core.cli import main
from retree_core.config import ConfigError, NetConfig, SampleConfig, TrainConfig, net_config
from retree_core.nets import build_net
from retree_core.pipeline import FundusPipeline
from retree_core.roles import item_noise
from retree_core.train import train
from retree_core.weights import export_weights, load_model


def tinted_root(parent: Path, name: str, rgb: tuple[int, int, int], pairs: int = 2) -> Path:
    """A seed-layout data root of flat photographs of one colour with a cross of darker vessels."""
    root = parent / name
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for k in range(pairs):
        mask = np.zeros((32, 32), bool)
        mask[14 + k:17 + k, :] = mask[:, 10:13] = True
        image = np.empty((32, 32, 3), np.uint8)
        image[:] = rgb
        image[mask] //= 2
        Image.fromarray(image).save(root / "images" / f"img_{k}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"seg_{k}.png")
    return root


@pytest.fixture(scope="module")
def style_run(tmp_path_factory):
    """A tiny concat model trained with --style_condition on a reddish and a bluish root, exported."""
    tmp = tmp_path_factory.mktemp("styles")
    roots = [str(tinted_root(tmp, "reddish", (220, 60, 40))), str(tinted_root(tmp, "bluish", (40, 60, 220)))]
    cfg = TrainConfig(mode="concat", preset="tiny", image_size=16, batch_size=8, max_steps=150, lr=2e-3,
                      ema_decay=0.9, sample_interval=10_000, checkpoint_interval=10_000, data_root=roots,
                      style_condition=True, p_uncond=0.2, output_dir=str(tmp / "run"), progress=False,
                      precision="fp32", augment=False,
                      # the paper's recipe: min-SNR weighting barely trains the noisiest steps, where colour is set
                      prediction="eps", loss_weighting="uniform", l1_weight=1.0)
    return export_weights(train(cfg), tmp / "weights" / "concat"), roots


def test_style_names_and_indices_are_checked():
    cfg = NetConfig(role="concat", image_size=16, styles=["DRIVE", "CHASE_DB1"])
    assert cfg.styles == ("DRIVE", "CHASE_DB1") and cfg.style_index("any") == 0 and cfg.style_index("CHASE_DB1") == 2
    with pytest.raises(ConfigError, match="it offers: any, DRIVE, CHASE_DB1"):
        cfg.style_index("HRF")
    for bad in (dict(role="vessel", styles=["DRIVE"]), dict(role="concat", styles=["any"]),
                dict(role="concat", styles=["A", "A"])):
        with pytest.raises(ConfigError, match="styles"):
            NetConfig(image_size=16, **bad)
    with pytest.raises(ConfigError, match="style_condition"):
        TrainConfig(mode="vessel", style_condition=True)


def test_any_is_the_unconditional_path_and_a_style_changes_the_output():
    torch.manual_seed(0)
    plain = build_net(net_config("tiny", "concat", 16)).eval()
    styled = build_net(net_config("tiny", "concat", 16, styles=("A", "B"))).eval()
    missing, unexpected = styled.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["style_emb.weight"] and not unexpected
    x, t, mask = torch.randn(2, 3, 16, 16), torch.tensor([10, 900]), torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        reference = plain(x, t, mask)
        assert torch.equal(styled(x, t, mask), reference)
        assert torch.equal(styled(x, t, mask, style=torch.tensor([0, 0])), reference)
        assert torch.equal(styled(x, t, mask, style=torch.tensor([1, 2])), reference)  # zeros until trained
        styled.style_emb.weight.data[1:].normal_()
        assert torch.equal(styled(x, t, mask, style=torch.tensor([0, 0])), reference)  # "any" stays zero
        assert not torch.allclose(styled(x, t, mask, style=torch.tensor([1, 1])), reference)
        assert not torch.allclose(styled(x, t, mask, style=torch.tensor([1, 1])),
                                  styled(x, t, mask, style=torch.tensor([2, 2])))
        with pytest.raises(ValueError, match="trained without styles"):
            plain(x, t, mask, style=torch.tensor([1, 1]))


def test_style_flags_leave_the_other_draws_as_they_were():
    items = [(0, 11), (1, 12), (2, 13)]
    plain = item_noise(items, torch.Size([3, 4, 4]), 1000, 0.5)
    styled = item_noise(items, torch.Size([3, 4, 4]), 1000, 0.5, styles=True)
    assert len(plain) == 3 and len(styled) == 4
    assert all(torch.equal(a, b) for a, b in zip(plain, styled))
    assert set(styled[3].tolist()) <= {0, 1}


def test_a_style_run_learns_each_roots_colour(style_run):
    weights, _ = style_run
    model = load_model(weights)
    assert model.net_cfg.styles == ("bluish", "reddish")  # sorted folder names
    pipe = FundusPipeline(model, aperture=False)
    assert pipe.styles == ("any", "bluish", "reddish")
    mask = np.zeros((16, 16), bool)
    mask[7:9, :] = True
    means = {}
    for style in pipe.styles:
        images, _ = pipe(np.repeat(mask[None], 4, 0), SampleConfig(steps=10, seed=3, style=style))
        means[style] = images.reshape(-1, 3).mean(0)
    red, blue = means["reddish"], means["bluish"]
    assert red[0] > red[2] and blue[2] > blue[0], means  # each style takes its root's colour
    assert (red[0] - red[2]) - (blue[0] - blue[2]) > 100, means
    with pytest.raises(ConfigError, match="offers: any, bluish, reddish"):
        pipe(mask, SampleConfig(steps=2, style="DRIVE"))
    with pytest.raises(ConfigError, match="offers: any$"):
        FundusPipeline(_plain(weights), aperture=False)(mask, SampleConfig(steps=2, style="reddish"))


def _plain(weights: Path):
    """The style model's weights as a model without styles (as every earlier file is)."""
    from retree_core.weights import LoadedModel

    model = load_model(weights)
    cfg = dataclasses.replace(model.net_cfg, styles=())
    net = build_net(cfg, model.diffusion_cfg)
    net.load_state_dict({k: v for k, v in model.net.state_dict().items() if not k.startswith("style_emb")})
    return LoadedModel(net.eval(), cfg, model.diffusion_cfg, "plain")


def test_a_file_without_styles_starts_a_style_run_as_itself(tmp_path, tiny_weights, style_run):
    _, roots = style_run
    path = train(TrainConfig(mode="concat", preset="tiny", image_size=16, batch_size=4, max_steps=1, lr=1e-12,
                             data_root=roots, style_condition=True, init_weights=str(tiny_weights),
                             output_dir=str(tmp_path), progress=False, precision="fp32",
                             sample_interval=1000))
    state = load_checkpoint(path)
    assert state["config"]["net"]["styles"] == ["bluish", "reddish"]
    source = load_model(tiny_weights).net.state_dict()
    assert all(torch.allclose(state["ema"][k].float(), v.float(), atol=1e-6) for k, v in source.items())
    assert state["ema"]["style_emb.weight"].abs().max() < 1e-6  # starts at zero: the file's model


def test_cli_generates_in_a_style_and_refuses_an_unknown_one(style_run, tmp_path, capsys):
    weights, _ = style_run
    masks = tmp_path / "masks"
    masks.mkdir()
    tree = np.zeros((16, 16), np.uint8)
    tree[7:9, :] = 255
    Image.fromarray(tree).save(masks / "m.png")
    out = tmp_path / "out"
    assert main(["generate", "--weights", str(weights), "--masks", str(masks), "--steps", "4", "--sr", "none",
                 "--style", "reddish", "--output_dir", str(out)]) == 0
    assert json.loads((out / "generation.json").read_text())["settings"]["style"] == "reddish"
    assert main(["generate", "--weights", str(weights), "--masks", str(masks), "--steps", "4", "--sr", "none",
                 "--style", "DRIVE", "--output_dir", str(tmp_path / "bad")]) == 2
    assert "style 'DRIVE' is not one this model knows" in capsys.readouterr().err


def test_the_app_offers_the_models_styles_and_generates_in_one(style_run, tmp_path):
    from types import SimpleNamespace

    from retree_core.images import read_settings
    from retree_studio import ui
    from retree_studio.mask_sources import LoadedMask
    from retree_studio.services import Studio
    from retree_studio.settings import StudioSettings

    weights, _ = style_run
    request = SimpleNamespace(session_hash="s")
    h = ui.Handlers(Studio(StudioSettings(weights_dir=weights.parent, runs_dir=tmp_path / "runs",
                                          work_dir=tmp_path / "work", warm_up=False)))
    update = h.model_styles("concat", "concat", "reddish", request=request)
    assert update["choices"] == ["any", "bluish", "reddish"] and update["value"] == "reddish" and update["interactive"]
    assert "Styles: bluish, reddish" in h.model_note("concat", "concat", None, request=request)
    from retree_studio.ui.about import models_text

    assert "dataset styles: concat (bluish, reddish)" in models_text(h.studio.catalog)
    assert h.model_styles("concat", None, "reddish", request=request)["value"] == "any"  # no model: any only
    tree = np.zeros((64, 64), np.uint8)
    tree[30:34, :] = 255
    mask_file = tmp_path / "m.png"
    Image.fromarray(tree).save(mask_file)
    means = {style: h.api_generate(str(mask_file), "concat", "dpmpp", 10, 1.0, 3, style, request=request
                                   ).reshape(-1, 3).mean(0) for style in ("bluish", "reddish")}
    assert means["reddish"][0] - means["reddish"][2] > means["bluish"][0] - means["bluish"][2] + 50, means
    loaded = LoadedMask.from_mask(tree > 0, "test")
    outputs = list(h.run("loaded", None, loaded, "concat", "concat", None, "dpmpp", 3, 1.0, 0, False, False,
                         "bluish", request=request))
    png = next(o for o in outputs if isinstance(o[6], dict) and o[6].get("value"))[6]["value"]
    assert read_settings(png)["style"] == "bluish"


def test_in_a_browser_the_style_menu_follows_the_model_and_runs(style_run, tmp_path):
    """Headless Chromium: the Style menu lists the style model's datasets; a run in one of them finishes."""
    import os

    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    from app_server import running_app
    from test_app_browser import ARGS, draw_strokes, run_and_wait

    weights, _ = style_run
    with running_app(weights.parent, tmp_path) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, timeout=60_000)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.locator("#rt-canvas canvas").first.wait_for()
        draw_strokes(page)  # first: an open menu would cover the canvas
        page.wait_for_function("() => document.querySelector('#rt-seen-note').innerText.includes('% vessel')")
        page.locator("#rt-style input").click()
        page.get_by_role("option", name="reddish").click()
        assert page.locator("#rt-style input").input_value() == "reddish"
        seen = run_and_wait(page)
        assert any("done" in text for text in seen)
        browser.close()


def test_the_train_tab_learns_a_users_dataset_as_a_style(tmp_path, style_run):
    """Train tab, *Learn dataset styles*: each dataset folder becomes a style of the trained model."""
    from types import SimpleNamespace

    from retree_studio import ui
    from retree_studio.services import Studio
    from retree_studio.settings import StudioSettings

    _, roots = style_run
    request = SimpleNamespace(session_hash="s")
    h = ui.Handlers(Studio(StudioSettings(weights_dir=tmp_path / "none", runs_dir=tmp_path / "runs",
                                          work_dir=tmp_path / "work", warm_up=False)))
    h.train_start("concat", "folder", None, "; ".join(roots), "tiny", 16, 2, 3, 1e-3, 100_000, "styled",
                  0.0, None, 0.5, None, 0.0, True, request=request)
    jobs = h.studio.jobs
    assert jobs.wait(120) and jobs.snapshot().state == "finished"
    assert load_model(jobs.snapshot().weights_path).net_cfg.styles == ("bluish", "reddish")
    label = next(c for c in h.model_choices("concat", None, request)[0]["choices"] if c.startswith("run: styled"))
    assert h.model_styles("concat", label, "any", request=request)["choices"] == ["any", "bluish", "reddish"]


def test_evaluation_can_match_each_image_to_its_datasets_style(style_run):
    from retree_core.evaluate import GenerationOptions, evaluate_generator, load_segmenter

    weights, roots = style_run
    pipe = FundusPipeline(load_model(weights), aperture=False)
    options = GenerationOptions(SampleConfig(steps=10, seed=3), match_styles=True, require_kid=False)
    report = evaluate_generator(pipe, roots, load_segmenter("classical"), "all", options)
    assert [(r["name"].split("/")[0], r["style"]) for r in report.rows] == [
        ("bluish", "bluish"), ("bluish", "bluish"), ("reddish", "reddish"), ("reddish", "reddish")]
    generated = report.arrays["generated"].reshape(4, -1, 3).mean(1)
    red_minus_blue = generated[:, 0] - generated[:, 2]
    assert red_minus_blue[2:].mean() > red_minus_blue[:2].mean() + 40, generated  # the tiny model's styles are
    # clear on average, not on every seed
    plain = evaluate_generator(pipe, roots, load_segmenter("classical"), "all",
                               GenerationOptions(SampleConfig(steps=10, seed=3), require_kid=False))
    assert {r["style"] for r in plain.rows} == {"any"}


def test_style_vectors_learn_at_a_higher_rate_and_other_runs_keep_one_group():
    from retree_core.train import STYLE_LR_SCALE, param_groups

    plain = build_net(net_config("tiny", "concat", 16))
    assert len(param_groups(plain, 1e-3)) == 1
    styled = build_net(net_config("tiny", "concat", 16, styles=("A",)))
    groups = param_groups(styled, 1e-3)
    assert len(groups) == 2 and groups[1]["params"] == [styled.style_emb.weight]
    assert groups[1]["lr"] == pytest.approx(1e-3 * STYLE_LR_SCALE) and "lr" not in groups[0]


def test_a_style_can_recommend_its_own_guidance(style_run, tmp_path, capsys):
    """`export --style_guidance STYLE=SCALE` (also on a weights file); generation, evaluation and the app use
    the style's scale when none is given."""
    from types import SimpleNamespace

    from retree_core.evaluate import GenerationOptions, evaluate_generator, load_segmenter
    from retree_studio import ui
    from retree_studio.services import Studio
    from retree_studio.settings import StudioSettings

    weights, roots = style_run
    out = tmp_path / "w" / "concat"
    assert main(["export", "--checkpoint", str(weights), "--out", str(out), "--guidance", "3",
                 "--style_guidance", "reddish=1.5"]) == 0
    model = load_model(out.with_suffix(".safetensors"))
    assert (model.guidance_for("reddish"), model.guidance_for("bluish"), model.guidance_for("any")) == (1.5, 3.0, 3.0)
    source = load_model(weights).net.state_dict()
    assert all(torch.equal(v, source[k]) for k, v in model.net.state_dict().items())  # the same weights
    assert main(["export", "--checkpoint", str(out.with_suffix(".safetensors")), "--out", str(out),
                 "--guidance", "2.5"]) == 0  # written anew: the style's scale is kept
    model = load_model(out.with_suffix(".safetensors"))
    assert (model.guidance_for("reddish"), model.guidance_for("bluish")) == (1.5, 2.5)

    pipe = FundusPipeline(model, aperture=False)
    assert pipe.options(SampleConfig(style="reddish")).guidance == 1.5
    assert pipe.options(SampleConfig(style="reddish", guidance=2.0)).guidance == 2.0
    tree = np.zeros((16, 16), bool)
    tree[7:9, :] = True
    image = lambda **kw: pipe(tree, SampleConfig(steps=4, style="reddish", **kw))[0]  # noqa: E731
    assert np.array_equal(image(), image(guidance=1.5)) and not np.array_equal(image(), image(guidance=2.5))
    report = evaluate_generator(pipe, roots, load_segmenter("classical"), "all",
                                GenerationOptions(SampleConfig(steps=4), match_styles=True, require_kid=False))
    assert {(r["style"], r["guidance"]) for r in report.rows} == {("bluish", 2.5), ("reddish", 1.5)}
    assert "guidance 2.5 (bluish), 1.5 (reddish)" in report.title

    h = ui.Handlers(Studio(StudioSettings(weights_dir=out.parent, runs_dir=tmp_path / "runs",
                                          work_dir=tmp_path / "work", warm_up=False)))
    request = SimpleNamespace(session_hash="s")
    assert h.model_guidance("concat", "concat", "reddish", request=request) == 1.5
    assert h.model_guidance("concat", "concat", "any", request=request) == 2.5
    from retree_studio.ui.about import models_text

    assert "recommended guidance (2.5, 1.5 in the reddish style)" in models_text(h.studio.catalog)

    assert main(["export", "--checkpoint", str(weights), "--out", str(tmp_path / "bad"),
                 "--style_guidance", "DRIVE=1"]) == 1
    assert "guidance_by_style" in capsys.readouterr().err and not list(tmp_path.glob("bad*"))
    with pytest.raises(SystemExit):
        main(["export", "--checkpoint", str(weights), "--out", str(tmp_path / "bad"), "--style_guidance", "reddish"])
    assert "expected STYLE=SCALE" in capsys.readouterr().err
