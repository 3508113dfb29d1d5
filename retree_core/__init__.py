"""ReTree: two-stage diffusion for retinal fundus images (vessel tree -> fundus photograph)."""

__version__ = "0.1.0"

import os

MAX_IMAGE_PIXELS = 50_000_000  # image files declaring more pixels are refused (decompression bombs)
# OpenCV, the fallback decoder of data.imageio, reads its own limit (default 2^30 pixels) once, when cv2 is
# imported: set here, before any module of the package imports cv2, it refuses such files before allocating.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
