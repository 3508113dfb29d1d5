"""ONNX export of a model's denoising network, for runtimes outside PyTorch (onnxruntime, TensorRT, ...).

The graph is one noise prediction: inputs `x_t` (B, C, H, W) float32 in the model's [-1, 1] space, `t` (B,)
int64 timesteps in [0, T) and, for concat and SPADE, `mask` (B, 1, H, W) float32 with vessels +1 and
background -1 (all zeros: the unconditional branch of classifier-free guidance); output `eps` (B, C, H, W)
(a v-prediction model's output is turned into eps inside the graph). The file's metadata holds what a
sampler needs: the noise schedule, the recommended guidance, sizes and channels (`read_metadata`).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from . import __version__
from .config import to_dict
from .diffusion import NoiseSchedule
from .weights import LoadedModel

OPSET = 17
ROLES = ("vessel", "concat", "spade")  # the diffusion models; the segmenter and sr are not exported


class NoisePrediction(nn.Module):
    """The network as the samplers see it: eps for (x_t, t, mask), float32 in and out."""

    def __init__(self, model: LoadedModel):
        super().__init__()
        self.net = model.net.float().eval()
        self.v = model.diffusion_cfg.prediction == "v"
        self.register_buffer("alpha_bar", NoiseSchedule(model.diffusion_cfg).alpha_bar.float())

    def forward(self, x: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
        out = self.net(x, t, mask).float()
        if not self.v:
            return out
        ab = self.alpha_bar[t].view(-1, 1, 1, 1)
        return ab.sqrt() * out + (1 - ab).sqrt() * x


def export_onnx(model: LoadedModel, path: str | Path) -> Path:
    """Write `model`'s noise prediction to `path` (.onnx) with its sampling metadata; needs the `onnx` package."""
    try:
        import onnx
    except ImportError:
        raise OSError("ONNX export needs the onnx package: pip install onnx (or the package's onnx extra)") from None
    role = model.net_cfg.role
    if role not in ROLES:
        raise ValueError(f"{model.source}: a {role!r} model; ONNX export is for the diffusion models "
                         f"({', '.join(ROLES)})")
    path = Path(path).with_suffix(".onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    size, channels = model.net_cfg.image_size, model.net_cfg.image_channels
    example = [torch.zeros(1, channels, size, size), torch.zeros(1, dtype=torch.long)]
    names = ["x_t", "t"]
    if model.net_cfg.conditional:
        example.append(torch.zeros(1, 1, size, size))
        names.append("mask")
    with warnings.catch_warnings():  # the TorchScript exporter's notes on constant folding and tracing
        warnings.simplefilter("ignore")
        torch.onnx.export(NoisePrediction(model), tuple(example), str(path), input_names=names, output_names=["eps"],
                          dynamic_axes={name: {0: "batch"} for name in [*names, "eps"]}, opset_version=OPSET,
                          dynamo=False)
    graph = onnx.load(str(path))
    meta = {"retree": __version__, "source": Path(model.source).stem, "role": role, "image_size": str(size),
            "channels": str(channels), "guidance": str(model.guidance), "trained_steps": str(model.trained_steps),
            "diffusion": json.dumps(to_dict(model.diffusion_cfg)), "output": "eps"}
    if model.net_cfg.styles:  # the graph takes no style input: it is the model's "any" path
        meta["style"] = f"any (the model's styles {', '.join(model.net_cfg.styles)} are not in the graph)"
    onnx.helper.set_model_props(graph, meta)
    onnx.save(graph, str(path))
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata `export_onnx` stored (needs the `onnx` package)."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


__all__ = ["NoisePrediction", "export_onnx", "read_metadata"]
