"""The Synthesise tab: N image + mask pairs from both stages, as a dataset zip in the training layout."""
from __future__ import annotations

import time

import gradio as gr
import numpy as np

from retree_core.config import STYLE_ANY, SampleConfig
from retree_core.grain import GRAIN_BY_DEFAULT

from ..jobs import format_duration
from ..mask_sources import mask_picture
from ..options import whole_number
from ..settings import StudioSettings
from ..synthesis import SynthesisConfig, synthesise_pairs
from .common import (
    MODES, PRIVATE, QUIET, SAMPLERS, HandlersBase, aperture_box, for_display, grain_box, progress_html, session_of,
    style_dropdown, super_res_box, twigs_box, ui_errors,
)


class SynthesiseHandlers(HandlersBase):
    """Event functions of the Synthesise tab."""

    @ui_errors
    def synthesise(self, role, label, trees, count, seed, sampler, steps, super_res=True, aperture=True,
                   style=STYLE_ANY, grain=False, twigs=False, request: gr.Request | None = None,
                   progress=gr.Progress()):
        """Outputs: status, gallery of pairs, zip download."""
        session = session_of(request)
        options = self._options(sampler, steps, None, seed, style)  # guidance: the model's recommended
        count = whole_number(count, "number of pairs", 1, self.settings.max_synth_pairs)
        image_model = self._model(role, label, None, session)
        image_model.net_cfg.style_index(options.style)  # a style the model does not know: refused now
        vessel_model = None
        if trees == "vessel":
            vessel_model = self.studio.catalog.stage_one(session, self.settings.hosted, on_problem=gr.Warning)
            if vessel_model is None:
                gr.Warning("No vessel model yet: the procedural generator draws the trees instead.")
                trees = "procedural"
        cfg = SynthesisConfig(count=count, trees=trees, sample=options, twigs=bool(twigs))
        stop = self.studio.stops.arm(f"{session}:synth")
        zip_path = self.studio.session_dir(session) / f"retree_synthetic_{count}pairs_seed{options.seed}.zip"
        gallery: list[tuple[np.ndarray, str]] = []
        tic = time.perf_counter()
        yield "starting…", [], gr.update(visible=False)
        pipe = self._pipeline(image_model, super_res, aperture, grain)
        for p in synthesise_pairs(pipe, vessel_model, cfg, zip_path, self.settings.max_synth_pairs,
                                  should_stop=stop.is_set):
            if p.zip_path is None and p.image is not None:
                progress((p.done, p.total), desc="pairs")
                gallery = ([(for_display(p.image), f"img_{p.done - 1:03d}"),
                            (mask_picture(p.mask), f"seg_{p.done - 1:03d}")] + gallery)[:16]
                left = (time.perf_counter() - tic) / p.done * (p.total - p.done)
                text = f"{p.done} / {p.total} pairs · about {format_duration(left)} left"
                yield progress_html(p.done, p.total, text), gallery, gr.skip()
            elif p.zip_path is not None:
                note = f" ({p.note})" if p.note else ""
                text = f"{p.done} pairs in {format_duration(time.perf_counter() - tic)}{note}: download the zip below"
                yield (progress_html(p.done, p.total, text), gallery,
                       gr.update(value=str(p.zip_path), visible=True))
            else:
                yield progress_html(0, p.total, p.note), gallery, gr.skip()

    def stop_synthesis(self, request: gr.Request | None = None) -> None:
        self.studio.stops.stop(f"{session_of(request)}:synth")
        gr.Info("Stopping after the current pair…", duration=2)


def synth_tab(h: SynthesiseHandlers, s: StudioSettings) -> dict:
    d = SampleConfig()
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            gr.Markdown("Make **image + mask pairs** with both stages and download them as a dataset zip "
                        "(`images/img_XXX.png` + `masks/seg_XXX.png`, with the round aperture also `fov/fov_XXX.png`), "
                        "ready to train a segmenter on.")
            trees = gr.Radio([("Stage 1: vessel model", "vessel"), ("Procedural generator", "procedural")],
                             value="vessel", label="Vessel trees from",
                             info="without a vessel model the procedural generator is used")
            twigs = twigs_box("rt-synth-twigs")
            mode = gr.Radio(MODES, value="concat", label="Stage 2: fundus model")
            with gr.Row():
                model = gr.Dropdown([], label="Model", scale=2)
                style = style_dropdown("rt-synth-style")
            with gr.Row():
                count = gr.Slider(1, s.max_synth_pairs, min(8, s.max_synth_pairs), step=1, label="Pairs")
                seed = gr.Number(0, precision=0, label="First seed", minimum=0)
            with gr.Row():
                sampler = gr.Radio(SAMPLERS, value=d.sampler, label="Sampler")
                steps = gr.Slider(1, min(200, s.max_sample_steps), d.steps, step=1, label="Steps")
            with gr.Row():
                super_res = super_res_box(h, "rt-synth-sr")
                aperture = aperture_box("rt-synth-aperture")
                measured = any(e.grain for e in h.studio.catalog.entries("sr") if e.kind == "shipped")
                grain = grain_box("rt-synth-grain", GRAIN_BY_DEFAULT and measured)  # pairs teach better
            with gr.Row():
                go = gr.Button("Synthesise", variant="primary", elem_id="rt-synth")
                stop = gr.Button("Stop", variant="stop")
        with gr.Column(scale=6):
            status = gr.HTML(progress_html(0, 1, "ready"))
            gallery = gr.Gallery(label="Latest pairs", columns=4, height=420, allow_preview=True)
            zip_dl = gr.DownloadButton("Download dataset zip", visible=False)
    private, quiet = PRIVATE, QUIET
    note = gr.State("")
    mode.change(h.model_choices, [mode, model], [model, note], **quiet)
    model.change(h.model_styles, [mode, model, style], style, **quiet)
    go.click(h.synthesise, [mode, model, trees, count, seed, sampler, steps, super_res, aperture, style, grain,
                        twigs], [status, gallery, zip_dl],
             concurrency_id="synthesise", concurrency_limit=1, show_progress="minimal", **private,
             **h.heavy(h.synthesise))
    stop.click(h.stop_synthesis, None, None, concurrency_limit=None, **quiet)
    return dict(mode=mode, model=model, note=note)


__all__ = ["SynthesiseHandlers", "synth_tab"]
