"""Weight files: export, load by name or path, and a clear refusal of every kind of wrong file."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from retree_core import weights as weights_mod
from retree_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from retree_core.weights import load_model


def test_export_is_fp16_safetensors_with_config(tiny_weights):
    tensors = load_file(tiny_weights)
    assert all(t.dtype == torch.float16 for t in tensors.values())
    meta = json.loads(tiny_weights.with_suffix(".json").read_text())
    assert meta["net"]["role"] == "concat" and meta["trained_steps"] == 120


def test_exported_model_matches_checkpoint_ema(tiny_checkpoint, tiny_weights):
    from_ckpt, from_st = load_model(tiny_checkpoint), load_model(tiny_weights)
    x, t, m = torch.randn(1, 3, 16, 16), torch.tensor([300]), torch.randn(1, 1, 16, 16).sign()
    with torch.no_grad():
        a, b = from_ckpt.net(x, t, m), from_st.net(x, t, m)
    assert (a - b).abs().max() < 5e-3  # fp16 rounding only
    assert not from_st.net.training and not any(p.requires_grad for p in from_st.net.parameters())


def test_load_by_name(tiny_weights, monkeypatch):
    monkeypatch.setattr(weights_mod, "WEIGHTS_DIR", tiny_weights.parent)
    assert load_model("concat").net_cfg.role == "concat"
    with pytest.raises(CheckpointError, match=r"no model named 'spade'.*available: concat"):
        load_model("spade")


def test_wrong_role_is_named(tiny_weights):
    with pytest.raises(CheckpointError, match="is a 'concat' model, but a 'vessel' model is needed"):
        load_model(tiny_weights, role="vessel")


def test_truncated_safetensors(tiny_weights, tmp_path):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(tiny_weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(bad)


def test_nan_weights_are_refused(tiny_weights, tmp_path):
    tensors = load_file(tiny_weights)
    name = next(iter(tensors))
    tensors[name][...] = float("nan")
    meta = tiny_weights.with_suffix(".json").read_text()
    save_file(tensors, tmp_path / "nan.safetensors", metadata={"retree": meta})
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_model(tmp_path / "nan.safetensors")


def test_weights_of_another_preset_are_refused(tiny_weights, tmp_path):
    meta = json.loads(tiny_weights.with_suffix(".json").read_text())
    meta["net"]["channels"] = [32, 64]
    save_file(load_file(tiny_weights), tmp_path / "w.safetensors", metadata={"retree": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="do not match the concat network"):
        load_model(tmp_path / "w.safetensors")


def test_safetensors_without_config(tmp_path):
    save_file({"a": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="no ReTree config"):
        load_model(tmp_path / "plain.safetensors")


class Payload:  # any pickled object: loading must refuse it rather than run it
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_checkpoint_with_pickled_objects_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"model": {}, "ema": {}, "step": 1, "config": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a readable ReTree checkpoint"):
        load_checkpoint(path)
    assert "unpickled!" not in capsys.readouterr().out


def test_not_a_checkpoint_and_missing_file(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(CheckpointError, match="not a readable ReTree checkpoint"):
        load_checkpoint(junk)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="no such"):
        load_model(tmp_path / "absent.safetensors")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_checkpoint(path, {"model": {}, "ema": {}, "step": 1, "config": {}})

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, {"model": {}, "ema": {}, "step": 2, "config": {}})
    assert load_checkpoint(path)["step"] == 1  # the old checkpoint survives intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_recommended_guidance_travels_with_the_model(tiny_checkpoint, tmp_path):
    """`export --guidance G` stores G; loading, the catalog and `generate` without --guidance start from it."""
    from retree_studio.catalog import ModelCatalog
    from retree_core.cli import main

    assert load_model(tiny_checkpoint).guidance == 1.0  # nothing stored: plain conditional
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "w" / "concat"),
                 "--guidance", "2.5"]) == 0
    path = tmp_path / "w" / "concat.safetensors"
    assert load_model(path).guidance == 2.5
    assert ModelCatalog(tmp_path / "w", tmp_path / "runs").entries("concat")[0].guidance == 2.5
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.eye(16, dtype=np.uint8) * 255).save(masks / "seg_a.png")
    for name, extra in (("default", []), ("explicit", ["--guidance", "2.5"]), ("plain", ["--guidance", "1"])):
        assert main(["generate", "--weights", str(path), "--masks", str(masks), "--steps", "3",
                     "--output_dir", str(tmp_path / name), *extra]) == 0
    images = {n: np.asarray(Image.open(tmp_path / n / "images" / "img_a.png")) for n in ("default", "explicit", "plain")}
    assert np.array_equal(images["default"], images["explicit"])
    assert not np.array_equal(images["default"], images["plain"])


def test_invalid_recommended_guidance_is_named(tiny_weights, tmp_path):
    tensors = load_file(tiny_weights)
    meta = json.loads(tiny_weights.with_suffix(".json").read_text())
    meta["sample"] = {"guidance": "lots"}
    save_file(tensors, tmp_path / "odd.safetensors", metadata={"retree": json.dumps(meta)})
    with pytest.raises(CheckpointError, match=r"sample.guidance 'lots', expected 0 to 20"):
        load_model(tmp_path / "odd.safetensors")


def test_a_compressed_checkpoint_is_refused_before_it_is_inflated(tmp_path):
    """A DEFLATE bomb shaped like a checkpoint: refused in a fresh process whose memory stays bounded."""
    import io
    import subprocess
    import sys
    import zipfile

    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(2**26)}, "ema": {}, "step": 0, "config": {}}, buffer)  # 256 MB inside
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as plain, \
            zipfile.ZipFile(tmp_path / "bomb.ckpt", "w", zipfile.ZIP_DEFLATED) as bomb:
        for name in plain.namelist():
            bomb.writestr(name, plain.read(name))
    assert (tmp_path / "bomb.ckpt").stat().st_size < 2**20
    probe = ("import resource, sys; from retree_core.checkpoint import load_checkpoint, CheckpointError\n"
             "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "try:\n    load_checkpoint(sys.argv[1])\nexcept CheckpointError as exc:\n    print(exc)\n"
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "bomb.ckpt")], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[1]).stdout.splitlines()
    assert "compressed entries" in out[0] and "refused before inflating" in out[0]
    assert int(out[1]) < 32  # MB grown while refusing (inflating would take 256)


def test_an_oversized_upload_is_refused_from_its_header_in_bounded_memory(tmp_path, tiny_weights):
    """A hosted upload declaring 4096 px images (a first sampling step at that size would allocate GiBs):
    refused from its header, in a fresh process whose peak memory is measured."""
    import subprocess
    import sys

    from safetensors.torch import load_file, save_file

    meta = json.loads(tiny_weights.with_suffix(".json").read_text())
    save_file(load_file(tiny_weights), tmp_path / "big.safetensors",
              metadata={"retree": json.dumps({**meta, "net": {**meta["net"], "image_size": 4096}})})
    probe = ("import resource, sys; from retree_core.weights import load_model; import torch\n"
             "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "try:\n    load_model(sys.argv[1], max_image_px=512)\nexcept ValueError as exc:\n    print(exc)\n"
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "big.safetensors")], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[1]).stdout.splitlines()
    assert "image_size 4096, expected 1 to 512" in out[0]
    assert int(out[1]) < 16  # MB grown while refusing
