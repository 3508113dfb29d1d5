"""Editing a photograph through its vessel tree (retree_core/editing.py) on the tiny model."""
import numpy as np
import pytest
from PIL import Image

from retree_core.cli import main
from retree_core.config import SampleConfig
from retree_core.data import embedded_example
from retree_core.editing import EditConfig, PhotoEditor, PhotoView, edit_region, regenerate
from retree_core.evaluate import ClassicalSegmenter
from retree_core.images import read_settings, to_uint8
from retree_core.pipeline import FundusPipeline, generate


@pytest.fixture(scope="module")
def photo():
    """The embedded photograph, shrunk and cut off-centre so its FOV square leaves the picture."""
    image = embedded_example()[0]
    small = np.asarray(Image.fromarray(image).resize((150, 150), Image.Resampling.LANCZOS))
    return np.ascontiguousarray(small[10:, 5:140])  # 140 x 135, not square


@pytest.fixture()
def editor(tiny_weights):
    return PhotoEditor(FundusPipeline.load(str(tiny_weights)), ClassicalSegmenter())


def line_added(tree: np.ndarray) -> np.ndarray:
    edited = tree.copy()
    edited[4:12, 7] = True
    edited[4, 4:12] = True
    return edited


def test_the_edit_region_is_the_changed_pixels_dilated_by_the_margin():
    before, after = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    after[10, 10] = True
    before[3, 15] = True  # a removed pixel counts too
    assert np.array_equal(edit_region(before, after, 0), before | after)
    region = edit_region(before, after, 2)
    yy, xx = np.mgrid[:20, :20]
    near = lambda y, x: (yy - y) ** 2 + (xx - x) ** 2 <= 4  # noqa: E731
    assert np.array_equal(region, near(10, 10) | near(3, 15))
    assert not edit_region(after, after, 5).any()  # nothing changed: nothing to regenerate


@pytest.mark.parametrize("resample", [1, 2])
def test_an_inpainting_edit_keeps_every_pixel_outside_its_region(editor, photo, resample):
    tree = editor.tree(photo)
    result = editor.edit(photo, line_added(tree), EditConfig("inpaint", margin_px=1, resample=resample),
                         SampleConfig("ddpm", 4, 1.0, 3))
    assert result.photo.shape == photo.shape and result.region.any() and not result.region.all()
    assert np.array_equal(result.photo[~result.region], photo[~result.region])  # bit-identical
    assert (result.photo[result.region] != photo[result.region]).any()


def test_strength_0_keeps_the_photograph_and_1_is_generation_from_noise(editor, photo, tiny_weights):
    pipe = editor.pipe
    view = PhotoView.of(photo).view(photo, pipe.size_px)
    tree = editor.tree(photo)[::1, ::1]
    tree_small = PhotoView(0, 0, tree.shape[0], *tree.shape).view(tree, pipe.size_px)
    for sampler in ("dpmpp", "ddpm"):
        options = SampleConfig(sampler, 5, 1.5, 11)
        same = regenerate(pipe, view, tree_small, None, EditConfig("vary", strength=0.0), options)
        assert np.array_equal(same, view)
        fresh = regenerate(pipe, view, tree_small, None, EditConfig("vary", strength=1.0), options)
        expected = to_uint8(generate(pipe.model, tree_small, [11], sampler=sampler, steps=5, guidance=1.5))[0]
        assert np.array_equal(fresh, expected)
        half = regenerate(pipe, view, tree_small, None, EditConfig("vary", strength=0.4), options)
        assert not np.array_equal(half, view) and not np.array_equal(half, expected)
        assert np.abs(half.astype(int) - view).mean() < np.abs(expected.astype(int) - view).mean()  # nearer the photo


def test_a_view_goes_back_where_it_came_from(photo):
    view = PhotoView.of(photo)
    assert view.side >= max(photo.shape[:2]) - 2 and (view.x0 < 0 or view.y0 < 0 or view.x0 + view.side > 135)
    square = view.crop(photo)
    everywhere = np.ones((view.side, view.side), bool)
    back, _ = view.paste(photo, square, everywhere)
    assert np.abs(back.astype(int) - photo).max() <= 1  # the same pixels, up to rounding at the feathered rim


def test_the_command_line_writes_the_tree_then_the_edited_photograph(tiny_weights, photo, tmp_path, capsys):
    Image.fromarray(photo).save(tmp_path / "photo.png")
    base = ["generate", "--weights", str(tiny_weights), "--edit", str(tmp_path / "photo.png"), "--segmenter",
            "classical", "--steps", "3", "--output_dir", str(tmp_path / "out")]
    assert main(base) == 0
    tree = np.asarray(Image.open(tmp_path / "out" / "tree.png").convert("L")) > 127
    Image.fromarray(line_added(tree).astype(np.uint8) * 255).save(tmp_path / "changed.png")
    assert main([*base, "--mask", str(tmp_path / "changed.png"), "--resample", "2"]) == 0
    assert "all inside the" in capsys.readouterr().out
    edited = np.asarray(Image.open(tmp_path / "out" / "edited.png"))
    region = np.asarray(Image.open(tmp_path / "out" / "region.png").convert("L")) > 127
    assert edited.shape == photo.shape and np.array_equal(edited[~region], photo[~region])
    settings = read_settings(tmp_path / "out" / "edited.png")
    assert settings["edit"]["mode"] == "inpaint" and settings["edit"]["resample"] == 2 and settings["photo"] == "photo.png"
    assert main([*base, "--mask", str(tmp_path / "missing.png")]) == 1
    assert main(["generate", "--weights", str(tiny_weights), "--masks", str(tmp_path), "--mask", "x.png"]) == 2
