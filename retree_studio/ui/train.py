"""The Train tab: one training at a time (vessel trees, concat, SPADE, the vessel segmenter or the tree
super-resolution) with live loss, speed, ETA and sample grid; stop and resume; a finished run becomes a model
in the other tabs."""
from __future__ import annotations

import contextlib
import time

import gradio as gr
import pandas as pd

from retree_core.config import PRESETS, TrainConfig

from ..jobs import TrainingBusy, format_duration, loss_curve
from ..options import bounded_number, whole_number
from ..settings import StudioSettings
from .common import PRIVATE, QUIET, HandlersBase, dataset_sources, session_of, show_dataset_inputs, ui_errors

IMAGE_SIZES = [16, 32, 64, 128, 256, 512]
TRAIN_ROLES = ("vessel", "concat", "spade", "segment", "treesr")
SEGMENT_CROP_PX = 128  # the segmenter and treesr train on crops of this size when their view is larger
SOFT_TREE_PX = 1.5  # the vessel model's training target in the Train tab (the in-training one's, model card)
PATCH_ROLES = ("segment", "treesr")  # trained on crops of 512 px views, with the segmenter's settings


class TrainHandlers(HandlersBase):
    """Event functions of the Train tab."""

    def _train_cfg(self, role, preset, size, batch, steps, lr, sample_every, data_root,
                   procedural=0.0, soft_tree=0.0, styles=False, cooldown=0) -> TrainConfig:
        if role not in TRAIN_ROLES:
            raise ValueError(f"role must be {', '.join(TRAIN_ROLES)}, got {role!r}")
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}")
        if preset not in self.settings.train_presets:
            raise ValueError(f"preset {preset} is not offered on this server; use "
                             f"{', '.join(self.settings.train_presets)}")
        steps = whole_number(steps, "steps", 1, self.settings.max_train_steps)
        cooldown = whole_number(cooldown or 0, "cooldown", 0, steps)
        every = whole_number(sample_every, "sample every", 1, 1_000_000)
        procedural = bounded_number(procedural, "procedural share", 0, 1) if role == "vessel" else 0.0
        soft_tree = bounded_number(soft_tree, "soft tree target", 0, 64) if role in ("vessel", "treesr") else 0.0
        size = whole_number(size, "image size", 8, 1024)
        crop = SEGMENT_CROP_PX if role in PATCH_ROLES and size > SEGMENT_CROP_PX else None  # patch training
        batch = whole_number(batch, "batch size", 1, 256)
        pixels = batch * (crop or size) ** 2
        if pixels > self.settings.max_train_pixels:
            raise ValueError(f"batch size {batch} of {crop or size} px images is {pixels:,} pixels a step, more "
                             f"than the {self.settings.max_train_pixels:,} this server allows: lower either")
        return TrainConfig(mode=role, preset=preset, data_root=data_root, image_size=size, crop_px=crop,
                           batch_size=batch, max_minutes=self.settings.max_train_minutes,
                           max_steps=steps, lr=bounded_number(lr, "learning rate", 1e-7, 1e-1),
                           cooldown_steps=cooldown, sample_interval=every, checkpoint_interval=max(1, min(every, 250)),
                           procedural_fraction=procedural, soft_tree_px=soft_tree,
                           style_condition=bool(styles) and role in ("concat", "spade"))

    @ui_errors
    def train_start(self, role, source, zip_path, folder, preset, size, batch, steps, lr, sample_every, name,
                    procedural=0.0, synth_zip=None, synth_share=0.5, start_from=None, soft_tree=0.0,
                    styles=False, cooldown=0, request: gr.Request | None = None):
        """Start a run. Segmenter runs may mix in a synthetic-pairs zip (the Synthesise tab's) at a share, and
        may start from a segmenter's weights (pre-training on synthetic pairs, then real ones)."""
        session = session_of(request)
        jobs = self.studio.jobs
        if jobs.snapshot().busy:
            raise TrainingBusy(jobs.busy_message(session))
        name = (name or "").strip() or f"{role}_{preset}_{size}px_{time.strftime('%Y%m%d-%H%M%S')}"
        name = jobs.folder_name(name, session)
        cfg = self._train_cfg(role, preset, size, batch, steps, lr, sample_every, None, procedural, soft_tree, styles,
                              cooldown)
        cfg.net()  # a preset that does not fit the size fails before data is unpacked
        if role == "segment" and start_from:
            cfg.init_weights = str(self._segmenter_entry(start_from, session).path)
        share = bounded_number(synth_share, "synthetic share", 0, 1) if role == "segment" and synth_zip else 0.0
        if synth_zip and role == "segment" and share == 0:
            raise ValueError("the synthetic share is 0: raise it, or remove the synthetic pairs zip")
        self.studio.prune_runs()  # room for this run under the disk quota
        unpack_dir = self.settings.runs_dir / name / "datasets"  # removed with the run
        data = synthetic = None
        try:
            data = self._training_data(source, zip_path, folder, unpack_dir)
            if share:
                synthetic = self._training_data("zip", synth_zip, None, unpack_dir)
                cfg.synthetic_root, cfg.synthetic_fraction = synthetic.roots, share
            cfg.data_root = data.roots
            note = data.note if synthetic is None else (
                f"{data.note} and {synthetic.note} ({share:.0%} of the crops)" if share < 1 else synthetic.note)
            jobs.start(cfg, name, owner=session, data_note=note)
        except Exception:  # nothing started: nothing unpacked for it stays
            for unpacked in (data, synthetic):
                if unpacked is not None:
                    unpacked.remove()
            for empty in (unpack_dir, unpack_dir.parent):  # a new run's folders (an existing run's stay)
                with contextlib.suppress(OSError):
                    empty.rmdir()
            raise
        gr.Info(f"Training '{name}' started on the {note}.")
        return (*self.train_poll(None, request)[:-1], gr.Timer(active=True))

    def train_role(self, role: str, start_from: str | None, request: gr.Request | None = None):
        """What the role changes in the Train tab: the vessel model's options (treesr: its soft tree only), the
        segmenter's options, and the preset and size its training usually takes. Outputs: vessel group,
        segmenter group, start-from, preset, size, learning rate, batch size, procedural share."""
        d = TrainConfig()
        patches = role in PATCH_ROLES  # the shipped segmenter's settings (model card)
        preset, size, lr, batch = ("fine", 512, 1e-3, 8) if patches else (d.preset, d.image_size, d.lr, d.batch_size)
        return (gr.update(visible=role in ("vessel", "treesr")), gr.update(visible=role == "segment"),
                self.segmenter_choices(start_from, False, request), preset, size, lr, batch,
                gr.update(visible=role == "vessel"))

    @ui_errors
    def train_stop(self, request: gr.Request | None = None):
        """Stop the running training; a start still waiting in the queue is cancelled (the event's `cancels`)."""
        if self.studio.jobs.snapshot().busy:
            self.studio.jobs.stop(owner=session_of(request))
        else:
            gr.Info("No training is running (a start still waiting in the queue was cancelled).", duration=3)
        return self.train_poll(None, request)[:-1]

    @ui_errors
    def train_resume(self, run_name, steps, request: gr.Request | None = None):
        session = session_of(request)
        if not run_name:
            raise ValueError("choose a run to resume (runs with a checkpoint are listed)")
        jobs = self.studio.jobs
        if jobs.snapshot().busy:
            raise TrainingBusy(jobs.busy_message(session))
        self.studio.prune_runs(keep=run_name)
        jobs.resume(run_name, whole_number(steps, "steps", 1, self.settings.max_train_steps), owner=session)
        return (*self.train_poll(None, request)[:-1], gr.Timer(active=True))

    def train_poll(self, shown_sample: str | None, request: gr.Request | None = None):
        """Status, loss plot, newest sample grid, model download; stops the timer and refreshes the list
        of resumable runs when idle. Outputs: status, plot, sample grid, shown-sample state, download,
        runs, timer."""
        job = self.studio.jobs.snapshot()
        session = session_of(request)
        if self.settings.hosted and job.owner not in (None, session):  # busy or done: another session's run
            status = (f"**busy** · another session is training ({job.step} / {job.total_steps} steps)" if job.busy
                      else "No training yet in this app session. Choose the settings and press **Start**.")
            runs = gr.skip() if job.busy else self.train_runs(request)
            return status, None, None, None, gr.update(visible=False), runs, gr.Timer(active=job.busy)
        if job.state == "idle":
            status = "No training yet in this app session. Choose the settings and press **Start**."
        else:
            speed = f"{job.images_per_s:.2f} img/s" if job.images_per_s else "– img/s"
            status = (f"**{job.state}** · run `{job.run_name}` ({job.role}) · step {job.step} / {job.total_steps} · "
                      f"{speed} · ETA {format_duration(job.eta_s)}<br>{job.message}")
        curve = loss_curve(job.rows)
        plot = pd.DataFrame(curve) if curve else None
        sample = str(job.sample_path) if job.sample_path else None
        sample_out = sample if sample != shown_sample else gr.skip()
        download = gr.update(value=str(job.weights_path), visible=True) if job.weights_path else \
            gr.update(visible=False)
        runs = gr.skip() if job.busy else self.train_runs(request)
        return status, plot, sample_out, sample, download, runs, gr.Timer(active=job.busy)

    def train_runs(self, request: gr.Request | None = None):
        runs = self.studio.jobs.runs(session_of(request))
        return gr.update(choices=runs, value=runs[0] if runs else None)

    def train_on_load(self, request: gr.Request | None = None):
        return gr.Timer(active=self.studio.jobs.snapshot().busy)


def train_tab(h: TrainHandlers, s: StudioSettings) -> dict:
    d = TrainConfig()
    sources = dataset_sources(s)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            role = gr.Radio([("Vessel trees (stage 1)", "vessel"), ("Concat", "concat"), ("SPADE", "spade"),
                             ("Vessel segmenter", "segment"), ("Tree super-resolution (stage 1)", "treesr")],
                            value="concat", label="Role", elem_id="rt-train-role")
            source = gr.Radio(sources, value="embedded", label="Dataset")
            data_zip = gr.File(label="Dataset zip: images/img_X.png + masks/seg_X.png (or DRIVE, CHASE_DB1, "
                               "STARE, HRF layouts)", file_types=[".zip"], visible=False, height=90)
            folder = gr.Textbox(label="Dataset folder(s) on this machine (separate several with ;)",
                                placeholder="/data/DRIVE/training", visible=False)
            with gr.Row():
                preset = gr.Radio(list(s.train_presets), value=d.preset, label="Preset", elem_id="rt-train-preset",
                                  info="lean: fast on CPU · paper: original widths · tiny: for tests")
                size = gr.Radio(IMAGE_SIZES, value=d.image_size, label="Image size (px)", elem_id="rt-train-size")
            with gr.Row():
                batch = gr.Number(d.batch_size, precision=0, label="Batch size", minimum=1, elem_id="rt-train-batch")
                steps = gr.Number(2000, precision=0, label="Steps", minimum=1, maximum=s.max_train_steps,
                                  elem_id="rt-train-steps")
            with gr.Row():
                lr = gr.Number(d.lr, label="Learning rate", elem_id="rt-train-lr")
                cooldown = gr.Number(d.cooldown_steps, precision=0, label="Cooldown (last steps)", minimum=0,
                                     elem_id="rt-train-cooldown",
                                     info="the learning rate falls linearly to zero over the run's last this many "
                                          "steps; 0: constant")
                sample_every = gr.Number(200, precision=0, label="Sample grid every (steps)", minimum=1,
                                         elem_id="rt-train-every")
            with gr.Group(visible=False) as vessel_opts:
                procedural = gr.Slider(0, 1, d.procedural_fraction, step=0.05, label="Procedural trees (share)",
                                       elem_id="rt-train-procedural",
                                       info="this share of the training trees comes from the procedural generator, "
                                            "drawn on the fly, the rest from the dataset")
                soft_tree = gr.Number(SOFT_TREE_PX, label="Soft tree target (px)", minimum=0, maximum=64,
                                      elem_id="rt-train-soft",
                                      info="learn tanh(distance to the vessel edge / this) instead of the binary "
                                           "mask: connected trees far sooner (model card); 0: the binary mask")
            with gr.Group(visible=False) as segment_opts:
                synth_zip = gr.File(label="Synthetic pairs zip (from the Synthesise tab), mixed into the dataset",
                                    file_types=[".zip"], height=120, elem_id="rt-train-synth")
                synth_share = gr.Slider(0, 1, 0.5, step=0.05, label="Synthetic share", elem_id="rt-train-share",
                                        info="share of the training crops drawn from the synthetic pairs "
                                             "(1: synthetic only)")
                start_from = gr.Dropdown([("From scratch", "")], value="", label="Start from",
                                         elem_id="rt-train-from",
                                         info="a segmenter's weights, e.g. one trained on synthetic pairs: on few "
                                              "real annotations, pre-training on synthetic pairs helps (model card)")
            styles = gr.Checkbox(False, label="Learn dataset styles (concat and SPADE)", elem_id="rt-train-styles",
                                 info="each dataset folder becomes a style the Generate tab's Style menu offers")
            name = gr.Textbox(label="Run name (optional)", placeholder="e.g. concat_drive_256", elem_id="rt-train-name")
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="rt-train-start")
                stop = gr.Button("Stop", variant="stop", elem_id="rt-train-stop")
            with gr.Row():
                runs = gr.Dropdown([], label="Resume run (continues up to Steps above)", scale=3,
                                   elem_id="rt-train-runs")
                resume = gr.Button("Resume", scale=1, elem_id="rt-train-resume")
            gr.Markdown("One training at a time on this machine. Generation stays available but is slower "
                        "while a training runs. A stopped or finished run becomes a model in the Generate tab "
                        "(a segmenter: in the Evaluate tab; a tree super-resolution enlarges stage-1 trees when "
                        "none ships)."
                        + (f" Keep this page open: closing or reloading it stops your training; each run "
                           f"ends after {s.max_train_minutes:g} minutes." if s.hosted else ""),
                        elem_classes="rt-note")
        with gr.Column(scale=6):
            status = gr.Markdown("No training yet in this app session.", elem_id="rt-train-status")
            plot = gr.LinePlot(None, x="step", y="loss",
                               color="series", title="Training loss", height=260,
                               color_map={"loss": "#c8c8d0", "smoothed": "#e4572e"})
            grid = gr.Image(label="Sample grid (rows: mask, sample, real image; segmenter: photograph, annotation, "
                                  "prediction; tree super-resolution: soft tree, prediction, annotation)",
                            height=300, interactive=False,
                            elem_id="rt-train-grid")
            model_dl = gr.DownloadButton("Download trained model (.safetensors)", visible=False,
                                         elem_id="rt-train-download")
    shown = gr.State(None)
    timer = gr.Timer(1.0, active=False)

    private, quiet = PRIVATE, QUIET
    source.change(show_dataset_inputs, source, [data_zip, folder], **quiet)
    poll_out = [status, plot, grid, shown, model_dl, runs, timer]
    role.change(h.train_role, [role, start_from],
                [vessel_opts, segment_opts, start_from, preset, size, lr, batch, procedural], **quiet)
    started = start.click(h.train_start, [role, source, data_zip, folder, preset, size, batch, steps, lr, sample_every, name,
                                procedural, synth_zip, synth_share, start_from, soft_tree, styles, cooldown],
                poll_out, concurrency_id="train-control", **private, **h.heavy(h.train_start))
    resumed = resume.click(h.train_resume, [runs, steps], poll_out, concurrency_id="train-control", **private,
                           **h.heavy(h.train_resume))
    stop.click(h.train_stop, None, poll_out[:-1], concurrency_limit=None, cancels=[started, resumed], **quiet)
    timer.tick(h.train_poll, shown, poll_out, concurrency_limit=None, **quiet)
    return dict(timer=timer, runs=runs)


__all__ = ["TRAIN_ROLES", "TrainHandlers", "train_tab"]
