"""The companion site (`site/`, the `site` stage): built from the sources, and read in a real
headless Chromium (Playwright) from disk, as a reader opens it offline."""

from __future__ import annotations

import json
import re
import shutil
from collections import deque
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

from groupsc import mathml, site
from groupsc.paths import repo_root

SITE = repo_root() / "site"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _tiny_repo(root: Path, link: str = "docs/guide.md") -> Path:
    (root / "docs").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "data.dvc").write_text("")
    (root / "table.csv").write_text("a,b\n1,2\n")
    (root / "README.md").write_text(
        f"# Tiny\n\nSee [the guide]({link}), [a table](table.csv) and `notebooks/01_a.ipynb`.\n\n"
        "$$\\hat x = \\arg\\min_x \\tfrac12\\|y - x\\|^2$$\n\nPrices: $5 and $10.\n"
    )
    (root / "docs/guide.md").write_text("# Guide\n\n| a | b |\n|---|---|\n| $\\alpha_1$ | 2 |\n")
    source = "# Notebook A\n\n## The $\\ell_1$ prox"
    cell = {"cell_type": "markdown", "id": "a", "metadata": {}, "source": source}
    nb = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (root / "notebooks/01_a.ipynb").write_text(json.dumps(nb))
    return root


def test_the_builder_maps_every_source_to_a_page_and_rewrites_links(tmp_path):
    root = _tiny_repo(tmp_path / "repo")
    written = site.build(tmp_path / "out", root=root)
    assert written == ["index.html", "docs/guide.html", "notebooks/01_a.html"]
    index = (tmp_path / "out/index.html").read_text()
    assert 'href="docs/guide.html"' in index
    assert 'href="files/table.csv"' in index and (tmp_path / "out/files/table.csv").is_file()
    assert '<a href="notebooks/01_a.html"><code>notebooks/01_a.ipynb</code></a>' in index
    assert index.count("<math") == 1 and "$5 and $10" in index  # prices are not math
    notebook = (tmp_path / "out/notebooks/01_a.html").read_text()
    assert 'href="../index.html"' in notebook  # the navigation bar, relative to the page
    assert "GSCMATH" not in notebook.upper() and notebook.count("<math") == 1
    assert "<table>" in (tmp_path / "out/docs/guide.html").read_text()


def test_a_broken_link_stops_the_build_with_one_line(tmp_path, capsys, monkeypatch):
    root = _tiny_repo(tmp_path / "repo", link="docs/missing.md")
    with pytest.raises(site.SiteError, match="README.md: the link 'docs/missing.md' names no file"):
        site.build(tmp_path / "out", root=root)
    monkeypatch.setenv("GROUPSC_ROOT", str(root))
    assert site.main(["--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_an_unknown_tex_command_is_an_error_not_text():
    with pytest.raises(ValueError, match=r"unknown TeX command \\foo"):
        mathml.to_mathml(r"\foo x", display=False)
    assert "<mfrac>" in mathml.to_mathml(r"\frac{1}{2}", display=True)


def test_the_committed_site_has_a_page_for_every_source():
    assert SITE.is_dir(), "site/ is missing: run `dvc repro site`"
    for page in site.pages(repo_root()).values():
        assert (SITE / page).is_file(), f"site/{page} is missing: run `dvc repro site`"


# --- the real browser ---------------------------------------------------------------------

def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("no Chromium on PATH: `make browser` installs Debian's chromium")
    return path


def _page_report(page) -> dict:
    """What the loaded page shows: its images, links, formulas and title."""
    return page.evaluate(
        """() => ({
        title: document.title,
        images: Array.from(document.images).map(i => ({src: i.src,
            shown: i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0})),
        links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
        math: Array.from(document.querySelectorAll('math')).map(m =>
            m.getBoundingClientRect().width > 0 && !m.querySelector('merror')),
        ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id)})"""
    )


def _figures_in(notebook: Path) -> int:
    nb = json.loads(notebook.read_text())
    return sum("image/png" in out.get("data", {}) for cell in nb["cells"]
               for out in cell.get("outputs", []))


def _crawl(chromium: str) -> tuple[dict[Path, dict], list[str]]:
    """Every page reachable from index.html, opened over file:// with requests to any other
    scheme refused: page -> its report, and the problems seen while loading."""
    from playwright.sync_api import sync_playwright

    problems, reports = [], {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.route(re.compile(r"^(?!file:).*"), lambda route: (
            problems.append(f"request off the site: {route.request.url}"), route.abort()))
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} ({r.failure})"))
        page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
        queue = deque([(SITE / "index.html").resolve()])
        while queue:
            path = queue.popleft()
            if path in reports:
                continue
            page.goto(path.as_uri(), wait_until="load")
            reports[path] = report = _page_report(page)
            for url in report["links"]:
                target = Path(unquote(urlparse(urldefrag(url).url).path))
                if not url.startswith("file:") or not target.is_file():
                    problems.append(f"{path.name}: broken link {url}")
                elif target.suffix == ".html" and SITE.resolve() in target.parents:
                    queue.append(target)
        browser.close()
    return reports, problems


def _check(name: Path, report: dict, ids: dict[Path, set]) -> list[str]:
    """One page's problems: no title, a figure not shown, a formula not drawn, a missing anchor,
    fewer figures than its notebook holds."""
    problems = [f"{name}: no title"] if not report["title"] else []
    problems += [f"{name}: figure not shown {i['src']}" for i in report["images"] if not i["shown"]]
    problems += [f"{name}: a formula not drawn" for ok in report["math"] if not ok]
    for url in report["links"]:
        target, fragment = urldefrag(url)
        target_path = Path(unquote(urlparse(target).path))
        known = ids.get(target_path, set())  # a browser tries the fragment as is, then decoded
        if fragment and target_path in ids and not {fragment, unquote(fragment)} & known:
            problems.append(f"{name}: no anchor #{fragment} in {target_path.name}")
    if name.parts[0] == "notebooks":
        expected = _figures_in(repo_root() / "notebooks" / f"{name.stem}.ipynb")
        if len(report["images"]) != expected:
            problems.append(f"{name}: {len(report['images'])} figures, the notebook {expected}")
    return problems


def test_every_page_loads_offline_with_its_figures_formulas_and_links_in_chromium():
    """Each page loads without a failed request or console error, shows every figure (a notebook
    page as many as its notebook holds), draws its formulas, and every link names a page or file
    of the site (and an anchor on it); every page is reachable from index.html."""
    assert (SITE / "index.html").is_file(), "site/ is missing: run `dvc repro site`"
    reports, problems = _crawl(_chromium())
    ids = {path: set(r["ids"]) for path, r in reports.items()}
    for path, report in reports.items():
        problems += _check(path.relative_to(SITE.resolve()), report, ids)
    every_page = {(SITE / p).resolve() for p in site.pages(repo_root()).values()}
    problems += [f"not reachable from index.html: {p.name}" for p in every_page - set(reports)]
    assert sum(len(r["math"]) for r in reports.values()) > 100  # the notebooks' formulas
    assert not problems, "\n".join(problems[:20])
