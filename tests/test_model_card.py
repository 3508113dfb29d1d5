"""The model card opens with Hub metadata (YAML) whose figures are the ones its tables state."""
import re
from pathlib import Path

import yaml

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
