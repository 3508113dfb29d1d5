"""The Edit tab's event functions on the tiny model: upload, the tree on the canvas, regenerate, Stop."""
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from retree_core.data import embedded_example
from retree_core.images import read_settings
from retree_studio import ui
from retree_studio.services import Studio
from retree_studio.settings import StudioSettings
from retree_studio.ui.edit import canvas_value, tree_from_canvas

pytestmark = pytest.mark.timeout(180)
REQUEST = SimpleNamespace(session_hash="edit-session")


@pytest.fixture()
def handlers(tmp_path, tiny_weights):
    return ui.Handlers(Studio(StudioSettings(weights_dir=tiny_weights.parent, runs_dir=tmp_path / "runs",
                                             work_dir=tmp_path / "work", warm_up=False)))


@pytest.fixture()
def photo_file(tmp_path):
    image = Image.fromarray(embedded_example()[0]).resize((120, 110))
    image.save(tmp_path / "photo.png")
    return str(tmp_path / "photo.png")


def test_the_tree_goes_onto_the_canvas_and_comes_back():
    tree = np.zeros((16, 16), bool)
    tree[4:12, 8] = True
    view = np.full((16, 16, 3), 255, np.uint8)  # even a white photograph stays below the strokes
    value = canvas_value(view, tree)
    assert value["background"].shape == (512, 512, 3)  # shown at the canvas's size, whatever the model's
    assert np.array_equal(tree_from_canvas(value, 16), tree)
    composite = {"background": None, "layers": [], "composite": value["background"].copy()}
    composite["composite"][value["layers"][0][..., 3] > 0] = 255
    assert np.array_equal(tree_from_canvas(composite, 16), tree)
    with pytest.raises(ValueError, match="Upload a photograph first"):
        tree_from_canvas(None, 16)
    with pytest.raises(ValueError, match="expected 512 px"):
        tree_from_canvas({"layers": [np.zeros((64, 64, 4), np.uint8)]}, 16)


def test_upload_edit_and_regenerate_keeps_the_rest_of_the_photograph(handlers, photo_file):
    photo, canvas, _, note = handlers.load_photo(photo_file, "concat", REQUEST)
    assert photo.shape == (110, 120, 3) and "on the canvas" in note
    layer = canvas["layers"][0].copy()
    layer[96:416, 96:128, :] = 255  # a new vessel drawn in white (canvas pixels)
    edited = {**canvas, "layers": [layer]}
    outputs = list(handlers.regenerate(photo, edited, "concat", "inpaint", 1, 2, 0.5, 4, 0, REQUEST))
    live, counter, (before, after), diff, text, png, tree_png = outputs[-1]
    assert np.array_equal(before, photo) and after.shape == photo.shape and "done" in counter
    changed = (after != photo).any(-1)
    assert changed.any() and "pixels changed, all inside the edit region" in text and "Mask fidelity" in text
    assert diff[~changed].max() == 0  # the difference view is black where nothing changed
    settings = read_settings(png["value"])
    assert settings["edit"]["mode"] == "inpaint" and settings["edit"]["resample"] == 2
    vary = list(handlers.regenerate(photo, edited, "concat", "vary", 1, 1, 0.0, 4, 0, REQUEST))[-1]
    assert np.array_equal(vary[2][1], photo) and "Nothing to regenerate" in vary[4]  # strength 0: the photograph
    same = list(handlers.regenerate(photo, canvas, "concat", "inpaint", 1, 1, 0.5, 4, 0, REQUEST))[-1]
    assert np.array_equal(same[2][1], photo) and "the tree on the canvas is the photograph's own" in same[4]


def test_bad_input_and_stop_are_clear(handlers, photo_file, tmp_path):
    with pytest.raises(gr.Error, match="Upload a photograph first"):
        list(handlers.regenerate(None, None, "concat", "inpaint", 1, 1, 0.5, 4, 0, REQUEST))
    (tmp_path / "junk.png").write_bytes(b"not a picture")
    with pytest.raises(gr.Error, match="junk.png"):
        handlers.load_photo(str(tmp_path / "junk.png"), "concat", REQUEST)
    photo, canvas, _, _ = handlers.load_photo(photo_file, "concat", REQUEST)
    run = handlers.regenerate(photo, canvas, "concat", "vary", 1, 1, 1.0, 200, 0, REQUEST)
    next(run, None)
    handlers.stop_edit(REQUEST)
    last = list(run)[-1]
    assert "stopped" in last[1] or "done" in last[1]  # a 16 px model may finish before the Stop lands


def test_one_click_changes_remove_a_branch_and_bend_the_tree(handlers, photo_file):
    from retree_core.tree_ops import add_tortuosity, branch_at

    tree = np.zeros((100, 100), bool)
    tree[10:90, 48:53] = True  # a trunk
    tree[50:53, 50:90] = True  # and a branch to the right
    branch = branch_at(tree, 80, 51)
    assert branch[50:53, 60:90].all() and not branch[10:45].any()  # that branch, not the trunk above the fork
    assert not branch_at(tree, 5, 5).any()  # nowhere near a vessel
    bent = add_tortuosity(tree, 3, seed=1)
    assert not np.array_equal(bent, tree) and np.array_equal(bent, add_tortuosity(tree, 3, seed=1))
    assert np.array_equal(add_tortuosity(tree, 0), tree)

    photo, canvas, view, _ = handlers.load_photo(photo_file, "concat", REQUEST)
    canvas["layers"] = [canvas["layers"][0] * 0]
    canvas["layers"][0][100:400, 240:260] = 255  # a drawn vessel on the canvas
    value, shown = handlers.remove_branch_at(canvas, SimpleNamespace(index=[250, 300]))
    assert not tree_from_canvas(value, 512).any() and shown.shape == (512, 512, 3)
    value, shown = handlers.tortuosity(canvas, 6, 0)
    assert tree_from_canvas(value, 512).any() and not np.array_equal(tree_from_canvas(value, 512),
                                                                     tree_from_canvas(canvas, 512))
