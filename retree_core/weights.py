"""Shipped model weights: safetensors (fp16) + a JSON config per model, loadable by name or path.

`weights/concat.safetensors` and `weights/concat.json` form the model named "concat". A training
checkpoint also loads directly (its EMA weights), and converts with `export_weights`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .checkpoint import CheckpointError, atomic_write, load_checkpoint
from .grain import GrainProfile
from . import compute
from . import precision as precisions
from .config import (DEFAULT_GUIDANCE, MAX_ATTENTION_TOKENS, MAX_GUIDANCE, MAX_IMAGE_PX, MAX_TIMESTEPS, DiffusionConfig,
                     NetConfig, from_dict)
from .nets import ReTreeUNet, build_net

# where models are found by name: $RETREE_WEIGHTS_DIR (an installed package), else the repository's weights/
WEIGHTS_DIR = Path(os.environ.get("RETREE_WEIGHTS_DIR") or Path(__file__).resolve().parent.parent / "weights")


@dataclass
class LoadedModel:
    """A ready-to-sample network (EMA weights, eval mode) with the configs it was trained under."""

    net: ReTreeUNet
    net_cfg: NetConfig
    diffusion_cfg: DiffusionConfig
    source: str
    guidance: float = DEFAULT_GUIDANCE  # the scale its model card recommends (`export --guidance`)
    trained_steps: int = 0  # optimiser steps behind the weights, over all runs that led to them
    precision: str = "fp32"  # what sampling runs the network in: fp32 or bf16 (autocast), see precision.py
    tree_sr: LoadedModel | None = None  # vessel models: the treesr model that enlarges their trees (tree_sr.py)
    style_guidance: dict[str, float] = field(default_factory=dict)  # styles recommended another scale (style_guidance)
    grain: dict[str, GrainProfile] = field(default_factory=dict)  # sr models: camera grain per style (grain.py)

    def guidance_for(self, style: str) -> float:
        """The scale recommended for `style`: the style's own where the file names one, else `guidance`."""
        return self.style_guidance.get(style, self.guidance)


def _scale(value, where: str, origin: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_GUIDANCE:
        raise CheckpointError(f"{origin}: config is invalid ({where} {value!r}, expected 0 to {MAX_GUIDANCE:g})")
    return float(value)


def recommended_guidance(meta: dict, origin: str) -> float:
    """The guidance scale stored with a model (meta["sample"]["guidance"]), the default when there is none."""
    return _scale((meta.get("sample") or {}).get("guidance", DEFAULT_GUIDANCE), "sample.guidance", origin)


def style_guidance(meta: dict, origin: str) -> dict[str, float]:
    """The scales a model recommends for some of its dataset styles instead of its general one
    (meta["sample"]["guidance_by_style"], written by `export --style_guidance`), checked."""
    table = (meta.get("sample") or {}).get("guidance_by_style") or {}
    styles = (meta.get("net") or {}).get("styles") or []
    if not isinstance(table, dict) or any(style not in styles for style in table):
        raise CheckpointError(f"{origin}: config is invalid (sample.guidance_by_style {table!r}, expected scales "
                              f"for the model's styles: {', '.join(styles) or 'none'})")
    return {style: _scale(value, f"sample.guidance_by_style.{style}", origin) for style, value in table.items()}


def grain_profiles(meta: dict, origin: str) -> dict[str, GrainProfile]:
    """The camera grain an sr model's output lacks, per style (meta["grain"], written by bench/grain.py), checked."""
    table = meta.get("grain") or {}
    try:
        return {str(style): GrainProfile.from_dict(profile) for style, profile in dict(table).items()}
    except (TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{origin}: config is invalid (grain: {err})") from None


def _configs(meta: dict, origin: str, max_image_px: int = MAX_IMAGE_PX) -> tuple[NetConfig, DiffusionConfig]:
    try:
        net_cfg, diff_cfg = from_dict(NetConfig, meta["net"]), from_dict(DiffusionConfig, meta["diffusion"])
    except KeyError as exc:
        raise CheckpointError(f"{origin}: config is missing or invalid (no {exc} entry)") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{origin}: config is missing or invalid ({exc})") from None
    # a file's config sizes what is allocated: refuse sizes no model of this project has
    for name, value, high in (("image_size", net_cfg.image_size, max_image_px),
                              ("timesteps", diff_cfg.timesteps, MAX_TIMESTEPS)):
        if not isinstance(value, int) or not 1 <= value <= high:
            raise CheckpointError(f"{origin}: config is invalid ({name} {value!r}, expected 1 to {high})")
    if net_cfg.attention_tokens > MAX_ATTENTION_TOKENS:
        side = int(MAX_ATTENTION_TOKENS ** 0.5)
        raise CheckpointError(f"{origin}: config is invalid (attention over {net_cfg.attention_tokens} positions, "
                              f"at most {MAX_ATTENTION_TOKENS}: {side}x{side} feature maps)")
    return net_cfg, diff_cfg


def _check_shapes(net_cfg: NetConfig, diff_cfg: DiffusionConfig, state: dict[str, torch.Tensor],
                  origin: str) -> None:
    """Compare the file's tensors with the network its config describes, built without memory (meta
    device), so that a config describing a huge network is refused before anything is allocated."""
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_net(net_cfg, diff_cfg).state_dict().items()}
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{origin}: config is missing or invalid ({exc})") from None
    found = {k: tuple(v.shape) for k, v in state.items()}
    wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} of another shape, e.g. {wrong[0]}: {list(found[wrong[0]])} in the file, "
                        f"{list(expected[wrong[0]])} in the network")
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if extra:
        problems.append(f"{len(extra)} unexpected, e.g. {extra[0]}")
    if problems:
        raise CheckpointError(f"{origin}: weights do not match the {net_cfg.role} network in its config "
                              f"({'; '.join(problems)})")


def _build(net_cfg: NetConfig, diff_cfg: DiffusionConfig, state: dict[str, torch.Tensor], origin: str) -> ReTreeUNet:
    _check_shapes(net_cfg, diff_cfg, state, origin)
    net = build_net(net_cfg, diff_cfg)
    state = {k: v.float() for k, v in state.items()}
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{origin}: weights contain NaN or infinite values (e.g. {bad[0]})")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{origin}: weights do not match the {net_cfg.role} network in its config ({first})") from None
    return net.eval().requires_grad_(False)


def read_model_info(path: str | Path, strict: bool = False) -> dict | None:
    """The config stored with a safetensors weight file: its metadata, else the sidecar `.json`. Reads the
    header only (cheap, for listing models). None for an unreadable file or config, unless `strict`:
    then a CheckpointError names the problem."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    try:
        with safe_open(path, framework="pt") as f:
            text, where = (f.metadata() or {}).get("retree"), "its metadata"
        if text is None and sidecar.exists():
            text, where = sidecar.read_text(errors="replace"), sidecar.name
        if text is None:
            raise CheckpointError(f"{path}: no ReTree config in its metadata and no {sidecar.name} beside it")
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CheckpointError(f"{path}: the config in {where} is not valid JSON ({exc})") from None
    except (SafetensorError, OSError, ValueError) as exc:  # CheckpointError is a ValueError
        if not strict:
            return None
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def trained_steps(state: dict) -> int:
    """A checkpoint's steps, counting those of the weights its run started from (`--init_weights`)."""
    return int(state["step"]) + int(state.get("init_steps", 0))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def _source(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights and config to export: a training checkpoint's EMA weights, or a weights file's own."""
    if Path(path).suffix == ".safetensors":
        meta = read_model_info(path, strict=True)
        return _read_tensors(path), meta
    state = load_checkpoint(path)
    return state["ema"], {"net": state["config"]["net"], "diffusion": state["config"]["diffusion"],
                          "trained_steps": trained_steps(state)}


def export_weights(checkpoint: str | Path, out_path: str | Path, fp16: bool = True,
                   extra_meta: dict | None = None) -> Path:
    """Convert a training checkpoint's EMA weights to `<out>.safetensors` + `<out>.json`, or write a weights
    file anew; `extra_meta` joins the stored config (e.g. a segmenter's threshold; its "sample" entries,
    the recommended scales, replace only the ones it names)."""
    weights, meta = _source(checkpoint)
    extra = dict(extra_meta or {})
    sample = {**(meta.get("sample") or {}), **extra.pop("sample", {})}
    meta = {**meta, **extra, **({"sample": sample} if sample else {})}
    out = Path(out_path).with_suffix("")
    _configs(meta, str(checkpoint))  # validate before writing anything
    recommended_guidance(meta, str(checkpoint))
    style_guidance(meta, str(checkpoint))
    grain_profiles(meta, str(checkpoint))
    dtype = torch.float16 if fp16 else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in weights.items()}
    atomic_write(out.with_suffix(".safetensors"),
                 lambda tmp: save_file(tensors, tmp, metadata={"retree": json.dumps(meta)}))
    atomic_write(out.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return out.with_suffix(".safetensors")


def resolve(name_or_path: str | Path) -> Path:
    """A shipped model name ("concat") or a path to .safetensors / .ckpt."""
    path = Path(name_or_path)
    if path.suffix in (".safetensors", ".ckpt", ".pt") or path.exists():
        return path
    shipped = WEIGHTS_DIR / f"{name_or_path}.safetensors"
    if not shipped.exists():
        names = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
        raise CheckpointError(f"no model named {name_or_path!r} in {WEIGHTS_DIR} "
                              f"(available: {', '.join(names) or 'none'})")
    return shipped


@compute.on_compute_thread
def load_model(name_or_path: str | Path, role: str | None = None, device: str | torch.device = "cpu",
               precision: str = "fp32", max_image_px: int = MAX_IMAGE_PX) -> LoadedModel:
    """Load a model by name or path without unpickling anything; check its role if one is expected.
    `precision` (auto, fp32, bf16) is what generation will run the network in on `device`; a file declaring
    images larger than `max_image_px` is refused before its tensors are read (a server's uploads)."""
    run_in = precisions.resolve(precision, device)  # an unsupported request fails before any reading
    path = resolve(name_or_path)
    origin = str(path)
    if not path.is_file():
        raise CheckpointError(f"{origin}: no such file")
    if path.suffix == ".safetensors":
        meta = read_model_info(path, strict=True)
        net_cfg, diff_cfg = _configs(meta, origin, max_image_px)  # before any tensor is read
        state = _read_tensors(path)
    else:
        ckpt = load_checkpoint(path)
        state, meta = ckpt["ema"], {**ckpt["config"], "trained_steps": trained_steps(ckpt)}
        net_cfg, diff_cfg = _configs(meta, origin, max_image_px)
    if role is not None and net_cfg.role != role:
        raise CheckpointError(f"{origin}: this is a {net_cfg.role!r} model, but a {role!r} model is needed")
    guidance, by_style = recommended_guidance(meta, origin), style_guidance(meta, origin)
    net = _build(net_cfg, diff_cfg, state, origin).to(device)
    steps = meta.get("trained_steps", 0)
    return LoadedModel(net, net_cfg, diff_cfg, origin, guidance, steps if isinstance(steps, int) else 0, run_in,
                       style_guidance=by_style, grain=grain_profiles(meta, origin))


def weights_size_mb(directory: Path = WEIGHTS_DIR) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*.safetensors")) / 2 ** 20  # in_training/ too


__all__ = ["LoadedModel", "export_weights", "load_model", "read_model_info", "recommended_guidance", "resolve",
           "style_guidance", "weights_size_mb", "WEIGHTS_DIR"]
