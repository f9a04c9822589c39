"""Escaping and formulas for the generated Markdown.

Every string that comes from a user (config, file names, class names) goes through
:func:`md_escape` before it reaches a page: HTML special characters become entities and
Markdown syntax characters are backslash-escaped, so a class name like ``<script>`` or
``a|b`` is shown literally and never becomes markup.
"""

from __future__ import annotations

import html
import re

from markupsafe import Markup

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def md_escape(value: object) -> Markup:
    """Escape for Markdown text and table cells (HTML-escaped, Markdown syntax neutralised)."""
    if value is None:
        return Markup("")
    text = html.escape(str(value), quote=True)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return Markup(text.replace("\n", " "))


def attr_escape(value: object) -> Markup:
    """Escape for an HTML attribute value."""
    return Markup(html.escape("" if value is None else str(value), quote=True))


def math(latex: str, display: bool = False) -> Markup:
    """LaTeX -> MathML at render time, so formulas need no JavaScript or CDN (browsers render MathML)."""
    from latex2mathml.converter import convert

    return Markup(convert(latex, display="block" if display else "inline"))


def slug(value: object) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(value)).strip("-").lower() or "x"


_DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE_MATH = re.compile(r"(?<![\\$\w])\$([^$\n`]+?)\$(?![\w$])")


def render_math_in_markdown(text: str) -> str:
    """``$$...$$`` (display) and ``$...$`` (inline) in hand-written Markdown become MathML.

    Fenced code blocks and inline code are left alone, so shell snippets with ``$VAR`` survive.
    """
    out, in_fence = [], False
    blocks = re.split(r"(^```.*?$)", text, flags=re.M)
    for block in blocks:
        if block.startswith("```"):
            in_fence = not in_fence
            out.append(block)
            continue
        if in_fence:
            out.append(block)
            continue
        block = _DISPLAY_MATH.sub(lambda m: "\n" + str(math(m.group(1).strip(), display=True)) + "\n", block)
        parts = re.split(r"(`[^`]*`)", block)
        parts = [p if p.startswith("`") else _INLINE_MATH.sub(lambda m: str(math(m.group(1).strip())), p)
                 for p in parts]
        out.append("".join(parts))
    return "".join(out)
