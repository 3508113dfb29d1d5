"""ReTree Studio: draw a retinal vessel tree and watch a fundus photograph emerge; train and synthesise.

UI only (Blocks, tabs, event wiring); the work is done by `retree_core`. Run `python app.py` (see
`python app.py --help`); the same file runs as a Hugging Face Space. API: `/generate` (README).
"""
from __future__ import annotations

import functools
import inspect
import logging
import random
import re
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from retree_core.app_settings import StudioSettings, settings_from_args
from retree_core.archives import ZipLimits
from retree_core.catalog import read_model_info
from retree_core.config import PRESETS, SampleConfig, TrainConfig
from retree_core import compute
from retree_core.data import DataError
from retree_core.evaluate import ClassicalSegmenter, GenerationOptions, evaluate_generator, evaluate_segmenter
from retree_core.fidelity import AGREE_RGB, EXTRA_RGB, MISSED_RGB, measure_fidelity
from retree_core.generation import live_frames
from retree_core.jobs import TrainingBusy, format_duration, loss_curve
from retree_core.segmentation import LearnedSegmenter
from retree_core.mask_sources import (
    LoadedMask, TreeKnobs, UploadLimits, blank_canvas, canvas_mask, current_mask, dream_tree, mask_for_model,
    mask_from_upload, mask_picture, random_tree,
)
from retree_core.options import bounded_number, whole_number
from retree_core.services import Studio
from retree_core.aperture import apply_aperture
from retree_core.superres import upscale
from retree_core.synthesis import SynthesisConfig, synthesise_pairs, write_single_pair
from retree_core.training_data import embedded_folder, training_data

log = logging.getLogger("retree_studio")
ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "assets" / "masks"
SAMPLERS = [("DPM-Solver++ (2M)", "dpmpp"), ("DDIM", "ddim"), ("DDPM (ancestral)", "ddpm")]
MODES = [("Concat", "concat"), ("SPADE", "spade")]
IMAGE_SIZES = [16, 32, 64, 128, 256, 512]
TRAIN_ROLES = ("vessel", "concat", "spade", "segment")
SEGMENT_CROP_PX = 128  # the segmenter trains on crops of this size when its view is larger
SOFT_TREE_PX = 1.5  # the vessel model's training target in the Train tab (the in-training one's, model card)
DISPLAY_MIN_PX = 256  # small model outputs are enlarged (nearest) for display
FRAME_INTERVAL_S = 0.1  # at most 10 live frames a second: encoding and sending each one costs CPU
PATH_IN_MESSAGE = re.compile(r"(?<![\w.~])(?:/[^\s/:'\"]+)+/([^\s/:'\"]+)")  # absolute paths


def no_model_message(role: str) -> str:
    return (f"No {role} model yet: train one in the Train tab (role {role}) "
            f"or add weights/{role}.safetensors")


def readable(exc: BaseException) -> str:
    """An exception as a message for people: server folders stripped from paths."""
    return PATH_IN_MESSAGE.sub(r"\1", str(exc)) or type(exc).__name__


def ui_errors(fn):
    """Turn any exception of an event function into a readable gr.Error (the app keeps serving)."""
    def convert(exc: Exception) -> gr.Error:
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, (ValueError, TrainingBusy)):  # DataError, CheckpointError are ValueErrors
            return gr.Error(readable(exc), print_exception=False)
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(f"Unexpected problem ({type(exc).__name__}: {readable(exc)}). "
                        "The app is still running; please try again.", print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise convert(exc) from None
        return generator

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise convert(exc) from None
    return plain


def session_of(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def for_display(image: np.ndarray | None) -> np.ndarray | None:
    """Enlarge small images (nearest) so a 16 px test model is visible; 256 px images pass through."""
    if image is None or max(image.shape[:2]) >= DISPLAY_MIN_PX:
        return image
    factor = -(-DISPLAY_MIN_PX // max(image.shape[:2]))
    return np.kron(image, np.ones((factor, factor, 1), np.uint8))


def progress_html(step: int, total: int, text: str) -> str:
    share = 100.0 * step / total if total else 0.0
    return (f'<div class="rt-progress"><div class="rt-bar" style="width:{share:.1f}%"></div></div>'
            f'<div class="rt-counter">{text}</div>')


def legend_html() -> str:
    def swatch(rgb) -> str:
        return f'<span class="rt-swatch" style="background:rgb{tuple(int(c) for c in rgb)}"></span>'
    return (f'{swatch(AGREE_RGB)} in the mask and found &nbsp; {swatch(MISSED_RGB)} in the mask, not found '
            f'&nbsp; {swatch(EXTRA_RGB)} found, not in the mask')


class Handlers:
    """Event functions of the app. Each validates UI values, calls retree_core and returns UI values."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.settings: StudioSettings = studio.settings
        self.mask_limits = UploadLimits(self.settings.max_mask_mb * 2**20, self.settings.max_mask_pixels)

    # --- models ------------------------------------------------------------------------------
    def _entries(self, role: str, session: str):
        return self.studio.catalog.entries(role, session, self.settings.hosted)

    def _model(self, role: str, label: str | None, custom: str | None, session: str):
        if role not in ("concat", "spade", "vessel"):
            raise ValueError(f"mode must be concat or spade, got {role!r}")
        if custom:
            if Path(custom).suffix.lower() not in (".safetensors", ".ckpt"):
                raise ValueError(f"{Path(custom).name}: a model file ends in .safetensors or .ckpt")
            return self.studio.catalog.load(custom, role)
        catalog, hosted = self.studio.catalog, self.settings.hosted
        entry = catalog.find(label, role, session, hosted) if label else None
        entry = entry or catalog.default(role, session, hosted)
        if entry is None:
            raise gr.Error(no_model_message(role), print_exception=False)
        return catalog.load(entry.path, role)

    def model_choices(self, role: str, current: str | None, request: gr.Request | None = None):
        """Dropdown of the role's models (keeping the selection when it is still there) and a note."""
        session = session_of(request)
        entries = self._entries(role, session)
        labels = [e.label for e in entries]
        if not labels:
            return gr.update(choices=[], value=None), f"**{no_model_message(role)}.**"
        default = self.studio.catalog.default(role, session, self.settings.hosted)
        value = current if current in labels else default.label
        entry = next(e for e in entries if e.label == value)
        return gr.update(choices=labels, value=value), self._model_note(entry)

    @staticmethod
    def _model_note(entry) -> str:
        how = {"concat": "the mask is an extra input channel", "spade": "the mask modulates the normalisation",
               "vessel": "draws vessel trees"}.get(entry.role, entry.role)
        trained = f", {entry.trained_steps} training steps" if entry.trained_steps is not None else ""
        return f"{entry.role}: {how}. Output {entry.image_size}×{entry.image_size} px (the model's size){trained}."

    def model_note(self, role: str, label: str | None, custom: str | None, request: gr.Request | None = None) -> str:
        if custom:
            info = read_model_info(Path(custom)) if str(custom).endswith(".safetensors") else None
            if info is None:
                return f"Using the uploaded file {Path(custom).name} (checked when you press Run)."
            net = info["net"]
            return f"Using the uploaded file {Path(custom).name}: {net['role']}, {net['image_size']} px."
        entry = self.studio.catalog.find(label, role, session_of(request), self.settings.hosted) if label else None
        return self._model_note(entry) if entry else f"**{no_model_message(role)}.**"

    def model_guidance(self, role: str, label: str | None, request: gr.Request | None = None):
        """The guidance scale the selected model recommends (its model card's), set when it is chosen."""
        entry = self.studio.catalog.find(label, role, session_of(request), self.settings.hosted) if label else None
        return entry.guidance if entry else gr.skip()

    def _size_for(self, role: str, label: str | None, session: str) -> int | None:
        catalog = self.studio.catalog
        entry = (catalog.find(label, role, session, self.settings.hosted) if label else None) or \
            catalog.default(role, session, self.settings.hosted)
        return entry.image_size if entry else None

    # --- mask sources --------------------------------------------------------------------------
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

    @ui_errors
    def dream(self, seed, request: gr.Request | None = None, progress=gr.Progress()):
        session = session_of(request)
        entry = self.studio.catalog.default("vessel", session, self.settings.hosted)
        if entry is None:
            raise gr.Error(no_model_message("vessel"), print_exception=False)
        model = self.studio.catalog.load(entry.path, "vessel")
        seed = whole_number(seed, "seed", 0, 2**31 - 1)

        def on_draw(draw: int, tries: int) -> None:  # shown on the mask preview (show_progress_on)
            progress((draw - 1, tries), desc=f"draw {draw} of up to {tries}", unit="draws")

        tree, note, passed = dream_tree(model, seed, on_draw=on_draw)
        if not passed:
            gr.Warning(f"This tree is below the plausibility threshold ({note}): no redraw passed the filter. "
                       "Try another seed, or use a random tree.")
        return LoadedMask.from_mask(tree, f"dreamt tree ({note})")

    # --- generation ----------------------------------------------------------------------------
    def _options(self, sampler, steps, guidance, seed) -> tuple[str, int, float, int]:
        if sampler not in {v for _, v in SAMPLERS}:
            raise ValueError(f"unknown sampler {sampler!r}")
        return (sampler, whole_number(steps, "steps", 1, self.settings.max_sample_steps),
                bounded_number(guidance, "guidance", 0, 20), whole_number(seed, "seed", 0, 2**31 - 1))

    def _downloads(self, session: str, role: str, seed: int, image: np.ndarray, mask: np.ndarray):
        stem = f"retree_{role}_seed{seed}_{time.strftime('%H%M%S')}"
        png, pair = write_single_pair(self.studio.session_dir(session), stem, image, mask)
        return str(png), str(pair)

    def _final(self, model, image: np.ndarray, mask: np.ndarray, full_mask, wanted: bool = True,
               aperture: bool = True):
        """The output (image, mask): super-resolved, conditioned on the mask at full size (`full_mask(px)`),
        when wanted and a shipped sr model fits the model's size; then, if asked, finished with the round
        aperture (the mask cut to it)."""
        sr = self.studio.super_resolution(model.net_cfg.image_size) if wanted else None
        if sr is not None:
            mask = full_mask(sr.net_cfg.image_size)
            image = upscale(sr, image, mask)
        return apply_aperture(image, mask) if aperture else (image, mask)

    @ui_errors
    def run(self, source, drawn, loaded, role, label, custom, sampler, steps, guidance, seed, super_res=True,
            aperture=True, request: gr.Request | None = None):
        """Stream x_t and x0 at every step, then the result (super-resolved if asked and possible), its
        fidelity overlay and downloads.
        Outputs: x_t, x0, counter, result, overlay, fidelity note, PNG download, pair download."""
        session = session_of(request)
        sampler, steps, guidance, seed = self._options(sampler, steps, guidance, seed)
        model = self._model(role, label, custom, session)
        mask = current_mask(source, drawn, loaded, model.net_cfg.image_size)
        stop = self.studio.stops.arm(session)
        hidden = gr.update(visible=False)
        yield (None, None, progress_html(0, steps, "starting…"), None, None, "", hidden, hidden)
        first_s = None
        for frame in live_frames(model, mask, seed, sampler=sampler, steps=steps, guidance=guidance, stop=stop,
                                 min_interval_s=FRAME_INTERVAL_S):
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
            image, mask = self._final(model, frame.x0, mask, lambda px: current_mask(source, drawn, loaded, px),
                                      bool(super_res), bool(aperture))
            size = f" · {image.shape[0]} px" + (" (super-resolved)" if image.shape[0] != frame.x0.shape[0] else "")
            png, pair = self._downloads(session, role, seed, image, mask)
            yield (gr.skip(), frame.x0, progress_html(frame.step, frame.total, text + size),
                   for_display(image), None, "measuring mask fidelity…", gr.update(value=png, visible=True),
                   gr.update(value=pair, visible=True))
            fid = measure_fidelity(image, mask, self.studio.segmenter())
            yield (gr.skip(), gr.skip(), gr.skip(), gr.skip(), for_display(fid.overlay),
                   f"**{fid.summary()}**<br>{legend_html()}", gr.skip(), gr.skip())

    def stop(self, request: gr.Request | None = None) -> None:
        self.studio.stops.stop(session_of(request))
        gr.Info("Stopping at the next step…", duration=2)

    @ui_errors
    def compare(self, source, drawn, loaded, sampler, steps, guidance, seed, super_res=True, aperture=True,
                request: gr.Request | None = None):
        """concat and SPADE on the same mask and seed, side by side (streamed one after the other)."""
        session = session_of(request)
        sampler, steps, guidance, seed = self._options(sampler, steps, guidance, seed)
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
            mask = current_mask(source, drawn, loaded, model.net_cfg.image_size)
            for frame in live_frames(model, mask, seed, sampler=sampler, steps=steps, guidance=guidance, stop=stop,
                                     min_interval_s=FRAME_INTERVAL_S):
                images[role] = for_display(frame.x0)
                status = f"{role}: step {frame.step} / {frame.total}"
                if frame.final:
                    image, full = self._final(model, frame.x0, mask,
                                              lambda px: current_mask(source, drawn, loaded, px), bool(super_res),
                                              bool(aperture))
                    images[role] = for_display(image)
                    fid = measure_fidelity(image, full, self.studio.segmenter())
                    notes.append(f"{role} ({entry.label}): {frame.elapsed_s:.1f} s, Dice {fid.dice:.3f}"
                                 if fid.dice is not None else f"{role} ({entry.label}): {frame.elapsed_s:.1f} s")
                    status = " · ".join(notes)
                yield images["concat"], images["spade"], status

    # --- API -----------------------------------------------------------------------------------
    @ui_errors
    def api_generate(self, mask_file, mode="concat", sampler="dpmpp", steps=20, guidance=1.0, seed=0,
                     request: gr.Request | None = None) -> np.ndarray:
        """Generate a fundus image for a vessel mask image (white vessels on black); returns the image."""
        if mode not in ("concat", "spade"):
            raise ValueError(f"mode must be concat or spade, got {mode!r}")
        session = session_of(request)
        sampler, steps, guidance, seed = self._options(sampler, steps, guidance, seed)
        if not mask_file:
            raise ValueError("send a mask image (white vessels on a black background)")
        model = self._model(mode, None, None, session)
        uploaded = mask_from_upload(mask_file, self.mask_limits)
        mask = mask_for_model(uploaded, model.net_cfg.image_size, source=Path(mask_file).name)
        result = None
        for frame in live_frames(model, mask, seed, sampler=sampler, steps=steps, guidance=guidance):
            result = frame.x0
        return self._final(model, result, mask, lambda px: mask_for_model(uploaded, px, source=Path(mask_file).name))[0]

    # --- training ------------------------------------------------------------------------------
    def _train_cfg(self, role, preset, size, batch, steps, lr, sample_every, data_root,
                   procedural=0.0, soft_tree=0.0) -> TrainConfig:
        if role not in TRAIN_ROLES:
            raise ValueError(f"role must be {', '.join(TRAIN_ROLES)}, got {role!r}")
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}")
        steps = whole_number(steps, "steps", 1, self.settings.max_train_steps)
        every = whole_number(sample_every, "sample every", 1, 1_000_000)
        procedural = bounded_number(procedural, "procedural share", 0, 1) if role == "vessel" else 0.0
        soft_tree = bounded_number(soft_tree, "soft tree target", 0, 64) if role == "vessel" else 0.0
        size = whole_number(size, "image size", 8, 1024)
        crop = SEGMENT_CROP_PX if role == "segment" and size > SEGMENT_CROP_PX else None  # patch training
        return TrainConfig(mode=role, preset=preset, data_root=data_root, image_size=size, crop_px=crop,
                           batch_size=whole_number(batch, "batch size", 1, 256),
                           max_steps=steps, lr=bounded_number(lr, "learning rate", 1e-7, 1e-1),
                           sample_interval=every, checkpoint_interval=max(1, min(every, 250)),
                           procedural_fraction=procedural, soft_tree_px=soft_tree)

    @ui_errors
    def train_start(self, role, source, zip_path, folder, preset, size, batch, steps, lr, sample_every, name,
                    procedural=0.0, synth_zip=None, synth_share=0.5, start_from=None, soft_tree=0.0,
                    request: gr.Request | None = None):
        """Start a run. Segmenter runs may mix in a synthetic-pairs zip (the Synthesise tab's) at a share, and
        may start from a segmenter's weights (pre-training on synthetic pairs, then real ones)."""
        session = session_of(request)
        jobs = self.studio.jobs
        if jobs.snapshot().busy:
            raise TrainingBusy(jobs.busy_message(session))
        name = (name or "").strip() or f"{role}_{preset}_{size}px_{time.strftime('%Y%m%d-%H%M%S')}"
        cfg = self._train_cfg(role, preset, size, batch, steps, lr, sample_every, None, procedural, soft_tree)
        cfg.net()  # a preset that does not fit the size fails before data is unpacked
        if role == "segment" and start_from:
            cfg.init_weights = str(self._segmenter_entry(start_from, session).path)
        share = bounded_number(synth_share, "synthetic share", 0, 1) if role == "segment" and synth_zip else 0.0
        if synth_zip and role == "segment" and share == 0:
            raise ValueError("the synthetic share is 0: raise it, or remove the synthetic pairs zip")
        data, synthetic = self._training_data(source, zip_path, folder), None
        if share:
            synthetic = self._training_data("zip", synth_zip, None)
            cfg.synthetic_root, cfg.synthetic_fraction = synthetic.roots, share
        cfg.data_root = data.roots
        note = data.note if synthetic is None else (
            f"{data.note} and {synthetic.note} ({share:.0%} of the crops)" if share < 1 else synthetic.note)
        jobs.start(cfg, name, owner=session, data_note=note)
        gr.Info(f"Training '{name}' started on the {note}.")
        return (*self.train_poll(None, request)[:-1], gr.Timer(active=True))

    def _training_data(self, source, zip_path, folder):
        st = self.settings
        return training_data(source, zip_path, folder, st.dataset_dir,
                             ZipLimits(st.max_zip_members, st.max_zip_unpacked_mb * 2**20), st.hosted)

    def _segmenter_entry(self, label: str, session: str):
        entry = self.studio.catalog.find(label, "segment", session, self.settings.hosted)
        if entry is None:
            raise ValueError(f"no segmenter named {label!r} here: train one in the Train tab (role Vessel segmenter)")
        return entry

    def segmenter_choices(self, current: str | None, with_classical: bool, request: gr.Request | None = None):
        """Dropdown of the vessel segmenters (shipped and trained runs), and the classical filter or
        training from scratch as the first choice; keeps the selection when it is still there."""
        entries = self._entries("segment", session_of(request))
        first = ("Classical ridge filter", "classical") if with_classical else ("From scratch", "")
        choices = [first, *[(f"{e.label} (shipped)" if e.kind == "shipped" else e.label, e.label) for e in entries]]
        default = self.studio.catalog.default("segment", session_of(request), self.settings.hosted)
        values = [value for _, value in choices]
        value = current if current in values else (default.label if default and with_classical else first[1])
        return gr.update(choices=choices, value=value)

    def eval_segmenters(self, current: str | None, request: gr.Request | None = None):
        return self.segmenter_choices(current, True, request)

    def train_role(self, role: str, start_from: str | None, request: gr.Request | None = None):
        """What the role changes in the Train tab: the vessel model's options, the segmenter's options,
        and the preset and size its training usually takes. Outputs: vessel group, segmenter group,
        start-from, preset, size, learning rate, batch size."""
        d = TrainConfig()
        segment = role == "segment"  # the shipped segmenter's settings (model card)
        preset, size, lr, batch = ("fine", 512, 1e-3, 8) if segment else (d.preset, d.image_size, d.lr, d.batch_size)
        return (gr.update(visible=role == "vessel"), gr.update(visible=segment),
                self.segmenter_choices(start_from, False, request), preset, size, lr, batch)

    @ui_errors
    def train_stop(self, request: gr.Request | None = None):
        self.studio.jobs.stop(owner=session_of(request))
        return self.train_poll(None, request)[:-1]

    @ui_errors
    def train_resume(self, run_name, steps, request: gr.Request | None = None):
        session = session_of(request)
        if not run_name:
            raise ValueError("choose a run to resume (runs with a checkpoint are listed)")
        jobs = self.studio.jobs
        if jobs.snapshot().busy:
            raise TrainingBusy(jobs.busy_message(session))
        jobs.resume(run_name, whole_number(steps, "steps", 1, self.settings.max_train_steps), owner=session)
        return (*self.train_poll(None, request)[:-1], gr.Timer(active=True))

    def train_poll(self, shown_sample: str | None, request: gr.Request | None = None):
        """Status, loss plot, newest sample grid, model download; stops the timer and refreshes the list
        of resumable runs when idle. Outputs: status, plot, sample grid, shown-sample state, download,
        runs, timer."""
        job = self.studio.jobs.snapshot()
        session = session_of(request)
        if self.settings.hosted and job.owner not in (None, session) and job.busy:
            status = f"**busy** · another session is training ({job.step} / {job.total_steps} steps)"
            return status, None, None, None, gr.update(visible=False), gr.skip(), gr.Timer(active=True)
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

    # --- synthesis -----------------------------------------------------------------------------
    @ui_errors
    def synthesise(self, role, label, trees, count, seed, sampler, steps, super_res=True, aperture=True,
                   request: gr.Request | None = None, progress=gr.Progress()):
        """Outputs: status, gallery of pairs, zip download."""
        session = session_of(request)
        sampler, steps, _, seed = self._options(sampler, steps, 1.0, seed)
        count = whole_number(count, "number of pairs", 1, self.settings.max_synth_pairs)
        image_model = self._model(role, label, None, session)
        vessel_entry = self.studio.catalog.default("vessel", session, self.settings.hosted)
        vessel_model = None
        if trees == "vessel":
            if vessel_entry is None:
                gr.Warning("No vessel model yet: the procedural generator draws the trees instead.")
                trees = "procedural"
            else:
                vessel_model = self.studio.catalog.load(vessel_entry.path, "vessel")
        cfg = SynthesisConfig(count=count, seed=seed, trees=trees, sampler=sampler, steps=steps, aperture=bool(aperture))
        stop = self.studio.stops.arm(f"{session}:synth")
        zip_path = self.studio.session_dir(session) / f"retree_synthetic_{count}pairs_seed{seed}.zip"
        gallery: list[tuple[np.ndarray, str]] = []
        tic = time.perf_counter()
        yield "starting…", [], gr.update(visible=False)
        sr_model = self.studio.super_resolution(image_model.net_cfg.image_size) if super_res else None
        for p in synthesise_pairs(image_model, vessel_model, cfg, zip_path, self.settings.max_synth_pairs,
                                  should_stop=stop.is_set, sr_model=sr_model):
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

    # --- evaluation ----------------------------------------------------------------------------
    def _eval_roots(self, source, zip_path, folder, split) -> tuple[list[str], str, str]:
        """(data roots, split, note) of an evaluation dataset; the embedded example becomes a one-pair folder."""
        st = self.settings
        if source == "embedded":
            root = embedded_folder(st.dataset_dir / "embedded_example")
            return [str(root)], "all", "the embedded example (its mask is the classical filter's, not an annotation)"
        data = training_data(source, zip_path, folder, st.dataset_dir,
                             ZipLimits(st.max_zip_members, st.max_zip_unpacked_mb * 2**20), st.hosted)
        return data.roots, split, data.note

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
        roots, split, note = self._eval_roots(source, zip_path, folder, split)
        yield f"Evaluating on {note}…", None, None, None
        if kind == "segmenter":
            report = evaluate_segmenter(segmenter, roots, split)
        else:
            model = self._model(role, None, None, session)
            sr = self.studio.super_resolution(model.net_cfg.image_size)  # scored as the app shows it
            options = GenerationOptions(steps=whole_number(steps, "steps", 1, self.settings.max_sample_steps),
                                        guidance=model.guidance,
                                        num=whole_number(num, "number of images", 1, self.settings.max_synth_pairs),
                                        sr=sr.source if sr else "none")
            report = compute.run(evaluate_generator, model.source, roots, segmenter, split, options)
        folder_out = self.studio.session_dir(session) / f"evaluate_{kind}_{time.strftime('%H%M%S')}"
        files = [str(p) for p in report.save(folder_out)]
        mean = report.mean()
        lines = [f"**{report.title}**", "", " · ".join(f"{k} **{v:.3f}**" for k, v in mean.items()
                                                        if k not in ("seed",)), *[f"<br>{n}" for n in report.notes]]
        table = pd.DataFrame(report.rows + [{report.columns[0]: "mean", **mean}], columns=report.columns)
        yield "\n".join(lines), table.round(4), report.picture, files

    def stop_synthesis(self, request: gr.Request | None = None) -> None:
        self.studio.stops.stop(f"{session_of(request)}:synth")
        gr.Info("Stopping after the current pair…", duration=2)


# ------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------
CSS = """
.rt-progress {height: 6px; background: var(--neutral-200); border-radius: 3px; overflow: hidden; margin: 2px 0 4px;}
.rt-bar {height: 100%; background: var(--color-accent); transition: width .15s;}
.rt-counter {font-family: var(--font-mono); font-size: 0.9em; color: var(--body-text-color-subdued);}
.rt-swatch {display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; vertical-align: -1px;}
#rt-canvas canvas {background: #000 !important;}
#rt-header h1 {margin-bottom: 0;}
#rt-refresh, #rt-seed-random {align-self: stretch;}
.rt-note {font-size: 0.9em; color: var(--body-text-color-subdued);}
.rt-live img {object-fit: contain !important;}
"""

ABOUT = """
## What is ReTree?
ReTree (Alimanov & Islam, *Denoising Diffusion Probabilistic Model for Retinal Image Generation and Segmentation*, ICCP 2023,
[arXiv:2308.08339](https://arxiv.org/abs/2308.08339)) generates retinal fundus photographs in two stages:
a diffusion model first draws a **vessel tree**, a second diffusion model then paints a **fundus photograph**
that follows it. The second stage takes the mask either as an extra input channel (**concat**) or through
spatially-adaptive normalisation (**SPADE**). The pairs are synthetic training data for vessel segmentation.

ReTree Studio is an independent re-implementation: a UNet with locality self-attention, DDPM/DDIM/DPM-Solver++
samplers, and `lean` network presets that run on a 2-core CPU (256 px images denoised at 128 px internally).
The shipped concat and SPADE models are early 128 px checkpoints, trained for a few hours on one CPU core each
(10,445 and 9,078 steps): they draw the colour, the field of view, a bright disc where the vessels converge
and, with their recommended guidance of 2, dark vessels along the mask, but their images are still grainy.
They will be replaced as training continues (`weights/README.md`). A mask-conditioned **super-resolution**
model takes their 128 px results to 512 px, and a learned **vessel segmenter** (F1 0.81 on the validation
images) scores how well the generated vessels follow the mask. The shipped stage-1 **vessel** model
(128 px) is early too: the plausibility filter keeps 28 % of its trees (the rest are in pieces),
so *Dream a tree* and the Synthesise tab redraw a tree up to 16 times until one passes.

## Data and licences
- **Shipped weights** (`weights/`, see `weights/README.md`): trained on the DRIVE training images
  (Staal et al., IEEE TMI 2004; research use, cite the paper) and CHASE_DB1 (Fraz et al., IEEE TBME 2012;
  Kingston University, **CC BY 4.0**), with a fixed validation split never trained on (DRIVE 37–40,
  CHASE_DB1 subjects 12–14). No photographs of these datasets ship with the app.
- **Example masks** (`assets/masks/`): three CHASE_DB1 first-observer annotations (images 12L, 13R, 14L of
  the validation split; Fraz et al., IEEE TBME 2012; Kingston University; **CC BY 4.0**; cropped to the
  field of view and resized to 512 px), and masks drawn by the project's procedural vessel generator.
- **Embedded training example**: `skimage.data.retina()` (CC0), with a vessel mask from a classical ridge filter.
- **Mask fidelity** uses the shipped vessel segmenter (trained on the same data and split) to find vessels
  in generated images, and a classical ridge filter (Sato) when none is shipped; either way its Dice is a
  guide to how well the image follows the mask, not a clinical measure.
- Generated images are synthetic and **not for diagnosis**.

## Run it locally
```bash
python -m venv .venv && . .venv/bin/activate
pip install -r requirements.txt
python app.py                       # http://127.0.0.1:7860
python app.py --help                # --port, --weights-dir, --runs-dir, --share, --device
```
Use it from Python with `gradio_client`:
```python
from gradio_client import Client, handle_file
client = Client("http://127.0.0.1:7860/")
image_path = client.predict(handle_file("assets/masks/left_eye_seed1.png"), "concat", "dpmpp", 20, 1.0, 0,
                            api_name="/generate")
```
"""


def super_res_box(h: Handlers, elem_id: str) -> gr.Checkbox:
    """Whether results go through the shipped super-resolution model (disabled when none is shipped)."""
    entry = h.studio.catalog.default("sr")
    entry = entry if entry is not None and entry.kind == "shipped" else None  # as Studio.super_resolution
    scale = int((read_model_info(entry.path) or {}).get("net", {}).get("sr_scale", 4)) if entry else 4
    info = (f"the shipped sr model takes the {entry.image_size // scale} px result to {entry.image_size} px, "
            "following the mask at full size" if entry else
            "no super-resolution model is shipped (weights/sr.safetensors)")
    return gr.Checkbox(entry is not None, label=f"Super-resolve the result ×{scale}", info=info,
                       interactive=entry is not None, elem_id=elem_id)


def aperture_box(elem_id: str) -> gr.Checkbox:
    """Whether results are finished with the camera's round aperture (retree_core.aperture)."""
    return gr.Checkbox(True, label="Round aperture", elem_id=elem_id,
                       info="black out beyond the round field of view the model drew, as a camera's aperture "
                            "does (the young models draw a ragged rim)")


def generate_tab(h: Handlers, s: StudioSettings) -> dict:
    """The Generate tab; returns the components other tabs and app events need."""
    d = SampleConfig()
    source = gr.State("draw")  # the active mask source: "draw" (the canvas) or "loaded"
    loaded = gr.State(None)  # the last mask loaded from an example, a random tree, an upload or a dream
    with gr.Row(equal_height=False):
        with gr.Column(scale=6):
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
                    gr.Markdown("Samples a vessel tree from the stage-1 (vessel) diffusion model "
                                "(weights/vessel.safetensors, or a vessel run from the Train tab), redrawn with "
                                "new seeds while the plausibility filter rejects it.",
                                elem_classes="rt-note")
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
            with gr.Accordion("Use your own model file", open=False):
                custom = gr.File(label=".safetensors (or a training .ckpt, read without unpickling)",
                                 file_types=[".safetensors", ".ckpt"], height=90)
            sampler = gr.Radio(SAMPLERS, value=d.sampler, label="Sampler", elem_id="rt-sampler")
            with gr.Row():
                steps = gr.Slider(1, min(200, s.max_sample_steps), d.steps, step=1, label="Steps", elem_id="rt-steps")
                guidance = gr.Slider(0, 10, d.guidance, step=0.25, label="Guidance", elem_id="rt-guidance",
                                     info="1 = plain conditional model; >1 follows the mask more strongly "
                                          "(set to the model's recommended scale when you choose it)")
            with gr.Row(equal_height=False):
                seed = gr.Number(d.seed, precision=0, label="Seed", minimum=0, scale=3, elem_id="rt-seed")
                seed_dice = gr.Button("Random seed", scale=1, elem_id="rt-seed-random")
            with gr.Row():
                super_res = super_res_box(h, "rt-sr")
                aperture = aperture_box("rt-aperture")
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
    private = dict(api_visibility="private")
    quiet = dict(show_progress="hidden", **private)
    # Only the canvas's own change event reads the canvas; everything else uses the `drawn` state. An
    # ImageEditor read by events that run at page load re-uploads itself on every page update.
    drawn = gr.State(None)
    mask_in = [source, drawn, loaded]
    show = dict(fn=h.preview, inputs=[*mask_in, mode, model], outputs=[seen, seen_note], **quiet)
    editor.change(h.canvas_changed, [editor, source, loaded, mode, model], [drawn, seen, seen_note],
                  trigger_mode="always_last", **quiet)
    draw_tab.select(lambda: "draw", None, source, **quiet).then(**show)
    tree_args = [tree_seed, tree_main, tree_depth, tree_tort, tree_width, tree_eye]
    for tab in (examples_tab, upload_tab, dream_tab):
        tab.select(lambda: "loaded", None, source, **quiet).then(**show)
    tree_tab.select(lambda: "loaded", None, source, **quiet).then(
        h.tree_if_none, [loaded, *tree_args], loaded, **quiet).then(**show)
    examples.select(h.load_example, None, loaded, **private).success(**show)
    tree_draw.click(h.draw_tree, tree_args, loaded, **private).success(**show)
    for knob in (tree_main, tree_depth, tree_tort, tree_width):
        knob.release(h.draw_tree, tree_args, loaded, **quiet).success(**show)
    tree_eye.input(h.draw_tree, tree_args, loaded, **quiet).success(**show)
    tree_dice.click(h.random_seed, None, tree_seed, **quiet).then(
        h.draw_tree, tree_args, loaded, **private).success(**show)
    upload.upload(h.load_upload, upload, [loaded, upload_note], **private).success(**show)
    dream_btn.click(h.dream, dream_seed, loaded, show_progress_on=seen, **gen, **private).success(**show)
    seed_dice.click(h.random_seed, None, seed, **quiet)
    for trigger in (mode.change, refresh.click):
        trigger(h.model_choices, [mode, model], [model, model_note], **quiet)
    model.change(h.model_note, [mode, model, custom], model_note, **quiet).then(**show)
    model.change(h.model_guidance, [mode, model], guidance, **quiet)
    custom.change(h.model_note, [mode, model, custom], model_note, **quiet)
    run.click(h.run, [*mask_in, mode, model, custom, sampler, steps, guidance, seed, super_res, aperture],
              [x_t, x0, counter, result, overlay, fidelity, png_dl, pair_dl], show_progress="hidden",
              **gen, **private)
    stop.click(h.stop, None, None, concurrency_limit=None, **quiet)
    compare.click(h.compare, [*mask_in, sampler, steps, guidance, seed, super_res, aperture],
                  [cmp_concat, cmp_spade, cmp_note],
                  show_progress="minimal", **gen, **private)

    # the documented API endpoint: a mask file in, the generated image out
    with gr.Row(visible=False):
        api_mask = gr.File(label="mask")
        api_mode = gr.Textbox("concat", label="mode")
        api_sampler = gr.Textbox(d.sampler, label="sampler")
        api_steps = gr.Number(d.steps, label="steps", precision=0)
        api_guidance = gr.Number(d.guidance, label="guidance")
        api_seed = gr.Number(d.seed, label="seed", precision=0)
        api_image = gr.Image(label="image", format="png")
        api_button = gr.Button("generate")
    api_button.click(h.api_generate, [api_mask, api_mode, api_sampler, api_steps, api_guidance, api_seed], api_image,
                     api_name="generate", api_description="Fundus image (PNG) for a vessel mask image: white "
                     "vessels on black, any size. mode: concat | spade; sampler: dpmpp | ddim | ddpm.", **gen)
    return dict(mask_in=mask_in, mode=mode, model=model, model_note=model_note, seen=seen, seen_note=seen_note)


def dataset_sources(s: StudioSettings) -> list[tuple[str, str]]:
    """Where a dataset can come from: the embedded example, a zip, or (not when hosted) a local folder."""
    sources = [("Embedded example (CC0)", "embedded"), ("Upload a zip", "zip")]
    return sources if s.hosted else sources + [("Folder on this machine", "folder")]


def show_dataset_inputs(source: str):
    """The zip upload and folder box of a dataset choice, each visible when chosen."""
    return gr.update(visible=source == "zip"), gr.update(visible=source == "folder")


def train_tab(h: Handlers, s: StudioSettings) -> dict:
    d = TrainConfig()
    sources = dataset_sources(s)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            role = gr.Radio([("Vessel trees (stage 1)", "vessel"), ("Concat", "concat"), ("SPADE", "spade"),
                             ("Vessel segmenter", "segment")], value="concat", label="Role", elem_id="rt-train-role")
            source = gr.Radio(sources, value="embedded", label="Dataset")
            data_zip = gr.File(label="Dataset zip: images/img_X.png + masks/seg_X.png (or DRIVE, CHASE_DB1, "
                               "STARE, HRF layouts)", file_types=[".zip"], visible=False, height=90)
            folder = gr.Textbox(label="Dataset folder(s) on this machine (separate several with ;)",
                                placeholder="/data/DRIVE/training", visible=False)
            with gr.Row():
                preset = gr.Radio(list(PRESETS), value=d.preset, label="Preset", elem_id="rt-train-preset",
                                  info="lean: fast on CPU · paper: original widths · tiny: for tests")
                size = gr.Radio(IMAGE_SIZES, value=d.image_size, label="Image size (px)", elem_id="rt-train-size")
            with gr.Row():
                batch = gr.Number(d.batch_size, precision=0, label="Batch size", minimum=1, elem_id="rt-train-batch")
                steps = gr.Number(2000, precision=0, label="Steps", minimum=1, maximum=s.max_train_steps,
                                  elem_id="rt-train-steps")
            with gr.Row():
                lr = gr.Number(d.lr, label="Learning rate", elem_id="rt-train-lr")
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
                        "(a segmenter: in the Evaluate tab).",
                        elem_classes="rt-note")
        with gr.Column(scale=6):
            status = gr.Markdown("No training yet in this app session.", elem_id="rt-train-status")
            plot = gr.LinePlot(None, x="step", y="loss",
                               color="series", title="Training loss", height=260,
                               color_map={"loss": "#c8c8d0", "smoothed": "#e4572e"})
            grid = gr.Image(label="Sample grid (rows: mask, sample, real image; segmenter: photograph, annotation, "
                                  "prediction)", height=300, interactive=False,
                            elem_id="rt-train-grid")
            model_dl = gr.DownloadButton("Download trained model (.safetensors)", visible=False,
                                         elem_id="rt-train-download")
    shown = gr.State(None)
    timer = gr.Timer(1.0, active=False)

    private = dict(api_visibility="private")
    quiet = dict(show_progress="hidden", **private)
    source.change(show_dataset_inputs, source, [data_zip, folder], **quiet)
    poll_out = [status, plot, grid, shown, model_dl, runs, timer]
    role.change(h.train_role, [role, start_from], [vessel_opts, segment_opts, start_from, preset, size, lr, batch],
                **quiet)
    start.click(h.train_start, [role, source, data_zip, folder, preset, size, batch, steps, lr, sample_every, name,
                                procedural, synth_zip, synth_share, start_from, soft_tree],
                poll_out, concurrency_id="train-control", **private)
    stop.click(h.train_stop, None, poll_out[:-1], concurrency_limit=None, **quiet)
    resume.click(h.train_resume, [runs, steps], poll_out, concurrency_id="train-control", **private)
    timer.tick(h.train_poll, shown, poll_out, concurrency_limit=None, **quiet)
    return dict(timer=timer, runs=runs)


def synth_tab(h: Handlers, s: StudioSettings) -> dict:
    d = SampleConfig()
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            gr.Markdown("Make **image + mask pairs** with both stages and download them as a dataset zip "
                        "(`images/img_XXX.png` + `masks/seg_XXX.png`), ready to train a segmenter on.")
            trees = gr.Radio([("Stage 1: vessel model", "vessel"), ("Procedural generator", "procedural")],
                             value="vessel", label="Vessel trees from",
                             info="without a vessel model the procedural generator is used")
            mode = gr.Radio(MODES, value="concat", label="Stage 2: fundus model")
            model = gr.Dropdown([], label="Model")
            with gr.Row():
                count = gr.Slider(1, s.max_synth_pairs, min(8, s.max_synth_pairs), step=1, label="Pairs")
                seed = gr.Number(0, precision=0, label="First seed", minimum=0)
            with gr.Row():
                sampler = gr.Radio(SAMPLERS, value=d.sampler, label="Sampler")
                steps = gr.Slider(1, min(200, s.max_sample_steps), d.steps, step=1, label="Steps")
            with gr.Row():
                super_res = super_res_box(h, "rt-synth-sr")
                aperture = aperture_box("rt-synth-aperture")
            with gr.Row():
                go = gr.Button("Synthesise", variant="primary", elem_id="rt-synth")
                stop = gr.Button("Stop", variant="stop")
        with gr.Column(scale=6):
            status = gr.HTML(progress_html(0, 1, "ready"))
            gallery = gr.Gallery(label="Latest pairs", columns=4, height=420, allow_preview=True)
            zip_dl = gr.DownloadButton("Download dataset zip", visible=False)
    private = dict(api_visibility="private")
    quiet = dict(show_progress="hidden", **private)
    note = gr.State("")
    mode.change(h.model_choices, [mode, model], [model, note], **quiet)
    go.click(h.synthesise, [mode, model, trees, count, seed, sampler, steps, super_res, aperture],
             [status, gallery, zip_dl],
             concurrency_id="synthesise", concurrency_limit=1, show_progress="minimal", **private)
    stop.click(h.stop_synthesis, None, None, concurrency_limit=None, **quiet)
    return dict(mode=mode, model=model, note=note)


def evaluate_tab(h: Handlers, s: StudioSettings) -> dict:
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
                num = gr.Number(10, precision=0, label="Fundus model: masks used", minimum=1)
                steps = gr.Number(20, precision=0, label="Fundus model: DPM-Solver++ steps", minimum=1)
            go = gr.Button("Evaluate", variant="primary", elem_id="rt-eval")
        with gr.Column(scale=6):
            summary = gr.Markdown(elem_id="rt-eval-summary")
            table = gr.Dataframe(label="Per image", interactive=False, wrap=True)
            picture = gr.Image(label="Picture (generator: mask | generated | real)", interactive=False, height=300)
            files = gr.File(label="metrics.csv, metrics.json", file_count="multiple", interactive=False)
    private = dict(api_visibility="private")
    source.change(show_dataset_inputs, source, [data_zip, folder], show_progress="hidden", **private)
    go.click(h.evaluate, [kind, segmenter, role, source, data_zip, folder, split, num, steps],
             [summary, table, picture, files], concurrency_id="evaluate", concurrency_limit=1,
             show_progress="full", **private)
    return dict(segmenter=segmenter)


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
            with gr.Tab("Train", id="train") as tr_tab:
                t = train_tab(h, s)
            with gr.Tab("Synthesise", id="synthesise") as syn_tab:
                y = synth_tab(h, s)
            with gr.Tab("Evaluate", id="evaluate") as ev_tab:
                e = evaluate_tab(h, s)
            with gr.Tab("About", id="about"):
                gr.Markdown(ABOUT)
        quiet = dict(show_progress="hidden", api_visibility="private")
        gen_tab.select(h.model_choices, [g["mode"], g["model"]], [g["model"], g["model_note"]], **quiet)
        syn_tab.select(h.model_choices, [y["mode"], y["model"]], [y["model"], y["note"]], **quiet)
        tr_tab.select(h.train_runs, None, t["runs"], **quiet)
        ev_tab.select(h.eval_segmenters, e["segmenter"], e["segmenter"], **quiet)
        demo.load(h.model_choices, [g["mode"], g["model"]], [g["model"], g["model_note"]], **quiet)
        demo.load(h.model_choices, [y["mode"], y["model"]], [y["model"], y["note"]], **quiet)
        demo.load(h.preview, [*g["mask_in"], g["mode"], g["model"]], [g["seen"], g["seen_note"]], **quiet)
        demo.load(h.train_on_load, None, t["timer"], **quiet)
        demo.load(h.train_runs, None, t["runs"], **quiet)
    demo.studio = studio  # for tests and the benchmark
    return demo


THEME = gr.themes.Soft(primary_hue="orange", secondary_hue="rose", neutral_hue="slate")


def launch(demo: gr.Blocks, settings: StudioSettings, host: str = "127.0.0.1", port: int = 7860,
           share: bool = False, **kwargs):
    """Queue (concurrency that fits the machine, bounded waiting line) and serve."""
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=2)
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size=f"{settings.max_upload_mb}mb",
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
