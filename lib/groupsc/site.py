"""The companion site: ``README.md``, ``docs/`` and the executed notebooks as static HTML pages
that read offline (``site/index.html``; no script, font or style from any other host).

Built with nbconvert rather than Jupyter Book: nbconvert is already here (papermill and nbval use
it), draws a notebook as JupyterLab does, and adds no Sphinx build or theme that fetches assets;
the pages need only a folder and a browser. Formulas become MathML at build time
(:mod:`groupsc.mathml`), so no MathJax is loaded. Markdown pages go through markdown-it-py.

Layout of ``OUT``: ``index.html`` (the README), ``docs/NAME.html``, ``notebooks/NAME.html`` with
each notebook's figures as PNG files in ``notebooks/NAME_files/``, and ``files/PATH`` for any
other repository file a page links to; ``_static/`` holds the style sheets the
pages share. Every page carries the same navigation bar. A relative link
in a source that names no file of the repository stops the build with one line.

    python -m groupsc.site --out site
"""

from __future__ import annotations

import argparse
import hashlib
import html
import os
import re
import shutil
import sys
from pathlib import Path, PurePosixPath

import jinja2
import nbformat
from markdown_it import MarkdownIt
from nbconvert import HTMLExporter

from groupsc import mathml
from groupsc.paths import repo_root

# The lab template without what it would load from a CDN: require.js and widget managers (the
# notebooks save no widget state), MathJax (formulas are MathML) and mermaid (no diagrams).
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock -%}
{%- block jupyter_widgets -%}{%- endblock -%}
{%- block html_head_js_mathjax -%}{%- endblock -%}
{%- block html_head_js_mermaidjs -%}{%- endblock -%}
"""
_STYLE = """
body { margin: 0; }
nav.gsc { font: 14px/1.5 system-ui, sans-serif; background: #f3f4f6; padding: 6px 16px;
          border-bottom: 1px solid #d1d5db; position: sticky; top: 0; z-index: 10;
          display: flex; flex-wrap: wrap; gap: 0 12px; }
nav.gsc a { color: #1d4ed8; text-decoration: none; white-space: nowrap; }
nav.gsc a.here { font-weight: 600; color: #111827; }
main.gsc { font: 16px/1.55 system-ui, sans-serif; max-width: 60rem; margin: 1.5rem auto;
           padding: 0 1rem; }
main.gsc table { border-collapse: collapse; font-size: 14px; display: block; overflow-x: auto; }
main.gsc th, main.gsc td { border: 1px solid #d1d5db; padding: 2px 8px; }
main.gsc pre { background: #f3f4f6; padding: 8px; overflow-x: auto; }
"""
_MD_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body><main class="gsc">
{body}
</main></body></html>
"""
_STYLE_BLOCK = re.compile(r"<style type=\"text/css\">(.*?)</style>", re.S)
_URL = re.compile(r'(?P<attr>\b(?:href|src))="(?P<url>[^"]*)"')
_CODE_PATH = re.compile(r"<code>(?P<path>[\w./-]+\.(?:md|ipynb))</code>")


class SiteError(Exception):
    """A source the site cannot be built from (a broken link, a formula that does not parse)."""


def pages(root: Path) -> dict[str, str]:
    """Source path -> page path (both relative to their roots, with ``/``), in reading order."""
    found = {"README.md": "index.html"}
    for doc in sorted((root / "docs").glob("*.md")):
        found[f"docs/{doc.name}"] = f"docs/{doc.stem}.html"
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        found[f"notebooks/{nb.name}"] = f"notebooks/{nb.stem}.html"
    return found


def _relative(target: str, page: str) -> str:
    return os.path.relpath(target, start=str(PurePosixPath(page).parent)).replace(os.sep, "/")


def _title(markdown: str, fallback: str) -> str:
    heading = re.search(r"^#+\s+(.+)$", markdown, re.M)
    return heading.group(1).strip() if heading else fallback


def render_markdown(text: str) -> str:
    """Markdown (CommonMark with tables, raw HTML allowed) with its formulas as MathML."""
    formulas: list[str] = []
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(
        mathml.protect(text, formulas)
    )
    return mathml.restore(rendered, formulas)


def render_notebook(path: Path) -> tuple[str, dict[str, bytes]]:
    """An executed notebook as one HTML page and its figures (file name -> bytes).

    The figures are written beside the page in ``NAME_files/`` instead of inline base64 (the
    page stays small and an unchanged figure is the same file after a re-run).
    """
    nb = nbformat.read(path, as_version=4)
    formulas: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = mathml.protect(cell.source, formulas)
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"offline.html.j2": _TEMPLATE})],
        template_file="offline.html.j2",
    )
    exporter.register_preprocessor("nbconvert.preprocessors.ExtractOutputPreprocessor", True)
    body, resources = exporter.from_notebook_node(
        nb, resources={"output_files_dir": f"{path.stem}_files", "metadata": {"name": path.stem}}
    )
    return mathml.restore(body, formulas), dict(resources.get("outputs", {}))


def _share_styles(page_html: str, page: str, out: Path) -> str:
    """The lab template inlines the same JupyterLab theme CSS in every notebook page: each
    style block goes to one file of ``_static/`` named by its hash, linked from the page."""

    def link(match: re.Match) -> str:
        css = match.group(1)
        name = f"_static/{hashlib.sha256(css.encode()).hexdigest()[:12]}.css"
        if not (out / name).exists():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(css)
        return f'<link rel="stylesheet" href="{_relative(name, page)}">'

    return _STYLE_BLOCK.sub(link, page_html)


def _nav(page: str, titles: dict[str, str], sources: dict[str, str]) -> str:
    links = []
    for source, target in sources.items():
        label = "Home" if target == "index.html" else PurePosixPath(source).stem
        here = ' class="here"' if target == page else ""
        tip = html.escape(titles[target], quote=True)
        links.append(f'<a href="{_relative(target, page)}" title="{tip}"{here}>{label}</a>')
    return f'<style>{_STYLE}</style><nav class="gsc">{"".join(links)}</nav>'


class _Linker:
    """Rewrites a page's relative links from repository paths to site paths."""

    def __init__(self, root: Path, out: Path, sources: dict[str, str]):
        self.root, self.out, self.sources = root, out, sources

    def target(self, url: str, source: str) -> str | None:
        """The site path a repository-relative ``url`` (seen in ``source``) points at."""
        path, _, fragment = url.partition("#")
        repo_path = os.path.normpath(str(PurePosixPath(source).parent / path)).replace(os.sep, "/")
        if repo_path in self.sources:
            site_path = self.sources[repo_path]
        elif (self.root / repo_path).is_file() and not repo_path.startswith(".."):
            site_path = f"files/{repo_path}"
            (self.out / site_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.root / repo_path, self.out / site_path)
        else:
            return None
        return site_path + (f"#{fragment}" if fragment else "")

    def rewrite(self, page_html: str, source: str, page: str) -> str:
        def url(match: re.Match) -> str:
            value = html.unescape(match.group("url"))
            if re.match(r"^(?:[a-z][a-z0-9+.-]*:|#|//)", value) or not value:
                return match.group(0)
            if (self.out / PurePosixPath(page).parent / value.partition("#")[0]).exists():
                return match.group(0)  # written beside the page (a notebook's figures)
            site_path = self.target(value, source)
            if site_path is None:
                raise SiteError(f"{source}: the link {value!r} names no file of the repository")
            return f'{match.group("attr")}="{html.escape(_relative(site_path, page))}"'

        def code_link(match: re.Match) -> str:
            site_path = self.sources.get(match.group("path"))
            if site_path is None:
                return match.group(0)
            return f'<a href="{_relative(site_path, page)}">{match.group(0)}</a>'

        return _CODE_PATH.sub(code_link, _URL.sub(url, page_html))


def _render(root: Path, source: str, out: Path) -> tuple[str, str]:
    """(title, HTML body of the page without navigation) for one source; figures are written."""
    path = root / source
    if source.endswith(".ipynb"):
        body, figures = render_notebook(path)
        folder = out / PurePosixPath(pages(root)[source]).parent
        for name, data in figures.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        cells = nbformat.read(path, as_version=4).cells
        first = next((c.source for c in cells if c.cell_type == "markdown"), "")
        return _title(first, path.stem), body
    text = path.read_text()
    title = _title(text, path.stem)
    return title, _MD_PAGE.format(title=html.escape(title), body=render_markdown(text))


def build(out: Path, root: Path | None = None) -> list[str]:
    """Write the site into ``out`` (emptied first); returns the page paths written."""
    root = root or repo_root()
    sources = pages(root)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rendered, titles = {}, {}
    for source, page in sources.items():
        try:
            titles[page], rendered[source] = _render(root, source, out)
        except ValueError as err:
            raise SiteError(f"{source}: {err}") from None
    linker = _Linker(root, out, sources)
    for source, page in sources.items():
        body = _share_styles(linker.rewrite(rendered[source], source, page), page, out)
        nav = _nav(page, titles, sources)
        body = re.sub(r"(<body[^>]*>)", lambda m, nav=nav: m.group(1) + nav, body, count=1)
        (out / page).parent.mkdir(parents=True, exist_ok=True)
        (out / page).write_text(body)
    return list(sources.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("site"), help="folder to write (emptied)")
    args = parser.parse_args(argv)
    try:
        written = build(args.out)
    except SiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(written)} pages in {args.out}/ (open {args.out}/index.html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
