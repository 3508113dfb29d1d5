"""Malformed inputs at every place a user gives input: 245 cases, each refused with the right kind of
error and a message that names the problem, quickly (each well under a second here), and without leaving
a file behind.

    image files: mask uploads, the /generate API's mask, a photograph        55
    sketch-canvas values sent by the editor                                  20
    generation options: the /generate API and the Run button                 38
    model files uploaded in the Generate tab                                  6
    command line: exit code 2 and a message on stderr, never a traceback     47
    dataset folders: make_dataset, find_samples_many, the Train tab          20
    dataset zips: training_data, unpack_zip, the Train tab                   27
    weight and checkpoint files: load_model, ModelCatalog, load_checkpoint   32

Each case is (id, how its input is made, the error expected, words its message must contain); the id's
first words say its area (AREAS). After the table: odd but valid image modes are accepted, and the app's
handlers still serve valid requests after a series of bad ones.
"""
from __future__ import annotations

import functools
import io
import json
import os
import pickle
import re
import stat
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from retree_studio import ui
from retree_studio.settings import StudioSettings
from retree_studio.archives import ZipLimits, unpack_zip
from retree_studio.catalog import ModelCatalog
from retree_core.checkpoint import CheckpointError, load_checkpoint
from retree_core.cli import main as cli_main
from retree_core.data import DataError, find_samples_many, make_dataset, read_rgb
from retree_studio.mask_sources import LoadedMask, current_mask, random_tree
from retree_studio.services import Studio
from retree_studio.training_data import training_data
from retree_core.weights import load_model

from hostile import Payload, pickled_checkpoint

pytestmark = pytest.mark.timeout(60)

REQUEST = SimpleNamespace(session_hash="malformed")
CASE_LIMIT_S = 10.0  # generous on a busy 2-core machine; the cases take milliseconds
CLI, NOTE = "cli", "note"  # expected outcomes besides exception classes


@dataclass
class Ctx:
    """What a case builds its input from: a fresh folder, the shared app handlers, a tiny model."""

    tmp: Path
    handlers: ui.Handlers
    weights: Path  # tiny concat model (.safetensors with a .json beside it)
    checkpoint: Path  # its training checkpoint

    def path(self, name: str, data: bytes | None = None) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        return str(path)


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Ctx], Callable[[], object]]  # builds the input, returns the call that must fail
    error: type | str  # an exception class, CLI (exit code 2) or NOTE (a note instead of an error)
    words: str  # the message names the problem with these words


CASES: list[Case] = []


def case(id: str, error: type | str, words: str):
    def register(make):
        CASES.append(Case(id, make, error, words))
        return make
    return register


def cases(error: type | str, table: list[tuple[str, str, object]], make: Callable[[Ctx, object], Callable]):
    """Register one case per (id, words, input) row; `make(ctx, input)` builds it, returns the call."""
    for id, words, value in table:
        CASES.append(Case(id, lambda ctx, value=value: make(ctx, value), error, words))


# --- building inputs -------------------------------------------------------------------------------
def tree_array(size: int = 64) -> np.ndarray:
    arr = np.zeros((size, size), np.uint8)
    arr[size // 2 - 2: size // 2 + 2, :] = 255
    arr[:, size // 3: size // 3 + 4] = 255
    return arr


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def tree(mode: str = "L", size: int = 64) -> Image.Image:
    return Image.fromarray(tree_array(size)).convert(mode)


def uniform(mode: str, value, size: int = 64) -> Image.Image:
    return Image.new(mode, (size, size), value)


GOOD_PNG = encode(tree())
GOOD_JPEG = encode(tree("RGB"), "JPEG", quality=90)
GOOD_TIFF = encode(tree(), "TIFF")
GOOD_GIF = encode(tree().convert("P"), "GIF")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, extra: bytes = b"") -> bytes:
    """A small PNG whose header declares width x height (8-bit grey); its data is a few zeros."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return (b"\x89PNG\r\n\x1a\n" + header + extra + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + png_chunk(b"IEND", b""))


def tiff_declaring(width: int, height: int) -> bytes:
    """A little-endian grey TIFF whose IFD declares width x height, with 8 bytes of pixel data."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8),
            (277, 3, 1), (278, 4, height), (279, 4, width * height)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", tag, kind, 1, value)
                                                  for tag, kind, value in tags) + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 16) + b"\0" * 8 + ifd


def jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(GOOD_JPEG)
    sof = data.find(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(GOOD_GIF)
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def damaged(data: bytes, start: int, length: int = 32) -> bytes:
    noise = np.random.default_rng(start).integers(0, 256, length, dtype=np.uint8).tobytes()
    return data[:start] + noise + data[start + length:]


def image_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else encode(*value) if isinstance(value, tuple) else encode(value)


@functools.cache
def tree_mask() -> LoadedMask:
    return LoadedMask.from_mask(random_tree(1), "random tree (seed 1)")


# --- mask uploads ------------------------------------------------------------------------------------
UPLOADS = [  # (file name, words, content: bytes, a PIL image or (image, format, options))
    ("empty.png", "empty", b""),
    ("text.png", "unreadable", b"a vessel mask, honestly"),
    ("page.png", "unreadable", b"<html><body>not a picture</body></html>"),
    ("random.png", "unreadable", np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes()),
    ("document.png", "unreadable", b"%PDF-1.4\n1 0 obj << >> endobj\n"),
    ("drawing.png", "unreadable", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'),
    ("archive.png", "unreadable", b"PK\x03\x04" + b"\0" * 60),
    ("elf.png", "unreadable", b"\x7fELF\x02\x01\x01" + b"\0" * 60),
    ("signature_only.png", "unreadable", b"\x89PNG\r\n\x1a\n"),
    ("cut_in_header.png", "unreadable", GOOD_PNG[:20]),
    ("cut_in_half.png", "unreadable", GOOD_PNG[: len(GOOD_PNG) // 2]),
    ("bad_pixels.png", "unreadable", damaged(GOOD_PNG, 60)),
    ("bad_header_crc.png", "unreadable", damaged(GOOD_PNG, 29, 4)),
    ("text_chunk_bomb.png", "unreadable",
     png_declaring(64, 64, png_chunk(b"zTXt", b"note\0\0" + zlib.compress(b"\0" * (20 * 2**20))))),
    ("cut_in_half.jpg", "unreadable", GOOD_JPEG[: len(GOOD_JPEG) // 2]),
    ("start_marker_only.jpg", "unreadable", GOOD_JPEG[:4]),
    ("bad_data.jpg", "unreadable", damaged(GOOD_JPEG, 200, 60)),
    ("cut_in_half.tif", "unreadable", GOOD_TIFF[: len(GOOD_TIFF) // 2]),
    ("header_only.tif", "unreadable", GOOD_TIFF[:8]),
    ("bad_directory.tif", "unreadable", damaged(GOOD_TIFF, 8)),
    ("cut_in_half.gif", "unreadable", GOOD_GIF[: len(GOOD_GIF) // 2]),
    ("header_only.gif", "unreadable", GOOD_GIF[:13]),
    ("bomb_20000x20000.png", "too large", png_declaring(20000, 20000)),
    ("bomb_1000000x20.png", "too large", png_declaring(1_000_000, 20)),
    ("bomb_65535x65535.gif", "too large", gif_declaring(65535, 65535)),
    ("bomb_65500x65500.jpg", "too large", jpeg_declaring(65500, 65500)),
    ("bomb_50000x50000.tif", "too large", tiff_declaring(50000, 50000)),
    ("bomb_30000x30000.pgm", "too large", b"P5 30000 30000 255\n" + b"\0" * 64),
    ("radiance_bomb.png", "too large",  # Pillow does not know it: the OpenCV fallback must refuse it
     b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n" + b"\x02\x02" + b"\0" * 64),
    ("black.png", "no vessel", uniform("L", 0)),
    ("white.png", "entirely white", uniform("L", 255)),
    ("one_black_pixel.png", "no vessel", uniform("L", 0, 1)),
    ("one_white_pixel.png", "entirely white", uniform("L", 255, 1)),
    ("transparent.png", "no vessel", uniform("RGBA", (0, 0, 0, 0))),
    ("opaque_white.png", "entirely white", uniform("RGBA", (255, 255, 255, 255))),
    ("grey_alpha_blank.png", "no vessel", uniform("LA", (0, 0))),
    ("palette_one_colour.png", "no vessel", uniform("P", 3)),
    ("palette_one_colour.gif", "no vessel", (uniform("P", 0), "GIF")),
    ("sixteen_bit_white.png", "entirely white", Image.fromarray(np.full((64, 64), 65535, np.uint16))),
    ("sixteen_bit_black.png", "no vessel", Image.fromarray(np.zeros((64, 64), np.uint16))),
    ("cmyk_black.jpg", "no vessel", (uniform("CMYK", (0, 0, 0, 255)), "JPEG")),
    ("one_bit_black.png", "no vessel", uniform("1", 0)),
    ("one_bit_white.png", "entirely white", uniform("1", 1)),
    ("float_zero.tif", "no vessel", (Image.fromarray(np.zeros((64, 64), np.float32)), "TIFF")),
    ("float_nan.tif", "no vessel", (Image.fromarray(np.full((64, 64), np.nan, np.float32)), "TIFF")),
    ("uniform_grey.jpg", "one flat light shade", (uniform("RGB", (128, 128, 128)), "JPEG")),
]


def upload(ctx: Ctx, row) -> Callable:
    name, content = row
    path = ctx.path(name, image_bytes(content))
    return lambda: ctx.handlers.load_upload(path)


cases(gr.Error, [(f"upload {name}", words, (name, content)) for name, words, content in UPLOADS], upload)


@case("upload over the byte limit", gr.Error, "21.0 MB is too large for a mask (limit 20 MB)")
def _(ctx):
    path = ctx.path("huge_file.png", GOOD_PNG)
    with open(path, "r+b") as f:
        f.truncate(ctx.handlers.mask_limits.max_bytes + 2**20)  # sparse: no time or disk spent
    return lambda: ctx.handlers.load_upload(path)


@case("upload that did not arrive", gr.Error, "did not arrive")
def _(ctx):
    return lambda: ctx.handlers.load_upload(str(ctx.tmp / "never_written.png"))


@case("upload of a folder", gr.Error, "did not arrive")
def _(ctx):
    folder = ctx.path("folder.png/inner", GOOD_PNG).rsplit("/", 1)[0]
    return lambda: ctx.handlers.load_upload(folder)


def api(ctx: Ctx, mask_path: str, **options):
    args = {"mode": "concat", "sampler": "dpmpp", "steps": 2, "guidance": 1.0, "seed": 0, **options}
    return ctx.handlers.api_generate(mask_path, *args.values(), request=REQUEST)


@case("upload to the API: a one-pixel line that vanishes at the model's size", gr.Error,
      "thin_line.png: no vessel pixel is left")
def _(ctx):
    arr = np.zeros((1, 64), np.uint8)
    arr[0, 10:50] = 255
    path = ctx.path("thin_line.png", encode(Image.fromarray(arr)))
    return lambda: api(ctx, path)


@case("upload to the API: none", gr.Error, "send a mask image")
def _(ctx):
    return lambda: api(ctx, None)


@case("upload to the API: a server file", gr.Error, "passwd: unreadable")
def _(ctx):
    return lambda: api(ctx, "/etc/passwd")


@case("upload to the API: a decompression bomb", gr.Error, "too large")
def _(ctx):
    path = ctx.path("api_bomb.png", png_declaring(20000, 20000))
    return lambda: api(ctx, path)


@case("upload to the API: text", gr.Error, "unreadable")
def _(ctx):
    path = ctx.path("api_text.png", b"hello")
    return lambda: api(ctx, path)


# --- the sketch canvas -------------------------------------------------------------------------------
BLANK = np.zeros((64, 64, 3), np.uint8)
CANVAS = [  # (id, words, value as gradio's ImageEditor would send it)
    ("no value", "canvas is empty", None),
    ("empty dict", "canvas is empty", {}),
    ("nothing in it", "canvas is empty", {"background": None, "layers": [], "composite": None}),
    ("layers None", "canvas is empty", {"background": None, "layers": None, "composite": None}),
    ("blank background", "canvas is empty", {"background": BLANK, "layers": [], "composite": None}),
    ("transparent composite", "canvas is empty", {"composite": np.zeros((64, 64, 4), np.uint8)}),
    ("NaN composite", "holds NaN or infinite values", {"composite": np.full((64, 64), np.nan, np.float32)}),
    ("a file reference", "canvas is empty", {"path": "/etc/passwd", "url": None}),
    ("a string", "Cannot read the canvas", "data:image/png;base64,AAAA"),
    ("a number", "Cannot read the canvas", 7),
    ("a list of numbers", "Cannot read the canvas", [1, 2, 3]),
    ("composite as a string", "Cannot read the canvas", {"composite": "data:image/png;base64,AAAA"}),
    ("one-dimensional composite", "Cannot read the canvas", {"composite": np.zeros(10, np.uint8)}),
    ("four-dimensional composite", "Cannot read the canvas", {"composite": np.zeros((2, 8, 8, 4), np.uint8)}),
    ("five channels", "Cannot read the canvas", {"composite": np.zeros((8, 8, 5), np.uint8)}),
    ("zero-size composite", "Cannot read the canvas", {"composite": np.zeros((0, 0, 4), np.uint8)}),
    ("object array", "Cannot read the canvas", {"composite": np.array([[object(), object()]])}),
    ("complex numbers", "Cannot read the canvas", {"composite": np.zeros((8, 8), np.complex64)}),
    ("a layer that is a string", "Cannot read the canvas", {"background": BLANK, "layers": ["x"], "composite": None}),
    ("one-dimensional background", "Cannot read the canvas", {"background": np.zeros(5, np.uint8), "layers": []}),
]
cases(NOTE, [(f"canvas {id}", words, value) for id, words, value in CANVAS],
      lambda ctx, value: lambda: ctx.handlers.canvas_changed(value, "draw", None, "concat", "concat", REQUEST))


# --- generation options ------------------------------------------------------------------------------
OPTIONS = [  # (id, words, one option out of range; the others valid)
    ("steps 0", "steps must be", {"steps": 0}),
    ("steps 1e9", "steps must be", {"steps": 1e9}),
    ("steps negative", "steps must be", {"steps": -3}),
    ("steps fractional", "steps must be", {"steps": 2.5}),
    ("steps text", "steps must be a whole number", {"steps": "many"}),
    ("steps missing", "steps must be a whole number", {"steps": None}),
    ("steps NaN", "steps must be", {"steps": float("nan")}),
    ("steps infinite", "steps must be", {"steps": float("inf")}),
    ("steps true", "steps must be a whole number", {"steps": True}),
    ("guidance negative", "guidance must be", {"guidance": -2.0}),
    ("guidance NaN", "guidance must be", {"guidance": float("nan")}),
    ("guidance infinite", "guidance must be", {"guidance": float("inf")}),
    ("guidance 1e9", "guidance must be", {"guidance": 1e9}),
    ("guidance text", "guidance must be a number", {"guidance": "strong"}),
    # guidance missing (None) is the model's recommended scale (tests/test_app_events.py)
    ("sampler unknown", "unknown sampler", {"sampler": "euler"}),
    ("sampler missing", "unknown sampler", {"sampler": None}),
    ("sampler empty", "unknown sampler", {"sampler": ""}),
    ("sampler in capitals", "unknown sampler", {"sampler": "DPMPP"}),
    ("mode unknown", "mode must be concat or spade", {"mode": "cartoon"}),
    ("mode missing", "mode must be concat or spade", {"mode": None}),
    ("mode empty", "mode must be concat or spade", {"mode": ""}),
    ("mode without a model", "No spade model yet", {"mode": "spade"}),
    ("seed negative", "seed must be", {"seed": -1}),
    ("seed huge", "seed must be", {"seed": 2**40}),
    ("seed fractional", "seed must be", {"seed": 1.5}),
    ("seed text", "seed must be a whole number", {"seed": "lucky"}),
    ("seed missing", "seed must be a whole number", {"seed": None}),
    ("seed NaN", "seed must be", {"seed": float("nan")}),
    ("style the model lacks", "style 'DRIVE' is not one this model knows; it offers: any", {"style": "DRIVE"}),
    ("style a number", "style must be a style's name", {"style": 5}),
]
cases(gr.Error, [(f"API {id}", words, options) for id, words, options in OPTIONS],
      lambda ctx, options: functools.partial(api, ctx, ctx.path("mask.png", GOOD_PNG), **options))


def run(ctx: Ctx, custom: str | None = None, **options):
    args = {"role": "concat", "label": None, "custom": custom, "sampler": "ddim", "steps": 2, "guidance": 1.0,
            "seed": 0, "super_res": True, **options}
    return next(ctx.handlers.run("loaded", None, tree_mask(), *args.values(), request=REQUEST))


RUN_OPTIONS = [("steps 0", "steps must be", {"steps": 0}), ("steps 1e9", "steps must be", {"steps": 10**9}),
               ("guidance negative", "guidance must be", {"guidance": -1}),
               ("guidance NaN", "guidance must be", {"guidance": float("nan")}),
               ("sampler unknown", "unknown sampler", {"sampler": "euler"}),
               ("mode unknown", "mode must be concat or spade", {"role": "sketch"}),
               ("seed negative", "seed must be", {"seed": -5}),
               ("seed huge", "seed must be", {"seed": 2**63})]
cases(gr.Error, [(f"Run {id}", words, options) for id, words, options in RUN_OPTIONS],
      lambda ctx, options: functools.partial(run, ctx, **options))


# --- uploaded model files (Generate tab, "Use your own model file") ----------------------------------
def evil_checkpoint(ctx: Ctx, name: str = "evil.ckpt") -> str:
    return str(pickled_checkpoint(ctx.tmp / name, ctx.tmp / "PWNED"))


CUSTOM = [  # (id, words, the file uploaded as a model)
    ("a checkpoint with a pickled object", "posix.mkdir, refused", evil_checkpoint),
    ("random bytes", "not a readable safetensors file", lambda c: c.path("random.safetensors", os.urandom(2000))),
    ("an image", "ends in .safetensors or .ckpt", lambda c: c.path("photo.png", GOOD_PNG)),
    ("truncated", "not a readable safetensors file",
     lambda c: c.path("cut.safetensors", c.weights.read_bytes()[:5000])),
]
cases(gr.Error, [(f"custom model: {id}", words, build) for id, words, build in CUSTOM],
      lambda ctx, build: functools.partial(run, ctx, build(ctx)))


@case("custom model: the wrong role", gr.Error, "but a 'spade' model is needed")
def _(ctx):
    return lambda: run(ctx, str(ctx.weights), role="spade")


@case("custom model: missing", gr.Error, "no such file")
def _(ctx):
    return lambda: run(ctx, str(ctx.tmp / "gone.safetensors"))


# --- the command line --------------------------------------------------------------------------------
def masks_folder(ctx: Ctx, *extra: tuple[str, bytes]) -> str:
    folder = ctx.tmp / "masks"
    for name, data in (("seg_1.png", GOOD_PNG), *extra):
        ctx.path(f"masks/{name}", data)
    return str(folder)


def generate_argv(ctx: Ctx, *argv: str) -> list[str]:
    return ["generate", "--weights", str(ctx.weights), "--masks", masks_folder(ctx), "--steps", "2",
            "--output_dir", str(ctx.tmp / "out"), *argv]


def train_argv(ctx: Ctx, *argv: str) -> list[str]:
    return ["train", "--preset", "tiny", "--image_size", "16", "--max_steps", "2", "--no_progress",
            "--output_dir", str(ctx.tmp / "run"), *argv]


CLI_CASES = [  # (id, words, argv builder)
    ("generate steps 0", "--steps: must be at least 1", lambda c: generate_argv(c, "--steps", "0")),
    ("generate steps 1e9", "steps must be a whole number from 1 to 1000", lambda c: generate_argv(c, "--steps", "1e9")),
    ("generate steps 10^9", "steps must be a whole number from 1 to 1000",
     lambda c: generate_argv(c, "--steps", "1000000000")),
    ("generate steps text", "--steps: must be a whole number", lambda c: generate_argv(c, "--steps", "many")),
    ("generate negative guidance", "guidance must be between 0 and 20", lambda c: generate_argv(c, "--guidance", "-1")),
    ("generate NaN guidance", "guidance must be between 0 and 20", lambda c: generate_argv(c, "--guidance", "nan")),
    ("generate infinite guidance", "guidance must be between 0 and 20",
     lambda c: generate_argv(c, "--guidance", "inf")),
    ("generate unknown sampler", "--sampler: invalid choice: 'euler'",
     lambda c: generate_argv(c, "--sampler", "euler")),
    ("generate unknown mode", "--mode: invalid choice: 'vessel'", lambda c: generate_argv(c, "--mode", "vessel")),
    ("generate negative seed", "--seed: must be a whole number from 0", lambda c: generate_argv(c, "--seed", "-5")),
    ("generate huge seed", "--seed: must be a whole number from 0", lambda c: generate_argv(c, "--seed", str(2**70))),
    ("generate seed text", "--seed: must be a whole number", lambda c: generate_argv(c, "--seed", "x")),
    ("generate batch 0", "--batch_size: must be at least 1", lambda c: generate_argv(c, "--batch_size", "0")),
    ("generate unknown device", "--device: unknown device 'tpu9'", lambda c: generate_argv(c, "--device", "tpu9")),
    ("generate device without CUDA", "--device: cuda:7", lambda c: generate_argv(c, "--device", "cuda:7")),
    ("generate plausibility NaN", "--min_plausibility: must be a number from 0 to 1",
     lambda c: ["generate", "--weights", str(c.weights), "--num", "1", "--min_plausibility", "nan"]),
    ("generate num 0", "--num: must be at least 1", lambda c: ["generate", "--weights", str(c.weights), "--num", "0"]),
    ("generate without masks", "one of the arguments --masks --num --edit is required",
     lambda c: ["generate", "--weights", str(c.weights)]),
    ("generate missing weights file", "missing.safetensors: no such file",
     lambda c: ["generate", "--weights", str(c.tmp / "missing.safetensors"), "--masks", masks_folder(c)]),
    ("generate unknown model name", "no model named 'nosuchmodel'",
     lambda c: ["generate", "--weights", "nosuchmodel", "--masks", masks_folder(c)]),
    ("generate missing checkpoint", "missing.ckpt: no such file",
     lambda c: ["generate", "--checkpoint", str(c.tmp / "missing.ckpt"), "--masks", masks_folder(c)]),
    ("generate pickled checkpoint", "posix.mkdir, refused",
     lambda c: ["generate", "--checkpoint", evil_checkpoint(c), "--masks", masks_folder(c)]),
    ("generate weights of the wrong role", "but a 'spade' model is needed",
     lambda c: generate_argv(c, "--mode", "spade")),
    ("generate masks folder missing", "no_masks: not a folder",
     lambda c: ["generate", "--weights", str(c.weights), "--masks", str(c.tmp / "no_masks")]),
    ("generate masks folder without images", "notes: no image files",
     lambda c: ["generate", "--weights", str(c.weights), "--masks", str(Path(c.path("notes/a.txt", b"x")).parent)]),
    ("generate a black mask among good ones", "seg_2.png: mask has no vessel pixel",
     lambda c: ["generate", "--weights", str(c.weights), "--steps", "2", "--output_dir", str(c.tmp / "out"),
                "--masks", masks_folder(c, ("seg_2.png", encode(uniform("L", 0))))]),
    ("generate an unreadable mask", "seg_3.png: unreadable image",
     lambda c: ["generate", "--weights", str(c.weights), "--steps", "2", "--output_dir", str(c.tmp / "out"),
                "--masks", masks_folder(c, ("seg_3.png", b"junk"))]),
    ("unknown command", "invalid choice: 'frobnicate'", lambda c: ["frobnicate"]),
    ("no command", "required: command", lambda c: []),
    ("unknown option", "unrecognized arguments: --frob", lambda c: generate_argv(c, "--frob")),
    ("train unknown preset", "--preset: invalid choice: 'huge'", lambda c: train_argv(c, "--preset", "huge")),
    ("train image size 0", "--image_size: must be a whole number from 8", lambda c: train_argv(c, "--image_size", "0")),
    ("train image size 10^6", "--image_size: must be a whole number from 8",
     lambda c: train_argv(c, "--image_size", "1000000")),
    ("train size the preset cannot take", "must be divisible by 8",
     lambda c: train_argv(c, "--preset", "paper", "--image_size", "20")),
    ("train NaN learning rate", "--lr: must be a number above 0", lambda c: train_argv(c, "--lr", "nan")),
    ("train negative learning rate", "--lr: must be a number above 0", lambda c: train_argv(c, "--lr", "-1")),
    ("train EMA decay 2", "--ema_decay: must be a number from 0 to 1", lambda c: train_argv(c, "--ema_decay", "2")),
    ("train mask dropout 5", "--p_uncond: must be a number from 0 to 1", lambda c: train_argv(c, "--p_uncond", "5")),
    ("train noise steps 10^12", "--noise_steps: must be a whole number from 1",
     lambda c: train_argv(c, "--noise_steps", str(10**12))),
    ("train negative workers", "--num_workers: must be a whole number from 0",
     lambda c: train_argv(c, "--num_workers", "-1")),
    ("train unknown device", "--device: unknown device", lambda c: train_argv(c, "--device", "quantum")),
    ("train missing data folder", "no_data: not a folder",
     lambda c: train_argv(c, "--data_root", str(c.tmp / "no_data"))),
    ("export missing checkpoint", "no such checkpoint file",
     lambda c: ["export", "--checkpoint", str(c.tmp / "none.ckpt"), "--out", str(c.tmp / "exported")]),
    ("export a truncated weights file", "not a readable safetensors file",
     lambda c: ["export", "--checkpoint", c.path("cut.safetensors", c.weights.read_bytes()[:100]),
                "--out", str(c.tmp / "exported")]),
    ("export a scale for a style the model lacks", "sample.guidance_by_style",
     lambda c: ["export", "--checkpoint", str(c.weights), "--out", str(c.tmp / "exported"),
                "--style_guidance", "DRIVE=1"]),
    ("evaluate missing data folder", "no_data: not a folder",
     lambda c: ["evaluate", "--data_root", str(c.tmp / "no_data"), "--output_dir", str(c.tmp / "eval")]),
    ("evaluate unknown segmenter", "--segmenter unet: no such segmenter",
     lambda c: ["evaluate", "--data_root", str(c.tmp), "--segmenter", "unet", "--output_dir", str(c.tmp / "eval")]),
]
cases(CLI, [(f"CLI {id}", words, argv) for id, words, argv in CLI_CASES],
      lambda ctx, argv: functools.partial(cli_main, argv(ctx)))


# --- dataset folders ---------------------------------------------------------------------------------
def seed_dataset(ctx: Ctx, name: str = "data", pairs: int = 2, size: int = 32) -> Path:
    root = ctx.tmp / name
    for i in range(pairs):
        ctx.path(f"{name}/images/img_{i}.png", encode(tree("RGB", size)))
        ctx.path(f"{name}/masks/seg_{i}.png", encode(tree("L", size)))
    return root


def spoilt(change: Callable[[Ctx, Path], object], name: str = "data"):
    """A seed-layout dataset with one change; the call reads it as make_dataset does before training."""
    def make(ctx):
        root = seed_dataset(ctx, name)
        change(ctx, root)
        return lambda: make_dataset([root], 16)
    return make


FOLDERS = [  # (id, words, change to a good two-pair dataset)
    ("an image without a mask", "img_1.png: no mask for this image", lambda c, r: (r / "masks/seg_1.png").unlink()),
    ("a mask without an image", "seg_1.png: no image for this mask", lambda c, r: (r / "images/img_1.png").unlink()),
    ("two images of one name", "duplicate name '0'", lambda c, r: c.path("data/images/img_0.jpg", GOOD_JPEG)),
    ("an empty mask", "seg_0.png: empty mask",
     lambda c, r: c.path("data/masks/seg_0.png", encode(uniform("L", 0, 32)))),
    ("an all-vessel mask", "seg_0.png: the mask is all vessel",
     lambda c, r: c.path("data/masks/seg_0.png", encode(uniform("L", 255, 32)))),
    ("image and mask sizes differ", "size mismatch: image 32x32, mask 40x40",
     lambda c, r: c.path("data/masks/seg_0.png", encode(tree("L", 40)))),
    ("an unreadable image", "img_0.png: unreadable image", lambda c, r: c.path("data/images/img_0.png", b"garbage")),
    ("an empty image file", "img_1.png: the file is empty", lambda c, r: c.path("data/images/img_1.png", b"")),
    ("a truncated mask", "seg_1.png: unreadable image",
     lambda c, r: c.path("data/masks/seg_1.png", encode(tree("L", 32))[:60])),
    ("a decompression bomb", "seg_0.png: image too large",
     lambda c, r: c.path("data/masks/seg_0.png", png_declaring(20000, 20000))),
    ("an image linked to a system file", "img_2.png: unreadable image",
     lambda c, r: ((r / "images/img_2.png").symlink_to("/etc/passwd"), c.path("data/masks/seg_2.png", GOOD_PNG))),
    ("a broken link", "seg_2.png: no image for this mask",
     lambda c, r: ((r / "images/img_2.png").symlink_to(c.tmp / "nowhere.png"),
                   c.path("data/masks/seg_2.png", GOOD_PNG))),
    ("an FOV folder missing one", "img_1.png: no FOV mask for this image",
     lambda c, r: c.path("data/fov/fov_0.png", GOOD_PNG)),
]
for id, words, change in FOLDERS:
    CASES.append(Case(f"dataset folder with {id}", spoilt(change), DataError, words))


@case("dataset folder in no known layout", DataError, "no known dataset layout; found 1 .txt")
def _(ctx):
    ctx.path("odd/notes.txt", b"x")
    return lambda: make_dataset([ctx.tmp / "odd"], 16)


@case("dataset folder that is empty", DataError, "no known dataset layout; found no files")
def _(ctx):
    (ctx.tmp / "hollow").mkdir()
    return lambda: make_dataset([ctx.tmp / "hollow"], 16)


@case("dataset folder that does not exist", DataError, "absent: not a folder")
def _(ctx):
    return lambda: make_dataset([ctx.tmp / "absent"], 16)


@case("dataset folders of one name", DataError, "two data roots with the same folder name")
def _(ctx):
    first, second = seed_dataset(ctx, "a/same"), seed_dataset(ctx, "b/same")
    return lambda: find_samples_many([first, second])


@case("dataset folder without validation images", DataError, "no val samples")
def _(ctx):
    root = seed_dataset(ctx)
    return lambda: make_dataset([root], 16, split="val")


@case("dataset folder: DRIVE without manual labels", DataError, "21_training.tif: no mask for this image")
def _(ctx):
    ctx.path("DRIVE/training/images/21_training.tif", encode(tree("RGB", 32), "TIFF"))
    (ctx.tmp / "DRIVE/training/1st_manual").mkdir()
    return lambda: make_dataset([ctx.tmp / "DRIVE"], 16)


@case("dataset folder with an unpaired image, from the Train tab", gr.Error, "no mask for this image")
def _(ctx):
    root = seed_dataset(ctx)
    (root / "masks/seg_0.png").unlink()
    return lambda: train_start(ctx, source="folder", folder=str(root))


# --- dataset zips ------------------------------------------------------------------------------------
GOOD_PAIR = [("images/img_0.png", encode(tree("RGB", 32))), ("masks/seg_0.png", encode(tree("L", 32)))]


def zip_bytes(entries, compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def link_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def lying_sizes(data: bytes, declared: int) -> bytes:
    """A stored zip whose local and central headers declare `declared` bytes for its one member."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = out.find(signature)
        out[at + offset: at + offset + 4] = struct.pack("<I", declared)
    return bytes(out)


ZIPS = [  # (id, words, zip bytes, limits)
    ("a climbing entry", "'../escape.png' points outside the archive", zip_bytes([("../escape.png", b"x")])),
    ("a deep climbing entry", "points outside the archive", zip_bytes([("images/../../../escape.png", b"x")])),
    ("an absolute entry", "'/etc/cron.d/x' points outside the archive", zip_bytes([("/etc/cron.d/x", b"x")])),
    ("a drive-letter entry", "points outside the archive", zip_bytes([("C:/Windows/x.png", b"x")])),
    ("a backslash climbing entry", "points outside the archive", zip_bytes([("..\\..\\escape.png", b"x")])),
    ("a symbolic link", "is a link; links are not accepted",
     zip_bytes([link_entry("images/img_0.png", "/etc/passwd")])),
    ("a zip inside", "zips inside the zip are not unpacked", zip_bytes([("data.zip", zip_bytes(GOOD_PAIR))])),
    ("too many entries", "30 entries, more than the 20 allowed",
     zip_bytes([(f"images/img_{i}.png", b"") for i in range(30)]), ZipLimits(max_members=20)),
    ("declared sizes over the limit", "unpacks to 3 MB, more than the 1 MB allowed",
     zip_bytes([("images/img_0.png", b"\0" * (3 * 2**20))], zipfile.ZIP_DEFLATED), ZipLimits(max_unpacked_bytes=2**20)),
    ("a zip bomb", "which looks like a zip bomb",
     zip_bytes([("images/img_0.png", b"\0" * (8 * 2**20))], zipfile.ZIP_DEFLATED)),
    ("a bomb of 1 MiB members", "compressed 1015x in all, which looks like a zip bomb",
     zip_bytes([(f"images/img_{i}.png", b"\0" * 2**20) for i in range(48)], zipfile.ZIP_DEFLATED)),
    ("more entries than the end record allows", "65535+ entries, more than the 20 allowed",
     zip_bytes([(f"images/img_{i}.png", b"") for i in range(0xFFFF + 3)]), ZipLimits(max_members=20)),
    ("sizes that lie", "damaged zip", lying_sizes(zip_bytes([("images/img_0.png", b"A" * 5000)]), 10)),
    ("a bad checksum", "damaged zip (BadZipFile: Bad CRC-32", damaged(zip_bytes(GOOD_PAIR), 80, 8)),
    ("text named .zip", "not a readable zip file", b"this is not a zip"),
    ("an image named .zip", "not a readable zip file", GOOD_PNG),
    ("an empty file", "not a readable zip file", b""),
    ("a truncated zip", "not a readable zip file", zip_bytes(GOOD_PAIR)[:300]),
    ("no entries", "no known dataset layout; found no files", zip_bytes([])),
    ("only hidden files", "no known dataset layout", zip_bytes([("__MACOSX/._img.png", b"x"), (".DS_Store", b"x")])),
    ("an unpaired image", "pairs.zip/images/img_1.png: no mask for this image",
     zip_bytes(GOOD_PAIR + [("images/img_1.png", GOOD_PNG)])),
]


def dataset_zip(data: bytes, limits: ZipLimits = ZipLimits()):
    def make(ctx):
        path = ctx.path("pairs.zip", data)
        (ctx.tmp / "unpacked").mkdir()
        return lambda: training_data("zip", path, None, ctx.tmp / "unpacked", limits)
    return make


for id, words, data, *limits in ZIPS:
    CASES.append(Case(f"dataset zip with {id}", dataset_zip(data, *limits), DataError, words))


@case("dataset zip unpacked directly, climbing", DataError, "points outside the archive")
def _(ctx):
    path = ctx.path("climb.zip", zip_bytes(GOOD_PAIR + [("../../outside.png", b"x")]))
    return lambda: unpack_zip(path, ctx.tmp / "dest")


@case("dataset zip that does not exist", DataError, "nothing.zip: not a readable zip file")
def _(ctx):
    return lambda: training_data("zip", str(ctx.tmp / "nothing.zip"), None, ctx.tmp)


@case("dataset zip not given", ValueError, "upload a dataset zip first")
def _(ctx):
    return lambda: training_data("zip", None, None, ctx.tmp)


@case("dataset source unknown", DataError, "unknown dataset source 'ftp'")
def _(ctx):
    return lambda: training_data("ftp", None, None, ctx.tmp)


def train_start(ctx: Ctx, **kw):
    args = dict(role="concat", source="embedded", zip_path=None, folder=None, preset="tiny", size=16, batch=2,
                steps=5, lr=1e-3, sample_every=100, name="malformed_run")
    args.update(kw)
    return ctx.handlers.train_start(*args.values(), request=REQUEST)


@case("dataset zip climbing, from the Train tab", gr.Error, "points outside the archive")
def _(ctx):
    path = ctx.path("evil.zip", zip_bytes([("../../escape.png", b"x")]))
    return lambda: train_start(ctx, source="zip", zip_path=path)


@case("dataset zip with a zip inside, from the Train tab", gr.Error, "zips inside the zip are not unpacked")
def _(ctx):
    path = ctx.path("wrapped.zip", zip_bytes([("inner.zip", zip_bytes(GOOD_PAIR))]))
    return lambda: train_start(ctx, source="zip", zip_path=path)


# --- weight and checkpoint files ---------------------------------------------------------------------
def weights_file(ctx: Ctx, name: str, tensors: dict | None = None, meta=None, sidecar: str | None = None,
                 edit: Callable[[dict], object] | None = None) -> Path:
    """A .safetensors of the tiny model's tensors (or `tensors`) with its config (or `meta`, edited)."""
    tensors = load_file(ctx.weights) if tensors is None else tensors
    if meta is None:
        meta = json.loads(ctx.weights.with_suffix(".json").read_text())
        if edit:
            edit(meta)
    path = ctx.tmp / name
    save_file(tensors, path, metadata=None if meta is False else {"retree": meta if isinstance(meta, str)
                                                                   else json.dumps(meta)})
    if sidecar is not None:
        path.with_suffix(".json").write_text(sidecar)
    return path


def with_tensor(ctx: Ctx, change: Callable[[dict], object]) -> dict:
    tensors = load_file(ctx.weights)
    change(tensors)
    return tensors


def first_key(tensors: dict) -> str:
    return sorted(tensors)[0]


def poisoned(value: float):
    def change(tensors):
        tensors[first_key(tensors)] = torch.full_like(tensors[first_key(tensors)], value)
    return change


def saved(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def set_net(key: str, value):
    return lambda meta: meta["net"].__setitem__(key, value)


WEIGHTS = [  # (id, words, file builder, role expected)
    ("of the wrong role", "is a 'concat' model, but a 'spade' model is needed", lambda c: c.weights, "spade"),
    ("of the wrong role for the vessel stage", "but a 'vessel' model is needed", lambda c: c.weights, "vessel"),
    ("of another preset", "weights do not match the concat network in its config",
     lambda c: weights_file(c, "preset.safetensors", edit=set_net("channels", [32, 64])), None),
    ("declaring another role", "weights do not match the spade network",
     lambda c: weights_file(c, "role.safetensors", edit=set_net("role", "spade")), None),
    ("declaring a huge network", "weights do not match the concat network",  # refused before allocating
     lambda c: weights_file(c, "huge_net.safetensors", edit=set_net("channels", [8192, 8192, 8192])), None),
    ("declaring a huge image size", "image_size 1048576",
     lambda c: weights_file(c, "huge_size.safetensors", edit=set_net("image_size", 2**20)), None),
    ("declaring a huge schedule", "timesteps 1000000000000",
     lambda c: weights_file(c, "huge_t.safetensors", edit=lambda m: m["diffusion"].__setitem__("timesteps", 10**12)),
     None),
    ("declaring an unknown role", "unknown role 'banana'",
     lambda c: weights_file(c, "banana.safetensors", edit=set_net("role", "banana")), None),
    ("declaring an unknown field", "unknown fields ['colour']",
     lambda c: weights_file(c, "field.safetensors", edit=set_net("colour", "red")), None),
    ("without a network config", "no 'net' entry",
     lambda c: weights_file(c, "no_net.safetensors", edit=lambda m: m.pop("net")), None),
    ("with a tensor missing", "1 missing, e.g.",
     lambda c: weights_file(c, "missing.safetensors", with_tensor(c, lambda t: t.pop(first_key(t)))), None),
    ("with an extra tensor", "1 unexpected, e.g. bogus",
     lambda c: weights_file(c, "extra.safetensors", with_tensor(c, lambda t: t.__setitem__("bogus", torch.zeros(3)))),
     None),
    ("with NaN weights", "NaN or infinite",
     lambda c: weights_file(c, "nan.safetensors", with_tensor(c, poisoned(float("nan")))), None),
    ("with infinite weights", "NaN or infinite",
     lambda c: weights_file(c, "inf.safetensors", with_tensor(c, poisoned(float("inf")))), None),
    ("without any config", "no ReTree config in its metadata and no bare.json beside it",
     lambda c: weights_file(c, "bare.safetensors", meta=False), None),
    ("with a corrupt config beside it", "the config in side.json is not valid JSON",
     lambda c: weights_file(c, "side.safetensors", meta=False, sidecar="{not json"), None),
    ("with a config beside it that is a list", "config is missing or invalid",
     lambda c: weights_file(c, "listed.safetensors", meta=False, sidecar="[1, 2]"), None),
    ("with corrupt config metadata", "the config in its metadata is not valid JSON",
     lambda c: weights_file(c, "meta.safetensors", meta="{oops"), None),
    ("truncated", "not a readable safetensors file",
     lambda c: Path(c.path("cut.safetensors", c.weights.read_bytes()[: c.weights.stat().st_size // 2])), None),
    ("cut after its length field", "not a readable safetensors file",
     lambda c: Path(c.path("cut8.safetensors", c.weights.read_bytes()[:8])), None),
    ("of random bytes", "not a readable safetensors file",
     lambda c: Path(c.path("noise.safetensors", np.random.default_rng(1).bytes(4096))), None),
    ("that is empty", "not a readable safetensors file", lambda c: Path(c.path("empty.safetensors", b"")), None),
    ("declaring a huge header", "not a readable safetensors file",
     lambda c: Path(c.path("header.safetensors", (10**12).to_bytes(8, "little") + b"{}")), None),
    ("a checkpoint with a pickled object", "it holds the Python object posix.mkdir, refused",
     lambda c: Path(evil_checkpoint(c)), None),
    ("a checkpoint that is a plain pickle", "not a readable ReTree checkpoint (not a file of tensors",
     lambda c: Path(c.path("plain.ckpt", pickle.dumps(Payload(c.tmp / "PWNED")))), None),
    ("a truncated checkpoint", "not a readable ReTree checkpoint (RuntimeError",
     lambda c: Path(c.path("cut.ckpt", c.checkpoint.read_bytes()[: c.checkpoint.stat().st_size // 2])), None),
    ("a checkpoint of random bytes", "not a readable ReTree checkpoint",
     lambda c: Path(c.path("noise.ckpt", np.random.default_rng(2).bytes(2000))), None),
    ("a checkpoint holding a list", "it holds a list, not a dict of tensors",
     lambda c: saved([1, 2, 3], c.tmp / "list.ckpt"), None),
    ("a checkpoint without its config", "no 'net' entry",
     lambda c: saved({"model": {}, "ema": {}, "step": 1, "config": {}}, c.tmp / "bare.ckpt"), None),
    ("a folder", "no such file", lambda c: c.tmp, None),
]
cases(CheckpointError, [(f"weights {id}", words, (build, role)) for id, words, build, role in WEIGHTS],
      lambda ctx, spec: functools.partial(load_model, spec[0](ctx), role=spec[1]))


@case("weights of the wrong role from the catalog", CheckpointError, "but a 'vessel' model is needed")
def _(ctx):
    return lambda: ModelCatalog(ctx.weights.parent, ctx.tmp / "runs").load(ctx.weights, "vessel")


@case("checkpoint with a pickled object, read directly", CheckpointError, "posix.mkdir, refused")
def _(ctx):
    return functools.partial(load_checkpoint, evil_checkpoint(ctx))


@case("photograph that is a decompression bomb", DataError, "image too large")
def _(ctx):
    return functools.partial(read_rgb, ctx.path("photo.png", png_declaring(30000, 30000)))


# --- the table ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def handlers(tiny_weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("malformed_app")
    return ui.Handlers(Studio(StudioSettings(weights_dir=tiny_weights.parent, runs_dir=tmp / "runs",
                                              work_dir=tmp / "work", warm_up=False)))


@pytest.fixture()
def ctx(tmp_path, handlers, tiny_weights, tiny_checkpoint):
    return Ctx(tmp_path, handlers, tiny_weights, tiny_checkpoint)


def everything_under(*folders: Path) -> set[Path]:
    return {p for folder in folders if folder.exists() for p in folder.rglob("*")}


def outcome(case: Case, action: Callable[[], object], capsys) -> str:
    """Run a case's call and return the message it gave, checking the kind of failure."""
    if case.error == NOTE:
        drawn, _, note = action()
        assert drawn is None
        return note
    if case.error == CLI:
        capsys.readouterr()
        try:
            code = action()
        except SystemExit as exc:  # argparse
            code = exc.code
        err = capsys.readouterr().err
        usage = err.startswith("usage") or "usage error:" in err  # argparse's, or options that do not fit
        assert code == (2 if usage else 1), (code, err)  # runtime errors (files, data) exit 1
        assert "Traceback" not in err and err.strip(), err
        return err
    with pytest.raises(case.error) as raised:
        result = action()
        if hasattr(result, "__next__"):  # a generator event: its first step validates
            next(result)
    message = raised.value.message if isinstance(raised.value, gr.Error) else str(raised.value)
    if isinstance(raised.value, gr.Error):
        assert "Traceback" not in message and "Unexpected problem" not in message, message
    return message


AREAS = {  # the docstring's lines: the first words of their cases' ids
    "image files": ("upload", "photograph"), "sketch-canvas": ("canvas",),
    "generation options": ("API ", "Run "), "model files": ("custom model",), "command line": ("CLI",),
    "dataset folders": ("dataset folder",), "dataset zips": ("dataset zip", "dataset source"),
    "weight and checkpoint": ("weights", "checkpoint"),
}


def test_the_table_counts_its_cases():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be distinct"
    assert len(CASES) >= 100
    assert f"{len(CASES)} cases" in __doc__
    for area, prefixes in AREAS.items():
        documented = re.search(rf"^    {area}.*?(\d+)$", __doc__, re.MULTILINE)
        counted = sum(1 for i in ids if i.startswith(prefixes))
        assert documented and int(documented.group(1)) == counted, (area, counted)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_refused_clearly(case, ctx, capsys):
    action = case.make(ctx)
    settings = ctx.handlers.settings
    watched = (ctx.tmp, settings.work_dir, settings.runs_dir)
    before = everything_under(*watched)
    tic = time.monotonic()
    message = outcome(case, action, capsys)
    elapsed = time.monotonic() - tic
    assert case.words in message, (case.words, message)
    assert elapsed < CASE_LIMIT_S, f"{case.id} took {elapsed:.1f} s"
    if case.error is gr.Error or case.error == NOTE:  # what a browser sees holds no server folder
        assert str(ctx.tmp) not in message and str(settings.work_dir) not in message, message
    assert everything_under(*watched) == before, "files left behind"
    assert not (ctx.tmp / "PWNED").exists(), "a pickled object was run"
    assert not ctx.handlers.studio.jobs.snapshot().busy


# --- after the table ---------------------------------------------------------------------------------
ODD_BUT_VALID = {
    "grey_alpha.png": tree("LA"),
    "cmyk.jpg": (tree("CMYK"), "JPEG"),
    "one_bit.png": tree("1"),
    "float.tif": (Image.fromarray(tree_array().astype(np.float32) / 255), "TIFF"),
    "sixteen_bit.png": Image.fromarray(tree_array().astype(np.uint16) * 257),
    "sixteen_bit.tif": (Image.fromarray(tree_array().astype(np.uint16) * 257), "TIFF"),
    "palette.gif": (tree().convert("P"), "GIF"),
    "strokes_on_transparent.png": Image.merge("RGBA", [tree()] * 4),
    "one_by_two.png": Image.fromarray(np.array([[0, 255]], np.uint8)),
}


@pytest.mark.parametrize("name", list(ODD_BUT_VALID))
def test_odd_but_valid_image_modes_are_accepted(name, ctx):
    loaded, note = ctx.handlers.load_upload(ctx.path(name, image_bytes(ODD_BUT_VALID[name])))
    assert name in note
    mask = current_mask("loaded", None, loaded, 64)
    assert mask.dtype == bool and 0 < mask.mean() < 1


def test_the_handlers_still_serve_after_a_series_of_bad_requests(ctx, capsys):
    for bad in (c for c in CASES if c.error in (gr.Error, NOTE)):  # every bad request the app can get
        outcome(bad, bad.make(ctx), capsys)
    h = ctx.handlers
    mask_path = ctx.path("good.png", GOOD_PNG)
    image = h.api_generate(mask_path, "concat", "dpmpp", 3, 1.0, 0, request=REQUEST)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    loaded, note = h.load_upload(mask_path)
    assert "good.png" in note
    outputs = list(h.run("loaded", loaded, loaded, "concat", None, None, "ddim", 2, 1.0, 0, request=REQUEST))
    assert any(isinstance(o[3], np.ndarray) for o in outputs)
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[30:34, :, :3] = 255
    drawn, picture, note = h.canvas_changed({"composite": rgba}, "draw", None, "concat", "concat", REQUEST)
    assert drawn is not None and "From the canvas" in note
