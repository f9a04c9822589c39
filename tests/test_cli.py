"""The command line: list, build, run, render, and clear config errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from generator.cli import main


def test_list_commands(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "embedded:efficientnet_lite0" in out and "torchvision:" in out and "python:" in out
    assert main(["list", "datasets"]) == 0
    assert "fashion-mnist" in capsys.readouterr().out
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "saliency" in out and "gradcam" in out


def test_build_then_run_and_render_separately(tiny_report: Path, capsys):
    import re

    assert main(["build", "-q", str(tiny_report)]) == 0
    out = capsys.readouterr().out
    computed = int(re.search(r"computed (\d+) artifact\(s\), reused 0 ", out).group(1))
    assert computed >= 5 and "site:" in out
    assert (tiny_report.parent / "site" / "index.html").exists()
    assert main(["run", "-q", str(tiny_report)]) == 0
    assert f"computed 0 artifact(s), reused {computed} " in capsys.readouterr().out
    assert main(["render", str(tiny_report)]) == 0


def test_config_error_exit_code_and_message(tmp_path: Path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: x\nmodels: []\ndatasets: [{id: d, source: samples}]\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "bad.yaml:2: models" in err


def test_console_script_entry_point():
    proc = subprocess.run([sys.executable, "-m", "generator.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "build" in proc.stdout and "render" in proc.stdout
