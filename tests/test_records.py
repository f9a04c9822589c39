"""Typed records (``generator.records``): every kind a run writes parses and round-trips to the
exact JSON on disk, a wrong record names its kind and field, an old manifest is refused with
one line saying to run again, and a renamed field stops the render at the boundary (naming the
artifact and the field) instead of inside a Jinja template."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict

import pytest
from data_fakes import fashion_config, folder_config, write_fake_fashion
from test_render_contract import FULL

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.records import (
    MANIFEST_SCHEMA_VERSION,
    RECORD_TYPES,
    SCHEMA_VERSIONS,
    ManifestOutdated,
    PredictionsRecord,
    RecordError,
    check_manifest,
    parse_record,
    validate_record,
)

STORE_FIELDS = ("kind", "key", "files", "integrity")


def _records(work_dir: Path):
    """(kind, record as on disk) of every artifact the manifest lists."""
    manifest = json.loads((work_dir / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        yield entry["kind"], json.loads((work_dir / "artifacts" / entry["path"] / "record.json").read_text())


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Dict[str, Path]:
    """Work folders that hold every kind: the gray report with every dimension on, a fake
    Fashion-MNIST report (a model trained here, ROAR / KAR) and two models compared."""
    gray_root = tmp_path_factory.mktemp("records_gray")
    gray = folder_config(gray_root)
    # part_channels: the galleries come in parts (features_gallery_part), joined afterwards
    full = FULL.replace("features: {enabled: true,", "features: {enabled: true, part_channels: 1,")
    assert full != FULL
    gray.write_text(gray.read_text().replace("outcome:\n  enabled: false\n", "") + full)
    fashion_root = tmp_path_factory.mktemp("records_fashion")
    data_dir = write_fake_fashion(fashion_root / "fmnist", n_train=120, n_test=100)
    fashion = fashion_config(fashion_root, data_dir)
    text = fashion.read_text().replace("outcome:\n  enabled: false\n", "outcome: {methods: [saliency], images: 2}\n")
    fashion.write_text(text
                       + textwrap.dedent("""
                           evaluation:
                             enabled: true
                             selectivity: {enabled: false}
                             sensitivity: {enabled: false}
                             sanity: {enabled: false}
                             roar: {methods: [saliency], fractions: [0.5], train_images: 100, test_images: 100}
                       """))
    # two models on one dataset: the comparison and representation-similarity kinds
    from test_compare_pages import write_compare_report

    compare = write_compare_report(tmp_path_factory.mktemp("records_compare"))
    # ... and the concepts kinds (TCAV, RCV, dissection), at the smallest sizes that run them
    compare.write_text(compare.read_text() + textwrap.dedent("""
        concepts:
          enabled: true
          tcav: {builtin: [stripes, red], images: 6, random_sets: 3, classes: 2, fit: mean_difference}
          rcv: {images: 24}
          dissection: {images: 20, topup: 12, textures: 3, mask_side: 16, iou_threshold: 0.01}
    """))
    mp = pytest.MonkeyPatch()
    import generator.data.sources as sources

    mp.setattr(sources, "FASHION_MNIST_DIRS", [str(data_dir)])
    try:
        out = {}
        for name, path in (("gray", gray), ("fashion", fashion), ("compare", compare)):
            config = load_config(path)
            summary = run_report(config, show_progress=False)
            assert not summary.failed, summary.failed
            out[name] = config.work_dir
        yield out
    finally:
        mp.undo()


def test_every_kind_parses_and_round_trips_exactly(reports: Dict[str, Path]):
    seen = set()
    for work_dir in reports.values():
        for kind, record in _records(work_dir):
            typed = parse_record(kind, record)
            assert type(typed) is RECORD_TYPES[kind]
            # the typed record is the JSON on disk, no more and no less (ints stay ints, absent stays absent)
            assert typed.to_record() == record, kind
            validate_record(kind, {k: v for k, v in record.items() if k not in STORE_FIELDS})
            seen.add(kind)
        check_manifest(json.loads((work_dir / "manifest.json").read_text()))
    assert seen == set(RECORD_TYPES), sorted(set(RECORD_TYPES) - seen)


def test_schema_versions_cover_every_kind():
    assert set(SCHEMA_VERSIONS) == set(RECORD_TYPES)
    assert all(isinstance(v, str) and v for v in SCHEMA_VERSIONS.values())
    assert all(RECORD_TYPES[k].SCHEMA == v and RECORD_TYPES[k].KIND == k for k, v in SCHEMA_VERSIONS.items())


def _prediction(**changes: Any) -> Dict[str, Any]:
    record = {"model": "m", "dataset": "d", "count": 1, "top_k": 1, "has_labels": False,
              "shown": [{"id": "a", "title": None, "licence": None, "source": None, "label": None,
                         "label_name": None, "top": [{"index": 0, "name": "cat", "probability": 0.5}]}]}
    record.update(changes)
    return record


def test_validate_record_names_the_kind_and_the_field():
    validate_record("predictions", _prediction())
    with pytest.raises(RecordError) as missing:
        validate_record("predictions", {k: v for k, v in _prediction().items() if k != "top_k"})
    assert str(missing.value) == "predictions record: field 'top_k': missing"
    assert missing.value.kind == "predictions" and missing.value.field == "top_k"

    renamed = _prediction()
    renamed["shown"][0]["top"][0] = {"index": 0, "name": "cat", "prob": 0.5}
    with pytest.raises(RecordError) as caught:
        validate_record("predictions", renamed)
    lines = str(caught.value).splitlines()
    assert lines[0] == "predictions record: 2 problems:"
    assert "  field 'shown[0].top[0].probability': missing" in lines
    assert any("field 'shown[0].top[0].prob': not a field of this kind" in line for line in lines)

    with pytest.raises(RecordError, match=r"field 'count': .*integer.*got str"):
        validate_record("predictions", _prediction(count="1"))
    with pytest.raises(RecordError, match=r"field 'accuracy': expected a number, got bool"):
        validate_record("predictions", _prediction(accuracy=True))
    with pytest.raises(RecordError, match=r"unknown artifact kind 'prediction'; did you mean 'predictions'"):
        validate_record("prediction", _prediction())
    with pytest.raises(RecordError, match=r"field 'kind': is 'attribution', read as 'predictions'"):
        parse_record("predictions", {**_prediction(), "kind": "attribution"})


def test_records_keep_numbers_as_written_and_are_read_only():
    import numpy as np
    from pydantic import ValidationError

    typed = parse_record("predictions", _prediction(accuracy=1, top_k_accuracy=0.5))
    assert isinstance(typed, PredictionsRecord)
    assert typed.accuracy == 1 and isinstance(typed.accuracy, int) and typed.confusion is None
    assert typed.to_record() == _prediction(accuracy=1, top_k_accuracy=0.5)  # absent fields stay absent
    with pytest.raises(ValidationError):
        typed.count = 3  # type: ignore[misc]
    # a stage's record is checked in its stored form: numpy scalars and tuples are fine there
    validate_record("predictions", _prediction(count=np.int64(1), accuracy=np.float32(0.25)))


def test_manifest_of_another_schema_is_refused():
    current = {"version": MANIFEST_SCHEMA_VERSION, "artifacts": [], "models": [], "datasets": [], "pairs": []}
    check_manifest(current)
    check_manifest({k: v for k, v in current.items() if k != "version"})  # written by hand (tests)
    for version, age in ((0, "an older"), (MANIFEST_SCHEMA_VERSION + 1, "an unknown"), ("2", "an unknown")):
        with pytest.raises(ManifestOutdated) as caught:
            check_manifest({**current, "version": version})
        message = str(caught.value)
        assert "\n" not in message and age in message and "run `modelcard run` again" in message
    with pytest.raises(ManifestOutdated, match=r"older record schema \(attribution\).*modelcard run"):
        check_manifest({**current, "schemas": {**SCHEMA_VERSIONS, "attribution": "0"}})
    with pytest.raises(RecordError, match=r"field 'artifacts\[0\]\.path': missing"):
        check_manifest({**current, "artifacts": [{"kind": "model", "key": "k"}]})


@pytest.fixture()
def built(tiny_report: Path) -> Path:
    run_report(load_config(tiny_report), show_progress=False)
    return tiny_report


def test_render_and_diff_refuse_an_old_manifest_in_one_line(built: Path, capsys):
    from generator.cli import main
    from generator.diff import diff_reports
    from generator.render.site import render_site

    config = load_config(built)
    path = config.work_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "version": MANIFEST_SCHEMA_VERSION - 1}))
    with pytest.raises(ManifestOutdated, match="older schema.*run `modelcard run` again"):
        render_site(config, build=False)
    with pytest.raises(ManifestOutdated):
        diff_reports(built, built)
    assert main(["render", "--no-build", str(built)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "modelcard run" in err, err
    # running again rewrites the manifest with this schema, and the render works
    run_report(config, show_progress=False)
    assert json.loads(path.read_text())["version"] == MANIFEST_SCHEMA_VERSION
    render_site(config, build=False)


def test_renamed_field_fails_at_the_boundary_not_in_a_template(built: Path):
    from jinja2 import UndefinedError

    from generator.render.manifest import Manifest
    from generator.render.site import render_site

    config = load_config(built)
    art = Manifest.load(config.work_dir).one("attribution", method="gradcam")
    record_path = art.path / "record.json"
    record = json.loads(record_path.read_text())
    record["target_labels"] = record.pop("target_names")  # what a stage renaming a field would write
    record_path.write_text(json.dumps(record, indent=1, sort_keys=True))

    manifest = Manifest.load(config.work_dir)
    stale = manifest.one("attribution", method="gradcam")
    assert stale.record["target_labels"]  # the JSON record still reads: nothing is checked until used
    with pytest.raises(RecordError) as caught:
        _ = stale.rec
    message = str(caught.value)
    assert f"artifact attribution/{art.key}" in message and "field 'target_names': missing" in message
    assert "field 'target_labels': not a field" in message and "modelcard run" in message
    assert manifest.one("attribution", method="saliency").rec.method == "saliency"  # others still read

    try:
        render_site(config, build=False)
    except UndefinedError as exc:  # pragma: no cover - the failure this test guards against
        pytest.fail(f"the render failed inside a template: {exc}")
    except RecordError as exc:
        assert "target_names" in str(exc) and art.key in str(exc)
    else:
        pytest.fail("the render read a record with a renamed field")


def test_records_and_manifest_import_no_torch():
    code = ("import sys\nimport generator.records, generator.render.manifest, generator.diff\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr
