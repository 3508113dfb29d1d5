"""Networks: the ReTree denoiser UNet and its blocks."""
from .unet import ReTreeUNet, build_net, count_parameters

__all__ = ["ReTreeUNet", "build_net", "count_parameters"]
