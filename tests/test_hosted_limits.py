"""Hosted mode's limits one function at a time: disk quotas, a closed page's training released, run
folders per session, canvas caps (the real server: test_hosted_server.py)."""
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

from retree_core.data import DataError
from retree_studio import ui
from retree_studio.live import StopSignals
from retree_studio.mask_sources import MAX_CANVAS_LAYERS, editor_image
from retree_studio.services import Studio, trim_folder
from retree_studio.settings import StudioSettings

pytestmark = pytest.mark.timeout(180)
A, B = SimpleNamespace(session_hash="session-a"), SimpleNamespace(session_hash="session-b")


def hosted(tmp_path, weights_dir, **kw) -> ui.Handlers:
    s = StudioSettings(weights_dir=weights_dir, runs_dir=tmp_path / "runs", work_dir=tmp_path / "work",
                       warm_up=False, **kw).make_hosted()
    return ui.Handlers(Studio(s))


def folder_of(parent, name: str, mb: float, age_s: float):
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "data.bin").write_bytes(bytes(int(mb * 2**20)))
    then = time.time() - age_s
    os.utime(folder, (then, then))
    return folder


def test_trim_folder_removes_the_oldest_beyond_the_quota_and_keeps_what_it_is_told(tmp_path):
    for name, age in (("old", 300), ("older", 400), ("new", 10), ("oldest", 500)):
        folder_of(tmp_path, name, 1, age)
    assert trim_folder(tmp_path, None) == []  # no quota
    assert trim_folder(tmp_path, 2.5, keep={"oldest"}) == ["older", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "oldest"]
    assert trim_folder(tmp_path, 2.5) == []  # within the quota now


def test_hosted_runs_and_downloads_stay_within_their_disk_quotas(tmp_path, tiny_weights):
    h = hosted(tmp_path, tiny_weights.parent)
    s = h.settings
    assert (s.max_runs_mb, s.max_outputs_mb) == (2048, 1024)  # make_hosted's defaults
    s.max_runs_mb = s.max_outputs_mb = 1
    folder_of(s.runs_dir, "somebodys_old_run", 1.5, 3600)
    h.train_start("concat", "embedded", None, None, "tiny", 16, 2, 2, 1e-3, 5, "mine", request=A)
    assert h.studio.jobs.wait(60)
    assert [p.name for p in s.runs_dir.iterdir()] == [h.studio.jobs.folder_name("mine", A.session_hash)]
    folder_of(s.output_dir, "stale_session", 1.5, 60)  # younger than the age limit, but over the quota
    mine = h.studio.session_dir(A.session_hash)
    assert mine.exists() and not (s.output_dir / "stale_session").exists()


def test_a_closed_page_releases_its_training_and_stops_its_generation(tmp_path, tiny_weights):
    h = hosted(tmp_path, tiny_weights.parent)
    jobs = h.studio.jobs
    h.train_start("concat", "embedded", None, None, "tiny", 16, 2, 5000, 1e-3, 1000, "long", request=A)
    generation = h.studio.stops.arm(A.session_hash)
    h.leave(B)  # another page closing changes nothing
    assert jobs.snapshot().busy and not generation.is_set()
    h.leave(A)
    assert generation.is_set() and jobs.wait(60)
    assert jobs.snapshot().state == "stopped" and jobs.snapshot().step < 5000


def test_stop_session_stops_every_key_of_that_session_only():
    stops = StopSignals()
    mine = [stops.arm("s1"), stops.arm("s1:synth"), stops.arm("s1:eval")]
    other = stops.arm("s10:synth")
    stops.stop_session("s1")
    assert all(e.is_set() for e in mine) and not other.is_set()


def test_run_folders_are_tagged_per_session_when_hosted(tmp_path, tiny_weights):
    jobs = hosted(tmp_path, tiny_weights.parent).studio.jobs
    a, b = jobs.folder_name("same", "session-a"), jobs.folder_name("same", "session-b")
    assert a != b and a.startswith("same-") and jobs.folder_name(a, "session-a") == a
    with pytest.raises(ValueError, match="not a run folder of this session"):
        jobs.start(None, a, owner="session-b")
    with pytest.raises(ValueError, match="run name"):
        jobs.folder_name("../escape", "session-a")


def test_canvas_values_beyond_the_caps_are_refused_with_the_reason():
    layer = np.zeros((512, 512, 4), np.uint8)
    too_many = {"background": None, "layers": [layer] * (MAX_CANVAS_LAYERS + 1), "composite": None}
    with pytest.raises(DataError, match=f"{MAX_CANVAS_LAYERS + 1} layers"):
        editor_image(too_many)
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (5000, 5000), (0, 0))  # no memory
    with pytest.raises(DataError, match="5000x5000 px, more than"):
        editor_image({"background": None, "layers": [], "composite": huge})


def test_the_readmes_table_of_limits_is_the_settings():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = [line.split("|")[1:4] for line in text.splitlines() if line.startswith("| `max_")]
    local, remote = StudioSettings(), StudioSettings().make_hosted()

    def shown(value) -> str:
        return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    assert len(rows) >= 12
    for name, local_text, hosted_text in rows:
        name = name.strip().strip("`")
        assert (shown(getattr(local, name)), shown(getattr(remote, name))) == (local_text.strip(), hosted_text.strip())
