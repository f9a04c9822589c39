"""Packaging: a wheel carries the renderer's files, and a render-only install renders without torch.

The end-to-end test builds a wheel from a copy of the source tree (so nothing a developer built
in place, such as ``*.egg-info`` or ``build/``, can help), installs it with only
``requirements/render.txt`` into a fresh virtualenv that has no torch, and renders and diffs,
from a folder outside the checkout, artifacts that the development install computed.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

import pytest
from render_install import RENDER_REQUIREMENTS, REPO, run

from generator import resources


def _requirement_lines(text: str) -> list:
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def _pyproject_dependencies() -> list:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the check is the same on any version
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def test_render_requirements_are_the_declared_ones_without_torch():
    declared = _pyproject_dependencies()
    render = _requirement_lines(RENDER_REQUIREMENTS.read_text())
    # Same specifier as pyproject.toml, so the two installs never disagree on a version.
    assert [line for line in render if line not in declared] == []
    names = {re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower() for line in render}
    assert not names & {"torch", "torchvision", "timm", "scipy", "scikit-learn", "scikit-image"}


def test_setup_ships_what_the_package_looks_for():
    tree = ast.parse((REPO / "setup.py").read_text())
    shipped = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                   and any(getattr(t, "id", None) == "SHIPPED" for t in node.targets))
    assert tuple(shipped) == resources.SHIPPED
    for entry in shipped:
        assert (REPO / entry).exists(), entry


@pytest.mark.slow
def test_wheel_renders_and_diffs_without_torch_outside_the_checkout(tiny_report: Path, tmp_path: Path,
                                                                    render_install):
    # 1. The wheel (built from a clean copy of the source tree) carries the renderer's files.
    names = render_install.wheel_names()
    expected = set()
    for entry in resources.SHIPPED:
        source = REPO / entry
        files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
        expected |= {f"generator/_resources/{p.relative_to(REPO).as_posix()}" for p in files
                     if "__pycache__" not in p.parts}
    assert expected and expected <= names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "templates/", "site_src/"))]

    # 2. Artifacts computed by the development install (torch), with built-in pages and a
    # user page that includes a file by a path relative to the config's folder.
    report = tiny_report.parent
    (report / "pages").mkdir()
    (report / "pages" / "mine.md").write_text('# Mine\n\n--8<-- "snippets/hello.txt"\n')
    (report / "pages" / "nav.yml").write_text("- Mine: mine.md\n")
    (report / "snippets").mkdir()
    (report / "snippets" / "hello.txt").write_text("included-from-the-config-folder\n")
    with tiny_report.open("a") as config:
        config.write('site_src: ["builtin:common", "pages"]\n')
    run([sys.executable, "-m", "generator.cli", "run", "-q", tiny_report], report)
    shutil.copytree(report / ".modelcard", tmp_path / "base")

    # 3. The fresh virtualenv outside the checkout: the render-only set and the wheel, no deps.
    venv, python = render_install.venv, render_install.python
    probe = ("import importlib.util, generator, generator.resources as r\n"
             "assert importlib.util.find_spec('torch') is None, 'torch is installed'\n"
             "print(generator.__file__); print(r.ROOT)\n")
    package_file, resource_root = run([python, "-c", probe], tmp_path).split()
    assert Path(package_file).is_relative_to(venv) and Path(resource_root).name == "_resources"

    # 4. Render and diff with the installed console script, from the report's folder.
    modelcard = render_install.modelcard
    run([modelcard, "render", tiny_report.name], report)
    site = report / "site"
    assert (site / "index.html").is_file()
    assert "runs-on" in (site / "publishing.html").read_text()  # a built-in page's include, from the wheel
    assert "included-from-the-config-folder" in (site / "mine.html").read_text()
    summary = run([modelcard, "diff", tmp_path / "base", report / ".modelcard", "-o", tmp_path / "diff"], report)
    assert "No change" in summary
    assert "torch" not in run([python, "-m", "pip", "list"], tmp_path).lower()


def test_includes_are_read_from_the_config_folder_then_the_shipped_files(tiny_report: Path):
    from generator.config import load_config
    from generator.render.site import RenderError, check_site_src, snippet_bases

    report = tiny_report.parent
    (report / "pages").mkdir()
    (report / "own.txt").write_text("mine\n")
    page = report / "pages" / "p.md"
    # One include from each base on the same page: fine, as pymdownx.snippets tries them in turn.
    page.write_text('--8<-- "own.txt"\n--8<-- "examples/github-actions/modelcard.yml:1:2"\n')
    with tiny_report.open("a") as config:
        config.write('site_src: ["builtin:common", "pages"]\n')
    config = load_config(tiny_report)
    assert snippet_bases(config) == [report, resources.ROOT]
    check_site_src(config)
    page.write_text('--8<-- "own.txt"\n--8<-- "nowhere.txt"\n')
    with pytest.raises(RenderError) as err:
        check_site_src(config)
    assert str(err.value) == f"{page}:2: snippet include 'nowhere.txt' does not exist: there is no file " \
                             f"{report / 'nowhere.txt'}"
