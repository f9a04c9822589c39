"""A rebuild with nothing changed reuses the built site; any change to what determines it
(the config, the manifest, a site file gone) renders again."""

from __future__ import annotations

import json
import time
from pathlib import Path

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.render.site import render_site
from generator.render.stamp import STAMP_NAME


def _mtime(site: Path) -> float:
    return (site / "index.html").stat().st_mtime_ns


def test_unchanged_render_is_reused_and_every_change_renders_again(tiny_report: Path):
    config = load_config(tiny_report)
    run_report(config, show_progress=False)
    site = render_site(config)
    stamp = json.loads((site / STAMP_NAME).read_text())
    assert "index.html" in stamp["files"]
    first = _mtime(site)

    time.sleep(0.01)
    assert render_site(load_config(tiny_report)) == site
    assert _mtime(site) == first, "nothing changed: the site must be reused, not rebuilt"

    # a changed title (the config) renders again
    tiny_report.write_text(tiny_report.read_text().replace('title: "Tiny <report> & friends"',
                                                           'title: "Tiny report, renamed"'))
    render_site(load_config(tiny_report))
    assert _mtime(site) != first
    assert "Tiny report, renamed" in (site / "index.html").read_text()
    second = _mtime(site)

    # a file of the site gone: rebuilt, the file is back
    victim = next(p for p in sorted(site.rglob("*.html")) if p.name != "index.html")
    victim.unlink()
    render_site(load_config(tiny_report))
    assert victim.exists() and _mtime(site) != second
    third = _mtime(site)

    # a file added to the site (a stale page): rebuilt, and mkdocs empties it away
    (site / "stale.html").write_text("old")
    render_site(load_config(tiny_report))
    assert not (site / "stale.html").exists() and _mtime(site) != third
    third = _mtime(site)

    # a changed manifest (a re-run with another method) renders again
    tiny_report.write_text(tiny_report.read_text().replace("methods: [saliency, gradcam]",
                                                           "methods: [saliency]"))
    changed = load_config(tiny_report)
    run_report(changed, show_progress=False)
    render_site(changed)
    assert _mtime(site) != third


def test_a_failed_build_leaves_no_stamp(tiny_report: Path, monkeypatch):
    import generator.render.site as site_module

    config = load_config(tiny_report)
    run_report(config, show_progress=False)
    site = render_site(config)
    assert (site / STAMP_NAME).exists()

    def broken(*_args, **_kwargs):
        raise RuntimeError("mkdocs failed half-way")

    monkeypatch.setattr(site_module, "_mkdocs_build", broken)
    tiny_report.write_text(tiny_report.read_text().replace('title: "Tiny <report> & friends"', 'title: "Other"'))
    try:
        render_site(load_config(tiny_report))
    except RuntimeError:
        pass
    assert not (site / STAMP_NAME).exists()
    monkeypatch.undo()
    # and the next render builds (not reuses) the site
    render_site(load_config(tiny_report))
    assert "Other" in (site / "index.html").read_text()
