"""Same config, seed and device: byte-identical manifests, artifacts and images (on CPU)."""

from __future__ import annotations

import shutil
from pathlib import Path

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.render.site import render_site


def _files(root: Path, pattern: str) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob(pattern))}


def test_two_runs_give_identical_bytes(tiny_report: Path, tmp_path: Path):
    outputs = []
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(tiny_report, folder / "report.yaml")
        shutil.copy(tiny_report.parent / "tinymodel.py", folder / "tinymodel.py")
        config = load_config(folder / "report.yaml")
        run_report(config, show_progress=False)
        render_site(config)
        outputs.append(folder)
    first, second = outputs
    assert (first / ".modelcard/manifest.json").read_bytes() == (second / ".modelcard/manifest.json").read_bytes()
    for pattern in ("record.json", "*.npz", "*.json"):
        a, b = _files(first / ".modelcard/artifacts", pattern), _files(second / ".modelcard/artifacts", pattern)
        assert a.keys() == b.keys() and a, pattern
        for name in a:
            assert a[name] == b[name], f"{name} differs between two identical runs"
    a, b = _files(first / "site", "*.png"), _files(second / "site", "*.png")
    assert a.keys() == b.keys() and len(a) > 5
    assert all(a[n] == b[n] for n in a), [n for n in a if a[n] != b[n]]
