"""Where the renderer's own files are: page templates, built-in hand-written pages, the base mkdocs
config, and the files built-in pages include.

They live at the top level of the repository (``templates/``, ``site_src/``, ``mkdocs.yml``,
``examples/``), where people edit them. A wheel cannot reach that folder, so the build copies them
into the package as ``generator/_resources/`` (see ``setup.py``). Looking there first and then at
the source tree makes one lookup serve a wheel install and an editable install or plain checkout,
which never has ``_resources`` (the build writes it into the wheel, not into the checkout).

Torch-free and cheap: ``render``, ``check`` and ``diff`` import it.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

# What the build copies into the package, as paths relative to the repository root. Only the one
# folder of ``examples/`` that a built-in page includes ships; the other examples stay in the repo.
SHIPPED = ("templates", "site_src", "mkdocs.yml", "examples/github-actions")


def _root() -> Path:
    shipped = PACKAGE_DIR / "_resources"
    if (shipped / "templates").is_dir():
        return shipped
    checkout = PACKAGE_DIR.parent
    if (checkout / "templates").is_dir():
        return checkout
    # Say what is missing at import time rather than as an odd Jinja "template not found" later.
    raise ImportError(f"modelcard's templates are missing: neither {shipped / 'templates'} (installed package) "
                      f"nor {checkout / 'templates'} (source checkout) exists; reinstall the package")


# The folder that holds the shipped files with their repository layout: the repository root in a
# checkout or editable install, ``generator/_resources`` in a wheel install.
ROOT = _root()
TEMPLATES = ROOT / "templates"
SITE_SRC = ROOT / "site_src"
BASE_MKDOCS = ROOT / "mkdocs.yml"


def builtin_site_src(name: str) -> Path:
    """The folder of the built-in hand-written pages ``builtin:<name>`` names."""
    return SITE_SRC / name
