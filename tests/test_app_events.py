"""The app's event functions without a browser: odd mask uploads, streaming, Stop, training jobs, API."""
import io
import re
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from retree_core.config import SR_INPUT_NOISE
import retree_studio.mask_sources
from retree_studio import ui
from hostile import pickled_checkpoint
from retree_studio.settings import StudioSettings
from retree_studio.mask_sources import canvas_mask, current_mask, editor_image, mask_for_model
from retree_studio.services import Studio

pytestmark = pytest.mark.timeout(180)

REQUEST = SimpleNamespace(session_hash="session-a")
OTHER = SimpleNamespace(session_hash="session-b")


def settings(tmp_path, weights_dir, **kw):
    return StudioSettings(weights_dir=weights_dir, runs_dir=tmp_path / "runs", work_dir=tmp_path / "work",
                          warm_up=False, **kw)


@pytest.fixture()
def handlers(tmp_path, tiny_weights):
    return ui.Handlers(Studio(settings(tmp_path, tiny_weights.parent)))


@pytest.fixture()
def empty_handlers(tmp_path):
    (tmp_path / "no_weights").mkdir()
    return ui.Handlers(Studio(settings(tmp_path, tmp_path / "no_weights")))


def tree_image(size=64, mode="L"):
    arr = np.zeros((size, size), np.uint8)
    width = max(3, size // 16)
    arr[size // 2 - width // 2: size // 2 + width // 2 + 1, :] = 255
    arr[:, size // 3: size // 3 + width] = 255
    return Image.fromarray(arr).convert(mode)


def save(tmp_path, name, image, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return str(path)


def write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


# --- mask preprocessing of odd uploads --------------------------------------------------------------
def odd_uploads(tmp_path):
    rgba = np.zeros((80, 60, 4), np.uint8)
    rgba[40:44, :, :] = 255  # white opaque strokes on a transparent canvas
    palette = tree_image(64).convert("P")
    grey16 = (np.asarray(tree_image(64)).astype(np.uint16) * 257)
    return {
        "rgba.png": save(tmp_path, "rgba.png", Image.fromarray(rgba, "RGBA")),
        "palette.gif": save(tmp_path, "palette.gif", palette),
        "grey16.png": save(tmp_path, "grey16.png", Image.fromarray(grey16)),
        "tiny.png": save(tmp_path, "tiny.png", Image.fromarray(np.array([[0, 255, 0]] * 3, np.uint8))),
        "large.png": save(tmp_path, "large.png", tree_image(3000)),
        "rgb.jpg": save(tmp_path, "rgb.jpg", tree_image(100, "RGB"), quality=95),
    }


def test_odd_uploads_become_binary_masks_the_model_sees(handlers, tmp_path):
    for name, path in odd_uploads(tmp_path).items():
        loaded, note = handlers.load_upload(path)
        assert name in note
        mask = current_mask("loaded", None, loaded, 16)
        assert mask.dtype == bool and mask.shape == (16, 16), name
        assert 0 < mask.mean() < 0.9, name
        picture, text = handlers.preview("loaded", None, loaded, "concat", "concat", REQUEST)
        assert picture.shape[0] >= 256 and "16×16 px" in text and name in text, name


@pytest.mark.parametrize("make, expected", [
    (lambda p: save(p, "black.png", Image.new("L", (64, 64), 0)), "no vessel"),
    (lambda p: save(p, "white.png", Image.new("L", (64, 64), 255)), "entirely white"),
    (lambda p: write(p / "corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50), "corrupt.png"),
    (lambda p: write(p / "text.png", b"not an image"), "unreadable"),
    (lambda p: write(p / "empty.png", b""), "empty"),
])
def test_bad_uploads_give_readable_errors(handlers, tmp_path, make, expected):
    with pytest.raises(gr.Error) as err:
        handlers.load_upload(make(tmp_path))
    assert expected in str(err.value.message)
    assert str(tmp_path) not in err.value.message  # no server paths in messages


def test_declared_huge_upload_is_refused_before_decoding(handlers, tmp_path):
    path = tmp_path / "bomb.png"
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")  # ~200 kB on disk, 400 MP declared
    path.write_bytes(buffer.getvalue())
    with pytest.raises(gr.Error, match="too large"):
        handlers.load_upload(str(path))


def test_canvas_values_from_the_editor(handlers):
    stroke = np.zeros((512, 512, 4), np.uint8)
    stroke[..., 3] = 255  # opaque black canvas as gradio composites it
    stroke[240:272, 40:470, :3] = 255
    mask = mask_for_model(editor_image({"background": None, "layers": [], "composite": stroke}), 16)
    assert mask[7:9].any() and not mask[:4].any()
    layer = np.zeros((512, 512, 4), np.uint8)
    layer[..., :3] = 255
    layer[..., 3] = stroke[..., 0]  # strokes on a transparent layer over a black background, no composite
    value = {"background": np.zeros((512, 512, 3), np.uint8), "layers": [layer], "composite": None}
    assert np.array_equal(mask_for_model(editor_image(value), 16), mask)
    blank = {"background": np.zeros((512, 512, 3), np.uint8), "layers": [], "composite": None}
    drawn, picture, note = handlers.canvas_changed(blank, "draw", None, "concat", "concat", REQUEST)
    assert drawn is None and picture is None and "canvas is empty" in note  # a note, not an error popup
    drawn, picture, note = handlers.canvas_changed(value, "draw", None, "concat", "concat", REQUEST)
    assert np.array_equal(drawn.mask(), mask_for_model(editor_image(value), 512)) and "the canvas" in note
    white = {"background": np.full((512, 512, 3), 255, np.uint8), "layers": [], "composite": None}
    drawn, picture, note = handlers.canvas_changed(white, "draw", None, "concat", "concat", REQUEST)
    assert drawn is None and "entirely white" in note  # painted over: said as such, not "empty"
    picture, note = handlers.preview("loaded", None, None, "concat", "concat", REQUEST)
    assert picture is None and "No mask loaded yet" in note


def test_random_tree_and_examples_load(handlers):
    loaded = handlers.draw_tree(3, 4, 4, 0.5, 8, "right")
    assert current_mask("loaded", None, loaded, 16).any() and "seed 3" in loaded.origin
    loaded = handlers.load_example(SimpleNamespace(index=0))
    assert current_mask("loaded", None, loaded, 16).any()
    assert len(loaded.bits) == 512 * 512 // 8  # kept bit-packed in the session state
    with pytest.raises(gr.Error, match="main vessels"):
        handlers.draw_tree(3, 40, 4, 0.5, 8, "left")


def test_dream_without_a_vessel_model_says_what_to_do(handlers):
    with pytest.raises(gr.Error, match="No vessel model yet"):
        handlers.dream(0, False, REQUEST)


# --- generation -------------------------------------------------------------------------------------
def canvas():
    """A sketch-canvas value as gradio sends it: an opaque RGBA composite with white strokes."""
    rgba = np.asarray(tree_image(512, "RGBA")).copy()
    rgba[..., 3] = 255
    return {"background": None, "layers": [], "composite": rgba}


def mask_in():
    """The Generate tab's mask inputs after drawing: active source, drawn mask, loaded mask."""
    return "draw", canvas_mask(canvas()), None


def test_run_streams_frames_then_result_fidelity_and_downloads(handlers):
    outputs = list(handlers.run(*mask_in(), "concat", "concat", None, "dpmpp", 5, 1.0, 7, True, request=REQUEST))
    frames = [o for o in outputs if isinstance(o[0], np.ndarray) and not isinstance(o[3], np.ndarray)]
    steps = [int(re.search(r"step (\d) / 5", o[2]).group(1)) for o in frames]
    assert steps and steps == sorted(set(steps))  # newest frames, in order (a slow consumer skips some)
    final = next(o for o in outputs if isinstance(o[3], np.ndarray))
    assert "done: 5 steps" in final[2] and final[3].shape[0] >= 256
    assert np.array_equal(final[0], final[1])  # x_t ends on the sample, whichever frames were skipped
    png, pair = final[6]["value"], final[7]["value"]
    with zipfile.ZipFile(pair) as z:
        assert sorted(z.namelist()) == ["fov/fov_000.png", "images/img_000.png", "masks/seg_000.png"]
    assert Image.open(png).size == (16, 16)
    last = outputs[-1]
    assert isinstance(last[4], np.ndarray) and "Dice" in last[5]


def test_the_round_aperture_finishes_results_and_cuts_their_masks(handlers):
    from retree_core.aperture import apply_aperture, fit_aperture

    def final(aperture):
        outputs = list(handlers.run(*mask_in(), "concat", "concat", None, "ddim", 2, 1.0, 3, False, aperture,
                                    request=REQUEST))
        last_x0 = [o[1] for o in outputs if isinstance(o[1], np.ndarray)][-1]
        done = next(o for o in outputs if isinstance(o[3], np.ndarray))
        with zipfile.ZipFile(done[7]["value"]) as z:
            mask = np.array(Image.open(io.BytesIO(z.read("masks/seg_000.png")))) > 127
        return last_x0, np.array(Image.open(done[6]["value"]).convert("RGB")), mask

    raw_x0, raw, raw_mask = final(False)
    x0, finished, cut = final(True)
    assert np.array_equal(raw, raw_x0)  # without the aperture the result is the model's image
    expected_image, expected_mask = apply_aperture(x0, raw_mask)
    assert np.array_equal(finished, expected_image) and np.array_equal(cut, expected_mask)
    assert not cut[fit_aperture(x0) < 0.5].any()  # no vessel labelled where the photograph is black


def test_stop_ends_a_run_within_a_step(handlers):
    run = handlers.run(*mask_in(), "concat", "concat", None, "ddpm", 400, 1.0, 0, True, request=REQUEST)
    next(run)  # "starting"
    next(run)  # first frame
    handlers.stop(OTHER)  # another session's Stop does not touch this run
    next(run)
    handlers.stop(REQUEST)
    rest = list(run)
    stopped = [o for o in rest if isinstance(o[2], str) and "stopped at step" in o[2]]
    assert stopped and len(rest) < 10
    assert isinstance(stopped[0][3], np.ndarray)  # the prediction at that step is the result
    assert stopped[0][0].shape == stopped[0][1].shape and not np.array_equal(stopped[0][0], stopped[0][1])  # x_t: still noisy


def test_run_rejects_bad_options_and_empty_canvas(handlers):
    with pytest.raises(gr.Error, match="steps"):
        next(handlers.run(*mask_in(), "concat", "concat", None, "dpmpp", 0, 1.0, 0, True, request=REQUEST))
    with pytest.raises(gr.Error, match="unknown sampler"):
        next(handlers.run(*mask_in(), "concat", "concat", None, "euler", 5, 1.0, 0, True, request=REQUEST))
    with pytest.raises(gr.Error, match="guidance"):
        next(handlers.run(*mask_in(), "concat", "concat", None, "dpmpp", 5, -1, 0, True, request=REQUEST))
    blank = {"background": np.zeros((512, 512, 3), np.uint8), "layers": [], "composite": None}
    with pytest.raises(gr.Error, match="canvas is empty"):
        next(handlers.run("draw", canvas_mask(blank), None, "concat", "concat", None, "dpmpp", 5, 1.0, 0, True, request=REQUEST))


def test_no_model_yet_is_a_clear_message(empty_handlers):
    choices, note = empty_handlers.model_choices("concat", None, REQUEST)
    assert choices["choices"] == [] and "No concat model yet" in note
    with pytest.raises(gr.Error, match="No concat model yet: train one in the Train tab"):
        next(empty_handlers.run(*mask_in(), "concat", None, None, "dpmpp", 5, 1.0, 0, True, request=REQUEST))
    picture, text = empty_handlers.preview(*mask_in(), "concat", None, REQUEST)
    assert picture is not None and "no model yet" in text


def test_uploaded_model_file_is_used_and_wrong_files_are_refused(empty_handlers, tiny_weights, tmp_path):
    outputs = list(empty_handlers.run(*mask_in(), "concat", None, str(tiny_weights), "ddim", 3, 1.0, 0,
                                      True, request=REQUEST))
    assert any(isinstance(o[3], np.ndarray) for o in outputs)
    with pytest.raises(gr.Error, match="spade"):
        next(empty_handlers.run(*mask_in(), "spade", None, str(tiny_weights), "ddim", 3, 1.0, 0, True, request=REQUEST))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(gr.Error, match="safetensors"):
        next(empty_handlers.run(*mask_in(), "concat", None, str(junk), "ddim", 3, 1.0, 0, True, request=REQUEST))


def test_api_generate_refuses_other_modes(handlers, tmp_path):
    path = tmp_path / "m.png"
    Image.fromarray(canvas()["composite"][..., :3]).save(path)
    with pytest.raises(gr.Error, match="mode must be concat or spade, got 'vessel'"):
        handlers.api_generate(str(path), "vessel", "dpmpp", 3, 1.0, 0, request=REQUEST)


def test_api_generate_returns_the_image(handlers, tmp_path):
    path = save(tmp_path, "mask.png", tree_image(64))
    image = handlers.api_generate(path, "concat", "dpmpp", 4, 1.0, 0, request=REQUEST)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    with pytest.raises(gr.Error, match="No spade model yet"):
        handlers.api_generate(path, "spade", "dpmpp", 4, 1.0, 0, request=REQUEST)


def test_api_generate_without_guidance_uses_the_models_recommended_scale(tmp_path, tiny_checkpoint):
    from retree_core.weights import export_weights

    export_weights(tiny_checkpoint, tmp_path / "w" / "concat", extra_meta={"sample": {"guidance": 3.0}})
    h = ui.Handlers(Studio(settings(tmp_path, tmp_path / "w")))
    path = save(tmp_path, "mask.png", tree_image(64))
    default = h.api_generate(path, "concat", "dpmpp", 3, None, 0, request=REQUEST)
    assert np.array_equal(default, h.api_generate(path, "concat", "dpmpp", 3, 3.0, 0, request=REQUEST))
    assert not np.array_equal(default, h.api_generate(path, "concat", "dpmpp", 3, 1.0, 0, request=REQUEST))


def test_compare_shows_the_available_model(handlers):
    outputs = list(handlers.compare(*mask_in(), "dpmpp", 3, 1.0, 0, True, request=REQUEST))
    assert isinstance(outputs[-1][0], np.ndarray) and outputs[-1][1] is None and "concat" in outputs[-1][2]


def test_synthesise_writes_a_dataset_zip(handlers):
    outputs = list(handlers.synthesise("concat", "concat", "vessel", 2, 5, "dpmpp", 3, True, request=REQUEST))
    zip_path = outputs[-1][2]["value"]
    with zipfile.ZipFile(zip_path) as z:
        assert sorted(z.namelist()) == ["fov/fov_000.png", "fov/fov_001.png", "images/img_000.png",
                                        "images/img_001.png", "masks/seg_000.png", "masks/seg_001.png"]
        mask = np.asarray(Image.open(z.open("masks/seg_001.png")))
        fov = np.asarray(Image.open(z.open("fov/fov_001.png"))) > 0
        image = np.asarray(Image.open(z.open("images/img_001.png")))
    assert mask.shape == (16, 16) and set(np.unique(mask)) <= {0, 255}
    assert not (mask.astype(bool) & ~fov).any() and not image[~fov].any()  # the aperture's lit disc


# --- training -----------------------------------------------------------------------------------------
def start_args(**kw):
    base = dict(role="concat", source="embedded", zip_path=None, folder=None, preset="tiny", size=16, batch=2,
                steps=100_000, lr=1e-3, sample_every=100_000, name="tiny_run")
    base.update(kw)
    return list(base.values())


def wait_for(predicate, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_training_start_busy_stop_resume_and_use_in_generate(handlers):
    jobs = handlers.studio.jobs
    outputs = handlers.train_start(*start_args(), request=REQUEST)
    status, timer = outputs[0], outputs[-1]
    assert len(outputs) == 7 and "tiny_run" in status and timer.active  # as many as the event's outputs
    try:
        assert wait_for(lambda: jobs.snapshot().step >= 3)
        with pytest.raises(gr.Error, match="already running.*started in another session") as err:
            handlers.train_start(*start_args(name="second"), request=OTHER)
        assert "press Stop" in err.value.message  # locally anyone may stop it
        polled = handlers.train_poll(None, REQUEST)
        status, plot = polled[:2]
        assert len(polled) == 7 and "running" in status and "img/s" in status and len(plot) > 0
    finally:
        assert len(handlers.train_stop(REQUEST)) == 6
        assert jobs.wait(60)
    job = jobs.snapshot()
    assert job.state == "stopped" and job.weights_path.exists()
    choices, _ = handlers.model_choices("concat", None, REQUEST)
    assert any(label.startswith("run: tiny_run") for label in choices["choices"])
    run_label = next(label for label in choices["choices"] if label.startswith("run: tiny_run"))
    outputs = list(handlers.run(*mask_in(), "concat", run_label, None, "ddim", 2, 1.0, 0, True, request=REQUEST))
    assert any(isinstance(o[3], np.ndarray) for o in outputs)

    assert handlers.train_runs(REQUEST)["choices"] == ["tiny_run"]
    assert handlers.train_poll(None, REQUEST)[5]["choices"] == ["tiny_run"]  # refreshed once the run ends
    handlers.train_resume("tiny_run", job.step + 3, REQUEST)
    assert jobs.wait(60) and jobs.snapshot().state == "finished" and jobs.snapshot().step == job.step + 3
    assert len(handlers.train_stop(REQUEST)) == 6  # nothing to stop: a note (a queued start is cancelled by
    assert jobs.snapshot().state == "finished"  # the Stop event itself), not an error


def test_training_refuses_bad_data_and_options(handlers, tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escape.png", b"x")
    with pytest.raises(gr.Error, match="outside the archive"):
        handlers.train_start(*start_args(source="zip", zip_path=str(evil)), request=REQUEST)
    assert not (tmp_path / "escape.png").exists()
    with pytest.raises(gr.Error, match="not a folder"):
        handlers.train_start(*start_args(source="folder", folder=str(tmp_path / "nope")), request=REQUEST)
    with pytest.raises(gr.Error, match="divisible"):
        handlers.train_start(*start_args(preset="paper", size=20), request=REQUEST)
    with pytest.raises(gr.Error, match="upload a dataset zip"):
        handlers.train_start(*start_args(source="zip"), request=REQUEST)
    with pytest.raises(gr.Error, match="procedural share must be a number from 0 to 1"):
        handlers.train_start(*start_args(role="vessel"), 1.5, request=REQUEST)
    assert not handlers.studio.jobs.snapshot().busy
    with pytest.raises(gr.Error, match="soft tree target must be a number from 0 to 64"):
        handlers.train_start(*start_args(role="vessel"), 0.5, None, 0.5, None, -1, request=REQUEST)
    assert not handlers.studio.jobs.snapshot().busy
    vessel = handlers._train_cfg("vessel", "tiny", 16, 2, 10, 1e-3, 5, None, 0.5, 1.5)
    assert (vessel.procedural_fraction, vessel.soft_tree_px) == (0.5, 1.5)  # the Train tab's inputs reach the run
    concat = handlers._train_cfg("concat", "tiny", 16, 2, 10, 1e-3, 5, None, 0.5, 1.5, False, 4)
    assert (concat.procedural_fraction, concat.soft_tree_px, concat.cooldown_steps) == (0.0, 0.0, 4)
    with pytest.raises(ValueError, match="cooldown must be a whole number from 0 to 10"):
        handlers._train_cfg("concat", "tiny", 16, 2, 10, 1e-3, 5, None, 0, 0, False, 11)


def test_training_from_an_uploaded_zip(handlers, tmp_path):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(3):
            for folder, name in (("images", "img"), ("masks", "seg")):
                buffer = io.BytesIO()
                image = tree_image(32, "RGB") if folder == "images" else tree_image(32)
                image.save(buffer, format="PNG")
                z.writestr(f"mydata/{folder}/{name}_{i}.png", buffer.getvalue())
    handlers.train_start(*start_args(source="zip", zip_path=str(archive), steps=2, name="zip_run"), request=REQUEST)
    assert handlers.studio.jobs.wait(60)
    job = handlers.studio.jobs.snapshot()
    assert job.state == "finished", job.message
    unpacked = handlers.settings.runs_dir / "zip_run" / "datasets"
    kept = sorted(unpacked.iterdir())
    assert len(kept) == 1  # the run's data stays with the run, for Resume
    with pytest.raises(gr.Error, match="exists already"):  # a start that fails leaves nothing unpacked
        handlers.train_start(*start_args(source="zip", zip_path=str(archive), steps=2, name="zip_run"), request=REQUEST)
    assert sorted(unpacked.iterdir()) == kept
    outputs = list(handlers.evaluate("segmenter", "classical", "concat", "zip", str(archive), None, "all", 2, 2,
                                     REQUEST))
    assert "f1" in outputs[-1][0] and sorted(unpacked.iterdir()) == kept
    assert list(handlers.settings.dataset_dir.iterdir()) == []  # an evaluation's copy is removed


def test_segmenter_training_mixes_synthetic_pairs_starts_from_a_segmenter_and_is_evaluated(tmp_path, full_weights):
    """The study's arms from the Train tab: synthetic only, then real starting from that segmenter."""
    from retree_core.weights import read_model_info
    from retree_core.checkpoint import load_checkpoint

    handlers = ui.Handlers(Studio(settings(tmp_path, full_weights)))
    jobs = handlers.studio.jobs
    synth_zip = list(handlers.synthesise("concat", "concat", "procedural", 2, 0, "ddim", 2, True,
                                         request=REQUEST))[-1][2]["value"]  # 64 px pairs (the sr model's)
    segment = dict(role="segment", size=32, steps=2, sample_every=1)
    with pytest.raises(gr.Error, match="synthetic share is 0"):
        handlers.train_start(*start_args(**segment, name="none"), 0.0, synth_zip, 0.0, "", request=REQUEST)
    with pytest.raises(gr.Error, match="no segmenter named 'nope'"):
        handlers.train_start(*start_args(**segment, name="none"), 0.0, None, 0.5, "nope", request=REQUEST)
    assert not jobs.snapshot().busy and not (handlers.settings.runs_dir / "none").exists()

    handlers.train_start(*start_args(**segment, name="seg_syn"), 0.0, synth_zip, 1.0, "", request=REQUEST)
    assert jobs.wait(120) and jobs.snapshot().state == "finished", jobs.snapshot().message
    assert "Evaluate as 'run: seg_syn" in jobs.snapshot().message
    cfg = load_checkpoint(handlers.settings.runs_dir / "seg_syn" / "last.ckpt")["config"]["train"]
    assert cfg["mode"] == "segment" and cfg["synthetic_fraction"] == 1.0 and len(cfg["synthetic_root"]) == 1
    assert 0 < read_model_info(jobs.snapshot().weights_path)["segment"]["threshold"] < 1  # chosen at export

    choices = handlers.segmenter_choices(None, False, REQUEST)
    assert choices["value"] == "" and choices["choices"][0] == ("From scratch", "")
    label = next(value for _, value in choices["choices"] if value.startswith("run: seg_syn"))
    handlers.train_start(*start_args(**segment, name="seg_ft"), 0.0, None, 0.5, label, request=REQUEST)
    assert jobs.wait(120) and jobs.snapshot().state == "finished", jobs.snapshot().message
    cfg = load_checkpoint(handlers.settings.runs_dir / "seg_ft" / "last.ckpt")["config"]["train"]
    assert cfg["init_weights"].endswith("seg_syn/model.safetensors") and not cfg["synthetic_root"]

    evaluated = handlers.eval_segmenters(None, REQUEST)
    assert evaluated["value"] == "segment" and evaluated["choices"][0] == ("Classical ridge filter", "classical")
    ft_label = next(value for _, value in evaluated["choices"] if value.startswith("run: seg_ft"))
    summary = list(handlers.evaluate("segmenter", ft_label, "concat", "embedded", None, None, "all", 2, 2,
                                     REQUEST))[-1][0]
    assert "learned segmenter model" in summary and "f1" in summary
    with pytest.raises(gr.Error, match="no segmenter named"):
        list(handlers.evaluate("segmenter", "run: gone", "concat", "embedded", None, None, "all", 2, 2, REQUEST))
    role_outputs = handlers.train_role("segment", None, REQUEST)
    assert role_outputs[1]["visible"] and not role_outputs[0]["visible"] and role_outputs[3:7] == ("fine", 512, 1e-3, 8)
    assert handlers._train_cfg("segment", "fine", 512, 8, 10, 1e-3, 5, None).crop_px == 128  # patch training
    role_outputs = handlers.train_role("treesr", None, REQUEST)  # its soft tree shown, not the procedural share
    assert role_outputs[0]["visible"] and not role_outputs[7]["visible"] and role_outputs[3:7] == ("fine", 512, 1e-3, 8)
    tree_sr = handlers._train_cfg("treesr", "fine", 512, 8, 10, 1e-3, 5, None, 0.5, 1.5)
    assert (tree_sr.crop_px, tree_sr.soft_tree_px, tree_sr.procedural_fraction, tree_sr.input_noise) == (
        128, 1.5, 0.0, SR_INPUT_NOISE["treesr"])


def test_hosted_mode_refuses_server_paths_and_keeps_runs_private(tmp_path, tiny_weights):
    hosted = ui.Handlers(Studio(settings(tmp_path, tiny_weights.parent).make_hosted()))
    with pytest.raises(gr.Error, match="not accepted"):
        hosted.train_start(*start_args(source="folder", folder=str(tmp_path), steps=2), request=REQUEST)
    hosted.train_start(*start_args(steps=2, name="mine"), request=REQUEST)
    assert hosted.studio.jobs.wait(60)
    mine = hosted.studio.jobs.folder_name("mine", REQUEST.session_hash)
    assert mine.startswith("mine-") and hosted.train_runs(REQUEST)["choices"] == [mine]
    assert hosted.train_runs(OTHER)["choices"] == []
    labels = hosted.model_choices("concat", None, OTHER)[0]["choices"]
    assert not any(label.startswith("run:") for label in labels)


def test_dream_and_synthesis_use_a_vessel_model(tmp_path, tiny_weights, monkeypatch):
    import shutil

    import retree_core.plausibility

    from retree_core.config import TrainConfig
    from retree_core.train import train
    from retree_core.weights import export_weights

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(tiny_weights.with_suffix(suffix), weights_dir)
    cfg = TrainConfig(mode="vessel", preset="tiny", image_size=16, batch_size=4, max_steps=15, lr=2e-3,
                      sample_interval=10_000, checkpoint_interval=10_000, output_dir=str(tmp_path / "vessel_run"),
                      progress=False)
    export_weights(train(cfg), weights_dir / "vessel")
    handlers = ui.Handlers(Studio(settings(tmp_path, weights_dir)))
    monkeypatch.setattr(retree_core.plausibility, "DEFAULT_THRESHOLD", 1.01)  # no tree can pass
    warnings = []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    progress = []
    shown = handlers.dream(4, False, REQUEST, progress=lambda done, desc, unit: progress.append((done, desc)))
    assert "no try reached the threshold 1.01" in shown.origin and "below the plausibility" in warnings[0]
    assert progress[0] == ((0, 16), "draw 1 of up to 16") and progress[-1] == ((15, 16), "draw 16 of up to 16")
    monkeypatch.setattr(retree_core.plausibility, "DEFAULT_THRESHOLD", 0.0)  # a 16 px toy model's trees pass
    loaded = handlers.dream(4, False, REQUEST)
    assert "dreamt tree (seed 4, plausibility" in loaded.origin
    assert current_mask("loaded", None, loaded, 16).shape == (16, 16)
    grown_on = []  # the tree that twigs.add_twigs is given, and what it gives back
    monkeypatch.setattr(retree_studio.mask_sources, "add_twigs", lambda t, s: grown_on.append(t) or ~t)
    twigged = handlers.dream(4, True, REQUEST)
    plain, grown = (current_mask("loaded", None, m, 512) for m in (loaded, twigged))
    assert "thin vessels grown on" in twigged.origin
    assert np.array_equal(grown_on[0], plain) and np.array_equal(grown, ~plain)
    outputs = list(handlers.synthesise("concat", "concat", "vessel", 2, 0, "ddim", 2, True, request=REQUEST))
    assert outputs[-1][2]["value"].endswith(".zip")
    outputs = list(handlers.synthesise("concat", "concat", "vessel", 1, 0, "ddim", 2, True, twigs=True,
                                       request=REQUEST))
    assert outputs[-1][2]["value"].endswith(".zip")



def test_uploaded_checkpoints_are_read_without_unpickling_and_refused_when_hosted(tmp_path, tiny_weights,
                                                                                     tiny_checkpoint):
    local = ui.Handlers(Studio(settings(tmp_path, tiny_weights.parent)))
    evil = pickled_checkpoint(tmp_path / "evil.ckpt", tmp_path / "PWNED")
    with pytest.raises(gr.Error, match="posix.mkdir, refused") as err:
        next(local.run(*mask_in(), "concat", None, str(evil), "ddim", 2, 1.0, 0, True, request=REQUEST))
    assert not (tmp_path / "PWNED").exists() and str(tmp_path) not in err.value.message
    outputs = list(local.run(*mask_in(), "concat", None, str(tiny_checkpoint), "ddim", 2, 1.0, 0, True, request=REQUEST))
    assert any(isinstance(o[3], np.ndarray) for o in outputs)  # a genuine checkpoint loads (weights only)
    hosted = ui.Handlers(Studio(settings(tmp_path, tiny_weights.parent).make_hosted()))
    for upload in (evil, tiny_checkpoint):  # a shared server takes weight files only
        with pytest.raises(gr.Error, match="a model file ends in .safetensors here"):
            next(hosted.run(*mask_in(), "concat", None, str(upload), "ddim", 2, 1.0, 0, True, request=REQUEST))
    assert not (tmp_path / "PWNED").exists()


def test_hosted_mode_caps_what_an_uploaded_model_may_allocate(tmp_path, tiny_weights):
    import json

    from safetensors.torch import load_file, save_file

    hosted = ui.Handlers(Studio(settings(tmp_path, tiny_weights.parent).make_hosted()))
    meta = json.loads(tiny_weights.with_suffix(".json").read_text())
    tensors = load_file(tiny_weights)
    for name, change, words in (("big.safetensors", {"image_size": 4096}, "image_size 4096, expected 1 to 512"),
                                ("wide.safetensors", {"image_size": 256, "attn_max_px": 256},
                                 "attention over 65536 positions")):
        net = {**meta["net"], **change}
        save_file(tensors, tmp_path / name, metadata={"retree": json.dumps({**meta, "net": net})})
        with pytest.raises(gr.Error, match=words):
            next(hosted.run(*mask_in(), "concat", None, str(tmp_path / name), "ddim", 2, 1.0, 0, True,
                            request=REQUEST))


def test_hosted_training_status_is_its_owners_only_after_the_run_too(tmp_path, tiny_weights):
    hosted = ui.Handlers(Studio(settings(tmp_path, tiny_weights.parent).make_hosted()))
    hosted.train_start(*start_args(steps=2, name="private", sample_every=1), request=REQUEST)
    assert hosted.studio.jobs.wait(60)
    mine, other = hosted.train_poll(None, REQUEST), hosted.train_poll(None, OTHER)
    assert "private" in mine[0] and mine[2] is not None and mine[4]["visible"]  # status, grid, download
    assert "private" not in other[0] and other[1] is None and other[2] is None and not other[4]["visible"]
    assert other[5]["choices"] == []  # nothing to resume either


def test_hosted_mode_keeps_each_sessions_downloads_apart(tmp_path, tiny_weights):
    hosted = ui.Handlers(Studio(settings(tmp_path, tiny_weights.parent).make_hosted()))
    outputs = list(hosted.run(*mask_in(), "concat", None, None, "ddim", 2, 1.0, 0, True, request=REQUEST))
    png = next(Path(o[6]["value"]) for o in outputs if isinstance(o[6], dict) and o[6].get("value"))
    theirs = list(hosted.synthesise("concat", None, "procedural", 1, 0, "ddim", 2, True, request=OTHER))[-1][2]["value"]
    outputs = hosted.settings.output_dir
    assert png.parent == outputs / "sessiona" and Path(theirs).parent == outputs / "sessionb"
    assert png.name not in {p.name for p in (outputs / "sessionb").iterdir()}
    assert hosted.train_runs(OTHER)["choices"] == []


def test_hosted_mode_upload_limits(tmp_path, tiny_weights, monkeypatch):
    captured = {}

    class FakeDemo:
        def queue(self, **kw):
            captured["queue"] = kw

        def launch(self, **kw):
            captured["launch"] = kw

    local, hosted = settings(tmp_path, tiny_weights.parent), settings(tmp_path, tiny_weights.parent).make_hosted()
    ui.launch(FakeDemo(), local)
    assert captured["launch"]["max_file_size"] == f"{local.max_upload_mb}mb" == "200mb"
    ui.launch(FakeDemo(), hosted)  # gradio refuses larger uploads with 413 (test_app_client)
    assert captured["launch"]["max_file_size"] == "100mb" and captured["queue"]["max_size"] == hosted.queue_size

    hosted.max_mask_mb, hosted.max_zip_members = 1, 5
    handlers = ui.Handlers(Studio(hosted))
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (800, 800, 3), np.uint8)).save(big)  # ~1.8 MB
    with pytest.raises(gr.Error, match="too large for a mask"):
        handlers.load_upload(str(big))
    crowded = tmp_path / "crowded.zip"
    with zipfile.ZipFile(crowded, "w") as z:
        for i in range(6):
            z.writestr(f"images/img_{i}.png", b"")
    with pytest.raises(gr.Error, match="6 entries, more than the 5 allowed"):
        handlers.train_start(*start_args(source="zip", zip_path=str(crowded), steps=10), request=REQUEST)
    assert list(hosted.dataset_dir.iterdir()) == []  # nothing unpacked is left


def test_choosing_a_model_sets_its_recommended_guidance(tmp_path, tiny_checkpoint):
    from retree_core.weights import export_weights

    export_weights(tiny_checkpoint, tmp_path / "w" / "concat", extra_meta={"sample": {"guidance": 3.0}})
    h = ui.Handlers(Studio(settings(tmp_path, tmp_path / "w")))
    assert h.model_guidance("concat", "concat", request=REQUEST) == 3.0


@pytest.fixture(scope="module")
def full_weights(tmp_path_factory, tiny_weights):
    """A weights folder like the shipped one: the tiny concat model, a segmenter and a 16 -> 64 px sr model."""
    import shutil

    from retree_core.config import TrainConfig
    from retree_core.train import train
    from retree_core.weights import export_weights

    folder = tmp_path_factory.mktemp("full_weights")
    for suffix in (".safetensors", ".json"):
        shutil.copy(tiny_weights.with_suffix(suffix), folder / f"concat{suffix}")
    common = dict(preset="tiny", batch_size=2, max_steps=2, sample_interval=10, checkpoint_interval=10, progress=False)
    runs = tmp_path_factory.mktemp("full_runs")
    export_weights(train(TrainConfig(mode="segment", image_size=32, output_dir=str(runs / "seg"), **common)),
                   folder / "segment", extra_meta={"segment": {"threshold": 0.4}})
    export_weights(train(TrainConfig(mode="sr", image_size=64, sr_scale=4, perceptual_weight=0.0,
                                     output_dir=str(runs / "sr"), **common)), folder / "sr")
    return folder


def test_results_are_super_resolved_and_scored_by_the_shipped_segmenter(tmp_path, full_weights):
    handlers = ui.Handlers(Studio(settings(tmp_path, full_weights)))
    outputs = list(handlers.run(*mask_in(), "concat", "concat", None, "ddim", 2, 1.0, 0, True, request=REQUEST))
    final = next(o for o in outputs if isinstance(o[3], np.ndarray))
    assert "64 px (super-resolved)" in final[2]
    assert Image.open(final[6]["value"]).size == (64, 64)
    with zipfile.ZipFile(final[7]["value"]) as z:
        assert Image.open(io.BytesIO(z.read("masks/seg_000.png"))).size == (64, 64)
    assert "learned segmenter segment" in outputs[-1][5]
    plain = list(handlers.run(*mask_in(), "concat", "concat", None, "ddim", 2, 1.0, 0, False, request=REQUEST))
    assert Image.open(next(o for o in plain if isinstance(o[3], np.ndarray))[6]["value"]).size == (16, 16)
    api_image = handlers.api_generate(save(tmp_path, "m.png", tree_image(64)), "concat", "ddim", 2, 1.0, 0, request=REQUEST)
    assert api_image.shape == (64, 64, 3)
    pairs = list(handlers.synthesise("concat", "concat", "procedural", 1, 0, "ddim", 2, True, request=REQUEST))
    with zipfile.ZipFile(pairs[-1][2]["value"]) as z:
        assert Image.open(io.BytesIO(z.read("images/img_000.png"))).size == (64, 64)


def test_each_generator_size_gets_the_shipped_sr_model_that_fits_it(tmp_path, full_weights):
    """A 64 px base model ships with an x8 sr beside the x4 one: the app picks by the generator's size."""
    import shutil

    from retree_core.config import TrainConfig
    from retree_core.train import train
    from retree_core.weights import export_weights
    from retree_studio.ui.common import super_res_box

    folder = tmp_path / "weights"
    shutil.copytree(full_weights, folder)
    export_weights(train(TrainConfig(mode="sr", preset="tiny", image_size=64, sr_scale=8, perceptual_weight=0.0,
                                     batch_size=2, max_steps=1, sample_interval=10, checkpoint_interval=10,
                                     progress=False, output_dir=str(tmp_path / "run"))), folder / "sr_x8")
    handlers = ui.Handlers(Studio(settings(tmp_path, folder)))
    studio = handlers.studio
    assert studio.super_resolution(16).net_cfg.sr_scale == 4 and studio.super_resolution(8).net_cfg.sr_scale == 8
    assert studio.super_resolution(32) is None
    box = super_res_box(handlers, "rt-test-sr")
    assert box.label == "Super-resolve the result" and box.interactive
    assert "16 px results to 64 px (×4) and 8 px results to 64 px (×8)" in box.info
    assert super_res_box(ui.Handlers(Studio(settings(tmp_path, full_weights))), "rt-x").label.endswith("×4")


def test_evaluate_tab_scores_segmenters_and_fundus_models(tmp_path, handlers, full_weights):
    summary, table, picture, files = list(handlers.evaluate("segmenter", "classical", "concat", "embedded", None,
                                                            None, "val", 2, 2, REQUEST))[-1]
    assert "classical ridge filter" in summary and "f1" in summary
    assert list(table["name"]) == ["embedded_example/0", "mean"] and 0.99 < table["f1"].iloc[0] <= 1  # its mask is this filter's
    assert sorted(Path(f).name for f in files) == ["metrics.csv", "metrics.json"]
    with pytest.raises(gr.Error, match="no learned segmenter"):
        list(handlers.evaluate("segmenter", "learned", "concat", "embedded", None, None, "all", 2, 2, REQUEST))
    with pytest.raises(gr.Error, match="upload a dataset zip"):
        list(handlers.evaluate("segmenter", "classical", "concat", "zip", None, None, "all", 2, 2, REQUEST))
    full = ui.Handlers(Studio(settings(tmp_path / "full", full_weights)))
    summary, table, picture, files = list(full.evaluate("generator", "learned", "concat", "embedded", None, None,
                                                        "all", 1, 2, REQUEST))[-1]
    assert "learned segmenter segment" in summary and "super-resolved to 64 px" in summary
    assert "KID not reported" in summary  # one image
    assert {"fidelity_dice", "real_image_dice"} <= set(table.columns) and picture is not None
    assert "grid.png" in {Path(f).name for f in files}


@pytest.mark.parametrize("argv,hosted", [([], False), (["--host", "127.0.0.1"], False), (["--host", "localhost"], False),
                                         (["--host", "0.0.0.0"], True), (["--host", "0.0.0.0", "--not-hosted"], False),
                                         (["--hosted"], True)])
def test_a_server_reachable_from_other_machines_runs_in_hosted_mode(argv, hosted, monkeypatch):
    from retree_studio.settings import settings_from_args

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("RETREE_HOSTED", raising=False)
    assert settings_from_args(argv)[0].hosted is hosted


def test_a_failed_trainings_message_names_no_server_folder(tmp_path, tiny_weights, monkeypatch):
    import retree_studio.jobs

    def broken(cfg, **kw):
        raise ValueError(f"{tmp_path}/secret/place/img_3.png: unreadable")

    monkeypatch.setattr(retree_studio.jobs, "train", broken)
    handlers = ui.Handlers(Studio(settings(tmp_path, tiny_weights.parent)))
    handlers.train_start(*start_args(steps=2, name="fails"), request=REQUEST)
    assert handlers.studio.jobs.wait(30)
    job = handlers.studio.jobs.snapshot()
    assert job.state == "failed" and "img_3.png: unreadable" in job.message and str(tmp_path) not in job.message


def test_hosted_trainings_fit_a_compute_budget(tmp_path, tiny_weights):
    import json

    hosted = ui.Handlers(Studio(settings(tmp_path, tiny_weights.parent).make_hosted()))
    with pytest.raises(gr.Error, match="preset paper is not offered on this server"):
        hosted.train_start(*start_args(preset="paper", steps=2), request=REQUEST)
    with pytest.raises(gr.Error, match="batch size 256 of 512 px images is 67,108,864 pixels a step"):
        hosted.train_start(*start_args(batch=256, size=512, steps=2), request=REQUEST)
    hosted.train_start(*start_args(steps=2, name="budgeted"), request=REQUEST)
    assert hosted.studio.jobs.wait(60)
    folder = hosted.studio.jobs.folder_name("budgeted", REQUEST.session_hash)
    saved = json.loads((tmp_path / "runs" / folder / "run.json").read_text())["train"]
    assert saved["max_minutes"] == hosted.settings.max_train_minutes == 30.0  # the slot is always released
    local = ui.Handlers(Studio(settings(tmp_path / "local", tiny_weights.parent)))
    assert local._train_cfg("concat", "paper", 64, 4, 2, 1e-3, 5, None).max_minutes is None


def test_the_events_that_run_networks_ask_for_a_zerogpu_gpu_where_spaces_exists():
    for name in ("run", "compare", "dream", "api_generate", "evaluate"):
        assert getattr(getattr(ui.Handlers, name), "on_gpu", False), name  # spaces.GPU there, a no-op here


def test_camera_grain_is_asked_for_in_generate_and_synthesise(tmp_path, full_weights):
    """The grain box: refused with a message when there is no sr model or it has no grain, else added."""
    import shutil

    from retree_core.grain import BINS
    from retree_core.weights import export_weights

    handlers = ui.Handlers(Studio(settings(tmp_path, full_weights)))
    args = (*mask_in(), "concat", "concat", None, "ddim", 2, 1.0, 0)
    with pytest.raises(gr.Error, match="no camera grain measured"):
        list(handlers.run(*args, True, True, "any", True, request=REQUEST))
    with pytest.raises(gr.Error, match="no sr model"):
        list(handlers.run(*args, False, True, "any", True, request=REQUEST))
    folder = tmp_path / "grainy"
    shutil.copytree(full_weights, folder)
    flat = {"power": [[100.0] * BINS] * 3, "correlation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
    export_weights(folder / "sr.safetensors", folder / "sr", extra_meta={"grain": {"any": flat}})
    grainy = ui.Handlers(Studio(settings(tmp_path / "s2", folder)))
    shipped_grain = lambda h: [e.grain for e in h.studio.catalog.entries("sr") if e.kind == "shipped"]  # noqa: E731
    assert shipped_grain(handlers) == [False] and shipped_grain(grainy) == [True]  # Synthesise ticks grain by it

    def result(h, grain):
        outputs = list(h.run(*args, True, False, "any", grain, request=REQUEST))
        return np.array(Image.open(next(o for o in outputs if isinstance(o[3], np.ndarray))[6]["value"]).convert("RGB"))

    assert 5 < (result(grainy, True).astype(float) - result(grainy, False)).std() < 20
    def pair(grain):
        pairs = list(grainy.synthesise("concat", "concat", "procedural", 1, 0, "ddim", 2, True, False, "any", grain,
                                       request=REQUEST))
        with zipfile.ZipFile(pairs[-1][2]["value"]) as z:
            return np.array(Image.open(io.BytesIO(z.read("images/img_000.png"))).convert("RGB")).astype(float)

    assert 5 < (pair(True) - pair(False)).std() < 20
