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


def _visible(page: str) -> str:
    import html

    page = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_decision_set_states_fidelity_coverage_and_its_verdict(gray_site):
    from generator.render import verdicts

    config, _, site = gray_site
    sur = _record(config, "data_surrogate")
    manifest = json.loads((config.work_dir / "manifest.json").read_text())
    (entry,) = [e for e in manifest["artifacts"] if e["kind"] == "data_surrogate"]
    y_held = np.load(config.work_dir / "artifacts" / entry["path"] / "surrogate.npz")["y_held"]
    held = sur["metrics"]["ids"]["held_out"]
    expected = verdicts.surrogate(held["fidelity"], verdicts.majority_rate(y_held.tolist()), held["coverage"],
                                  {"rule list": sur["metrics"]["rule_list"]["held_out"]["fidelity"],
                                   "tree": sur["metrics"]["tree"]["held_out"]["fidelity"]})
    page = (Path(site) / "data" / "gray" / "shapes" / "decision-set.html").read_text()
    text = _visible(page)
    assert expected.text in text
    assert f"{100 * held['coverage']:.1f}%" in expected.text  # coverage is part of the verdict
    assert ("Does not describe the network" in text) == expected.weak
    assert "Always answering the network's most common class would reach a fidelity of" in text


def test_weak_decision_set_verdict_reaches_the_page(tmp_path):
    """A 51% fidelity decision set (the default report's figure) is called what it is."""
    from types import SimpleNamespace

    from generator.render import verdicts
    from generator.render.site import environment

    verdict = verdicts.surrogate(0.512, 0.105, 0.519, {"tree": 0.513})
    metrics = {"fidelity": 0.512, "coverage": 0.519, "accuracy": 0.5, "mean_length": 2.0, "overlap": 0.06}
    rec = SimpleNamespace(split=SimpleNamespace(train_used=10, test_used=10), features=[],
                          params={"features": [], "max_rule_length": 2, "min_support": 0.1},
                          n_candidates=3, metrics={"ids": {"held_out": metrics}}, rule_list=SimpleNamespace(rules=[]),
                          tree=SimpleNamespace(rules=[]), channel_layer=None)
    md = environment().get_template("data_decision_set.md.j2").render(
        rec=rec, model={"title": "M"}, dataset="d", rules=[], table=[], formulas={"ids": "x", "fidelity": "y"},
        default_name="c", default_list_name="c", verdict=verdict, majority=0.105, rel=lambda t: t,
        subject={"train": "M's training split", "held": "D"})
    assert md.startswith("---\ntitle: ")
    assert '!!! warning "Does not describe the network"' in md and "does not describe the network" in md
    assert "51\\.2%" in md and "10\\.5%" in md


def test_titles_name_the_split_actually_shown(gray_site):
    _, _, site = gray_site
    base = Path(site) / "data" / "gray" / "shapes"
    titles = {name: re.search(r"<title>(.*?)</title>", (base / f"{name}.html").read_text(), re.S).group(1)
              for name in ("prototypes", "influence", "decision-set")}
    # no model title in the config: the id names it; the prototypes are from the reference part
    assert titles["prototypes"].startswith("Prototypes and criticisms: shapes (reference part)")
    assert "shapes (held-out part) against shapes (reference part)" in titles["influence"]
    assert titles["decision-set"].startswith("Decision set: gray, fitted on shapes (reference part), tested on "
                                             "shapes (held-out part)")


def test_training_split_pages_do_not_name_the_test_set():
    from types import SimpleNamespace

    from generator.render.pages.data_dimension import subjects

    words = subjects(SimpleNamespace(from_training=True), "Fashion CNN", "Fashion-MNIST test split")
    assert words == {"train": "Fashion CNN's training split", "held": "Fashion-MNIST test split"}


def test_dataset_table_escapes_once_and_drops_an_empty_label_column():
    """`&#39;` showed literally: HTML entities inside Markdown code spans are not decoded. And a
    dataset without labels (photos) had a Label column of dashes only."""
    from types import SimpleNamespace

    import markdown

    from generator.render.site import environment

    summary = SimpleNamespace(description="Photos", source="sklearn.datasets.load_sample_image('china.jpg')",
                              count=1, class_names=[], licence="CC BY", skipped=[])
    thumbs = [{"id": "china", "image": "a.png", "title": "A <b>temple</b>", "label": None, "licence": "CC BY",
               "source": "load_sample_image('china.jpg')"}]
    md = environment().get_template("data.md.j2").render(
        datasets=[{"id": "photos", "title": "Photos", "summary": summary, "thumbs": thumbs, "labelled": False}],
        rel=lambda t: t)
    page = markdown.markdown(md, extensions=["tables", "attr_list"])
    text = _visible(page)
    assert "load_sample_image('china.jpg')" in text and "&#39;" not in text and "&#x27;" not in text
    assert "A <b>temple</b>" in text and "<b>temple</b>" not in page  # escaped exactly once
    assert "<th>Label</th>" not in page and "<th>Licence and source</th>" in page
    labelled = environment().get_template("data.md.j2").render(
        datasets=[{"id": "photos", "title": "Photos", "summary": summary, "thumbs": thumbs, "labelled": True}],
        rel=lambda t: t)
    assert "<th>Label</th>" in markdown.markdown(labelled, extensions=["tables", "attr_list"])
