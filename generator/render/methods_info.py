"""What each method page says: formula (LaTeX, shown as MathML) and how to read it.

A thin, torch-free view of :mod:`generator.catalogue`, where every method's title, formula,
reading guide, limits and paper are declared once; kept so the pages' imports stay as they are.
"""

from __future__ import annotations

from typing import Dict

from generator.catalogue import entries, method_info

#: method -> {"title", "formula", "read", "limits", "citation"} for every attribution method.
METHOD_INFO: Dict[str, Dict[str, str]] = {e.name: method_info(e.name) for e in entries("attribution")}


def info(method: str) -> Dict[str, str]:
    """The page texts of ``method``; a name-derived title and empty texts for an unknown one."""
    return method_info(method)
