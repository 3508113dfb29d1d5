"""Settings of the ReTree Studio app: where models and runs live, hosted-mode rules, limits.

Read from the command line and the environment so that the same `app.py` runs on a laptop, in tests
(a temporary weights folder) and as a Hugging Face Space (SPACE_ID set: hosted mode).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from retree_core.precision import DEFAULT as PRECISION, PRECISIONS, resolve as resolve_precision
from retree_core.config import MAX_IMAGE_PX, PRESETS
from retree_core.weights import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"  # the example masks, package data


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class StudioSettings:
    """Everything the app needs to know about its machine and its audience.

    hosted: a public deployment (a Space, or --share): no server folder paths are accepted, uploaded
    models are read without unpickling, runs are listed only to the session that started them and
    stopped when its page closes, and the limits below are tighter (the README's table).
    """

    weights_dir: Path = WEIGHTS_DIR
    runs_dir: Path = ROOT / "runs" / "studio"
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "retree_studio")
    hosted: bool = False
    device: str = "cpu"
    precision: str = "fp32"  # generation's network precision (precision.py); `python app.py` defaults to auto
    generation_concurrency: int = 1  # generations at once; one saturates a 2-core CPU
    queue_size: int = 64  # requests waiting beyond this are refused with a "busy" message
    max_upload_mb: int = 200  # any single upload (dataset zips are the largest)
    max_mask_mb: int = 20  # an uploaded mask file
    max_mask_pixels: int = 16_000_000  # declared size of an uploaded mask (decompression bombs)
    max_zip_unpacked_mb: int = 2048  # a dataset zip, unpacked
    max_zip_members: int = 10_000
    max_train_steps: int = 1_000_000
    max_train_minutes: float | None = None  # wall time of one training (hosted: forced, so the slot is released)
    max_train_pixels: int = 64 * 512 * 512  # batch x crop (or image) pixels of one training step: its memory
    train_presets: tuple[str, ...] = tuple(PRESETS)  # the network sizes the Train tab accepts
    max_synth_pairs: int = 200
    max_eval_images: int = 200  # generated images of one fundus-model evaluation
    max_sample_steps: int = 1000
    max_waiting_per_session: int = 8  # heavy requests (generate, evaluate, train...) one session may queue
    max_runs_mb: int | None = None  # disk for training runs: the oldest idle runs are removed beyond it
    max_outputs_mb: int | None = None  # disk for downloads: the oldest sessions' files are removed beyond it
    max_model_px: int = MAX_IMAGE_PX  # image size an uploaded model may declare (its memory grows with it)
    warm_up: bool = True  # load the default model and run one step at start-up, so Run is fast

    @property
    def dataset_dir(self) -> Path:
        return self.work_dir / "datasets"

    @property
    def output_dir(self) -> Path:
        return self.work_dir / "outputs"

    def make_hosted(self) -> "StudioSettings":
        """Tighter limits for a public deployment."""
        self.hosted = True
        self.max_upload_mb = min(self.max_upload_mb, 100)
        self.max_zip_unpacked_mb = min(self.max_zip_unpacked_mb, 1024)
        self.max_train_steps = min(self.max_train_steps, 5000)
        self.max_train_minutes = min(self.max_train_minutes or 30.0, 30.0)
        self.max_train_pixels = min(self.max_train_pixels, 8 * 256 * 256)
        self.train_presets = tuple(p for p in self.train_presets if p != "paper")  # 22 M parameters: too big
        self.max_synth_pairs = min(self.max_synth_pairs, 32)
        self.max_eval_images = min(self.max_eval_images, 16)
        self.max_waiting_per_session = min(self.max_waiting_per_session, 2)
        self.max_runs_mb = min(self.max_runs_mb or 2048, 2048)
        self.max_outputs_mb = min(self.max_outputs_mb or 1024, 1024)
        self.max_sample_steps = min(self.max_sample_steps, 250)
        self.max_model_px = min(self.max_model_px, 512)
        return self


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python app.py", description="ReTree Studio (Gradio app)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="public gradio.live link (turns on hosted mode)")
    parser.add_argument("--hosted", action="store_true", help="hosted-mode rules without a public link (the "
                        "default when --host is not a loopback address)")
    parser.add_argument("--not-hosted", dest="not_hosted", action="store_true",
                        help="local-mode rules even on a non-loopback --host (a trusted network only)")
    parser.add_argument("--weights-dir", default=os.environ.get("RETREE_WEIGHTS_DIR"),
                        help=f"folder of NAME.safetensors models (default {WEIGHTS_DIR})")
    parser.add_argument("--runs-dir", default=os.environ.get("RETREE_RUNS_DIR"),
                        help="where trainings started in the app are written (default runs/studio)")
    parser.add_argument("--work-dir", default=os.environ.get("RETREE_WORK_DIR"),
                        help="temporary files: unpacked datasets, downloads")
    parser.add_argument("--device", default=os.environ.get("RETREE_DEVICE"),
                        help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--precision", choices=PRECISIONS, default=os.environ.get("RETREE_PRECISION", PRECISION),
                        help="generation in bf16 autocast or fp32 (auto: bf16 where the device runs it natively)")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false")
    return parser


def is_loopback(host: str) -> bool:
    """Whether a server address is reachable from this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def settings_from_args(argv: list[str] | None = None) -> tuple[StudioSettings, argparse.Namespace]:
    """Settings from command-line flags and RETREE_* / SPACE_ID environment variables."""
    args = build_parser().parse_args(argv)
    s = StudioSettings(device=args.device or _default_device(), warm_up=args.warm_up)
    s.precision = resolve_precision(args.precision, s.device)
    if args.weights_dir:
        s.weights_dir = Path(args.weights_dir).resolve()
    if args.runs_dir:
        s.runs_dir = Path(args.runs_dir).resolve()
    if args.work_dir:
        s.work_dir = Path(args.work_dir).resolve()
    exposed = not args.not_hosted and not is_loopback(args.host)  # others can reach it: their rules
    if args.share or args.hosted or exposed or os.environ.get("SPACE_ID") or os.environ.get("RETREE_HOSTED") == "1":
        s.make_hosted()
    return s, args


__all__ = ["StudioSettings", "build_parser", "settings_from_args"]
