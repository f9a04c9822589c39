"""Data pages for a python-defined 1-channel CNN on a class folder (no training checkpoints):
the stages take the generic path, and the pages build with mkdocs --strict, show formulas as
MathML, escape user strings and hold the expected galleries and tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from data_fakes import folder_config

from generator.config import load_config
from generator.pipeline.run import run_report


@pytest.fixture(scope="module")
def gray_site(tmp_path_factory):
    from generator.render.site import render_site

    tmp = tmp_path_factory.mktemp("gray")
    config = load_config(folder_config(tmp))
    summary = run_report(config, show_progress=False)
    return config, summary, render_site(config)


def _record(config, kind):
    manifest = json.loads((config.work_dir / "manifest.json").read_text())
    (entry,) = [e for e in manifest["artifacts"] if e["kind"] == kind]
    return json.loads((config.work_dir / "artifacts" / entry["path"] / "record.json").read_text())


def test_generic_split_and_final_weights(gray_site):
    config, summary, _ = gray_site
    assert not summary.failed, summary.failed
    inf = _record(config, "data_influence")
    assert inf["split"]["checkpoints"] == ["final weights"] and not inf["split"]["from_training"]
    # 42 images: 30% held out (13), the rest is the reference set
    assert inf["split"]["test_used"] == 13 and inf["split"]["train_used"] == 29
    perm = np.random.default_rng(0).permutation(42)
    held = set(perm[:13].tolist())
    assert {t["row"] for t in inf["tests"]} <= set(range(13))
    proto = _record(config, "data_prototypes")
    used = {e["source_index"] for c in proto["classes"] for e in c["prototypes"] + c["criticisms"]}
    assert used and not used & held  # prototypes come from the reference part only
    sur = _record(config, "data_surrogate")
    # 2x2 grid: 2 bands, 2 columns, 4 cells, whole
    assert sur["split"]["test_used"] == 13 and len(sur["features"]) == 9 * 2 + 4


def test_pages_render_with_expected_elements(gray_site):
    _, _, site = gray_site
    base = Path(site) / "data" / "gray" / "shapes"
    proto = (base / "prototypes.html").read_text()
    inf = (base / "influence.html").read_text()
    ds = (base / "decision-set.html").read_text()
    for page in (proto, inf, ds):
        assert "<math" in page  # formulas as MathML
        assert "<em>&" not in page and "bee &lt;em&gt;&amp;" in page  # the class name is escaped
        assert "\\arg" not in page and "\\frac" not in page  # no raw LaTeX left
    assert "Prototypes and criticisms" in proto and "witness" in proto
    assert re.search(r"w = [+-]\d\.\d{4}", proto)
    assert "Misclassified by the model" in proto
    assert "TracIn" in inf and "Influence functions" in inf and "most helpful" in inf and "most harmful" in inf
    assert "final weights only" in inf
    assert "Fidelity and size against the baselines" in ds and "Rule list" in ds and "Tree (depth" in ds
    assert "otherwise" in ds
    assert len(re.findall(r'<img[^>]+src="[^"]*assets/gen/', proto)) >= 2 * 3 * 2


def test_renderer_imports_no_torch_for_data_pages():
    import ast

    for path in Path(__file__).parents[1].joinpath("generator", "render", "pages").glob("data_*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                 for a in (n.names if isinstance(n, ast.Import) else [type("A", (), {"name": n.module or ""})])}
        assert "torch" not in names and "generator" in names, path
