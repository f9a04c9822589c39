"""Render the manifest's artifacts into Markdown pages and build the mkdocs site."""

from __future__ import annotations

import html
import math as math_lib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from generator import resources
from generator.config import CardMetadata, ReportConfig
from generator.render import images as img
from generator.render import snippet_includes
from generator.render.manifest import Manifest
from generator.render.pages import SiteContext
from generator.render.pages import discover as discover_pages
from generator.render.references import ReferenceError_, known_references, resolve_references
from generator.render.stamp import clear_stamp, render_stamp, site_is_current, write_stamp
from generator.render.text import attr_escape, math, md_escape, render_math_in_markdown

if TYPE_CHECKING:  # used in annotations only
    import numpy as np

# Found through the installed package, so a wheel install renders as well as a checkout does.
TEMPLATES = resources.TEMPLATES
SITE_SRC = resources.SITE_SRC
BASE_MKDOCS = resources.BASE_MKDOCS

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
SECTION_ORDER = ["Model card", "Models", "Data", "Model", "Concepts", "Outcome", "Compare", "Building blocks",
                 "Evaluation", "Review"]


# Loaded in <head> of every page (mkdocs-material's ``extra.polyfills``): lets the search worker run
# when the site is opened from disk. Its name must contain "iframe-worker" (see the file).
WORKER_POLYFILL = "assets/iframe-worker.js"


# Written into every site folder this tool builds. mkdocs empties the site folder on each build
# but keeps dot-files, so the marker survives and tells the next build the folder is ours to empty.
SITE_MARKER = ".modelcard-site"
SITE_MARKER_TEXT = ("modelcard site: this folder was built by modelcard (generator.render.site).\n"
                    "Each build empties it; keep nothing else here.\n")


class RenderError(RuntimeError):
    pass


def _finite(value: Any) -> bool:
    return value is not None and math_lib.isfinite(float(value))


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = md_escape
    env.filters["attr"] = attr_escape
    env.filters["math"] = math
    # A missing or non-finite number shows as a dash: NaN is never printed as a result.
    env.filters["pct"] = lambda v: "–" if not _finite(v) else f"{100 * float(v):.1f}%"
    env.filters["num"] = lambda v, d=3: "–" if not _finite(v) else f"{float(v):.{d}f}"
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
        self.polyfills: List[str] = []  # site-relative scripts every page loads in <head>, before the theme's

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

    def polyfill(self, rel: str, source: Path) -> str:
        """Ship a JavaScript file that every page loads in ``<head>``, before the theme's own script."""
        return self._ship(rel, source, self.polyfills)

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


def _given(value: Any) -> bool:
    return value not in (None, [], "")


def merged_card(config: ReportConfig, model_card: Dict[str, Any],
                embedded: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Model-level metadata over report-level metadata over what is known about an embedded
    model (``embedded``, :mod:`generator.models.cards`); empty stays empty (shown as missing)."""
    layers = [model_card, config.card.model_dump(), embedded or {}]
    return {field: next((layer[field] for layer in layers if _given(layer.get(field))), None)
            for field in CardMetadata.model_fields}


def card_summary(card: Dict[str, Any], sections: List[Tuple[str, List[str]]] = CARD_SECTIONS
                 ) -> Tuple[List[Tuple[str, List[str]]], List[str]]:
    """(sections with the fields that have a value, names of the fields that have none), so a page
    lists what is known and names everything missing in one line instead of a line per field."""
    shown = [(title, [f for f in fields if _given(card.get(f))]) for title, fields in sections]
    missing = [f.replace("_", " ") for _, fields in sections for f in fields if not _given(card.get(f))]
    return [(title, fields) for title, fields in shown if fields], missing


def render_site(config: ReportConfig, *, build: bool = True, strict: bool = True) -> Path:
    """Artifacts -> pages -> ``mkdocs build``; returns the site folder."""
    # Refuse unsafe input before anything is read or written: a site folder mkdocs would wrongly
    # empty, hand-written pages that would publish files from outside their folder.
    if build:
        check_site_dir(config)
    check_site_src(config)
    work = config.work_dir
    manifest = Manifest.load(work)
    stamp = None
    if build:
        # Nothing that determines the site changed since it was built: reuse it (a rebuild
        # with nothing changed then costs seconds; generator/render/stamp.py says what counts).
        stamp = render_stamp(work / "manifest.json",
                             {"config": config.model_dump(mode="json"), "strict": strict},
                             # hand-written pages, and the diff the Review page shows (modelcard diff)
                             [folder for _, folder in _site_src_entries(config)] + [work / "diff"],
                             TEMPLATES, BASE_MKDOCS)
        if site_is_current(config.site_dir, stamp):
            return config.site_dir
    docs = work / "docs"
    # Pages are rewritten each time; generated images are kept and pruned, so unchanged ones stay.
    if docs.exists():
        for path in docs.rglob("*.md"):
            path.unlink()
    docs.mkdir(parents=True, exist_ok=True)
    writer = SiteWriter(docs, environment())
    # modelcard.css first, then one stylesheet per area of the site (outcome.css, features.css ...)
    for sheet in sorted((TEMPLATES / "assets").glob("*.css"), key=lambda p: (p.name != "modelcard.css", p.name)):
        writer.stylesheet(f"assets/{sheet.name}", sheet)
    writer.polyfill(WORKER_POLYFILL, TEMPLATES / "assets" / Path(WORKER_POLYFILL).name)
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
    mkdocs_file = _write_mkdocs_config(config, docs, nav, writer.scripts, writer.stylesheets, writer.polyfills)
    if build:
        # Marked before mkdocs runs, so a build that fails half-way leaves a folder the next
        # build may empty; marked again after, in case an mkdocs version stops keeping dot-files.
        _mark_site(config.site_dir)
        clear_stamp(config.site_dir)  # a build that fails half-way must never look current
        _mkdocs_build(mkdocs_file, config.site_dir, strict)
        _drop_source_maps(config.site_dir)
        _mark_site(config.site_dir)
        if stamp is not None:
            write_stamp(config.site_dir, stamp)
    return config.site_dir


def _drop_source_maps(site: Path) -> None:
    """The theme's JavaScript and CSS source maps (1.3 MB) serve only someone debugging the
    theme in developer tools; a browser never fetches them otherwise. The published site
    goes without them."""
    for folder in ("assets/javascripts", "assets/stylesheets"):
        for path in (site / folder).glob("*.map"):
            path.unlink()


def _is_marked(folder: Path) -> bool:
    """Whether ``folder`` holds the marker an earlier build of this tool wrote."""
    marker = folder / SITE_MARKER
    if not marker.is_file() or marker.is_symlink():
        # Sites built before the marker existed: mkdocs output carrying this tool's stylesheet.
        legacy = folder / "assets" / "modelcard.css"
        return (folder / "index.html").is_file() and (folder / "sitemap.xml").is_file() and legacy.is_file() \
            and not legacy.is_symlink()
    try:
        return marker.read_text(errors="replace").startswith("modelcard site:")
    except OSError:
        return False


def _mark_site(folder: Path) -> None:
    """Write the marker that lets later builds empty ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / SITE_MARKER
    if marker.is_symlink():
        marker.unlink()  # never write through a link planted in the site folder
    if not marker.is_file() or marker.read_text(errors="replace") != SITE_MARKER_TEXT:
        marker.write_text(SITE_MARKER_TEXT)


def _protected_folders(config: ReportConfig) -> List[Tuple[str, Path]]:
    """(what, folder) pairs that emptying the site folder must never reach."""
    folders = [("the config's folder", config.base_dir), ("output.work_dir", config.work_dir),
               ("the modelcard installation", resources.ROOT), ("the modelcard package", resources.PACKAGE_DIR)]
    folders += [(f"site_src folder {entry!r}", folder) for entry, folder in _site_src_entries(config)]
    return folders


def check_site_dir(config: ReportConfig) -> None:
    """Raise :class:`RenderError` unless ``output.site_dir`` is safe for ``mkdocs build`` to empty.

    mkdocs deletes everything in its output folder except dot-files before it writes the site.
    A folder is accepted when it does not exist yet, holds nothing that would be deleted (only
    dot-files, such as a ``.git`` of a gh-pages checkout), or carries the marker of an earlier
    build of this tool. It is refused when it equals or contains the config's folder, the work
    folder, a site_src folder or this tool's own files, and when it cannot be created or written.
    Cheap and torch-free, so the CLI can call it before any run work starts.
    """
    site = config.site_dir
    where = f"{config.where('output', 'site_dir')}: output.site_dir:"
    resolved = site.resolve()
    for what, folder in _protected_folders(config):
        folder = folder.resolve()
        if folder == resolved or resolved in folder.parents:
            relation = "is" if folder == resolved else f"contains {folder}, which is"
            raise RenderError(f"{where} {site} {relation} {what}; each build empties the site folder, "
                              f"so choose a new folder of its own (e.g. 'site') for output.site_dir")
    existing = site
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    if existing == site and site.exists() and not site.is_dir():
        raise RenderError(f"{where} {site} is a file, not a folder; choose a new folder for output.site_dir")
    if not existing.is_dir():
        raise RenderError(f"{where} cannot create {site}: {existing} is not a folder (or a broken link); "
                          f"choose another folder for output.site_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RenderError(f"{where} cannot write the site folder {site}: {existing} is not writable; "
                          f"choose a folder you can write for output.site_dir")
    if existing != site or _is_marked(site):
        return
    # Only what mkdocs would delete counts: it keeps dot-files.
    doomed = sorted(entry.name for entry in site.iterdir() if not entry.name.startswith("."))
    if doomed:
        shown = ", ".join(repr(name) for name in doomed[:3]) + (", ..." if len(doomed) > 3 else "")
        raise RenderError(f"{where} {site} already exists and holds {len(doomed)} entries modelcard did not "
                          f"make ({shown}); building the site would delete them. Choose an empty or new folder "
                          f"for output.site_dir, or delete {site} yourself if its contents can go")


def _prune(docs: Path, writer: SiteWriter) -> None:
    """Remove generated images no page uses any more."""
    gen = docs / "assets" / "gen"
    if not gen.exists():
        return
    for path in gen.rglob("*"):
        if path.suffix in img.ENCODERS and str(path.relative_to(docs)) not in writer.assets:
            path.unlink()


def _site_src_entries(config: ReportConfig) -> List[Tuple[str, Path]]:
    """(entry as written, folder) for each ``site_src`` entry, whether or not the folder exists."""
    return [(entry, resources.builtin_site_src(entry[len("builtin:"):]) if entry.startswith("builtin:")
             else config.resolve(entry))
            for entry in config.site_src]


def site_src_folders(config: ReportConfig) -> List[Path]:
    """The hand-written page folders ``site_src`` names; a missing one is an error."""
    folders = []
    for _, folder in _site_src_entries(config):
        if not folder.is_dir():
            raise RenderError(f"{config.where('site_src')}: site_src folder {folder} does not exist")
        folders.append(folder)
    return folders


def _links_leaving(folder: Path) -> List[str]:
    """``link -> target`` for each symbolic link under ``folder`` that leads outside it or nowhere.

    The walk does not follow links, so every link in the real tree is seen exactly once; a link
    that stays inside leads to entries the walk checks anyway.
    """
    root = folder.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                continue
            target = os.readlink(path)
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError):  # missing target, or a loop of links
                found.append(f"{path} -> {target} (leads nowhere)")
                continue
            if real != root and root not in real.parents:
                found.append(f"{path} -> {target} (outside the folder)")
    return sorted(found)


def check_site_src(config: ReportConfig) -> None:
    """Raise :class:`RenderError` if the hand-written pages could publish or include files from
    outside their folders.

    A symbolic link in a site_src folder would be copied into the site as its target's content
    (``leak.txt -> /proc/self/environ`` publishes the build's environment), so links that leave
    the folder, and links that lead nowhere, are refused. Snippet includes (``--8<--``) must name
    an existing file under a snippet base (:func:`snippet_bases`); a bad one is reported by page and line here,
    before mkdocs would stop with a traceback. Reads only; torch-free.
    """
    folders = site_src_folders(config)
    links = []
    for folder in folders:
        links.extend(_links_leaving(folder))
    if links:
        raise RenderError(f"{config.where('site_src')}: site_src: symbolic links that leave their folder or lead "
                          f"nowhere are not published; replace them with the files themselves:\n"
                          + "\n".join(links))
    snippets = []
    for folder in folders:
        for page in sorted(folder.rglob("*.md")):
            if page.is_file():
                snippets.extend(_snippet_problems(page, snippet_bases(config)))
    if snippets:
        raise RenderError("\n".join(snippets))


def snippet_bases(config: ReportConfig) -> List[Path]:
    """The folders ``--8<--`` includes are read from, in the order pymdownx.snippets tries them.

    The config's folder comes first, so a user's pages include their own files by a path relative
    to it whatever the install; then the folder of the shipped files (the checkout, or the
    package's copy in a wheel install), so built-in pages find the examples they include.
    """
    bases: List[Path] = []
    for base in (config.base_dir, resources.ROOT):
        if base.resolve() not in [b.resolve() for b in bases]:
            bases.append(base)
    return bases


def _snippet_problems(page: Path, bases: List[Path]) -> List[str]:
    """The include problems of ``page`` that every base has, worded as for the first base.

    The extension takes a file from the first base that has it, so an include is wrong only when
    no base can serve it. Problems are matched by their ``file:line:`` prefix; one inside a file
    that only some bases serve is left to mkdocs, whose error still leads the message.
    """
    reports = [snippet_includes.problems(page, base) for base in bases]
    if not all(reports):
        return []  # some base serves every include of the page

    def where(message: str) -> str:
        return message.split(" snippet include ", 1)[0]

    shared = set.intersection(*({where(m) for m in report} for report in reports))
    return [m for m in reports[0] if where(m) in shared]


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
                         stylesheets: List[str] = (), polyfills: List[str] = ()) -> Path:
    base = yaml.safe_load(BASE_MKDOCS.read_text()) if BASE_MKDOCS.exists() else {}
    base.update({"site_name": html.escape(config.title, quote=False), "docs_dir": str(docs.resolve()),
                 "nav": _escape_nav(nav),
                 "site_dir": str(config.site_dir.resolve())})
    # Hand-written pages may include project files (--8<-- "examples/...") ; a missing one fails.
    extensions = base.setdefault("markdown_extensions", [])
    bases = [str(base) for base in snippet_bases(config)]
    extensions.append({"pymdownx.snippets": {"base_path": bases, "check_paths": True}})
    if scripts:
        base["extra_javascript"] = list(base.get("extra_javascript", [])) + scripts
    if stylesheets:
        base["extra_css"] = list(base.get("extra_css", [])) + list(stylesheets)
    # Search results name model and dataset (generator/render/mkdocs_hooks.py).
    base["hooks"] = list(base.get("hooks", [])) + [str(Path(__file__).with_name("mkdocs_hooks.py"))]
    if polyfills:
        extra = base.setdefault("extra", {})
        extra["polyfills"] = list(extra.get("polyfills", [])) + list(polyfills)
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
        raise RenderError(_mkdocs_failure(mkdocs_file, proc.returncode, proc.stdout, proc.stderr))


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LOG_LEVEL = re.compile(r"^\s*(ERROR|WARNING)\b")


def _mkdocs_failure(mkdocs_file: Path, returncode: int, stdout: str, stderr: str) -> str:
    """One summary line (mkdocs' first ERROR or WARNING, else the last line it printed), then the rest.

    A failing build prints dozens of lines and often a traceback; the line that says what went
    wrong is usually the first logged problem, so it goes first.
    """
    lines = [line.rstrip() for line in _ANSI.sub("", f"{stdout}\n{stderr}").splitlines()]
    lines = [line for line in lines if line.strip()]
    index = next((i for i, line in enumerate(lines) if _LOG_LEVEL.match(line)), None)
    if index is None and lines:
        index = len(lines) - 1  # e.g. the exception line that ends a traceback
    if index is None:
        return f"mkdocs build failed ({mkdocs_file}) with exit status {returncode} and no output"
    summary = " ".join(lines.pop(index).split())
    rest = "\n".join(lines)
    return f"mkdocs build failed: {summary}\n(config {mkdocs_file}, exit status {returncode})" + (
        f"\n{rest}" if rest else "")
