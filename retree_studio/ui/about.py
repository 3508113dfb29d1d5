"""The About tab: what ReTree is, the shipped models (their figures read from the weight files), data and
licences, and how to run the app."""
from __future__ import annotations

from retree_core.pipeline import TREE_TRIES

from ..catalog import ModelCatalog

ABOUT = """
## What is ReTree?
ReTree (Alimanov & Islam, *Denoising Diffusion Probabilistic Model for Retinal Image Generation and Segmentation*, ICCP 2023,
[arXiv:2308.08339](https://arxiv.org/abs/2308.08339)) generates retinal fundus photographs in two stages:
a diffusion model first draws a **vessel tree**, a second diffusion model then paints a **fundus photograph**
that follows it. The second stage takes the mask either as an extra input channel (**concat**) or through
spatially-adaptive normalisation (**SPADE**). The pairs are synthetic training data for vessel segmentation.

ReTree Studio is an independent re-implementation: a UNet with locality self-attention, DDPM/DDIM/DPM-Solver++
samplers, and `lean` network presets that run on a 2-core CPU (2x2 pixels folded into channels, so a 128 px model works at 64 px inside).
Beyond the paper, **Edit a photograph** starts from a real photograph: change its vessel tree and the model
regenerates only what changed (RePaint-style inpainting) or the whole view (SDEdit), leaving every other
pixel of the photograph as it was.
{models}

## Data and licences
- **Shipped weights** (`weights/`, see `weights/README.md`): trained on the DRIVE training images
  (Staal et al., IEEE TMI 2004; research use, cite the paper) and CHASE_DB1 (Fraz et al., IEEE TBME 2012;
  Kingston University, **CC BY 4.0**), with a fixed validation split never trained on (DRIVE 37–40,
  CHASE_DB1 subjects 12–14). No photographs of these datasets ship with the app.
- **Example masks** (`retree_studio/examples/`): three CHASE_DB1 first-observer annotations (images 12L, 13R, 14L of
  the validation split; Fraz et al., IEEE TBME 2012; Kingston University; **CC BY 4.0**; cropped to the
  field of view and resized to 512 px), and masks drawn by the project's procedural vessel generator.
- **Embedded training example**: `skimage.data.retina()` (CC0), with a vessel mask from a classical ridge filter.
- **Mask fidelity** uses the shipped vessel segmenter (trained on the same data and split) to find vessels
  in generated images, and a classical ridge filter (Sato) when none is shipped; either way its Dice is a
  guide to how well the image follows the mask, not a clinical measure.
- Generated images are synthetic and **not for diagnosis**.

## Run it locally
```bash
python -m venv .venv && . .venv/bin/activate
pip install -r requirements.txt
python app.py                       # http://127.0.0.1:7860
python app.py --help                # --port, --weights-dir, --runs-dir, --share, --device, --precision
```
Use it from Python with `gradio_client`:
```python
from gradio_client import Client, handle_file
client = Client("http://127.0.0.1:7860/")
image_path = client.predict(handle_file("retree_studio/examples/left_eye_seed1.png"), "concat", "dpmpp", 20, None, 0,  # None: the recommended guidance
                            api_name="/generate")
```
"""


def models_text(catalog: ModelCatalog) -> str:
    """What the shipped models are, with the figures their files carry (steps, size, recommended guidance)."""
    shipped = {e.role: e for e in catalog.entries() if e.kind == "shipped" and e.path.stem == e.role}
    fundus = [shipped[r] for r in ("concat", "spade") if r in shipped]
    lines = []
    if fundus:
        steps = " and ".join(f"{e.trained_steps:,}" for e in fundus if e.trained_steps is not None)
        sizes = sorted({e.image_size for e in fundus})
        guidance = " and ".join(f"{e.guidance:g}" + "".join(f", {g:g} in the {style} style"
                                                            for style, g in sorted(e.style_guidance.items()))
                                for e in fundus)
        lines.append(f"The shipped {' and '.join(e.role for e in fundus)} models are early "
                     f"{'/'.join(map(str, sizes))} px checkpoints trained on a CPU ({steps} steps): they draw the "
                     "colour, the field of view, a bright disc where the vessels converge and, with their "
                     f"recommended guidance ({guidance}), dark vessels along the mask, but their images are still "
                     "grainy. They will be replaced as training continues (`weights/README.md`, the model card, "
                     "has their figures).")
        styled = [f"{e.role} ({', '.join(e.styles)})" for e in fundus if e.styles]
        if styled:
            lines.append(f"Trained with dataset styles: {'; '.join(styled)}; pick one in the *Style* menu "
                         "(any: the mixture).")
    if "sr" in shipped:
        sr = shipped["sr"]
        lines.append(f"A mask-conditioned **super-resolution** model takes their results to {sr.image_size} px.")
    if "segment" in shipped:
        lines.append("A learned **vessel segmenter** scores how well the generated vessels follow the mask.")
    if "vessel" in shipped:
        size = shipped["vessel"].image_size
        made = (f"a **tree super-resolution** model draws its trees at {shipped['treesr'].image_size} px with vessels "
                "as wide as annotated ones, but the thinnest vessels are missing" if "treesr" in shipped else
                f"the trees are cut from a {size} px output, so at 512 px their vessels are wider than real ones "
                "and the thinnest are missing; breaks in a vessel are mended")
        lines.append(f"The shipped stage-1 **vessel** model ({size} px) is early too: {made}; *Dream a tree* and "
                     f"the Synthesise tab redraw a tree the plausibility filter rejects, up to {TREE_TRIES} times.")
    return " ".join(lines) or "No models ship in this folder: train them in the Train tab."


def about_text(catalog: ModelCatalog) -> str:
    return ABOUT.format(models=models_text(catalog))


__all__ = ["about_text", "models_text"]
