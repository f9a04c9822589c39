"""The built default site in headless Chromium, as a reader meets it: served over http and
opened from disk (file://).

Every page is visited from disk and the largest page of each kind (``site_checks.page_kind``: top
folder, depth and file-name prefix) also over http, at 1280 px, in one browser (a few tabs at
once, no waits beyond each page's own load). What differs between the two is how the page's
scripts, styles and search index load, which is the template's, not the page's: a second pass
over every page from http would cost a minute more and find nothing new. Each visit fails on a
console error, an uncaught exception or a failed request, a broken image, an unlabelled colour
bar (or a colour scale inside a link) and a literal HTML entity in the visible text (the checks
are in ``tests/site_checks.py``, each proven able to fail by ``tests/test_browser_checks.py``).
Links and the files of every image, script and stylesheet are checked for every page, from the
HTML. Search must find method names from both. From the files: no page over 5 MB with what it
loads, no long numeric table in the search index, no two pages with the same title.

At 390 px the same one page per template is checked for sideways overflow, from both: pages of
one template share their layout.

The site is the default report at test size (``tests/e2e_config.py``: every model, dimension,
method and page kind of the default report, with fewer images, one training epoch and smaller
ROAR and data pools), so the suite stays within its budget; ``benchmarks/site_weight.py`` measures
the full-size default site. The first build takes a few minutes on a CPU (the Fashion-MNIST CNN is
trained once); artifacts are cached in ``.modelcard-e2e/`` so later runs only re-render.
``MODELCARD_SITE=<folder>`` tests an already built site instead (e.g. a copy of the default
report rendered elsewhere), without building anything.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from tests import site_checks as checks
from tests.e2e_config import write_test_size_config
from tests.site_server import CHROMIUM_ARGS, browser_unavailable, chromium_path, serve

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / ".modelcard-e2e"
SEARCH_TERMS = ["Integrated gradients", "Grad-CAM", "occlusion"]
TABS = 4  # pages loading at once in the one browser

pytestmark = pytest.mark.skipif(browser_unavailable() is not None, reason=str(browser_unavailable()))


def _build_default() -> Path:
    if not Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    report = write_test_size_config(E2E)
    proc = subprocess.run([sys.executable, "-m", "generator.cli", "build", "-q", report.name], cwd=E2E,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failure(s)" in proc.stdout, proc.stdout
    return E2E / "site"


@pytest.fixture(scope="module")
def default_site() -> Path:
    given = os.environ.get("MODELCARD_SITE")
    if given:
        site = Path(given).resolve()
        assert (site / "index.html").is_file(), f"MODELCARD_SITE={given} holds no built site"
        return site
    return _build_default()


@pytest.fixture(scope="module")
def pages(default_site: Path) -> List[str]:
    found = sorted(p.relative_to(default_site).as_posix() for p in default_site.rglob("*.html")
                   if p.name != "404.html")
    assert "index.html" in found and len(found) > 10
    return found


def _label(base: str) -> str:
    return base.split(":")[0]  # http or file


async def _visit_async(visits: List[Tuple[str, str]], width: int, check, tabs: int) -> List[str]:
    from playwright.async_api import async_playwright

    queue = collections.deque(visits)
    problems: List[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)

        async def tab() -> None:
            page = await browser.new_page(viewport={"width": width, "height": 1000})
            watch = checks.ConsoleWatch(page)
            while queue:
                base, rel = queue.popleft()
                await page.goto(f"{base}/{rel}", wait_until="load")
                found = list(await check(page)) + watch.take()
                problems.extend(f"{_label(base)} {rel}: {p}" for p in found)
            await page.close()

        await asyncio.gather(*(tab() for _ in range(tabs)))
        await browser.close()
    return sorted(problems)


def _visit(bases: List[str], pages: List[str], width: int, check, tabs: int = TABS,
           more: Sequence[Tuple[str, str]] = ()) -> List[str]:
    """Each page from each base, then each ``(base, page)`` of ``more``, in one browser with
    ``tabs`` pages at a time (page loads wait on files and scripts, so a few tabs keep the CPUs
    busy); the problems ``check`` and the console report, each naming its page. No waits besides
    each page's own load."""
    visits = [(base, rel) for base in bases for rel in pages] + list(more)
    return asyncio.run(_visit_async(visits, width, check, tabs))


def _one_page_per_template(site: Path, pages: List[str]) -> List[str]:
    """The largest HTML file of each page kind: the one with the most to load and to overflow."""
    kinds: Dict[tuple, str] = {}
    for rel in pages:
        kind = checks.page_kind(rel)
        if kind not in kinds or (site / rel).stat().st_size > (site / kinds[kind]).stat().st_size:
            kinds[kind] = rel
    return sorted(kinds.values())


def test_every_page_from_disk_and_every_template_over_http(default_site: Path, pages: List[str]):
    problems = [f"{rel}: {p}" for rel in pages
                for p in checks.broken_links(default_site, default_site / rel)
                + checks.missing_images(default_site, default_site / rel)]
    sample = _one_page_per_template(default_site, pages)
    assert "index.html" in sample and len(sample) >= 10
    with serve(default_site) as http_base:
        problems += _visit([default_site.as_uri()], pages, 1280, checks.page_problems,
                           more=[(http_base, rel) for rel in sample])
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])


def test_screenshots(default_site: Path, pages: List[str]):
    from playwright.sync_api import sync_playwright

    shots = E2E / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    gallery = next((p for p in pages if p.startswith("features/") and p.count("/") == 3
                    and p.endswith("index.html")),
                   next(p for p in pages if p.startswith("outcome/") and p.endswith("index.html")))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        for rel, name, width in (("index.html", "front", 1280), ("index.html", "front-phone", 390),
                                 (gallery, "gallery", 1280)):
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.goto(f"{default_site.as_uri()}/{rel}", wait_until="load")
            page.screenshot(path=str(shots / f"{name}.png"), full_page=False)
            page.close()
        browser.close()
    assert all((shots / f"{n}.png").stat().st_size > 10_000 for n in ("front", "front-phone", "gallery"))


def test_search_finds_method_names_from_http_and_from_disk(default_site: Path, pages: List[str]):
    from playwright.sync_api import sync_playwright

    deep = next(p for p in pages if p.count("/") >= 3)  # a page in a sub-folder: relative paths to the index
    failures = []
    with serve(default_site) as http_base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        for base in (http_base, default_site.as_uri()):
            for rel in ("index.html", deep):
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                watch = checks.ConsoleWatch(page)
                page.goto(f"{base}/{rel}", wait_until="load")
                for term in SEARCH_TERMS:
                    hits, line = checks.search_hits(page, term)
                    if hits == 0:
                        failures.append(f"{_label(base)} {rel}: search for {term!r} found nothing ({line})")
                failures += [f"{_label(base)} {rel}: {e}" for e in watch.take()]
                page.close()
        browser.close()
    assert not failures, "\n".join(failures)


def test_no_sideways_overflow_on_a_phone(default_site: Path, pages: List[str]):
    sample = _one_page_per_template(default_site, pages)
    assert "index.html" in sample and len(sample) >= 10
    with serve(default_site) as http_base:
        problems = _visit([http_base, default_site.as_uri()], sample, 390, checks.overflow_problems)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])


def test_no_page_over_5_mb(default_site: Path, pages: List[str]):
    heavy = [p for p in (checks.page_weight_problem(default_site, default_site / rel) for rel in pages) if p]
    assert not heavy, "\n".join(heavy)


def test_search_index_works_offline_and_holds_no_numeric_tables(default_site: Path):
    index = checks.read_search_index(default_site)
    assert (default_site / "search" / "search_index.js").is_file()  # loaded by a script tag from file://
    assert "unpkg.com" not in (default_site / "index.html").read_text()  # nothing from a CDN
    assert checks.numeric_index_entries(index) == []


def test_page_titles_name_what_they_show(default_site: Path):
    """Search results list page titles: two pages with one title ("Grad-CAM", "Overview") cannot
    be told apart, so every title must name its model or dataset."""
    index = checks.read_search_index(default_site)
    titles = collections.defaultdict(list)
    for doc in index["docs"]:
        if "#" not in doc["location"]:
            titles[re.sub(r"\s+", " ", doc["title"]).strip()].append(doc["location"])
    shared = {t: locs for t, locs in titles.items() if len(locs) > 1}
    assert not shared, "\n".join(f"{t!r}: {len(locs)} pages, e.g. {locs[:3]}" for t, locs in sorted(shared.items()))


def test_default_site_renders_from_a_wheel_without_torch(render_install, tmp_path: Path):
    """The browser test's report (the default at test size), rendered by the render-only wheel install from a folder
    outside the checkout, give the same pages as the development install."""
    import shutil

    from render_install import run

    if os.environ.get("MODELCARD_SITE"):
        pytest.skip("compares with the default report's own render in .modelcard-e2e (MODELCARD_SITE is set)")
    _build_default()
    shutil.copytree(E2E / ".modelcard" / "artifacts", tmp_path / ".modelcard" / "artifacts")
    shutil.copy(E2E / ".modelcard" / "manifest.json", tmp_path / ".modelcard" / "manifest.json")
    shutil.copy(E2E / "report.yaml", tmp_path / "report.yaml")
    run([render_install.modelcard, "render", "report.yaml"], tmp_path)
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "lecture.html").is_file()
    ours, theirs = E2E / ".modelcard" / "docs", tmp_path / ".modelcard" / "docs"
    pages = sorted(p.relative_to(ours) for p in ours.rglob("*.md"))
    assert len(pages) > 10
    assert [str(p) for p in pages if (theirs / p).read_bytes() != (ours / p).read_bytes()] == []
