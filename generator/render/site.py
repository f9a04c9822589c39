"""Render the manifest's artifacts into Markdown pages and build the mkdocs site."""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from generator.config import CardMetadata, ReportConfig
from generator.render import images as img
from generator.render.manifest import Manifest
from generator.render.pages import SiteContext
from generator.render.references import ReferenceError_, known_references, resolve_references
from generator.render.pages import discover as discover_pages
from generator.render.text import attr_escape, math, md_escape, render_math_in_markdown

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = PROJECT_ROOT / "templates"
SITE_SRC = PROJECT_ROOT / "site_src"
BASE_MKDOCS = PROJECT_ROOT / "mkdocs.yml"

CARD_SECTIONS = [
    ("Model details", ["description", "owners", "version", "date", "licence", "citation", "contact", "references"]),
    ("Intended use", ["intended_use", "intended_users", "out_of_scope_uses"]),
    ("Factors", ["factors"]),
    ("Metrics", ["metrics"]),
    ("Evaluation data", ["evaluation_data"]),
    ("Training data", ["training_data"]),
    ("Ethical considerations", ["ethical_considerations"]),
    ("Caveats and recommendations", ["limitations", "caveats_and_recommendations"]),
]


# Top-level tabs, by dimension; sections not listed here follow in the order builders run.
SECTION_ORDER = ["Model card", "Models", "Data", "Model", "Outcome", "Building blocks", "Evaluation", "Review"]


class RenderError(RuntimeError):
    pass


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = md_escape
    env.filters["attr"] = attr_escape
    env.filters["math"] = math
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * float(v):.1f}%"
    env.filters["num"] = lambda v, d=3: "–" if v is None else f"{float(v):.{d}f}"
    return env


class SiteWriter:
    """Writes pages and images under ``docs/`` and remembers the navigation."""

    def __init__(self, docs: Path, env: Environment):
        self.docs = docs
        self.env = env
        self.pages: Dict[str, str] = {}
        self.assets: set = set()
        self.refs: Dict[str, str] = {}
        self.scripts: List[str] = []  # site-relative JavaScript files every page loads
        self.stylesheets: List[str] = []  # site-relative CSS files every page loads

    def _ship(self, rel: str, source: Path, loaded_by_every_page: List[str]) -> str:
        target = self.docs / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != Path(source).read_bytes():
            shutil.copyfile(source, target)
        self.assets.add(rel)
        if rel not in loaded_by_every_page:
            loaded_by_every_page.append(rel)
        return rel

    def script(self, rel: str, source: Path) -> str:
        """Ship a JavaScript file (copied from ``source``) and load it on every page."""
        return self._ship(rel, source, self.scripts)

    def stylesheet(self, rel: str, source: Path) -> str:
        """Ship a CSS file (copied from ``source``) and load it on every page."""
        return self._ship(rel, source, self.stylesheets)

    def ref(self, name: str, rel: str) -> None:
        """Offer ``rel`` to hand-written pages as ``modelcard:<name>``."""
        self.refs[name] = rel

    def page(self, rel: str, template: str, **context: Any) -> None:
        context.setdefault("root", os.path.relpath(".", os.path.dirname(rel) or "."))
        context.setdefault("rel", lambda target, here=rel: os.path.relpath(target, os.path.dirname(here) or "."))
        text = self.env.get_template(template).render(**context)
        self.pages[rel] = text

    def image(self, rel: str, pixels: np.ndarray) -> str:
        img.save_image(self.docs / rel, pixels)
        self.assets.add(rel)
        return rel

    def figure(self, rel: str, draw) -> str:
        path = self.docs / rel
        draw(path)
        self.assets.add(rel)
        return rel

    def flush(self) -> None:
        for rel, text in self.pages.items():
            path = self.docs / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)


def merged_card(config: ReportConfig, model_card: Dict[str, Any]) -> Dict[str, Any]:
    """Model-level metadata over report-level metadata; empty stays empty (shown as missing)."""
    base = config.card.model_dump()
    out = {}
    for field in CardMetadata.model_fields:
        value = model_card.get(field)
        out[field] = value if value not in (None, [], "") else base.get(field)
    return out


def render_site(config: ReportConfig, *, build: bool = True, strict: bool = True) -> Path:
    """Artifacts -> pages -> ``mkdocs build``; returns the site folder."""
    work = config.work_dir
    manifest = Manifest.load(work)
    docs = work / "docs"
    # Pages are rewritten each time; generated images are kept and pruned, so unchanged ones stay.
    if docs.exists():
        for path in docs.rglob("*.md"):
            path.unlink()
    docs.mkdir(parents=True, exist_ok=True)
    writer = SiteWriter(docs, environment())
    writer.stylesheet("assets/modelcard.css", TEMPLATES / "assets" / "modelcard.css")
    site = SiteContext(config=config, manifest=manifest, writer=writer)
    sections: Dict[str, List[Any]] = {}
    order: List[str] = []
    for builder in discover_pages():
        entries = builder.build(site)
        if builder.section not in sections:
            sections[builder.section] = []
            order.append(builder.section)
        sections[builder.section].extend(entries)
    order.sort(key=lambda name: SECTION_ORDER.index(name) if name in SECTION_ORDER else len(SECTION_ORDER))
    nav: List[Any] = []
    for section in order:
        entries = sections[section]
        if not entries:
            continue
        # A section with one page that is its own entry (e.g. the front page) is a plain link.
        if len(entries) == 1 and isinstance(entries[0], str):
            nav.append({section: entries[0]})
        else:
            nav.append({section: entries})
    site_src_nav = _merge_site_src(config, docs, writer, manifest)
    nav.extend(site_src_nav)
    run_index = next((i for i, e in enumerate(nav) if "Run report" in e), None)
    if run_index is not None:  # the run report goes last, after the hand-written pages
        nav.append(nav.pop(run_index))
    writer.flush()
    _prune(docs, writer)
    mkdocs_file = _write_mkdocs_config(config, docs, nav, writer.scripts, writer.stylesheets)
    if build:
        _mkdocs_build(mkdocs_file, config.site_dir, strict)
    return config.site_dir


def _prune(docs: Path, writer: SiteWriter) -> None:
    """Remove generated images no page uses any more."""
    gen = docs / "assets" / "gen"
    if not gen.exists():
        return
    for path in gen.rglob("*"):
        if path.suffix in img.ENCODERS and str(path.relative_to(docs)) not in writer.assets:
            path.unlink()


def site_src_folders(config: ReportConfig) -> List[Path]:
    folders = []
    for entry in config.site_src:
        folder = SITE_SRC / entry[len("builtin:"):] if entry.startswith("builtin:") else config.resolve(entry)
        if not folder.is_dir():
            raise RenderError(f"{config.where('site_src')}: site_src folder {folder} does not exist")
        folders.append(folder)
    return folders


def _merge_site_src(config: ReportConfig, docs: Path, writer: SiteWriter, manifest: Manifest) -> List[Any]:
    """Copy the hand-written pages into the site, resolving their ``modelcard:`` references and
    formulas; each folder's own ``nav.yml`` orders its pages."""
    nav: List[Any] = []
    refs = known_references(manifest, writer)
    problems = []
    for src in site_src_folders(config):
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src)
            if path.is_dir() or rel.name == "nav.yml":
                continue
            if path.suffix == ".md":
                try:
                    text = resolve_references(path.read_text(), rel.as_posix(), path, refs)
                    writer.pages[rel.as_posix()] = render_math_in_markdown(text)
                except ReferenceError_ as exc:
                    problems.append(str(exc))
            else:
                target = docs / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                writer.assets.add(rel.as_posix())
        nav_file = src / "nav.yml"
        if nav_file.exists():
            nav.extend(yaml.safe_load(nav_file.read_text()) or [])
    if problems:
        raise RenderError("hand-written pages refer to figures or pages that do not exist:\n" + "\n".join(problems))
    return nav


def _escape_nav(nav: Any) -> Any:
    """mkdocs themes print nav titles and the site name as raw HTML: escape user strings there."""
    if isinstance(nav, list):
        return [_escape_nav(item) for item in nav]
    if isinstance(nav, dict):
        return {html.escape(str(k), quote=False): _escape_nav(v) for k, v in nav.items()}
    return nav


def _write_mkdocs_config(config: ReportConfig, docs: Path, nav: List[Any], scripts: List[str],
                         stylesheets: List[str] = ()) -> Path:
    base = yaml.safe_load(BASE_MKDOCS.read_text()) if BASE_MKDOCS.exists() else {}
    base.update({"site_name": html.escape(config.title, quote=False), "docs_dir": str(docs.resolve()),
                 "nav": _escape_nav(nav),
                 "site_dir": str(config.site_dir.resolve())})
    # Hand-written pages may include project files (--8<-- "examples/...") ; a missing one fails.
    extensions = base.setdefault("markdown_extensions", [])
    extensions.append({"pymdownx.snippets": {"base_path": [str(PROJECT_ROOT)], "check_paths": True}})
    if scripts:
        base["extra_javascript"] = list(base.get("extra_javascript", [])) + scripts
    if stylesheets:
        base["extra_css"] = list(base.get("extra_css", [])) + list(stylesheets)
    if config.description:
        base["site_description"] = html.escape(config.description)
    path = config.work_dir / "mkdocs.yml"
    path.write_text(yaml.safe_dump(base, sort_keys=False, allow_unicode=True))
    return path


def _mkdocs_build(mkdocs_file: Path, site: Path, strict: bool) -> None:
    cmd = [sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(mkdocs_file), "-d", str(site.resolve())]
    if strict:
        cmd.append("--strict")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RenderError(f"mkdocs build failed ({mkdocs_file}):\n{proc.stdout}\n{proc.stderr}")
