"""What every tab of the app shares: error handling, sessions, small HTML pieces, the dataset inputs and
`HandlersBase`, the model choice and option checks the tabs' event handlers build on."""
from __future__ import annotations

import functools
import inspect
import logging
import time
from pathlib import Path

import gradio as gr
import numpy as np

from retree_core.config import MAX_GUIDANCE, MAX_SEED, SAMPLER_LABELS, STYLE_ANY, SampleConfig
from retree_core.fidelity import AGREE_RGB, EXTRA_RGB, MISSED_RGB
from retree_core.pipeline import FundusPipeline
from retree_core.twigs import TWIGS_BY_DEFAULT
from retree_core.weights import read_model_info

from ..archives import ZipLimits
from ..jobs import TrainingBusy
from ..mask_sources import UploadLimits
from ..options import bounded_number, readable, whole_number
from ..services import Studio
from ..settings import EXAMPLES_DIR, StudioSettings
from ..synthesis import write_single_pair
from ..training_data import training_data
from .admission import Admission

log = logging.getLogger("retree_studio")
SAMPLERS = [(label, name) for name, label in SAMPLER_LABELS.items()]
MODES = [("Concat", "concat"), ("SPADE", "spade")]
DISPLAY_MIN_PX = 256  # small model outputs are enlarged (nearest) for display
PRIVATE = dict(api_visibility="private")  # events that are not part of the public API
QUIET = dict(show_progress="hidden", **PRIVATE)


def style_dropdown(elem_id: str) -> gr.Dropdown:
    """The Style choice: "any" until the selected model was trained with dataset styles (--style_condition)."""
    return gr.Dropdown([STYLE_ANY], value=STYLE_ANY, label="Style", interactive=False, elem_id=elem_id,
                       info="the dataset whose look to follow, for models trained with styles")


def no_model_message(role: str) -> str:
    return (f"No {role} model yet: train one in the Train tab (role {role}) "
            f"or add weights/{role}.safetensors")


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


def on_gpu(fn):
    """Run `fn` on a ZeroGPU Space's GPU (`spaces.GPU`) where the `spaces` package is importable; as it is
    elsewhere. Applied to the events that run the networks: generation, comparison, dreaming, evaluation."""
    try:
        import spaces
    except ImportError:
        fn.on_gpu = True
        return fn
    wrapped = spaces.GPU(fn)
    wrapped.on_gpu = True
    return wrapped


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



class HandlersBase:
    """Event functions shared by the tabs. Each validates UI values, calls the engine and returns UI values."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.settings: StudioSettings = studio.settings
        self.mask_limits = UploadLimits(self.settings.max_mask_mb * 2**20, self.settings.max_mask_pixels)
        self.admission = Admission(self.settings.max_waiting_per_session)

    def heavy(self, handler) -> dict:
        """Event options of a request that runs networks or a training: admitted within the session's cap."""
        return dict(validator=self.admission.guard(handler))

    def _entries(self, role: str, session: str):
        return self.studio.catalog.entries(role, session, self.settings.hosted)

    def _model(self, role: str, label: str | None, custom: str | None, session: str):
        if role not in ("concat", "spade", "vessel"):
            raise ValueError(f"mode must be concat or spade, got {role!r}")
        if custom:
            allowed = (".safetensors",) if self.settings.hosted else (".safetensors", ".ckpt")
            if Path(custom).suffix.lower() not in allowed:
                raise ValueError(f"{Path(custom).name}: a model file ends in {' or '.join(allowed)}"
                                 + (" here (training checkpoints are not accepted on a shared server)"
                                    if self.settings.hosted else ""))
            return self.studio.catalog.load(custom, role, uploaded=True)
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
        styles = f" Styles: {', '.join(entry.styles)}." if entry.styles else ""
        return f"{entry.role}: {how}. Output {entry.image_size}×{entry.image_size} px (the model's size){trained}.{styles}"

    def model_note(self, role: str, label: str | None, custom: str | None, request: gr.Request | None = None) -> str:
        if custom:
            info = read_model_info(Path(custom)) if str(custom).endswith(".safetensors") else None
            if info is None:
                return f"Using the uploaded file {Path(custom).name} (checked when you press Run)."
            net = info["net"]
            return f"Using the uploaded file {Path(custom).name}: {net['role']}, {net['image_size']} px."
        entry = self.studio.catalog.find(label, role, session_of(request), self.settings.hosted) if label else None
        return self._model_note(entry) if entry else f"**{no_model_message(role)}.**"

    def model_guidance(self, role: str, label: str | None, style: str | None = STYLE_ANY,
                       request: gr.Request | None = None):
        """The guidance scale the selected model recommends for the style (its model card's), set when either
        is chosen."""
        entry = self.studio.catalog.find(label, role, session_of(request), self.settings.hosted) if label else None
        return entry.guidance_for(style or STYLE_ANY) if entry else gr.skip()

    def model_styles(self, role: str, label: str | None, current: str | None = STYLE_ANY,
                     request: gr.Request | None = None):
        """The Style choices of the selected model: "any", then the datasets it was trained on (if any)."""
        entry = self.studio.catalog.find(label, role, session_of(request), self.settings.hosted) if label else None
        choices = [STYLE_ANY, *(entry.styles if entry else ())]
        return gr.update(choices=choices, value=current if current in choices else STYLE_ANY,
                         interactive=len(choices) > 1)

    def _size_for(self, role: str, label: str | None, session: str) -> int | None:
        catalog = self.studio.catalog
        entry = (catalog.find(label, role, session, self.settings.hosted) if label else None) or \
            catalog.default(role, session, self.settings.hosted)
        return entry.image_size if entry else None


    def _options(self, sampler, steps, guidance, seed, style=STYLE_ANY) -> SampleConfig:
        """The sampling options of a UI request (numbers from widgets or API calls), checked with messages
        that name them; steps within the app's limit (tighter when hosted); the style is checked by the model."""
        return SampleConfig(sampler, whole_number(steps, "steps", 1, self.settings.max_sample_steps),
                            None if guidance is None else bounded_number(guidance, "guidance", 0, MAX_GUIDANCE),
                            whole_number(seed, "seed", 0, MAX_SEED), style or STYLE_ANY)

    def _pipeline(self, model, super_res: bool = True, aperture: bool = True, grain: bool = False) -> FundusPipeline:
        """The pipeline of a fundus model as the app runs it: the shipped sr model when wanted and it fits."""
        sr = self.studio.super_resolution(model.net_cfg.image_size) if super_res else None
        return FundusPipeline(model, sr, bool(aperture), bool(grain))

    def _downloads(self, session: str, pipe: FundusPipeline, options: SampleConfig, image: np.ndarray,
                   mask: np.ndarray):
        """The result as a PNG (with its generation settings inside) and as an image + mask zip."""
        stem = f"retree_{pipe.model.net_cfg.role}_seed{options.seed}_{time.strftime('%H%M%S')}"
        png, pair = write_single_pair(self.studio.session_dir(session), stem, image, mask, pipe.settings(options),
                                      pipe.field_of_view(image))
        return str(png), str(pair)

    def _training_data(self, source, zip_path, folder, unpack_dir: Path | None = None):
        """A dataset choice resolved; a zip is unpacked under `unpack_dir` (a run's folder, so it goes
        with the run), by default the app's dataset folder (the caller removes it when done)."""
        st = self.settings
        return training_data(source, zip_path, folder, unpack_dir or st.dataset_dir,
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


def super_res_box(h: HandlersBase, elem_id: str) -> gr.Checkbox:
    """Whether results go through the shipped super-resolution model that fits the generator (disabled when
    none is shipped; Studio.super_resolution picks it)."""
    shipped = [e for e in h.studio.catalog.entries("sr") if e.kind == "shipped"]
    takes = " and ".join(f"{e.image_size // e.sr_scale} px results to {e.image_size} px (×{e.sr_scale})"
                         for e in shipped)
    info = (f"the shipped sr {'models take' if len(shipped) > 1 else 'model takes'} {takes}, following the mask "
            "at full size" if shipped else "no super-resolution model is shipped (weights/sr.safetensors)")
    scales = sorted({e.sr_scale for e in shipped})
    label = "Super-resolve the result" + (f" ×{scales[0]}" if len(scales) == 1 else "")
    return gr.Checkbox(bool(shipped), label=label, info=info, interactive=bool(shipped), elem_id=elem_id)


def grain_box(elem_id: str, value: bool = False) -> gr.Checkbox:
    """Whether super-resolved results get the camera grain the sr model lacks (retree_core.grain)."""
    return gr.Checkbox(value, label="Camera grain", elem_id=elem_id,
                       info="add the finest texture and noise of the style's photographs, which super-resolution "
                            "cannot draw (with super-resolution on); synthetic pairs with it teach a segmenter "
                            "faint vessels better")


def twigs_box(elem_id: str) -> gr.Checkbox:
    """Whether stage-1 trees get the thin vessels the vessel model cannot draw (retree_core.twigs)."""
    return gr.Checkbox(TWIGS_BY_DEFAULT, label="Thin vessels", elem_id=elem_id,
                       info="grow the thin vessels a stage-1 tree lacks onto it (the model learns 128 px trees "
                            "and draws no vessel under 4 px at 512); the procedural generator draws its own")


def aperture_box(elem_id: str) -> gr.Checkbox:
    """Whether results are finished with the camera's round aperture (retree_core.aperture)."""
    return gr.Checkbox(True, label="Round aperture", elem_id=elem_id,
                       info="black out beyond the round field of view the model drew, as a camera's aperture "
                            "does (the young models draw a ragged rim)")




def dataset_sources(s: StudioSettings) -> list[tuple[str, str]]:
    """Where a dataset can come from: the embedded example, a zip, or (not when hosted) a local folder."""
    sources = [("Embedded example (CC0)", "embedded"), ("Upload a zip", "zip")]
    return sources if s.hosted else sources + [("Folder on this machine", "folder")]


def show_dataset_inputs(source: str):
    """The zip upload and folder box of a dataset choice, each visible when chosen."""
    return gr.update(visible=source == "zip"), gr.update(visible=source == "folder")




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



__all__ = ["CSS", "EXAMPLES_DIR", "HandlersBase", "MODES", "PRIVATE", "QUIET", "SAMPLERS", "aperture_box", "grain_box",
           "dataset_sources", "for_display", "on_gpu", "legend_html", "no_model_message", "progress_html", "readable",
           "session_of", "show_dataset_inputs", "style_dropdown", "super_res_box", "twigs_box", "ui_errors"]
