"""Every DVC stage depends on what it runs and reads (:mod:`groupsc.stagedeps`).

The static test (import closures, seconds) runs over every resolved stage; the dynamic test
runs each notebook stage (and the summary probe) under an audit hook, about 4 minutes in all.
"""

from __future__ import annotations

import copy
import hashlib
import textwrap
from pathlib import Path

import pytest

from groupsc import stagedeps as S
from groupsc.paths import repo_root

ROOT = repo_root()
STAGES = S.resolved_stages(ROOT)
TRACED = [s for s in STAGES if S.traceable(s)]
FIX = "add them to the stage's deps in dvc.yaml (python -m groupsc.stagedeps lists them)"


def _by_name(name: str):
    return next(s for s in STAGES if s.addressing == name)


# --------------------------------------------------------------------------- dvc.yaml


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.addressing)
def test_stage_depends_on_its_import_closure(stage):
    missing = S.missing_code_deps(stage)
    assert missing == [], f"{stage.addressing} imports files not among its deps: {missing}; {FIX}"


@pytest.mark.parametrize("stage", TRACED, ids=lambda s: s.addressing)
def test_stage_depends_on_what_it_reads(stage):
    notebooks = S.stage_entry_points(stage).notebooks
    before = {nb: hashlib.sha256(nb.read_bytes()).hexdigest() for nb in notebooks}
    reads = S.traced_reads(stage)
    assert "lib/groupsc/__init__.py" in reads, "the tracer recorded no module of the package"
    missing = S.missing_read_deps(stage, reads)
    assert missing == [], f"{stage.addressing} reads files it does not depend on: {missing}; {FIX}"
    after = {nb: hashlib.sha256(nb.read_bytes()).hexdigest() for nb in notebooks}
    assert after == before, "the tracer must not overwrite the stage's notebook"


def test_every_notebook_stage_and_the_summary_are_traced():
    names = {s.addressing for s in TRACED}
    notebooks = {s.addressing for s in STAGES if "papermill" in s.cmd}
    assert notebooks and notebooks <= names
    assert "summary" in names
    assert "neighbour_mass" in names  # one checkpoint per non-local run of params.yaml


def test_the_site_depends_on_every_notebook_and_page():
    """The site renders every notebook and docs page it finds (``groupsc.site``): a notebook
    missing from its deps would leave a stale page behind a clean ``dvc status``."""
    deps = S.declared_deps(_by_name("site"))
    pages = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "docs").glob("*.md"))
    missing = [str(p.relative_to(ROOT)) for p in pages
               if not S.covered(str(p.relative_to(ROOT)), deps)]
    assert pages and missing == [], f"site does not depend on {missing}; {FIX}"


# --------------------------------------------------------------------------- the closure


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def pkg(tmp_path) -> Path:
    """``src/pkg`` with a lazy import, a ``from pkg import submodule`` and a nested package."""
    _write(
        tmp_path / "src",
        {
            "pkg/__init__.py": "",
            "pkg/a.py": """\
                import numpy as np

                def f():
                    from pkg.sub.deep import g
                    return g()
                """,
            "pkg/b.py": "from pkg import c as C\nfrom pkg.c import NAME\n",
            "pkg/c.py": "NAME = 1\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/deep.py": "from . import sibling\n\ndef g():\n    return 1\n",
            "pkg/sub/sibling.py": "",
            "pkg/unused.py": "",
        },
    )
    return tmp_path


def test_closure_follows_lazy_imports_inside_functions(pkg):
    files = S.import_closure(pkg / "src", pkg, modules=["pkg.a"])
    assert "src/pkg/sub/deep.py" in files
    assert "src/pkg/sub/sibling.py" in files  # relative import of deep.py
    assert "src/pkg/unused.py" not in files
    assert not any("numpy" in f for f in files)


def test_closure_resolves_from_package_import_submodule(pkg):
    files = S.import_closure(pkg / "src", pkg, modules=["pkg.b"])
    assert files == ["src/pkg/__init__.py", "src/pkg/b.py", "src/pkg/c.py"]


def test_closure_includes_every_parent_init(pkg):
    files = S.import_closure(pkg / "src", pkg, code=["from pkg.sub.deep import g"])
    assert "src/pkg/__init__.py" in files
    assert "src/pkg/sub/__init__.py" in files
    assert "src/pkg/sub/deep.py" in files


def test_closure_of_a_script_includes_the_script(pkg):
    script = pkg / "run.py"
    script.write_text("def main():\n    import pkg.c\n")
    files = S.import_closure(pkg / "src", pkg, files=[script])
    assert files == ["run.py", "src/pkg/__init__.py", "src/pkg/c.py"]


def test_entry_points_of_commands():
    ep = S.entry_points("python -m groupsc.results --write > results/comparison.txt", ROOT)
    assert ep.modules == ["groupsc.results"] and not ep.files and not ep.notebooks
    ep = S.entry_points("python benchmarks/bench_groupsc_speed.py --images 3", ROOT)
    assert ep.files == [ROOT / "benchmarks" / "bench_groupsc_speed.py"]
    ep = S.entry_points(
        "papermill --cwd notebooks notebooks/09_results.ipynb notebooks/09_results.ipynb "
        "-p level 25 --no-progress-bar",
        ROOT,
    )
    assert ep.notebooks == [ROOT / "notebooks" / "09_results.ipynb"]
    assert ROOT / "notebooks" in ep.search


def test_papermill_parameters_are_typed_like_its_cli():
    args = "in.ipynb out.ipynb -p n 3 -p x 0.5 -p fast True -p image test003 -r raw 7"
    opts = S.papermill_args([*args.split(), "--cwd", "notebooks"])
    expected = {"n": 3, "x": 0.5, "fast": True, "image": "test003", "raw": "7"}
    assert opts["resolved_parameters"] == expected
    assert opts["cwd"] == "notebooks"


def test_closure_of_a_stage_grows_when_an_import_is_added(tmp_path):
    script = tmp_path / "fake_stage.py"
    script.write_text("import math\n")
    fake = copy.copy(_by_name("notebook_results"))
    fake.cmd = f"python {script}"
    assert "lib/groupsc/viz.py" not in S.stage_code(fake)
    script.write_text("import math\n\ndef plot():\n    import groupsc.viz\n")
    code = S.stage_code(fake)
    assert {"lib/groupsc/__init__.py", "lib/groupsc/viz.py", "lib/groupsc/patches.py"} <= set(code)
    assert "lib/groupsc/viz.py" in S.missing_code_deps(fake)


def test_coverage_by_file_or_folder():
    assert S.covered("data/test/BSD68/a.png", ["data"])
    assert S.covered("lib/groupsc/viz.py", ["lib/groupsc/viz.py"])
    assert not S.covered("database.txt", ["data"])


def test_tracer_records_reads_not_writes(tmp_path):
    (tmp_path / "in.txt").write_text("x")
    record = S.trace_python(
        "from pathlib import Path\nPath('in.txt').read_text()\nPath('out.txt').write_text('y')",
        tmp_path,
    )
    assert str(tmp_path / "in.txt") in record["reads"]
    assert str(tmp_path / "out.txt") in record["writes"]
    assert str(tmp_path / "out.txt") not in record["reads"]
