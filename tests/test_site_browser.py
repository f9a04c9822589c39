"""The built default site in headless Chromium: every page loads, no broken image or link,
no console error; screenshots of the front page and one gallery.

Building the default report takes minutes on a CPU the first time (the Fashion-MNIST CNN is
trained once); artifacts are cached in ``.modelcard-e2e/`` so later runs only re-render.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

from tests.site_server import CHROMIUM_ARGS, browser_unavailable, chromium_path, serve

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / ".modelcard-e2e"

pytestmark = pytest.mark.skipif(browser_unavailable() is not None, reason=str(browser_unavailable()))


@pytest.fixture(scope="module")
def default_site() -> Path:
    if not Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    E2E.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "generator.cli", "build", "-q"], cwd=E2E, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failure(s)" in proc.stdout, proc.stdout
    return E2E / "site"


def test_every_page_loads_without_errors(default_site: Path):
    from playwright.sync_api import sync_playwright

    pages = sorted(p.relative_to(default_site).as_posix() for p in default_site.rglob("*.html")
                   if p.name != "404.html")
    assert "index.html" in pages and len(pages) > 10
    problems = []
    shots = E2E / "screenshots"
    shots.mkdir(exist_ok=True)
    with serve(default_site) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
        checked_links = set()
        for rel in pages:
            errors.clear()
            url = f"{base}/{rel}"
            page.goto(url, wait_until="load")
            # Gallery images load lazily: ask for all of them now and wait until each settles.
            page.evaluate("""() => Promise.all([...document.images].map(img => {
                img.loading = 'eager';
                return img.complete ? null : new Promise(done => { img.onload = img.onerror = done; });
            }))""")
            broken = page.eval_on_selector_all(
                "img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))")
            if broken:
                problems.append(f"{rel}: broken images {broken[:3]}")
            for href in page.eval_on_selector_all("a[href]", "as => as.map(a => a.href)"):
                target, _ = urldefrag(href)
                if not target.startswith(base) or target in checked_links:
                    continue
                checked_links.add(target)
                path = default_site / urlparse(target).path.lstrip("/")
                if path.is_dir():
                    path = path / "index.html"
                if not path.exists():
                    problems.append(f"{rel}: broken link {href}")
            if errors:
                problems.append(f"{rel}: console errors {errors[:3]}")
        page.goto(f"{base}/index.html")
        page.screenshot(path=str(shots / "front.png"), full_page=False)
        gallery = next((p for p in pages if p.startswith("features/") and p.count("/") == 3
                        and p.endswith("index.html")),
                       next(p for p in pages if p.startswith("outcome/") and p.endswith("index.html")))
        page.goto(urljoin(base + "/", gallery))
        page.screenshot(path=str(shots / "gallery.png"), full_page=False)
        browser.close()
    assert not problems, "\n".join(problems[:30])
    assert (shots / "front.png").stat().st_size > 10_000 and (shots / "gallery.png").stat().st_size > 10_000


def test_default_site_renders_from_a_wheel_without_torch(default_site: Path, render_install, tmp_path: Path):
    """The default report's artifacts, rendered by the render-only wheel install from a folder
    outside the checkout, give the same pages as the development install."""
    import shutil

    from render_install import run

    shutil.copytree(E2E / ".modelcard" / "artifacts", tmp_path / ".modelcard" / "artifacts")
    shutil.copy(E2E / ".modelcard" / "manifest.json", tmp_path / ".modelcard" / "manifest.json")
    run([render_install.modelcard, "render"], tmp_path)  # no argument: the embedded default report
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "lecture.html").is_file()
    ours, theirs = E2E / ".modelcard" / "docs", tmp_path / ".modelcard" / "docs"
    pages = sorted(p.relative_to(ours) for p in ours.rglob("*.md"))
    assert len(pages) > 10
    assert [str(p) for p in pages if (theirs / p).read_bytes() != (ours / p).read_bytes()] == []
