"""The Generate tab's mask sources: the canvas, the examples, a random tree, an upload and the stage-1 model,
and their events (each loads a mask into the tab's state, then shows what the model sees)."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..mask_sources import blank_canvas
from .common import EXAMPLES_DIR, PRIVATE, QUIET, twigs_box


def source_tabs() -> SimpleNamespace:
    """Where a mask comes from: the canvas, the examples, a random tree, an upload or the stage-1 model."""
    with gr.Tabs(elem_id="rt-sources"):
        with gr.Tab("Draw", elem_id="rt-tab-draw") as draw_tab:
            # The canvas is never set from the server: a programmatically set ImageEditor with a
            # change listener re-uploads itself on every update of the page (gradio issue 7502);
            # masks from the other tabs are shown in "What the model sees" instead.
            editor = gr.ImageEditor(
                value=blank_canvas(), type="numpy", image_mode="RGBA", sources=(), transforms=(),
                brush=gr.Brush(default_size=12, colors=["#ffffff", "#000000"], default_color="#ffffff",
                               color_mode="fixed"),
                eraser=gr.Eraser(default_size=20), layers=False, canvas_size=(512, 512), fixed_canvas=True,
                format="png", height=480, show_label=False, elem_id="rt-canvas")
            gr.Markdown("White brush draws vessels; the black brush or the eraser removes them; undo and "
                        "clear are in the toolbar.", elem_classes="rt-note")
        with gr.Tab("Examples", elem_id="rt-tab-examples") as examples_tab:
            examples = gr.Gallery([str(p) for p in sorted(EXAMPLES_DIR.glob("*.png"))], columns=3,
                                  height=480, allow_preview=False, show_label=False, elem_id="rt-examples")
            gr.Markdown("The first three are real CHASE_DB1 annotations (validation split, CC BY 4.0, "
                        "see About); the rest are procedural trees made by this project's generator. "
                        "Click one to use it.", elem_classes="rt-note")
        with gr.Tab("Random tree", elem_id="rt-tab-tree") as tree_tab:
            with gr.Row():
                tree_seed = gr.Number(1, precision=0, label="Tree seed", minimum=0, scale=2)
                tree_dice = gr.Button("New random tree", scale=1, variant="primary")
                tree_draw = gr.Button("Draw this seed", scale=1)
            with gr.Row():
                tree_main = gr.Slider(1, 8, 4, step=1, label="Main vessels")
                tree_depth = gr.Slider(0, 8, 5, step=1, label="Branching depth")
            with gr.Row():
                tree_tort = gr.Slider(0, 2, 0.4, step=0.1, label="Tortuosity")
                tree_width = gr.Slider(3, 16, 8, step=0.5, label="Trunk width (px at 512)")
            tree_eye = gr.Radio(["left", "right"], value="left", label="Eye")
            gr.Markdown("A learning-free generator: trunks leave the optic disc along the arcades, branch "
                        "by Murray's law and avoid the macula.", elem_classes="rt-note")
        with gr.Tab("Upload", elem_id="rt-tab-upload") as upload_tab:
            upload = gr.File(label="Mask image (PNG, GIF, TIFF, JPEG…; any size and bit depth)",
                             file_types=["image"], height=140, elem_id="rt-upload")
            upload_note = gr.Markdown("Vessels bright on a dark background. It is binarised, padded to a "
                                      "square and resized: see *What the model sees*.", elem_classes="rt-note",
                                      elem_id="rt-upload-note")
        with gr.Tab("Dream a tree", elem_id="rt-tab-dream") as dream_tab:
            with gr.Row():
                dream_seed = gr.Number(0, precision=0, label="Seed", minimum=0, scale=2)
                dream_btn = gr.Button("Dream a tree", scale=1, variant="primary")
            dream_twigs = twigs_box("rt-dream-twigs")
            gr.Markdown("Samples a vessel tree from the stage-1 (vessel) diffusion model "
                        "(weights/vessel.safetensors, or a vessel run from the Train tab), redrawn with "
                        "new seeds while the plausibility filter rejects it.",
                        elem_classes="rt-note")
    return SimpleNamespace(editor=editor, draw_tab=draw_tab, examples_tab=examples_tab, examples=examples, tree_tab=tree_tab, tree_seed=tree_seed, tree_dice=tree_dice, tree_draw=tree_draw, tree_main=tree_main, tree_depth=tree_depth, tree_tort=tree_tort, tree_width=tree_width, tree_eye=tree_eye, upload_tab=upload_tab, upload=upload, upload_note=upload_note, dream_tab=dream_tab, dream_seed=dream_seed, dream_btn=dream_btn, dream_twigs=dream_twigs)


def wire_sources(h, m: SimpleNamespace, g: SimpleNamespace, show: dict, queue: dict) -> None:
    """The mask sources' events (`m`: source_tabs); each loads a mask into the tab's `loaded` state (the
    canvas into `drawn`), then `show`s what the model sees. `g`: the tab's states and preview."""
    private, quiet, gen = PRIVATE, QUIET, queue
    source, loaded = g.source, g.loaded
    m.editor.change(h.canvas_changed, [m.editor, source, loaded, g.mode, g.model], [g.drawn, g.seen, g.seen_note],
                    trigger_mode="always_last", **quiet)
    m.draw_tab.select(lambda: "draw", None, source, **quiet).then(**show)
    tree_args = [m.tree_seed, m.tree_main, m.tree_depth, m.tree_tort, m.tree_width, m.tree_eye]
    for tab in (m.examples_tab, m.upload_tab, m.dream_tab):
        tab.select(lambda: "loaded", None, source, **quiet).then(**show)
    m.tree_tab.select(lambda: "loaded", None, source, **quiet).then(
        h.tree_if_none, [loaded, *tree_args], loaded, **quiet).then(**show)
    m.examples.select(h.load_example, None, loaded, **private).success(**show)
    m.tree_draw.click(h.draw_tree, tree_args, loaded, **private).success(**show)
    for knob in (m.tree_main, m.tree_depth, m.tree_tort, m.tree_width):
        knob.release(h.draw_tree, tree_args, loaded, **quiet).success(**show)
    m.tree_eye.input(h.draw_tree, tree_args, loaded, **quiet).success(**show)
    m.tree_dice.click(h.random_seed, None, m.tree_seed, **quiet).then(
        h.draw_tree, tree_args, loaded, **private).success(**show)
    m.upload.upload(h.load_upload, m.upload, [loaded, m.upload_note], **private).success(**show)
    m.dream_btn.click(h.dream, [m.dream_seed, m.dream_twigs], loaded, show_progress_on=g.seen, **gen, **private,
                      **h.heavy(h.dream)).success(**show)


__all__ = ["source_tabs", "wire_sources"]
