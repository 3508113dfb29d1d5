"""The Edit tab: a real photograph's vessel tree on a canvas over the dimmed photograph; the user changes the
tree and the model regenerates the photograph for it (only the changed region, or a whole-image variation),
shown beside the original with a difference view, the edited tree's mask fidelity and downloads."""
from __future__ import annotations

import time
from dataclasses import asdict

import cv2
import gradio as gr
import numpy as np

from retree_core import compute
from retree_core.data import DataError, read_rgb
from retree_core.editing import EDIT_MODES, EditConfig, PhotoEditor, PhotoView, difference, resize_tree
from retree_core.evaluate import ClassicalSegmenter
from retree_core.fidelity import measure_fidelity
from retree_core.images import mask_rgb, save_png, to_uint8
from retree_core.samplers import StopSampling
from retree_core.tree_ops import add_tortuosity, remove_branch

from ..mask_sources import CANVAS_PX, check_upload
from ..options import bounded_number, whole_number
from ..settings import StudioSettings
from .common import MODES, PRIVATE, QUIET, HandlersBase, on_gpu, progress_html, session_of, ui_errors

CANVAS_DIM = 0.45  # the photograph under the tree is shown at this brightness, so white strokes stand out
MAX_RESAMPLE = 5


def canvas_value(view: np.ndarray, tree: np.ndarray) -> dict:
    """The editor's value at CANVAS_PX: the dimmed photograph as background, the tree as a white layer."""
    view = cv2.resize(view, (CANVAS_PX, CANVAS_PX), interpolation=cv2.INTER_AREA if len(view) > CANVAS_PX
                      else cv2.INTER_NEAREST)
    tree = cv2.resize(tree.astype(np.uint8), (CANVAS_PX, CANVAS_PX), interpolation=cv2.INTER_NEAREST) > 0
    return {"background": (view * CANVAS_DIM).astype(np.uint8), "layers": [tree_layer(tree)], "composite": None}


def tree_layer(tree: np.ndarray) -> np.ndarray:
    """A tree as the canvas's layer: opaque white vessels, transparent elsewhere."""
    layer = np.zeros((*tree.shape, 4), np.uint8)
    layer[tree] = 255
    return layer


def tree_from_canvas(value: dict | None, size_px: int) -> np.ndarray:
    """The edited tree at `size_px` from the editor's value: its layer's opaque white strokes (or, without
    layers, the composite's pixels far brighter than the dimmed photograph can be)."""
    if not isinstance(value, dict):
        raise DataError("Upload a photograph first: its tree appears on the canvas to edit")
    layers = [np.asarray(layer) for layer in value.get("layers") or [] if layer is not None]
    if layers and layers[0].ndim == 3 and layers[0].shape[2] == 4:
        tree = (layers[0][..., 3] > 127) & (layers[0][..., :3].min(axis=2) > 127)
    elif value.get("composite") is not None:
        tree = np.asarray(value["composite"])[..., :3].min(axis=2) > 255 * (CANVAS_DIM + 0.3)
    else:
        raise DataError("The canvas holds no tree: upload the photograph again")
    if tree.shape != (CANVAS_PX, CANVAS_PX):
        raise DataError(f"The canvas is {tree.shape[1]}x{tree.shape[0]} px; expected {CANVAS_PX} px: upload the "
                        "photograph again")
    return resize_tree(tree, size_px)


def tree_view(value: dict) -> np.ndarray:
    """The canvas as a picture to click on: the tree in white over the dimmed photograph."""
    view = np.asarray(value["background"])[..., :3].copy()
    view[tree_from_canvas(value, CANVAS_PX)] = 255
    return view


class EditHandlers(HandlersBase):
    """Event functions of the Edit tab."""

    def _editor(self, role: str, session: str) -> PhotoEditor:
        model = self._model(role, None, None, session)
        return PhotoEditor(self._pipeline(model, True, False), self.studio.segmenter() or ClassicalSegmenter())

    @ui_errors
    def load_photo(self, path: str | None, role: str, request: gr.Request | None = None):
        """Read the photograph, find its tree and put both on the canvas. Outputs: photo state, canvas, tree
        view, note."""
        if not path:
            return None, gr.skip(), gr.skip(), "Upload a colour fundus photograph."
        check_upload(path, self.mask_limits, "a photograph")
        photo = read_rgb(path)
        editor = self._editor(role, session_of(request))
        view = PhotoView.of(photo)
        tree = compute.run(editor.tree, photo, view)
        note = (f"{photo.shape[1]}x{photo.shape[0]} px photograph; its tree ({100 * tree.mean():.1f}% vessel, found by "
                f"the {editor.segmenter.name}) is on the canvas: erase vessels, draw new ones in white, then "
                "Regenerate.")
        value = canvas_value(view.view(photo, editor.pipe.output_px), tree)
        return photo, value, tree_view(value), note

    @on_gpu
    @ui_errors
    def regenerate(self, photo, canvas, role, mode, margin, resample, strength, steps, seed,
                   request: gr.Request | None = None):
        """Stream the model's view, then the edited photograph beside the original, the difference, the
        edited tree's fidelity and downloads. Outputs: live view, counter, comparison, difference, note,
        photo download, tree download."""
        if photo is None:
            raise DataError("Upload a photograph first")
        session = session_of(request)
        editor = self._editor(role, session)
        tree = tree_from_canvas(canvas, editor.pipe.output_px)
        cfg = EditConfig(mode, whole_number(margin, "margin", 0, 64),
                         whole_number(resample, "resample", 1, MAX_RESAMPLE),
                         bounded_number(strength, "strength", 0, 1))
        options = self._options("ddpm" if mode == "inpaint" else "dpmpp", steps, None, seed)
        stop, latest = self.studio.stops.arm(f"{session}:edit"), {}

        def on_step(step) -> None:
            latest["frame"] = step
            if stop.is_set():
                raise StopSampling

        done = compute.start(lambda: editor.edit(photo, tree, cfg, options, on_step))
        hidden = gr.update(visible=False)
        shown = None
        while not done.done():
            step = latest.get("frame")
            if step is not None and step is not shown:
                shown = step
                text = f"step {step.index + 1} / {step.total}"
                yield (to_uint8(step.x0.float())[0], progress_html(step.index + 1, step.total, text),
                       gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
            time.sleep(0.1)
        try:
            result = done.result()
        except StopSampling:
            yield None, progress_html(0, 1, "stopped: the photograph is unchanged"), None, None, "", hidden, hidden
            return
        changed = int((result.photo != photo).any(-1).sum())
        fidelity = measure_fidelity(result.view, result.tree, self.studio.segmenter())
        folder = self.studio.session_dir(session)
        stem = f"retree_edit_{time.strftime('%H%M%S')}"
        png = save_png(folder / f"{stem}.png", result.photo, {**editor.pipe.settings(options), "edit": asdict(cfg)})
        tree_png = save_png(folder / f"{stem}_tree.png", mask_rgb(result.tree))
        note = (f"{changed:,} pixels changed, all inside the edit region ({int(result.region.sum()):,} px); "
                f"the rest of the photograph is untouched.<br>**{fidelity.summary()}** (of the edited tree)"
                if result.region.any() else "Nothing to regenerate: the tree on the canvas is the photograph's own "
                "(change it first), or the strength is 0.")
        yield (result.view, progress_html(1, 1, "done"), (photo, result.photo), difference(photo, result.photo),
               note, gr.update(value=str(png), visible=True), gr.update(value=str(tree_png), visible=True))

    @ui_errors
    def remove_branch_at(self, canvas, evt: gr.SelectData):
        """A click on the tree view removes the branch there from the canvas's tree. Outputs: canvas, view."""
        tree = tree_from_canvas(canvas, CANVAS_PX)
        x, y = evt.index[:2]
        changed = remove_branch(tree, x, y)
        if np.array_equal(changed, tree):
            gr.Info("No vessel there: click on a vessel's centre line.", duration=3)
        return self._with_tree(canvas, changed)

    @ui_errors
    def tortuosity(self, canvas, amount, seed):
        """Bend the canvas's tree (add_tortuosity). Outputs: canvas, view."""
        tree = tree_from_canvas(canvas, CANVAS_PX)
        amount = bounded_number(amount, "tortuosity", 0, 16)
        return self._with_tree(canvas, add_tortuosity(tree, amount, whole_number(seed, "seed", 0, 2**31 - 1)))

    @staticmethod
    def _with_tree(canvas: dict, tree: np.ndarray):
        value = {**canvas, "layers": [tree_layer(tree)], "composite": None}
        return value, tree_view(value)

    def stop_edit(self, request: gr.Request | None = None) -> None:
        self.studio.stops.stop(f"{session_of(request)}:edit")


def edit_tab(h: EditHandlers, s: StudioSettings) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            upload = gr.File(label="Colour fundus photograph", file_types=["image"], height=110, elem_id="rt-edit-upload")
            canvas = gr.ImageEditor(
                type="numpy", image_mode="RGBA", sources=(), transforms=(), layers=False, height=460,
                canvas_size=(CANVAS_PX, CANVAS_PX), fixed_canvas=True,
                brush=gr.Brush(default_size=6, colors=["#ffffff"], default_color="#ffffff", color_mode="fixed"),
                eraser=gr.Eraser(default_size=16), format="png", show_label=False, elem_id="rt-edit-canvas")
            note = gr.Markdown("The shipped segmenter finds the photograph's vessels; erase a branch or draw a new "
                               "vessel in white.", elem_classes="rt-note", elem_id="rt-edit-note")
            with gr.Accordion("One-click changes", open=False):
                clickable = gr.Image(label="Click a vessel to remove its branch (between two forks)", height=300,
                                     interactive=False, buttons=[], elem_id="rt-edit-branches")
                with gr.Row():
                    bend = gr.Slider(0, 16, 4, step=0.5, label="Tortuosity to add (px)", scale=3)
                    bend_seed = gr.Number(0, precision=0, label="Seed", minimum=0, scale=1)
                    bend_go = gr.Button("Add tortuosity", scale=1)
        with gr.Column(scale=5):
            with gr.Row():
                role = gr.Radio(MODES, value="concat", label="Model")
                mode = gr.Radio([("Regenerate the changed region", "inpaint"), ("Vary the whole image", "vary")],
                                value=EditConfig.mode, label="Edit", elem_id="rt-edit-mode")
            with gr.Row():
                margin = gr.Slider(0, 16, EditConfig.margin_px, step=1, label="Margin (model px)",
                                   info="around the changed pixels")
                resample = gr.Slider(1, MAX_RESAMPLE, EditConfig.resample, step=1, label="Resampling",
                                     info="passes per step: a region that blends better, slower")
                strength = gr.Slider(0, 1, EditConfig.strength, step=0.05, label="Strength (vary)",
                                     info="0 keeps the photograph, 1 generates from noise")
            with gr.Row():
                steps = gr.Slider(1, min(200, s.max_sample_steps), 30, step=1, label="Steps")
                seed = gr.Number(0, precision=0, label="Seed", minimum=0)
            with gr.Row():
                go = gr.Button("Regenerate", variant="primary", elem_id="rt-edit-run")
                stop = gr.Button("Stop", variant="stop")
            counter = gr.HTML(progress_html(0, 1, "ready"), elem_id="rt-edit-counter")
            live = gr.Image(label="Model view", height=200, interactive=False, format="jpeg")
    with gr.Row():
        compare = gr.ImageSlider(label="Original | edited", height=420, elem_id="rt-edit-result")
        diff = gr.Image(label="Difference (x4)", height=420, interactive=False)
    with gr.Row():
        result_note = gr.Markdown(elem_id="rt-edit-fidelity")
        photo_dl = gr.DownloadButton("Download the edited photograph", visible=False, size="sm")
        tree_dl = gr.DownloadButton("Download the edited tree", visible=False, size="sm")
    photo = gr.State(None)
    upload.upload(h.load_photo, [upload, role], [photo, canvas, clickable, note], **PRIVATE)
    clickable.select(h.remove_branch_at, canvas, [canvas, clickable], **QUIET)
    bend_go.click(h.tortuosity, [canvas, bend, bend_seed], [canvas, clickable], **QUIET)
    go.click(h.regenerate, [photo, canvas, role, mode, margin, resample, strength, steps, seed],
             [live, counter, compare, diff, result_note, photo_dl, tree_dl], concurrency_id="generate",
             concurrency_limit=s.generation_concurrency, show_progress="hidden", **PRIVATE, **h.heavy(h.regenerate))
    stop.click(h.stop_edit, None, None, concurrency_limit=None, **QUIET)
    return dict(canvas=canvas)


__all__ = ["EDIT_MODES", "EditHandlers", "edit_tab", "tree_from_canvas"]
