"""The command line: `python -m retree_core train | generate | export | evaluate` (mirrors the original seed)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import replace
from pathlib import Path

from . import __version__, logs, weights
from .config import (MAX_GUIDANCE, MAX_SEED, PRECISION_HELP, PRECISIONS, ConfigError, SampleConfig, TrainConfig,
                     bounded_number, whole_number)
from .data.imageio import IMAGE_SUFFIXES
from .editing import EDIT_MODES, EditConfig
from .grain import GRAIN_BY_DEFAULT
from .pairs import LAYOUTS, NNUNET_ID, NNUNET_NAME
from .pipeline import TREE_TRIES
from .precision import DEFAULT as PRECISION_DEFAULT
from .samplers import SAMPLERS
from .twigs import SPACING_PX, TWIGS_BY_DEFAULT


def whole_in(low: int, high: int | None = None):
    """An argparse type: a whole number from `low` to `high` (None: at least `low`), by config.whole_number."""
    def parse(text: str) -> int:
        try:
            return whole_number(int(text) if text.lstrip("+-").isdigit() else text, "", low, high)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def number_in(low: float, high: float, low_open: bool = False):
    """An argparse type: a finite number from `low` (excluded when `low_open`) to `high`, by config.bounded_number."""
    def parse(text: str) -> float:
        try:
            return bounded_number(text, "", low, high, low_open)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


positive_int = whole_in(1)


def style_scale(text: str) -> tuple[str, float]:
    """An argparse type: STYLE=SCALE, a dataset style and its guidance scale."""
    style, sep, value = text.partition("=")
    if not sep or not style:
        raise argparse.ArgumentTypeError(f"expected STYLE=SCALE (e.g. CHASE_DB1=1), got {text!r}")
    return style, number_in(0, MAX_GUIDANCE)(value)


def device_name(text: str) -> str:
    """An argparse type: cpu, cuda or cuda:N, checked against this machine."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine; use cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


SEED = whole_in(0, MAX_SEED)
STYLE_HELP = ("the dataset style of a model trained with --style_condition (its data roots' folder names, listed in "
              "its .json); any: no style")
GRAIN_HELP = ("add the camera grain the super-resolution model lacks, as measured for the style (its photographs' "
              "finest texture and noise; synthetic pairs teach a segmenter faint vessels better with it)")


def add_config_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """--NAME for each field of a config dataclass, from its metadata (config.option): help, bounds, choices."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        kw: dict = {"default": f.default, "help": meta.get("help") or None}
        if meta.get("flag"):  # a switch: --no_X turns a default-on field off, --X a default-off one on
            parser.add_argument(meta["flag"], dest=f.name, action="store_false" if f.default else "store_true",
                                help=kw["help"])
            continue
        if meta.get("choices"):
            kw["choices"] = list(meta["choices"])
        elif meta.get("nargs"):
            kw["nargs"] = meta["nargs"]
        elif meta.get("kind") == "device":
            kw["type"] = device_name
        elif f.type.startswith("int"):
            kw["type"] = whole_in(meta["low"], meta["high"])
        elif f.type.startswith("float"):
            low_open = meta["above"] is not None
            kw["type"] = number_in(meta["above"] if low_open else meta["low"], meta["high"], low_open=low_open)
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        parser.add_argument(f"--{f.name}", **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m retree_core", description=__doc__,
                                     epilog="Installed, the same commands are `retree train|generate|export|evaluate`, "
                                            "and `retree app` starts the web app.")
    parser.add_argument("--version", action="version", version=f"retree {__version__}")
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=0,
                      help="also debug messages (per-image scores)")
    talk.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1,
                      help="warnings and errors only, no progress bars")
    parser.add_argument("--weights_dir", default=None, metavar="DIR",
                        help="where models are found by name (default: $RETREE_WEIGHTS_DIR, else the "
                             "repository's weights/)")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a vessel, concat, spade, segment, sr or treesr model")
    add_config_options(t, TrainConfig)

    g = sub.add_parser("generate", help="fundus images from masks, or image + mask pairs from noise")
    g.add_argument("--mode", choices=("concat", "spade"), default="concat")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--weights", default=None, help="shipped model name or .safetensors path (default: --mode)")
    src.add_argument("--checkpoint", default=None, help="a training checkpoint (.ckpt)")
    masks = g.add_mutually_exclusive_group(required=True)
    masks.add_argument("--masks", help="folder of vessel masks")
    masks.add_argument("--num", type=positive_int, help="number of pairs to dream with both stages")
    masks.add_argument("--edit", metavar="PHOTO", help="edit a photograph through its tree: alone, write its tree "
                       "(tree.png) to change; with --mask EDITED, regenerate it for the edited tree")
    g.add_argument("--mask", default=None, help="with --edit: the edited tree (white vessels; the tree.png size)")
    g.add_argument("--edit_mode", choices=EDIT_MODES, default=EditConfig.mode,
                   help="inpaint: only the changed pixels and a margin (RePaint); vary: the whole view (SDEdit)")
    g.add_argument("--margin_px", type=whole_in(0, 64), default=EditConfig.margin_px,
                   help="inpaint: the region around the changed pixels, at the model's size")
    g.add_argument("--resample", type=whole_in(1, 10), default=EditConfig.resample,
                   help="inpaint: passes per step, for a region that agrees with the kept pixels")
    g.add_argument("--strength", type=number_in(0, 1), default=EditConfig.strength,
                   help="vary: 0 keeps the photograph, 1 generates from noise")
    g.add_argument("--segmenter", default="segment", help="with --edit: finds the photograph's tree")
    g.add_argument("--trees", choices=("vessel", "procedural"), default="vessel",
                   help="with --num: trees from the stage-1 model or the procedural generator")
    g.add_argument("--vessel_weights", default="vessel", help="stage-1 model for --num")
    g.add_argument("--tree_sr", default="auto", metavar="auto|none|NAME|PATH",
                   help="with --num: the treesr model that enlarges stage-1 trees to the output size (auto: the "
                        "shipped one when it takes the stage-1 model's size; none: its soft output resized and cut)")
    g.add_argument("--twigs", action="store_true", default=TWIGS_BY_DEFAULT,
                   help="with --num: grow the thin vessels a stage-1 tree lacks onto it (twigs.py; default "
                        f"{'on' if TWIGS_BY_DEFAULT else 'off'})")
    g.add_argument("--no_twigs", dest="twigs", action="store_false", help="with --num: stage-1 trees as drawn")
    g.add_argument("--twig_spacing", type=number_in(4, 10_000), default=SPACING_PX, metavar="PX",
                   help="with --twigs: one thin vessel sprouts per this much centre line (px at 512; lower grows more)")
    g.add_argument("--min_plausibility", type=number_in(0, 1), default=None,
                   help="with --num: redraw trees scoring below this (default: plausibility.DEFAULT_THRESHOLD)")
    g.add_argument("--tree_tries", type=positive_int, default=TREE_TRIES,
                   help="with --num: draws per tree before a procedural tree stands in for it")
    s = SampleConfig()
    g.add_argument("--sampler", choices=list(SAMPLERS), default=s.sampler)
    g.add_argument("--steps", type=positive_int, default=s.steps)
    g.add_argument("--seed", type=SEED, default=s.seed)
    g.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's recommended one for the style, else 1)")
    g.add_argument("--style", default=s.style, help=STYLE_HELP)
    g.add_argument("--sr", default="auto", metavar="auto|none|NAME|PATH",
                   help="super-resolve the results with this model, conditioned on the full-size mask "
                        "(auto: the shipped sr model that fits the generator's size, if any)")
    g.add_argument("--no_aperture", dest="aperture", action="store_false",
                   help="keep the rim as generated (default: the camera's round aperture, cutting masks to it)")
    g.add_argument("--grain", action="store_true", default=None, help=GRAIN_HELP + " (default: on for the pairs, "
                   "not for --edit, where the sr model has a grain profile)")
    g.add_argument("--no_grain", dest="grain", action="store_false", help="the pairs without camera grain")
    g.add_argument("--batch_size", type=positive_int, default=4)
    g.add_argument("--output_dir", default="outputs/generated")
    g.add_argument("--layout", choices=LAYOUTS, default="seed",
                   help="seed: images/img_X.png + masks/seg_X.png; nnunet: an nnU-Net v2 raw dataset "
                        "(DatasetNNN_Name/imagesTr, labelsTr 0/1, dataset.json) in --output_dir")
    g.add_argument("--dataset_id", type=whole_in(1, 999), default=NNUNET_ID, help="with --layout nnunet")
    g.add_argument("--dataset_name", default=NNUNET_NAME, help="with --layout nnunet")
    g.add_argument("--device", type=device_name, default="cpu")
    g.add_argument("--precision", choices=PRECISIONS, default=PRECISION_DEFAULT, help=PRECISION_HELP)

    e = sub.add_parser("export", help="convert a training checkpoint to weights/NAME.safetensors + .json, or a "
                                      "diffusion model to ONNX")
    e.add_argument("--checkpoint", required=True, help="a training checkpoint (.ckpt), or a .safetensors file "
                   "to write anew with other recommended scales; with --format onnx also a model name")
    e.add_argument("--out", required=True, help="output path without suffix, e.g. weights/concat")
    e.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors",
                   help="onnx: the noise prediction eps(x_t, t, mask) with its schedule as metadata (needs onnx)")
    e.add_argument("--fp32", action="store_true", help="keep float32 (default: float16)")
    e.add_argument("--guidance", type=number_in(0, MAX_GUIDANCE), default=None,
                   help="guidance scale to recommend with the model (generate and the app start from it)")
    e.add_argument("--style_guidance", nargs="+", type=style_scale, default=None, metavar="STYLE=SCALE",
                   help="a scale to recommend for a dataset style instead of --guidance's (e.g. CHASE_DB1=1)")

    v = sub.add_parser("evaluate", help="vessel metrics of a segmenter, or mask fidelity and KID of a generator")
    v.add_argument("--data_root", nargs="+", required=True, help="dataset folder(s)")
    v.add_argument("--split", choices=("val", "train", "all"), default="val",
                   help="the fixed validation split (DRIVE 37-40, CHASE_DB1 12-14), the rest, or all")
    v.add_argument("--segmenter", default="classical", help="segmenter to score, or to find vessels "
                   "in generated images with --generator (classical: the ridge filter)")
    v.add_argument("--generator", default=None, help="evaluate generation instead: concat, spade or a weights path")
    v.add_argument("--sr", default=None, metavar="NAME|PATH",
                   help="evaluate a super-resolution model instead: PSNR/SSIM against bicubic")
    v.add_argument("--output_dir", default="outputs/evaluate", help="where metrics.csv and metrics.json go")
    v.add_argument("--num", type=positive_int, default=None, help="with --generator: masks used (default all)")
    v.add_argument("--sampler", choices=list(SAMPLERS), default=s.sampler)
    v.add_argument("--steps", type=positive_int, default=s.steps)
    v.add_argument("--seed", type=SEED, default=s.seed, help="image i uses seed + i")
    v.add_argument("--guidance", type=float, default=s.guidance,
                   help="classifier-free guidance scale (default: the model's recommended one for the style, else 1)")
    v.add_argument("--style", default=s.style, help=STYLE_HELP + "; match: each validation image in its own "
                   "dataset's style (its root's folder name) where the model has it")
    v.add_argument("--batch_size", type=positive_int, default=4)
    v.add_argument("--sr_output", default="auto", metavar="auto|none|NAME|PATH",
                   help="with --generator: super-resolve the generated images first (as generate does)")
    v.add_argument("--no_aperture", dest="aperture", action="store_false",
                   help="with --generator: score the images without the round aperture generate finishes them with")
    v.add_argument("--grain", action="store_true", help="with --generator: " + GRAIN_HELP)
    v.add_argument("--min_fid_images", type=positive_int, default=100,
                   help="FID is reported only with at least this many images per set")
    v.add_argument("--device", type=device_name, default="cpu")
    v.add_argument("--precision", choices=PRECISIONS, default=PRECISION_DEFAULT, help=PRECISION_HELP)
    return parser


def run_train(args: argparse.Namespace) -> None:
    from .train import train

    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k not in ("command", "weights_dir", "verbosity")})
    if args.verbosity < 0:
        cfg.progress = False
    print(f"checkpoint: {train(cfg)}")


def _mask_files(folder: str) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"--masks {folder}: not a folder")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--masks {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def run_generate(args: argparse.Namespace) -> None:
    import numpy as np

    from .checkpoint import CheckpointError
    from .data import prepare_mask
    from .pairs import PairWriter
    from .pipeline import FundusPipeline, masks_at, tree_masks
    from .tree_sr import with_tree_sr
    from .weights import load_model

    pipe = FundusPipeline.load(args.checkpoint or args.weights or args.mode, role=args.mode, sr=args.sr,
                               aperture=args.aperture, grain=bool(args.grain), device=args.device,
                               precision=args.precision)
    if args.grain is None and GRAIN_BY_DEFAULT and not args.edit and pipe.sr is not None and pipe.sr.grain:
        pipe = replace(pipe, grain=True)  # synthetic pairs teach a segmenter better with it (docs/experiments.md)
    options = pipe.options(SampleConfig(args.sampler, args.steps, args.guidance, args.seed, args.style))
    if args.edit:
        return run_edit(args, pipe, options)
    if args.mask:
        raise ConfigError("--mask is the edited tree of --edit; for masks to generate from use --masks")
    out_px = pipe.output_px
    if args.masks:  # every mask read before any sampling; at each size from the file itself
        files = _mask_files(args.masks)
        names = [p.stem.removeprefix("seg_") for p in files]
        masks = {px: np.stack([prepare_mask(p, px) for p in files]) for px in {pipe.size_px, out_px}}
    elif args.trees == "procedural":
        names = [f"{args.seed + i:05d}" for i in range(args.num)]
        masks = {out_px: tree_masks(None, [args.seed + i for i in range(args.num)], out_px, first_seed=args.seed)[0]}
    else:
        try:
            vessel = with_tree_sr(load_model(args.vessel_weights, role="vessel", device=args.device,
                                             precision=args.precision), args.tree_sr, args.device)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc} (no stage-1 model: add --trees procedural to use the "
                                  "procedural vessel generator)") from None
        names = [f"{args.seed + i:05d}" for i in range(args.num)]
        masks = None
    writer = PairWriter(args.output_dir, pipe.settings(options), args.layout, args.dataset_id, args.dataset_name)
    stand_ins = 0
    bar = logs.progress_bar(len(names), "generating", args.verbosity >= 0)
    for start in range(0, len(names), args.batch_size):
        chunk = names[start:start + args.batch_size]
        seeds = [args.seed + start + i for i in range(len(chunk))]
        if masks is None:
            source, stood_in = tree_masks(vessel, seeds, out_px, first_seed=args.seed, max_tries=args.tree_tries,
                                          min_plausibility=args.min_plausibility, twigs=args.twigs,
                                          twig_spacing=args.twig_spacing,
                                          sampler=args.sampler, steps=args.steps)
            stand_ins += stood_in
        else:  # the rows of this chunk, at each size as read (or resized from the output size)
            rows = slice(start, start + len(chunk))
            source = lambda px, rows=rows: masks_at(masks.get(px, masks[out_px])[rows], px)  # noqa: E731
        images, cut = pipe(source, replace(options, seed=seeds[0]))
        fovs = pipe.field_of_view(images)
        for i, (name, image, mask, seed) in enumerate(zip(chunk, images, cut, seeds)):
            writer.write(name, image, mask, seed, None if fovs is None else fovs[i])
        bar.update(len(chunk))
    bar.close()
    out = writer.close()
    scaled = f", super-resolved to {out_px} px by {pipe.sr.source}" if pipe.sr else ""
    folders = ("imagesTr/, labelsTr/, dataset.json" if args.layout == "nnunet"
               else "images/, masks/, fov/" if pipe.aperture else "images/, masks/")
    print(f"wrote {len(names)} image + mask pairs to {out} ({folders}; settings in each PNG and "
          f"generation.json){scaled}")
    if stand_ins:
        print(f"{stand_ins} stage-1 tree(s) stayed below the plausibility threshold in {args.tree_tries} draws: "
              "procedural trees stand in for them (--tree_tries, --min_plausibility)")


def run_edit(args: argparse.Namespace, pipe, options: SampleConfig) -> None:
    from .editing import PhotoEditor, edit_files
    from .evaluate import load_segmenter

    cfg = EditConfig(args.edit_mode, args.margin_px, args.resample, args.strength)
    done = edit_files(PhotoEditor(pipe, load_segmenter(args.segmenter)), args.edit, args.output_dir, args.mask,
                      cfg, options)
    if args.mask is None:
        print(f"wrote {done['tree']} (the photograph's tree: change it in any image editor) and {done['view']}; "
              f"then: generate --edit {args.edit} --mask EDITED.png")
        return
    print(f"wrote {done['edited']} (+ edited_tree.png, difference.png, region.png): {done['changed_px']} pixels "
          f"changed, all inside the {done['region_px']}-pixel edit region; mask fidelity of the edited tree "
          f"{done['fidelity']:.3f}")


def run_export(args: argparse.Namespace) -> None:
    from .segmentation import export_run
    from .weights import load_model, read_model_info

    if args.format == "onnx":
        from .onnx_export import export_onnx

        if args.fp32 or args.guidance is not None or args.style_guidance:
            raise ConfigError("--fp32, --guidance and --style_guidance are for safetensors files; an ONNX graph is "
                              "float32 and carries the model's own guidance")
        print(f"wrote {export_onnx(load_model(args.checkpoint), args.out)}")
        return

    out = export_run(args.checkpoint, args.out, fp16=not args.fp32, guidance=args.guidance,
                     style_guidance=dict(args.style_guidance or ()))
    segment = (read_model_info(out) or {}).get("segment")
    if segment:
        print(f"segmenter threshold {segment['threshold']:.2f} (best F1 on the run's training images)")
    print(f"wrote {out}")


def run_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import GenerationOptions, evaluate_generator, evaluate_segmenter, evaluate_sr, load_segmenter
    from .pipeline import FundusPipeline

    if args.sr is not None and args.generator is not None:
        raise ConfigError("evaluate either --generator or --sr, not both")
    segmenter = load_segmenter(args.segmenter)
    if args.sr is not None:
        report = evaluate_sr(args.sr, args.data_root, args.split, args.device)
    elif args.generator is None:
        report = evaluate_segmenter(segmenter, args.data_root, args.split, progress=args.verbosity >= 0)
    else:
        pipe = FundusPipeline.load(args.generator, role=args.generator if args.generator in ("concat", "spade")
                                   else None, sr=args.sr_output, aperture=args.aperture, grain=args.grain,
                                   device=args.device, precision=args.precision)
        match = args.style == "match"
        options = GenerationOptions(SampleConfig(args.sampler, args.steps, args.guidance, args.seed,
                                                 "any" if match else args.style), args.num,
                                    args.batch_size, args.min_fid_images, match_styles=match)
        report = evaluate_generator(pipe, args.data_root, segmenter, args.split, options,
                                    progress=args.verbosity >= 0)
    print(report.render())
    print("wrote " + ", ".join(map(str, report.save(args.output_dir))))


def main(argv: list[str] | None = None) -> int:
    """Run a command; exit status 0, 1 for a runtime error (missing data, an unreadable file), 2 for a usage
    error (argparse's, or options that do not fit together), 130 when interrupted."""
    args = build_parser().parse_args(argv)
    logs.configure(args.verbosity)
    shipped = weights.WEIGHTS_DIR
    if args.weights_dir:  # for this command only (main may be called again in the same process)
        weights.WEIGHTS_DIR = Path(args.weights_dir)
    try:
        {"train": run_train, "generate": run_generate, "export": run_export,
         "evaluate": run_evaluate}[args.command](args)
    except ConfigError as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # DataError and CheckpointError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        weights.WEIGHTS_DIR = shipped
    return 0
