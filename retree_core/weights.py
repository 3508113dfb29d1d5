"""Shipped model weights: safetensors (fp16) + a JSON config per model, loadable by name or path.

`weights/concat.safetensors` and `weights/concat.json` form the model named "concat". A training
checkpoint also loads directly (its EMA weights), and converts with `export_weights`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .checkpoint import CheckpointError, atomic_write, load_checkpoint
from .config import DiffusionConfig, NetConfig, from_dict
from .nets import ReTreeUNet, build_net

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass
class LoadedModel:
    """A ready-to-sample network (EMA weights, eval mode) with the configs it was trained under."""

    net: ReTreeUNet
    net_cfg: NetConfig
    diffusion_cfg: DiffusionConfig
    source: str


def _configs(meta: dict, origin: str) -> tuple[NetConfig, DiffusionConfig]:
    try:
        return from_dict(NetConfig, meta["net"]), from_dict(DiffusionConfig, meta["diffusion"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{origin}: config is missing or invalid ({exc})") from None


def _build(net_cfg: NetConfig, state: dict[str, torch.Tensor], origin: str) -> ReTreeUNet:
    net = build_net(net_cfg)
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


def export_weights(checkpoint: str | Path, out_path: str | Path, fp16: bool = True) -> Path:
    """Convert a training checkpoint's EMA weights to `<out>.safetensors` + `<out>.json`."""
    state = load_checkpoint(checkpoint)
    out = Path(out_path).with_suffix("")
    meta = {"net": state["config"]["net"], "diffusion": state["config"]["diffusion"],
            "trained_steps": int(state["step"])}
    _configs(meta, str(checkpoint))  # validate before writing anything
    dtype = torch.float16 if fp16 else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state["ema"].items()}
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


def load_model(name_or_path: str | Path, role: str | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model by name or path without unpickling anything; check its role if one is expected."""
    path = resolve(name_or_path)
    origin = str(path)
    if not path.is_file():
        raise CheckpointError(f"{origin}: no such file")
    if path.suffix == ".safetensors":
        try:
            with safe_open(path, framework="pt") as f:
                state = {k: f.get_tensor(k) for k in f.keys()}
                meta = json.loads((f.metadata() or {}).get("retree", "null"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{origin}: not a readable safetensors file ({exc})") from None
        sidecar = path.with_suffix(".json")
        if meta is None and sidecar.exists():
            meta = json.loads(sidecar.read_text())
        if meta is None:
            raise CheckpointError(f"{origin}: no ReTree config in its metadata and no {sidecar.name} beside it")
    else:
        ckpt = load_checkpoint(path)
        state, meta = ckpt["ema"], ckpt["config"]
    net_cfg, diff_cfg = _configs(meta, origin)
    if role is not None and net_cfg.role != role:
        raise CheckpointError(f"{origin}: this is a {net_cfg.role!r} model, but a {role!r} model is needed")
    net = _build(net_cfg, state, origin).to(device)
    return LoadedModel(net, net_cfg, diff_cfg, origin)


def weights_size_mb(directory: Path = WEIGHTS_DIR) -> float:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors")) / 2 ** 20


__all__ = ["LoadedModel", "export_weights", "load_model", "resolve", "weights_size_mb", "WEIGHTS_DIR"]
