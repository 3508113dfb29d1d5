"""The app: the Blocks of all tabs over one `Studio`, the queue, and the command-line entry point."""
from __future__ import annotations

import logging

import gradio as gr

from ..services import Studio
from ..settings import EXAMPLES_DIR, StudioSettings, settings_from_args
from .about import about_text
from .common import CSS, QUIET, session_of
from .edit import EditHandlers, edit_tab
from .evaluate import EvaluateHandlers, evaluate_tab
from .generate import GenerateHandlers, generate_tab
from .synthesise import SynthesiseHandlers, synth_tab
from .train import TrainHandlers, train_tab


class Handlers(GenerateHandlers, EditHandlers, TrainHandlers, SynthesiseHandlers, EvaluateHandlers):
    """The event functions of every tab, over one Studio."""

    def leave(self, request: gr.Request | None = None) -> None:
        """A page was closed: what it runs stops; hosted, its training too (no other page may stop it, so
        it would hold the only training slot until its time ran out)."""
        session = session_of(request)
        self.studio.stops.stop_session(session)
        if self.settings.hosted:
            self.studio.jobs.release(session)


def build_app(settings: StudioSettings | None = None, studio: Studio | None = None) -> gr.Blocks:
    """The Blocks app (queue not yet configured; see `launch`)."""
    studio = studio or Studio(settings or StudioSettings())
    s = studio.settings
    h = Handlers(studio)
    with gr.Blocks(title="ReTree Studio", delete_cache=(1800, 3600)) as demo:
        hosted = " · hosted mode" if s.hosted else ""
        gr.Markdown("# ReTree Studio\nDraw a retinal vessel tree and watch a fundus photograph emerge from noise. "
                    "Two-stage diffusion after *ReTree* (Alimanov & Islam, ICCP 2023). "
                    f"<span class='rt-note'>Running on {s.device}{hosted}.</span>", elem_id="rt-header")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate") as gen_tab:
                g = generate_tab(h, s)
            with gr.Tab("Edit a photograph", id="edit"):
                edit_tab(h, s)
            with gr.Tab("Train", id="train") as tr_tab:
                t = train_tab(h, s)
            with gr.Tab("Synthesise", id="synthesise") as syn_tab:
                y = synth_tab(h, s)
            with gr.Tab("Evaluate", id="evaluate") as ev_tab:
                e = evaluate_tab(h, s)
            with gr.Tab("About", id="about"):
                gr.Markdown(about_text(studio.catalog))
        quiet = QUIET
        gen_tab.select(h.model_choices, [g["mode"], g["model"]], [g["model"], g["model_note"]], **quiet)
        syn_tab.select(h.model_choices, [y["mode"], y["model"]], [y["model"], y["note"]], **quiet)
        tr_tab.select(h.train_runs, None, t["runs"], **quiet)
        ev_tab.select(h.eval_segmenters, e["segmenter"], e["segmenter"], **quiet)
        demo.load(h.model_choices, [g["mode"], g["model"]], [g["model"], g["model_note"]], **quiet)
        demo.load(h.model_choices, [y["mode"], y["model"]], [y["model"], y["note"]], **quiet)
        demo.load(h.preview, [*g["mask_in"], g["mode"], g["model"]], [g["seen"], g["seen_note"]], **quiet)
        demo.load(h.train_on_load, None, t["timer"], **quiet)
        demo.load(h.train_runs, None, t["runs"], **quiet)
        demo.unload(h.leave)
    h.admission.blocks = demo
    demo.studio = studio  # for tests and the benchmark
    return demo


THEME = gr.themes.Soft(primary_hue="orange", secondary_hue="rose", neutral_hue="slate")


def launch(demo: gr.Blocks, settings: StudioSettings, host: str = "127.0.0.1", port: int = 7860,
           share: bool = False, **kwargs):
    """Queue (concurrency that fits the machine, bounded waiting line) and serve."""
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=2)
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size=f"{settings.max_upload_mb}mb",
                       allowed_paths=[str(EXAMPLES_DIR)],  # the example masks, wherever the package is installed
                       theme=THEME, css=CSS, ssr_mode=False, footer_links=["api", "gradio"], **kwargs)


def main(argv: list[str] | None = None) -> None:
    settings, args = settings_from_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    studio = Studio(settings)
    if settings.warm_up:
        studio.warm_up()
    demo = build_app(studio=studio)
    launch(demo, settings, args.host, args.port, args.share)


if __name__ == "__main__":
    main()


__all__ = ["Handlers", "build_app", "launch", "main"]
