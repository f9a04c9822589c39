"""Hand-written pages: merged into the site, embed generated figures by stable references."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.config import load_config
from generator.pipeline.run import run_report
from generator.render.site import RenderError, render_site


def _with_site_src(tiny_report: Path, pages: dict) -> Path:
    src = tiny_report.parent / "course"
    src.mkdir()
    for name, text in pages.items():
        (src / name).write_text(text)
    tiny_report.write_text(tiny_report.read_text() + "site_src: [course]\n")
    return src


def test_reference_resolves_to_generated_figure_and_page(tiny_report: Path):
    _with_site_src(tiny_report, {
        "lecture.md": "# Lecture\n\nSee ![cam](modelcard:outcome/tiny/pics/gradcam/bee-rgb0) and "
                      "![in](modelcard:input/tiny/pics/bee-rgb0), or "
                      "[all maps](modelcard:page/outcome/tiny/pics/method-gradcam).\n",
        "nav.yml": "- Lecture: lecture.md\n",
    })
    config = load_config(tiny_report)
    run_report(config, show_progress=False)
    site = render_site(config)
    html = (site / "lecture.html").read_text()
    assert "modelcard:" not in html
    assert 'href="outcome/tiny/pics/method-gradcam.html"' in html
    import re

    srcs = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(srcs) == 2 and all((site / s).exists() for s in srcs)


def test_broken_reference_fails_with_file_and_line(tiny_report: Path):
    src = _with_site_src(tiny_report, {
        "lecture.md": "# Lecture\n\nline two\n![x](modelcard:outcome/tiny/pics/gradcm/bee-rgb0)\n",
    })
    config = load_config(tiny_report)
    run_report(config, show_progress=False)
    with pytest.raises(RenderError) as err:
        render_site(config)
    message = str(err.value)
    assert f"{src / 'lecture.md'}:4: unknown reference 'modelcard:outcome/tiny/pics/gradcm/bee-rgb0'" in message
    assert "close matches: outcome/tiny/pics/gradcam/bee-rgb0" in message


def test_math_in_hand_written_pages_becomes_mathml_but_code_is_kept():
    from generator.render.text import render_math_in_markdown

    text = "Sum $a+b$ here, `$HOME` stays.\n\n$$x^2$$\n\n```\necho $A $B\n```\n"
    out = render_math_in_markdown(text)
    assert out.count("<math") == 2 and 'display="block"' in out and 'display="inline"' in out
    assert "`$HOME`" in out and "echo $A $B" in out
