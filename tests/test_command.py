"""The `retree` console command: the engine's commands, --version, the weights folder, and `retree app`."""
import pytest

from retree_core import __version__
from retree_studio.command import main


def test_version_and_the_engine_commands(capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"retree {__version__}"
    assert main(["--weights_dir", str(tmp_path), "generate", "--masks", str(tmp_path), "--output_dir",
                 str(tmp_path / "out")]) == 1  # a runtime error
    assert f"no model named 'concat' in {tmp_path}" in capsys.readouterr().err  # models found in --weights_dir
    from retree_core import weights

    assert weights.WEIGHTS_DIR != tmp_path  # for that command only


def test_usage_errors_exit_2_and_runtime_errors_1(capsys, tmp_path):
    with pytest.raises(SystemExit) as done:  # argparse's own
        main(["generate", "--steps", "0", "--masks", str(tmp_path)])
    assert done.value.code == 2
    # options that do not fit together, found after parsing
    assert main(["train", "--mode", "concat", "--soft_tree_px", "1.5", "--output_dir", str(tmp_path / "r")]) == 2
    assert "usage error: --soft_tree_px is the vessel model's" in capsys.readouterr().err
    assert main(["evaluate", "--generator", "concat", "--sr", "sr", "--data_root", str(tmp_path)]) == 2
    assert main(["evaluate", "--data_root", str(tmp_path / "missing")]) == 1  # no such data: at run time
    assert capsys.readouterr().err.count("error: ") == 2


def test_quiet_and_verbose_set_the_engines_logging(tmp_path):
    import logging

    from retree_core.logs import log

    main(["-q", "evaluate", "--data_root", str(tmp_path / "missing")])
    assert log.level == logging.WARNING
    main(["--verbose", "evaluate", "--data_root", str(tmp_path / "missing")])
    assert log.level == logging.DEBUG
    with pytest.raises(SystemExit):
        main(["-q", "-v", "evaluate", "--data_root", str(tmp_path)])


def test_app_without_gradio_says_what_to_install(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_gradio(name, *args, **kwargs):
        if name == "gradio" or name.endswith("ui"):
            raise ImportError("No module named 'gradio'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gradio)
    assert main(["app", "--help"]) == 1
    assert "pip install 'retree-studio[app]'" in capsys.readouterr().err


def test_deploy_space_dry_run_lists_what_a_space_needs_and_how_it_is_sent(capsys):
    assert main(["deploy-space", "someone/retree", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[-1]: line for line in lines[:-1]}
    assert {"app.py", "README.md", "LICENSE", "requirements.txt", "retree_core/pipeline.py",
            "retree_studio/ui/app.py", "weights/README.md"} <= set(listed)
    assert all("large-file" in line for name, line in listed.items() if name.endswith(".safetensors"))
    assert any(name.endswith(".safetensors") for name in listed)
    assert "regular" in listed["app.py"]
    assert not any(name.startswith(("tests/", "bench/", "docs/", "runs/")) or "__pycache__" in name for name in listed)
    assert lines[-1].endswith("https://huggingface.co/spaces/someone/retree")
    with pytest.raises(SystemExit):
        main(["deploy-space", "no-owner", "--dry-run"])
