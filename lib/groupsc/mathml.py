"""TeX math in markdown, turned into MathML before the markdown is rendered.

Browsers draw MathML themselves (Chromium >= 109, Firefox, Safari), so a page whose formulas are
MathML needs no MathJax and no network. The markdown renderers would mangle TeX (``_`` and ``*``
read as emphasis), so :func:`protect` swaps each formula for a placeholder word first and
:func:`restore` puts the MathML in the rendered HTML afterwards.

Math is ``$$...$$`` (display) or ``$...$`` (inline; pandoc's rule: no space after the opening
``$``, none before the closing one, no digit after it, so "$5 and $10" stays text). Code blocks
and code spans are left alone.
"""

from __future__ import annotations

import re

from latex2mathml.converter import convert

_CODE = re.compile(r"(^(?:```|~~~).*?^(?:```|~~~)[^\n]*$|`+[^`\n]*`+)", re.M | re.S)
_MATH = re.compile(
    r"(?<![\\$])\$\$(?P<display>.+?)\$\$|(?<![\\$])\$(?P<inline>[^\s$](?:[^$\n]*?[^\s$\\])?)\$(?!\d)",
    re.S,
)
_TOKEN = "GSCMATH{:04d}Z"
_PLACEHOLDER = re.compile(r"GSCMATH(\d{4})Z")
_IN_TAG = re.compile(r"<[^<>]*GSCMATH\d{4}Z[^<>]*>", re.I)
# TeX that latex2mathml does not know, as TeX it does (sizes of delimiters are the browser's).
_REWRITES = ((re.compile(r"\\arg(?![a-zA-Z])"), r"\\mathrm{arg}"),
             (re.compile(r"\\[bB]igg?[lr]?(?![a-zA-Z])"), ""))
_LEAK = re.compile(r">[^<]*(\\[a-zA-Z|]+)[^<]*<")


def to_mathml(tex: str, display: bool) -> str:
    """One formula as a ``<math>`` element.

    Raises ``ValueError`` naming the formula when it does not parse or a command is unknown
    (latex2mathml would print it as text).
    """
    source = tex.strip()
    for pattern, replacement in _REWRITES:
        source = pattern.sub(replacement, source)
    try:
        out = convert(source, display="block" if display else "inline")
    except Exception as err:  # latex2mathml raises its own exception types
        raise ValueError(f"cannot convert the formula {tex.strip()[:60]!r}: {err}") from None
    leak = _LEAK.search(out)
    if leak:
        raise ValueError(f"unknown TeX command {leak.group(1)} in the formula {tex.strip()[:60]!r}")
    return out


def protect(text: str, formulas: list[str]) -> str:
    """``text`` with every formula outside code replaced by a placeholder word.

    The MathML of placeholder ``i`` is appended to ``formulas`` at index ``i`` (one list serves a
    whole page, so placeholders stay unique across a notebook's cells).
    """

    def swap(match: re.Match) -> str:
        display = match.group("display") is not None
        formulas.append(to_mathml(match.group("display" if display else "inline"), display))
        return _TOKEN.format(len(formulas) - 1)

    pieces = _CODE.split(text)  # odd indices are code, kept as they are
    return "".join(p if i % 2 else _MATH.sub(swap, p) for i, p in enumerate(pieces))


def restore(html: str, formulas: list[str]) -> str:
    """Rendered HTML with each placeholder back as its MathML.

    A placeholder inside a tag (a heading's anchor id made from its text) is dropped instead.
    """
    html = _IN_TAG.sub(lambda m: re.sub(r"GSCMATH\d{4}Z", "", m.group(0), flags=re.I), html)
    return _PLACEHOLDER.sub(lambda m: formulas[int(m.group(1))], html)
