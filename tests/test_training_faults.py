"""Fault injection, fast version of bench/training_faults.py: a training subprocess killed with SIGKILL
three times (one kill during a checkpoint write, one during start-up, one at a random moment in
training) resumes each time; no corrupt checkpoint, at most one interval lost, the log continuous,
the final state bitwise equal to an uninterrupted run, no temporary file left behind."""
import importlib.util
import json
import os
import random
import sys
import time
from pathlib import Path

import pytest

from retree_core import checkpoint
from retree_core.checkpoint import remove_stale_temps, save_checkpoint
from retree_core.config import TrainConfig
from retree_core.train import _truncate_log, train

ROOT = Path(__file__).resolve().parents[1]
STEPS, INTERVAL = 30, 5


def load_bench():
    spec = importlib.util.spec_from_file_location("training_faults", ROOT / "bench" / "training_faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_sigkill_at_a_write_at_start_up_and_in_training_then_resume(tmp_path):
    bench = load_bench()
    timing = bench.Timing(startup_s=2.5, step_s=0.07, total_s=0.0)  # only scales the random delays
    ref_dir, out, console = tmp_path / "uninterrupted", tmp_path / "faulted", tmp_path / "console.txt"
    deadline = time.perf_counter() + 120
    rng, kills = random.Random(0), []
    # three kills; the last two "write"s only run when the first one missed the write
    for aim in ["write", "start-up", "random", "write", "write"]:
        if len(kills) >= 3 and any(k.during_write for k in kills):
            break
        kill = bench.kill_once(len(kills) + 1, aim, out, STEPS, INTERVAL, timing, rng, console, deadline)
        assert kill is not None, "the run finished before it was killed"
        assert kill.ckpt_step is not None, f"corrupt checkpoint after kill {kill}"
        kills.append(kill)
    bench.finish(out, STEPS, INTERVAL, console, deadline)
    # the uninterrupted run, in-process (saves a start-up): the command's settings
    train(TrainConfig(mode="concat", preset="tiny", image_size=16, max_steps=STEPS, checkpoint_interval=INTERVAL,
                      output_dir=str(ref_dir), progress=False, resume=True))

    f = bench.judge(kills, ref_dir, out, STEPS, INTERVAL)
    assert f["kills_during_write"] >= 1, kills
    assert f["corrupt"] == 0 and f["ckpt_ahead_of_log"] == 0
    assert f["max_lost"] <= INTERVAL, kills
    assert f["log_continuous"] and f["log_losses_equal"]
    assert f["final_step"] == STEPS and f["state_equal"]
    assert f["temps_left"] == 0  # what the write kill left behind was removed on resume
    assert "removed .last.ckpt." in console.read_text()


def test_remove_stale_temps_only_touches_that_files_temporaries(tmp_path):
    target = tmp_path / "last.ckpt"
    save_checkpoint(target, {"model": {}, "ema": {}, "step": 1, "config": {}})
    stale = [tmp_path / ".last.ckpt.abc123.tmp", tmp_path / ".last.ckpt.x_y.tmp"]
    keep = [tmp_path / ".log.jsonl.abc.tmp", tmp_path / "last.ckpt.tmp", tmp_path / "notes.tmp"]
    for p in stale + keep:
        p.write_bytes(b"partial")
    assert sorted(remove_stale_temps(target)) == sorted(stale)
    assert target.exists() and all(p.exists() for p in keep) and not any(p.exists() for p in stale)
    assert remove_stale_temps(tmp_path / "missing" / "last.ckpt") == []


def test_log_truncation_is_atomic(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    text = "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 9))
    log.write_text(text)
    log.chmod(0o644)

    def killed(*args):  # the process dies before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _truncate_log(log, 4)
    assert log.read_text() == text  # nothing lost
    monkeypatch.undo()
    _truncate_log(log, 4)
    assert [json.loads(r)["step"] for r in log.read_text().splitlines()] == [1, 2, 3, 4]
    assert log.stat().st_mode & 0o777 == 0o644
