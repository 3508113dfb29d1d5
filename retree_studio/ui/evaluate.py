"""The Evaluate tab: a segmenter's vessel metrics against annotations, or a fundus model's mask fidelity
and KID on a dataset's masks, with the per-image table, a picture and the metrics files."""
from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from retree_core import compute
from retree_core.config import SampleConfig
from retree_core.evaluate import ClassicalSegmenter, GenerationOptions, evaluate_generator, evaluate_segmenter
from retree_core.segmentation import LearnedSegmenter

from ..options import whole_number
from ..settings import StudioSettings
from ..training_data import TrainingData, embedded_folder
from .common import (MODES, PRIVATE, HandlersBase, dataset_sources, on_gpu, session_of, show_dataset_inputs,
                     ui_errors)


class EvaluateHandlers(HandlersBase):
    """Event functions of the Evaluate tab."""

    def _eval_data(self, source, zip_path, folder, split) -> tuple[TrainingData, str]:
        """(the dataset, the split) of an evaluation; the embedded example becomes a one-pair folder."""
        if source == "embedded":
            root = embedded_folder(self.settings.dataset_dir / "embedded_example")
            return TrainingData([str(root)], "the embedded example (its mask is the classical filter's, not an "
                                             "annotation)"), "all"
        return self._training_data(source, zip_path, folder), split

    @on_gpu
    @ui_errors
    def evaluate(self, kind, segmenter_choice, role, source, zip_path, folder, split, num, steps,
                 request: gr.Request | None = None):
        """Score a segmenter (vessel metrics) or a fundus model (mask fidelity, KID) on a dataset.
        Outputs: summary, per-image table, picture, files (CSV, JSON, picture)."""
        if kind not in ("segmenter", "generator"):
            raise ValueError(f"evaluate a segmenter or a generator, not {kind!r}")
        if split not in ("val", "all"):
            raise ValueError(f"split must be val or all, got {split!r}")
        session = session_of(request)
        if segmenter_choice == "classical":
            segmenter = ClassicalSegmenter()
        elif segmenter_choice in (None, "", "learned"):  # the shipped one
            segmenter = self.studio.segmenter()
            if segmenter is None:
                raise ValueError("no learned segmenter is shipped (weights/segment.safetensors); use the classical "
                                 "filter")
        else:
            entry = self._segmenter_entry(segmenter_choice, session)
            segmenter = LearnedSegmenter.from_file(self.studio.catalog.load(entry.path, "segment"), entry.path)
        data, split = self._eval_data(source, zip_path, folder, split)
        try:  # an uploaded zip is unpacked for this evaluation only
            yield f"Evaluating on {data.note}…", None, None, None
            if kind == "segmenter":
                report = evaluate_segmenter(segmenter, data.roots, split)
            else:
                pipe = self._pipeline(self._model(role, None, None, session))  # scored as the app shows it
                sample = SampleConfig(steps=whole_number(steps, "steps", 1, self.settings.max_sample_steps))
                options = GenerationOptions(sample, whole_number(num, "number of images", 1,
                                                                 self.settings.max_eval_images),
                                            require_kid=False)  # a Space may lack the Inception wheel: say so
                stop = self.studio.stops.arm(f"{session}:eval")
                report = compute.run(evaluate_generator, pipe, data.roots, segmenter, split, options,
                                     should_stop=stop.is_set)
        finally:
            data.remove()
        folder_out = self.studio.session_dir(session) / f"evaluate_{kind}_{time.strftime('%H%M%S')}"
        files = [str(p) for p in report.save(folder_out)]
        mean = report.mean()
        lines = [f"**{report.title}**", "", " · ".join(f"{k} **{v:.3f}**" for k, v in mean.items()
                                                        if k not in ("seed",)), *[f"<br>{n}" for n in report.notes]]
        table = pd.DataFrame(report.rows + [{report.columns[0]: "mean", **mean}], columns=report.columns)
        yield "\n".join(lines), table.round(4), report.picture, files

    def stop_evaluation(self, request: gr.Request | None = None) -> None:
        self.studio.stops.stop(f"{session_of(request)}:eval")
        gr.Info("Stopping after the current images; what is done is scored…", duration=3)

    def eval_segmenters(self, current: str | None, request: gr.Request | None = None):
        return self.segmenter_choices(current, True, request)


def evaluate_tab(h: EvaluateHandlers, s: StudioSettings) -> dict:
    sources = dataset_sources(s)
    learned = h.studio.catalog.default("segment")
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            gr.Markdown("Score a **vessel segmenter** against annotations (F1/Dice, Jaccard, kappa, MCC, precision, "
                        "recall, specificity, accuracy, AUC inside the field of view, at the annotation's size), or "
                        "a **fundus model** on a dataset's masks (mask fidelity and KID against its real images).")
            kind = gr.Radio([("Segmenter", "segmenter"), ("Fundus model", "generator")], value="segmenter",
                            label="Evaluate", elem_id="rt-eval-kind")
            segmenter = gr.Dropdown([("Classical ridge filter", "classical"),
                                     *([(f"{learned.label} (shipped)", learned.label)] if learned else [])],
                                    value=learned.label if learned else "classical", label="Segmenter",
                                    elem_id="rt-eval-segmenter",
                                    info="shipped, trained in the Train tab, or the classical filter; for fundus "
                                         "models: the one that finds the vessels in generated images")
            role = gr.Radio(MODES, value="concat", label="Fundus model (its default weights and guidance)")
            source = gr.Radio(sources, value="embedded", label="Dataset")
            data_zip = gr.File(label="Dataset zip (images + masks in any supported layout)", file_types=[".zip"],
                               visible=False, height=90)
            folder = gr.Textbox(label="Dataset folder(s) on this machine (separate several with ;)", visible=False,
                                placeholder="../shared/data/DRIVE")
            split = gr.Radio([("Validation split (DRIVE 37–40, CHASE_DB1 12–14)", "val"), ("All images", "all")],
                             value="val", label="Images", info="datasets without those images: use all")
            with gr.Row():
                num = gr.Number(min(10, s.max_eval_images), precision=0, label="Fundus model: masks used", minimum=1,
                                maximum=s.max_eval_images)
                steps = gr.Number(20, precision=0, label="Fundus model: DPM-Solver++ steps", minimum=1,
                                  maximum=s.max_sample_steps)
            with gr.Row():
                go = gr.Button("Evaluate", variant="primary", elem_id="rt-eval")
                stop = gr.Button("Stop", variant="stop", elem_id="rt-eval-stop")
        with gr.Column(scale=6):
            summary = gr.Markdown(elem_id="rt-eval-summary")
            table = gr.Dataframe(label="Per image", interactive=False, wrap=True)
            picture = gr.Image(label="Picture (generator: mask | generated | real)", interactive=False, height=300)
            files = gr.File(label="metrics.csv, metrics.json", file_count="multiple", interactive=False)
    private = PRIVATE
    source.change(show_dataset_inputs, source, [data_zip, folder], show_progress="hidden", **private)
    go.click(h.evaluate, [kind, segmenter, role, source, data_zip, folder, split, num, steps],
             [summary, table, picture, files], concurrency_id="evaluate", concurrency_limit=1,
             show_progress="full", **private, **h.heavy(h.evaluate))
    stop.click(h.stop_evaluation, None, None, concurrency_limit=None, show_progress="hidden", **private)
    return dict(segmenter=segmenter)


__all__ = ["EvaluateHandlers", "evaluate_tab"]
