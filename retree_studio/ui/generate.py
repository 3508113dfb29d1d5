"""The Generate tab: a vessel mask from the canvas, an example, the procedural generator, an upload or the
stage-1 model; the reverse process streamed frame by frame; the finished result, its mask fidelity and
downloads; concat and SPADE compared; and the public `/generate` API endpoint."""
from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np

from retree_core.config import DEFAULT_GUIDANCE, SAMPLER_LABELS, STYLE_ANY, SampleConfig
from retree_core.data import DataError
from retree_core.fidelity import measure_fidelity

from ..live import live_frames
from ..mask_sources import (
    LoadedMask, TreeKnobs, canvas_mask, current_mask, dream_tree, mask_for_model, mask_from_upload,
    mask_picture, random_tree,
)
from ..options import bounded_number, whole_number
from ..settings import StudioSettings
from .common import (
    EXAMPLES_DIR, MODES, PRIVATE, QUIET, SAMPLERS, HandlersBase, aperture_box, for_display, grain_box, legend_html,
    no_model_message, on_gpu, progress_html, readable, session_of, style_dropdown, super_res_box, ui_errors,
)
from .sources import source_tabs, wire_sources

FRAME_INTERVAL_S = 0.1  # at most 10 live frames a second: encoding and sending each one costs CPU


class GenerateHandlers(HandlersBase):
    """Event functions of the Generate tab and the API endpoint."""

    def preview(self, source: str, drawn: LoadedMask | None, loaded: LoadedMask | None, role: str,
                label: str | None, request: gr.Request | None = None):
        """What the model will see from the active source, or a note on why there is nothing yet."""
        size = self._size_for(role, label, session_of(request))
        shown = size or 256
        try:
            mask = current_mask(source, drawn, loaded, shown)
        except DataError as exc:
            return None, readable(exc)
        origin = drawn.origin if source == "draw" else loaded.origin
        note = f"From {origin}: {shown}×{shown} px binary mask, {100 * mask.mean():.1f}% vessel"
        if size is None:
            note += " (no model yet; shown at 256 px)"
        return mask_picture(mask), note

    def canvas_changed(self, editor, source: str, loaded: LoadedMask | None, role: str, label: str | None,
                       request: gr.Request | None = None):
        """Keep the canvas as a compact mask in the session; the only event that reads the canvas.
        Outputs: drawn mask, preview, note."""
        try:
            drawn = canvas_mask(editor)
        except DataError as exc:  # not a picture, or a picture of no usable tree (all white, ...)
            return None, None, readable(exc)
        except Exception as exc:  # a canvas value gradio could not decode
            return None, None, f"Cannot read the canvas ({type(exc).__name__})"
        return (drawn, *self.preview("draw", drawn, loaded, role, label, request))

    @ui_errors
    def load_upload(self, path: str | None):
        """Outputs: loaded mask, note."""
        if not path:
            return gr.skip(), gr.skip()
        mask = mask_from_upload(path, self.mask_limits)
        height, width = mask.shape
        name = Path(path).name
        return (LoadedMask.from_mask(mask, f"upload {name}"),
                f"Loaded {name} ({width}×{height} px), binarised: vessels white.")

    @ui_errors
    def load_example(self, evt: gr.SelectData):
        files = sorted(EXAMPLES_DIR.glob("*.png"))
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(files):
            raise ValueError("that example is not available")
        return LoadedMask.from_mask(mask_from_upload(files[evt.index], self.mask_limits),
                                    f"example {files[evt.index].stem}")

    @ui_errors
    def draw_tree(self, seed, main_vessels, depth, tortuosity, width_px, eye):
        seed = whole_number(seed, "tree seed", 0, 2**31 - 1)
        knobs = TreeKnobs(whole_number(main_vessels, "main vessels", 1, 8),
                          whole_number(depth, "branching depth", 0, 8),
                          bounded_number(tortuosity, "tortuosity", 0, 3),
                          bounded_number(width_px, "trunk width", 1, 40),
                          eye if eye in ("left", "right") else "left")
        return LoadedMask.from_mask(random_tree(seed, knobs), f"random tree (seed {seed})")

    def tree_if_none(self, loaded: LoadedMask | None, *tree_args):
        """A first random tree when the Random tree tab opens with nothing loaded yet."""
        return loaded if loaded is not None else self.draw_tree(*tree_args)

    def random_seed(self) -> int:
        return random.randrange(1_000_000)

    @on_gpu
    @ui_errors
    def dream(self, seed, twigs=False, request: gr.Request | None = None, progress=gr.Progress()):
        session = session_of(request)
        model = self.studio.catalog.stage_one(session, self.settings.hosted, on_problem=gr.Warning)
        if model is None:
            raise gr.Error(no_model_message("vessel"), print_exception=False)
        seed = whole_number(seed, "seed", 0, 2**31 - 1)

        def on_draw(draw: int, tries: int) -> None:  # shown on the mask preview (show_progress_on)
            progress((draw - 1, tries), desc=f"draw {draw} of up to {tries}", unit="draws")

        tree, note, passed = dream_tree(model, seed, on_draw=on_draw, twigs=bool(twigs))
        if not passed:
            gr.Warning(f"This tree is below the plausibility threshold ({note}): no redraw passed the filter. "
                       "Try another seed, or use a random tree.")
        return LoadedMask.from_mask(tree, f"dreamt tree ({note})")

    @on_gpu
    @ui_errors
    def run(self, source, drawn, loaded, role, label, custom, sampler, steps, guidance, seed, super_res=True,
            aperture=True, style=STYLE_ANY, grain=False, request: gr.Request | None = None):
        """Stream x_t and x0 at every step, then the result (super-resolved if asked and possible), its
        fidelity overlay and downloads.
        Outputs: x_t, x0, counter, result, overlay, fidelity note, PNG download, pair download."""
        session = session_of(request)
        options = self._options(sampler, steps, guidance, seed, style)
        model = self._model(role, label, custom, session)
        masks = lambda px: current_mask(source, drawn, loaded, px)  # noqa: E731  (at the model's and the output's size)
        masks(model.net_cfg.image_size)  # no mask: refused before anything runs
        stop = self.studio.stops.arm(session)
        hidden = gr.update(visible=False)
        yield (None, None, progress_html(0, options.steps, "starting…"), None, None, "", hidden, hidden)
        first_s = None
        pipe = self._pipeline(model, super_res, aperture, grain)
        pipe.options(options)  # a style the model does not know: refused before anything runs
        for frame in live_frames(pipe, masks, options, stop=stop, min_interval_s=FRAME_INTERVAL_S):
            if not frame.final:
                first_s = first_s or frame.elapsed_s
                text = f"step {frame.step} / {frame.total} · {frame.elapsed_s:.1f} s"
                # live frames go out at the model's size (CSS scales them up): a quarter of the pixels to encode
                yield (frame.x_t, frame.x0, progress_html(frame.step, frame.total, text),
                       gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
                continue
            if frame.stopped:
                text = f"stopped at step {frame.step} / {frame.total}: the result is the prediction at that step"
            else:
                text = f"done: {frame.total} steps in {frame.elapsed_s:.1f} s (first frame after {first_s or 0:.2f} s)"
            image, mask = frame.image, frame.mask
            size = f" · {image.shape[0]} px" + (" (super-resolved)" if image.shape[0] != frame.x0.shape[0] else "")
            png, pair = self._downloads(session, pipe, options, image, mask)
            # the last state goes to x_t too: the browser may have skipped the last frames
            yield (frame.x_t, frame.x0, progress_html(frame.step, frame.total, text + size),
                   for_display(image), None, "measuring mask fidelity…", gr.update(value=png, visible=True),
                   gr.update(value=pair, visible=True))
            fid = measure_fidelity(image, mask, self.studio.segmenter())
            yield (gr.skip(), gr.skip(), gr.skip(), gr.skip(), for_display(fid.overlay),
                   f"**{fid.summary()}**<br>{legend_html()}", gr.skip(), gr.skip())

    def stop(self, request: gr.Request | None = None) -> None:
        self.studio.stops.stop(session_of(request))
        gr.Info("Stopping at the next step…", duration=2)

    @on_gpu
    @ui_errors
    def compare(self, source, drawn, loaded, sampler, steps, guidance, seed, super_res=True, aperture=True,
                grain=False, request: gr.Request | None = None):
        """concat and SPADE on the same mask and seed, side by side (streamed one after the other)."""
        session = session_of(request)
        options = self._options(sampler, steps, guidance, seed)
        catalog, hosted = self.studio.catalog, self.settings.hosted
        entries = {role: catalog.default(role, session, hosted) for role in ("concat", "spade")}
        missing = [role for role, e in entries.items() if e is None]
        if len(missing) == 2:
            raise gr.Error("No concat and no SPADE model yet: train them in the Train tab or add "
                           "weights/concat.safetensors and weights/spade.safetensors", print_exception=False)
        if missing:
            gr.Warning(no_model_message(missing[0]) + "; showing the other model only.")
        stop = self.studio.stops.arm(session)
        images: dict[str, np.ndarray | None] = {"concat": None, "spade": None}
        notes = []
        for role, entry in entries.items():
            if entry is None or stop.is_set():
                continue
            model = catalog.load(entry.path, role)
            masks = lambda px: current_mask(source, drawn, loaded, px)  # noqa: E731
            masks(model.net_cfg.image_size)
            for frame in live_frames(self._pipeline(model, super_res, aperture, grain), masks, options, stop=stop,
                                     min_interval_s=FRAME_INTERVAL_S):
                images[role] = for_display(frame.x0)
                status = f"{role}: step {frame.step} / {frame.total}"
                if frame.final:
                    images[role] = for_display(frame.image)
                    fid = measure_fidelity(frame.image, frame.mask, self.studio.segmenter())
                    notes.append(f"{role} ({entry.label}): {frame.elapsed_s:.1f} s, Dice {fid.dice:.3f}"
                                 if fid.dice is not None else f"{role} ({entry.label}): {frame.elapsed_s:.1f} s")
                    status = " · ".join(notes)
                yield images["concat"], images["spade"], status

    @on_gpu
    @ui_errors
    def api_generate(self, mask_file, mode="concat", sampler=SampleConfig.sampler, steps=SampleConfig.steps,
                     guidance=SampleConfig.guidance, seed=SampleConfig.seed, style=STYLE_ANY,
                     request: gr.Request | None = None) -> np.ndarray:
        """Generate a fundus image for a vessel mask image (white vessels on black); returns the image
        (super-resolved when the sr model ships). guidance None: the model's recommended scale; style one
        of the model's dataset styles, or any."""
        if mode not in ("concat", "spade"):
            raise ValueError(f"mode must be concat or spade, got {mode!r}")
        session = session_of(request)
        options = self._options(sampler, steps, guidance, seed, style)
        if not mask_file:
            raise ValueError("send a mask image (white vessels on a black background)")
        model = self._model(mode, None, None, session)
        uploaded = mask_from_upload(mask_file, self.mask_limits)
        masks = lambda px: mask_for_model(uploaded, px, source=Path(mask_file).name)  # noqa: E731
        masks(model.net_cfg.image_size)
        *_, last = live_frames(self._pipeline(model), masks, options)
        return last.image


def api_endpoint(h: GenerateHandlers, queue: dict) -> None:
    """The documented API endpoint `/generate`: a mask file in, the generated image out."""
    d = SampleConfig()
    with gr.Row(visible=False):
        api_mask = gr.File(label="mask")
        api_mode = gr.Textbox("concat", label="mode")
        api_sampler = gr.Textbox(d.sampler, label="sampler")
        api_steps = gr.Number(d.steps, label="steps", precision=0)
        api_guidance = gr.Number(None, label="guidance")  # none given: the model's recommended scale
        api_seed = gr.Number(d.seed, label="seed", precision=0)
        api_style = gr.Textbox(d.style, label="style")
        api_image = gr.Image(label="image", format="png")
        api_button = gr.Button("generate")
    api_button.click(h.api_generate, [api_mask, api_mode, api_sampler, api_steps, api_guidance, api_seed, api_style],
                     api_image,
                     api_name="generate", api_description="Fundus image (PNG) for a vessel mask image: white "
                     "vessels on black, any size. mode: concat | spade; sampler: " + " | ".join(SAMPLER_LABELS) +
                     "; guidance: none for the model's recommended scale; style: any, or one of the model's "
                     "dataset styles.", **queue, **h.heavy(h.api_generate))


def generate_tab(h: GenerateHandlers, s: StudioSettings) -> dict:
    """The Generate tab; returns the components other tabs and app events need."""
    d = SampleConfig()
    source = gr.State("draw")  # the active mask source: "draw" (the canvas) or "loaded"
    loaded = gr.State(None)  # the last mask loaded from an example, a random tree, an upload or a dream
    with gr.Row(equal_height=False):
        with gr.Column(scale=6):
            m = source_tabs()
        with gr.Column(scale=5):
            with gr.Row(equal_height=False):
                seen = gr.Image(label="What the model sees", height=230, interactive=False, format="png",
                                buttons=[], scale=3, elem_id="rt-seen")
                seen_note = gr.Markdown(elem_classes="rt-note", elem_id="rt-seen-note")
            with gr.Row(equal_height=False):
                mode = gr.Radio(MODES, value="concat", label="Mode", scale=2, min_width=230, elem_id="rt-mode")
                model = gr.Dropdown([], label="Model", scale=3, allow_custom_value=False, elem_id="rt-model")
                refresh = gr.Button("↻", scale=0, min_width=44, elem_id="rt-refresh")
            model_note = gr.Markdown(elem_classes="rt-note")
            style = style_dropdown("rt-style")
            with gr.Accordion("Use your own model file", open=False):
                custom = gr.File(label=".safetensors" if s.hosted else
                                 ".safetensors (or a training .ckpt, read without unpickling)",
                                 file_types=[".safetensors"] if s.hosted else [".safetensors", ".ckpt"], height=90)
            sampler = gr.Radio(SAMPLERS, value=d.sampler, label="Sampler", elem_id="rt-sampler")
            with gr.Row():
                steps = gr.Slider(1, min(200, s.max_sample_steps), d.steps, step=1, label="Steps", elem_id="rt-steps")
                recommended = getattr(h.studio.catalog.default("concat"), "guidance", DEFAULT_GUIDANCE)
                guidance = gr.Slider(0, 10, recommended, step=0.25, label="Guidance", elem_id="rt-guidance",
                                     info="1 = plain conditional model; >1 follows the mask more strongly "
                                          "(set to the model's recommended scale when you choose it or a style)")
            with gr.Row(equal_height=False):
                seed = gr.Number(d.seed, precision=0, label="Seed", minimum=0, scale=3, elem_id="rt-seed")
                seed_dice = gr.Button("Random seed", scale=1, elem_id="rt-seed-random")
            with gr.Row():
                super_res = super_res_box(h, "rt-sr")
                aperture = aperture_box("rt-aperture")
                grain = grain_box("rt-grain")
            with gr.Row():
                run = gr.Button("Run", variant="primary", scale=3, elem_id="rt-run")
                stop = gr.Button("Stop", variant="stop", scale=1, elem_id="rt-stop")
    counter = gr.HTML(progress_html(0, 1, "ready"), elem_id="rt-counter")
    with gr.Row(equal_height=True):
        # live frames as JPEG: ~30x faster to encode than PNG or WebP, which matters at every step
        x_t = gr.Image(label="Noisy sample x_t", height=256, interactive=False, buttons=[], format="jpeg",
                       elem_id="rt-xt", elem_classes="rt-live")
        x0 = gr.Image(label="Predicted clean image x̂₀", height=256, interactive=False, buttons=[], format="jpeg",
                      elem_id="rt-x0", elem_classes="rt-live")
        result = gr.Image(label="Result", height=256, interactive=False, format="png",
                          buttons=["download", "fullscreen"], elem_id="rt-result")
        overlay = gr.Image(label="Mask fidelity overlay", height=256, interactive=False, format="png",
                           buttons=["fullscreen"], elem_id="rt-overlay")
    with gr.Row():
        fidelity = gr.Markdown(elem_id="rt-fidelity")
        with gr.Column(scale=0, min_width=260):
            png_dl = gr.DownloadButton("Download image (PNG)", visible=False, size="sm")
            pair_dl = gr.DownloadButton("Download image + mask (zip)", visible=False, size="sm")
    with gr.Accordion("Compare concat and SPADE on this mask and seed", open=False):
        compare = gr.Button("Compare")
        with gr.Row():
            cmp_concat = gr.Image(label="Concat", height=256, interactive=False)
            cmp_spade = gr.Image(label="SPADE", height=256, interactive=False)
        cmp_note = gr.Markdown()

    # events
    gen = dict(concurrency_id="generate", concurrency_limit=s.generation_concurrency)
    private, quiet = PRIVATE, QUIET
    # Only the canvas's own change event reads the canvas; everything else uses the `drawn` state. An
    # ImageEditor read by events that run at page load re-uploads itself on every page update.
    drawn = gr.State(None)
    mask_in = [source, drawn, loaded]
    show = dict(fn=h.preview, inputs=[*mask_in, mode, model], outputs=[seen, seen_note], **quiet)
    wire_sources(h, m, SimpleNamespace(source=source, loaded=loaded, drawn=drawn, mode=mode, model=model, seen=seen,
                                       seen_note=seen_note), show, gen)
    seed_dice.click(h.random_seed, None, seed, **quiet)
    for trigger in (mode.change, refresh.click):
        trigger(h.model_choices, [mode, model], [model, model_note], **quiet)
    model.change(h.model_note, [mode, model, custom], model_note, **quiet).then(**show)
    model.change(h.model_styles, [mode, model, style], style, **quiet)
    for trigger in (model.change, style.change):
        trigger(h.model_guidance, [mode, model, style], guidance, **quiet)
    custom.change(h.model_note, [mode, model, custom], model_note, **quiet)
    run.click(h.run, [*mask_in, mode, model, custom, sampler, steps, guidance, seed, super_res, aperture, style, grain],
              [x_t, x0, counter, result, overlay, fidelity, png_dl, pair_dl], show_progress="hidden",
              **gen, **private, **h.heavy(h.run))
    stop.click(h.stop, None, None, concurrency_limit=None, **quiet)
    compare.click(h.compare, [*mask_in, sampler, steps, guidance, seed, super_res, aperture, grain],
                  [cmp_concat, cmp_spade, cmp_note],
                  show_progress="minimal", **gen, **private, **h.heavy(h.compare))

    api_endpoint(h, gen)
    return dict(mask_in=mask_in, mode=mode, model=model, model_note=model_note, seen=seen, seen_note=seen_note)


__all__ = ["FRAME_INTERVAL_S", "GenerateHandlers", "generate_tab"]
