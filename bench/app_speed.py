"""Speed of the app's Generate tab, measured through its own event function (`ui.Handlers.run`).

Time to the first streamed frame and to the final image (super-resolved when the shipped sr model is
beside the concat one, as in the app) at the default settings (DPM-Solver++,
20 steps, the model's recommended guidance as the app's slider starts from it), from pressing Run (the call) to the yield that carries the picture; medians
over --repeats runs after one warm-up run. Uses weights/concat.safetensors when it is there, else a
randomly initialised `lean` concat model (same network, same speed; says which).

    python bench/app_speed.py [--repeats 5] [--weights weights/concat.safetensors] [--threads N] [--no-helpers]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from retree_studio import ui  # noqa: E402
from retree_core import compute, precision  # noqa: E402
from retree_studio.settings import StudioSettings  # noqa: E402
from retree_core.config import DiffusionConfig, SampleConfig, net_config, to_dict  # noqa: E402
from retree_core.data.procedural import procedural_tree  # noqa: E402
from retree_studio.mask_sources import LoadedMask  # noqa: E402
from retree_core.nets import build_net  # noqa: E402
from retree_studio.services import Studio  # noqa: E402


def random_lean_weights(folder: Path) -> Path:
    """A randomly initialised lean 256 px concat model written like a shipped one."""
    torch.manual_seed(0)
    cfg = net_config("lean", "concat", 256)
    net = build_net(cfg, DiffusionConfig())
    meta = {"net": to_dict(cfg), "diffusion": to_dict(DiffusionConfig()), "trained_steps": 0}
    path = folder / "concat.safetensors"
    save_file({k: v.half().contiguous() for k, v in net.state_dict().items()}, path,
              metadata={"retree": json.dumps(meta)})
    return path


def one_run(handlers: ui.Handlers, loaded: LoadedMask, seed: int, guidance: float) -> dict[str, float]:
    d = SampleConfig()
    tic = time.perf_counter()
    times: dict[str, float] = {}
    for out in handlers.run("loaded", None, loaded, "concat", "concat", None, d.sampler, d.steps, guidance, seed):
        now = time.perf_counter() - tic
        if "first_frame_s" not in times and isinstance(out[0], np.ndarray):
            times["first_frame_s"] = now
        if "final_image_s" not in times and isinstance(out[3], np.ndarray):
            times["final_image_s"], times["result_px"] = now, out[3].shape[0]
        if isinstance(out[4], np.ndarray):
            times["with_fidelity_s"] = now
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weights", default=str(ROOT / "weights" / "concat.safetensors"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--precision", default=precision.DEFAULT, choices=precision.PRECISIONS,
                        help="as `python app.py --precision` (default: auto, bf16 where the CPU runs it natively)")
    parser.add_argument("--no-helpers", action="store_true",
                        help="without the shipped sr and segment models beside the concat one")
    args = parser.parse_args()
    compute.use_one_thread()  # as in the app (Studio turns it on): the main thread computes nothing
    if args.threads:
        compute.run(torch.set_num_threads, args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="retree_app_speed_"))
    weights = Path(args.weights)
    if weights.is_file():
        weights_dir, which = tmp / "weights", f"shipped model {weights}"
        weights_dir.mkdir()
        (weights_dir / "concat.safetensors").symlink_to(weights.resolve())
        if weights.with_suffix(".json").exists():
            (weights_dir / "concat.json").symlink_to(weights.with_suffix(".json").resolve())
        for helper in ("sr", "segment"):  # the shipped super-resolution and segmenter, as the app uses them
            for suffix in (".safetensors", ".json"):
                if (weights.parent / f"{helper}{suffix}").exists() and not args.no_helpers:
                    (weights_dir / f"{helper}{suffix}").symlink_to((weights.parent / f"{helper}{suffix}").resolve())
    else:
        weights_dir = tmp / "weights"
        weights_dir.mkdir()
        compute.run(random_lean_weights, weights_dir)
        which = "randomly initialised lean concat model (no weights/concat.safetensors)"
    studio = Studio(StudioSettings(weights_dir=weights_dir, runs_dir=tmp / "runs", work_dir=tmp / "work",
                                   warm_up=False, precision=precision.resolve(args.precision, "cpu")))
    handlers = ui.Handlers(studio)
    model = studio.catalog.load(studio.catalog.default("concat").path, "concat")
    size = model.net_cfg.image_size
    loaded = LoadedMask.from_mask(procedural_tree(512, seed=1), "bench tree")

    d = SampleConfig()
    print(f"model: {which}; {size}x{size} px; sampler {d.sampler}, {d.steps} steps, guidance {model.guidance:g}; "
          f"{model.precision}; torch threads {torch.get_num_threads()}")
    cold = one_run(handlers, loaded, seed=0, guidance=model.guidance)
    print(f"warm-up run (model already loaded): first frame {cold['first_frame_s']:.2f} s, "
          f"final image {cold['final_image_s']:.2f} s ({cold['result_px']} px result; super-resolution "
          f"{'on' if studio.super_resolution(size) else 'off'}, mask fidelity by "
          f"{'the learned segmenter' if studio.segmenter() else 'the classical filter'})")
    runs = [one_run(handlers, loaded, seed=i + 1, guidance=model.guidance) for i in range(args.repeats)]
    for key, label in (("first_frame_s", "time to first frame"), ("final_image_s", "time to final image"),
                       ("with_fidelity_s", "time to fidelity overlay")):
        values = [r[key] for r in runs]
        print(f"{label}: median {statistics.median(values):.2f} s  "
              f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})")


if __name__ == "__main__":
    main()
