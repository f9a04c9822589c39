"""A render-only install of the project, as a reviewer's CI would have it: a wheel built from a
clean copy of the source tree, installed with only ``requirements/render.txt`` into a fresh
virtualenv outside the checkout, with no torch. Shared by the packaging and default-site tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Set

REPO = Path(__file__).resolve().parents[1]
RENDER_REQUIREMENTS = REPO / "requirements" / "render.txt"
# Never part of a clean clone: local environments, build outputs and run outputs.
NOT_IN_A_CLONE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                        ".pytest_cache", ".modelcard*", "site", ".cache", "_resources")


@dataclass
class RenderInstall:
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def modelcard(self) -> Path:
        return self.venv / "bin" / "modelcard"

    def wheel_names(self) -> Set[str]:
        with zipfile.ZipFile(self.wheel) as archive:
            return set(archive.namelist())


def clean_env() -> dict:
    """The environment minus what would let a child see the checkout or the development venv."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run(cmd: List, cwd: Path, timeout: float = 300) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def make_render_install(folder: Path) -> RenderInstall:
    """Build the wheel from a clean copy of the repository and install it render-only in ``folder``."""
    clone = folder / "clone"
    shutil.copytree(REPO, clone, ignore=NOT_IN_A_CLONE, symlinks=True)
    wheels = folder / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, "."], clone)
    (wheel,) = wheels.glob("modelcard_generator-*.whl")
    venv = folder / "venv"
    run([sys.executable, "-m", "venv", venv], folder)
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "-r", RENDER_REQUIREMENTS], folder)
    run([python, "-m", "pip", "install", "-q", "--no-deps", wheel], folder)
    return RenderInstall(wheel=wheel, venv=venv)
