"""Maps a method itself flags as unreliable are marked on the pages, never shown as plain
explanations (LRP reports per-image conservation and whether it holds as the rule claims)."""

from __future__ import annotations

import json
from pathlib import Path

from generator.cli import main
from generator.render.pages.outcome import extras_table, reliability_warnings


def _saliency_record(tiny_report: Path):
    """Run the tiny report; its work folder, and the path and JSON of saliency's stored record."""
    assert main(["run", "-q", str(tiny_report)]) == 0
    work = tiny_report.parent / ".modelcard"
    manifest = json.loads((work / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"] if e["kind"] == "attribution" and e["method"] == "saliency")
    record_path = work / "artifacts" / entry["path"] / "record.json"
    return work, record_path, json.loads(record_path.read_text())


def test_warnings_come_from_the_methods_own_flags():
    extras = {"reliable": [True, False, False], "reliability_note": ["", "conservation 0.42, outside [0.9, 1.1]", ""]}
    assert reliability_warnings(extras, 3) == ["", "conservation 0.42, outside [0.9, 1.1]",
                                               "the method's own check failed"]
    assert reliability_warnings({}, 2) == ["", ""]  # methods without a self-check: nothing to mark
    assert reliability_warnings({"reliable": [False]}, 2) == ["", ""]  # not one flag per image: ignored


def test_flagged_maps_are_marked_on_method_and_image_pages(tiny_report: Path, capsys):
    work, record_path, record = _saliency_record(tiny_report)
    n = len(record["images"])
    record["extras"] = {**record["extras"], "reliable": [False] + [True] * (n - 1),
                        "reliability_note": ["relevance 0.42 of the logit reached the input"] + [""] * (n - 1)}
    record_path.write_text(json.dumps(record))  # the record is not covered by the file digests
    assert main(["render", "--no-build", str(tiny_report)]) == 0
    docs = work / "docs"
    method_page = next(docs.rglob("method-saliency.md")).read_text()
    assert method_page.count("**Not a reliable explanation**: relevance 0\\.42 of the logit") == 1
    image_pages = [p.read_text() for p in docs.rglob("*.md") if "Input, as " in p.read_text()]
    assert sum("**Not a reliable explanation**" in text for text in image_pages) == 1
    assert extras_table({"reliability_note": ["", "x"]}, 2) == []  # notes are not a table column by default


def test_selectivity_marks_maps_their_method_flagged(tiny_report: Path):
    """The evaluation names, per method, the maps the method itself flagged unreliable, and
    the page says their curves are not the method's faithfulness."""
    text = tiny_report.read_text()
    work, record_path, record = _saliency_record(tiny_report)
    n = len(record["images"])
    record["extras"] = {**record["extras"], "reliable": [True, False] + [True] * (n - 2),
                        "reliability_note": ["", "completeness gap 40 %"] + [""] * (n - 2)}
    record_path.write_text(json.dumps(record))
    # now evaluate: the outcome artifacts are reused, selectivity reads their flags
    tiny_report.write_text(text + "evaluation:\n  enabled: true\n  selectivity: {steps: 4, patch: 4, images: 3}\n"
                                  "  sensitivity: {models: []}\n  sanity: {models: []}\n  roar: {models: []}\n")
    assert main(["run", "-q", str(tiny_report)]) == 0
    manifest = json.loads((work / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"] if e["kind"] == "evaluation_selectivity")
    sel = json.loads((work / "artifacts" / entry["path"] / "record.json").read_text())
    assert sel["unreliable"] == {"saliency": [f"{record['images'][1]}: completeness gap 40 %"]}
    assert main(["render", "--no-build", str(tiny_report)]) == 0
    page = (work / "docs" / "evaluation" / "tiny" / "pics.md").read_text()
    assert "| 1 of 3 |" in page and "completeness gap 40 %" in page
    assert "should not be read as" in page
