"""Safety of the site build: the site folder, links in hand-written pages, snippet includes.

These render from an empty manifest (no models run), so they need no torch and take a second
or two each; the checks under test run before any page is rendered anyway.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.config import load_config
from generator.render import site as site_module
from generator.render.site import SITE_MARKER, RenderError, check_site_dir, check_site_src, render_site
from generator.render.snippet_includes import includes


def _configure(report: Path, extra: str) -> None:
    report.write_text(report.read_text() + extra)


@pytest.fixture()
def report(tiny_report: Path) -> Path:
    """The tiny report with an empty run recorded, so pages render without running a model."""
    work = load_config(tiny_report).work_dir
    work.mkdir(parents=True)
    (work / "manifest.json").write_text(json.dumps(
        {"device": "cpu", "artifacts": [], "models": [], "datasets": [], "pairs": [], "failures": []}))
    return tiny_report


def _line_of(report: Path, text: str) -> int:
    return next(i for i, line in enumerate(report.read_text().splitlines(), 1) if text in line)


# -- 1. the site folder --------------------------------------------------------------------------

def test_existing_folder_with_foreign_files_is_refused_and_kept(report: Path):
    folder = report.parent / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "sub" / "data.csv").write_text("1,2")
    _configure(report, "output:\n  site_dir: mine\n")
    config = load_config(report)
    with pytest.raises(RenderError) as err:
        render_site(config)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{report}:{_line_of(report, 'site_dir: mine')}: output.site_dir: {folder} ")
    assert "'sub', 'thesis.tex'" in message and "empty or new folder" in message and "delete" in message
    assert (folder / "thesis.tex").read_text() == "years of work" and (folder / "sub" / "data.csv").exists()
    assert not (config.work_dir / "docs").exists()  # refused before any page was rendered
    with pytest.raises(RenderError, match="output.site_dir"):
        check_site_dir(config)


def test_new_empty_and_earlier_site_folders_are_built(report: Path):
    (report.parent / "empty").mkdir()
    (report.parent / "pages").mkdir()
    # A gh-pages checkout: mkdocs keeps dot-files, so only .git there is no reason to refuse.
    (report.parent / "pages" / ".git").mkdir()
    (report.parent / "pages" / ".git" / "HEAD").write_text("ref: refs/heads/gh-pages\n")
    original = report.read_text()
    for name in ("new", "empty", "pages"):
        report.write_text(original + f"output:\n  site_dir: {name}\n")
        site = render_site(load_config(report))
        assert (site / "index.html").exists()
        assert (site / SITE_MARKER).read_text().startswith("modelcard site:")
    assert (report.parent / "pages" / ".git" / "HEAD").exists()
    # Rebuilding a folder this tool made is allowed, and empties it as before.
    (site / "stale.html").write_text("old")
    site = render_site(load_config(report))
    assert (site / "index.html").exists() and not (site / "stale.html").exists()
    # A site built before sites were marked is recognised by its files and rebuilt too.
    (site / SITE_MARKER).unlink()
    (site / "stale.html").write_text("old")
    site = render_site(load_config(report))
    assert not (site / "stale.html").exists() and (site / SITE_MARKER).exists()


@pytest.mark.parametrize("site_dir, extra, named", [
    (".", "", "the config's folder"),
    ("..", "", "the config's folder"),
    ("w", "  work_dir: w/inner\n", "output.work_dir"),
    ("course", "site_src: [course/pages]\n", "site_src folder 'course/pages'"),
])
def test_site_folder_may_not_hold_config_work_or_site_src(report: Path, site_dir: str, extra: str, named: str):
    (report.parent / "course" / "pages").mkdir(parents=True)
    # A marker must not make these acceptable: emptying them would still delete the inputs.
    (report.parent / SITE_MARKER).write_text("modelcard site: planted\n")
    _configure(report, f"output:\n  site_dir: {site_dir}\n{extra}")
    with pytest.raises(RenderError) as err:
        render_site(load_config(report))
    message = str(err.value)
    assert "\n" not in message and ": output.site_dir: " in message and named in message
    assert report.exists()


def test_site_folder_that_cannot_be_written_is_refused(report: Path, monkeypatch: pytest.MonkeyPatch):
    (report.parent / "afile").write_text("x")
    _configure(report, "output:\n  site_dir: afile/site\n")
    with pytest.raises(RenderError, match=r"output.site_dir: cannot create .*afile.* is not a folder"):
        check_site_dir(load_config(report))
    # Running as root makes every folder writable, so the permission answer is simulated.
    report.write_text(report.read_text().replace("afile/site", "out/site"))
    monkeypatch.setattr(site_module.os, "access", lambda path, mode: False)
    with pytest.raises(RenderError) as err:
        check_site_dir(load_config(report))
    assert "\n" not in str(err.value)
    assert f"cannot write the site folder {report.parent / 'out' / 'site'}: {report.parent} is not writable" \
        in str(err.value)


# -- 2. symbolic links in site_src ---------------------------------------------------------------

def test_site_src_links_leaving_the_folder_or_dangling_are_refused(report: Path):
    secret = report.parent / "secret.env"
    secret.write_text("TOKEN=hunter2")
    (report.parent / "outside").mkdir()
    src = report.parent / "course"
    (src / "deep").mkdir(parents=True)
    (src / "lecture.md").write_text("# Lecture\n")
    (src / "leak.txt").symlink_to(secret)
    (src / "deep" / "env.txt").symlink_to("/proc/self/environ")
    (src / "dir").symlink_to(report.parent / "outside", target_is_directory=True)
    (src / "gone.png").symlink_to(src / "missing.png")
    (src / "same.md").symlink_to("lecture.md")  # stays inside: allowed
    _configure(report, "site_src: [course]\n")
    config = load_config(report)
    with pytest.raises(RenderError) as err:
        render_site(config)
    message = str(err.value)
    for link, target in [("leak.txt", secret), ("deep/env.txt", "/proc/self/environ"),
                         ("dir", report.parent / "outside"), ("gone.png", src / "missing.png")]:
        assert f"{src / link} -> {target}" in message
    assert "same.md" not in message
    assert not (config.work_dir / "docs").exists() and not config.site_dir.exists()  # nothing written


def test_site_src_links_inside_the_folder_are_followed(report: Path):
    src = report.parent / "course"
    (src / "notes").mkdir(parents=True)
    (src / "notes" / "lecture.md").write_text("# Lecture\n\nbody text\n")
    (src / "lecture.md").symlink_to("notes/lecture.md")
    _configure(report, "site_src: [course]\n")
    site = render_site(load_config(report))
    assert "body text" in (site / "lecture.html").read_text()


# -- 3. snippet includes and mkdocs failures -----------------------------------------------------

@pytest.mark.parametrize("page, line, path, says", [
    ('# P\n\n--8<-- "/etc/passwd"\n', 3, "/etc/passwd", "is an absolute path"),
    ("# P\n\n    --8<-- '../../../../../../../etc/passwd:1:3'\n", 3, "../../../../../../../etc/passwd:1:3",
     "leads outside"),
    ("# P\n\n--8<--\nexamples/github-actions/modelcard.yml\n\nexamples/nope.yml\n--8<--\n", 6,
     "examples/nope.yml", "does not exist"),
])
def test_bad_snippet_include_is_one_line_with_page_and_line(report: Path, page: str, line: int, path: str,
                                                            says: str):
    src = report.parent / "course"
    src.mkdir()
    (src / "page.md").write_text(page)
    _configure(report, "site_src: [course]\n")
    config = load_config(report)
    with pytest.raises(RenderError) as err:
        render_site(config)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"{src / 'page.md'}:{line}: snippet include '{path}' {says}")
    assert not (config.work_dir / "docs").exists()


def test_snippet_include_syntax_read_like_the_extension():
    text = ('a\n--8<-- "one.md"\n;--8<-- "escaped.md"\n--8<-- "trailing.md" \n'
            '--8<--\n two.md\n;commented.md\n\n--8<-- "inline-in-block.md"\n--8<--\n'
            '```\n-8<- \'fenced.md:sec\'\n```\n')
    assert includes(text) == [(2, "one.md"), (6, "two.md"), (12, "fenced.md:sec")]


def test_valid_includes_pass_the_check(report: Path):
    src = report.parent / "course"
    src.mkdir()
    (src / "page.md").write_text('--8<-- "examples/github-actions/modelcard.yml:1:3"\n;--8<-- "/etc/passwd"\n')
    _configure(report, "site_src: [course]\n")
    check_site_src(load_config(report))


def test_failed_mkdocs_build_leads_with_its_first_problem(tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text('# A\n\n--8<-- "not-here.md"\n')
    mkdocs_file = tmp_path / "mkdocs.yml"
    mkdocs_file.write_text(f"site_name: x\ndocs_dir: {docs}\nmarkdown_extensions:\n"
                           f"  - pymdownx.snippets:\n      base_path: [{tmp_path}]\n      check_paths: true\n")
    with pytest.raises(RenderError) as err:
        site_module._mkdocs_build(mkdocs_file, tmp_path / "site", strict=True)
    first = str(err.value).splitlines()[0]
    assert first == ("mkdocs build failed: ERROR - Error reading page 'index.md': "
                     "Snippet at path 'not-here.md' could not be found")
    assert "Traceback" in str(err.value)  # the rest follows, for whoever needs it
    coloured = site_module._mkdocs_failure(mkdocs_file, 1, "", "INFO - x\n\x1b[31mWARNING\x1b[0m -  bad link\n")
    assert coloured.splitlines()[0] == "mkdocs build failed: WARNING - bad link"
