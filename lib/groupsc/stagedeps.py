"""Does every DVC stage depend on what it runs and reads? (the rule of ``dvc.yaml``)

Each stage of ``dvc.yaml`` must list as ``deps``:

- the *static import closure* of what its command runs (:func:`import_closure`): every module
  of the repository that the entry point imports, at module level or lazily inside a function,
  recursively, with the ``__init__.py`` of every parent package;
- every repository file the stage reads when it runs (:func:`traced_reads`: a notebook executed
  under an audit hook, or a side-effect-free probe of a ``python -m`` command).

A dep covers a file when it is that file or a folder above it; ``params.yaml`` counts as covered
when the stage declares params. From the repository root::

    python -m groupsc.stagedeps                  # import closures only (seconds)
    python -m groupsc.stagedeps --run-notebooks  # also run the notebooks / probes (minutes)

prints, per stage, the files to add to its ``deps`` and exits 1 if there are any.

Only the standard library, ``dvc``, ``nbformat`` and :mod:`groupsc.paths` are needed for the
static check; ``papermill`` is imported for the notebook tracer only.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from groupsc.paths import repo_root

SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", "2>", "2>>", "&>"}
# files never reported as reads: the interpreter's environment, caches, git internals
IGNORED_PARTS = {".venv", "__pycache__", ".git", ".ipynb_checkpoints"}
TRACE_ENV = "GROUPSC_STAGEDEPS_TRACE"
# `python -m MODULE` commands that can be traced: code doing what the command reads, without
# writing any of its outputs (groupsc.results --write rewrites results/summary.csv).
PYTHON_PROBES = {
    "groupsc.results": (
        "import groupsc.results as R\nR.comparison(R.build_summary(), metrics=('psnr', 'psnrb'))\n"
    ),
}
# Scripts (repo-relative) probed the same way: what they read depends on params.yaml (one
# checkpoint per run), which no static closure sees.
SCRIPT_PROBES = {
    "benchmarks/neighbour_mass.py": (
        "import sys\nsys.path.insert(0, 'benchmarks')\nimport neighbour_mass as N\n"
        "from groupsc.fit import load_params\nfrom groupsc.methods.trained import load_trained\n"
        "from groupsc.paths import repo_root\n"
        "for run in N.non_local_runs(load_params()):\n"
        "    if (repo_root() / 'checkpoints' / run / 'model.pt').exists():  # as the script\n"
        "        load_trained(run)\n"
    ),
}


# --------------------------------------------------------------------------- import closure


@dataclass
class EntryPoints:
    """What a stage command runs: ``modules`` (``python -m``), script ``files`` (themselves
    deps), notebooks (``notebooks``: their code cells are run), and the folders put first on
    ``sys.path`` (``search``: a script's folder, a notebook's working directory)."""

    modules: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    notebooks: list[Path] = field(default_factory=list)
    search: list[Path] = field(default_factory=list)


def notebook_code(path: str | Path) -> str:
    """The code cells of a notebook joined into one Python source, IPython lines (``%...``,
    ``!...``) left out."""
    nb = nbformat.read(str(path), as_version=4)
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        cells.append("\n".join(ln for ln in lines if not ln.lstrip().startswith(("%", "!"))))
    return "\n\n".join(cells)


def imported_names(source: str, module: str = "", is_package: bool = False) -> set[str]:
    """Dotted module names that ``source`` imports, anywhere in it (module level, functions,
    ``try`` blocks). ``from X import a`` gives ``X`` and the candidate ``X.a`` (a submodule if it
    resolves to a file). Relative imports resolve against ``module`` (the source's own name,
    ``is_package`` when it is an ``__init__.py``); they are skipped without one."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, module, is_package)
            if base is None:
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _absolute(name: str | None, level: int, module: str, is_package: bool) -> str | None:
    """The absolute module of ``from <level dots><name> import``; ``None`` if unresolvable."""
    if level == 0:
        return name
    if not module:
        return None
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    if level - 1 > len(parts) or (level - 1 == len(parts) and not name):
        return None
    parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, name] if name else parts)


@functools.cache
def _file_imports(path: str, mtime_ns: int, module: str, is_package: bool) -> frozenset[str]:
    """:func:`imported_names` of a file, cached while its modification time is unchanged."""
    return frozenset(imported_names(Path(path).read_text(), module, is_package))


def module_file(name: str, search: Sequence[Path]) -> Path | None:
    """The file of module ``name`` in the first folder of ``search`` that has it
    (``a/b.py`` or ``a/b/__init__.py``); ``None`` for modules outside them (numpy, os...)."""
    rel = Path(*name.split("."))
    for root in search:
        for path in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
            if path.is_file():
                return path
    return None


def _module_name(path: Path, search: Sequence[Path]) -> tuple[str, bool]:
    """``(dotted name, is_package)`` of a file under one of ``search``; ``("", False)`` else."""
    for root in search:
        try:
            rel = path.relative_to(root).with_suffix("")
        except ValueError:
            continue
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            return ".".join(parts[:-1]), True
        return ".".join(parts), False
    return "", False


def _with_parents(name: str, search: Sequence[Path]) -> list[Path]:
    """The file of ``name`` and the ``__init__.py`` of each of its parent packages (those that
    exist), which Python runs before it."""
    parts = name.split(".")
    files = [module_file(".".join(parts[: i + 1]), search) for i in range(len(parts))]
    return [f for f in files if f is not None]


def import_closure(
    src_root: Path | Sequence[Path],
    root: Path,
    modules: Iterable[str] = (),
    files: Iterable[Path] = (),
    code: Iterable[str] = (),
) -> list[str]:
    """Every file of the static import closure of the entry points, as sorted POSIX paths
    relative to ``root``.

    ``src_root``: the folder(s) modules are looked up in (``lib``; a script's own folder);
    ``modules``: dotted names run (``python -m``; a package's ``__main__.py`` is included);
    ``files``: scripts run (included themselves); ``code``: sources run (notebook cells).
    Imports of modules outside ``src_root`` are not followed. Lazy imports inside functions
    count, as if every function ran.
    """
    search = [Path(src_root)] if isinstance(src_root, (str, Path)) else list(map(Path, src_root))
    search = [p.resolve() for p in search]
    found: set[Path] = set()
    todo: list[tuple[Path | None, str]] = []  # (file to parse, or None with a source)

    def add_module(name: str) -> None:
        for f in _with_parents(name, search):
            if f not in found:
                found.add(f)
                todo.append((f, ""))

    for name in modules:
        add_module(name)
        main = module_file(name, search)
        if main is not None and main.name == "__init__.py":  # a package runs its __main__
            if (main.parent / "__main__.py").is_file():
                add_module(f"{name}.__main__")
    for f in files:
        f = Path(f).resolve()
        found.add(f)
        todo.append((f, ""))
    todo.extend((None, src) for src in code)

    while todo:
        path, source = todo.pop()
        if path is not None:
            module, is_package = _module_name(path, search)
            names = _file_imports(str(path), path.stat().st_mtime_ns, module, is_package)
        else:
            names = imported_names(source)
        for name in names:
            if module_file(name, search) is not None:
                add_module(name)
    return sorted(_relative(f, root) for f in found)


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string (absolute if outside it)."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        try:
            return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            return Path(path).as_posix()


# --------------------------------------------------------------------------- stage commands


def _segments(cmd: str) -> list[list[str]]:
    """The simple commands of a shell line (split on ``&&``, ``;``, ``|``...), each without its
    redirections and leading ``VAR=value`` assignments."""
    lexer = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments, current, skip = [], [], False
    for tok in lexer:
        if skip:
            skip = False
        elif tok in SHELL_OPERATORS:
            segments.append(current)
            current = []
        elif tok in REDIRECTS or tok.startswith((">", "<")):
            skip = tok in REDIRECTS  # the next token is the redirection's file
            if current and current[-1].isdigit():  # `2>`: the fd number is not an argument
                current.pop()
        else:
            current.append(tok)
    segments.append(current)
    out = []
    for seg in segments:
        while seg and "=" in seg[0] and not seg[0].startswith(("-", "/", ".")):
            seg = seg[1:]
        if seg:
            out.append(seg)
    return out


def papermill_args(args: Sequence[str]) -> dict:
    """The options of a ``papermill`` command line (its arguments after ``papermill``), parsed
    by papermill's own CLI: ``notebook_path``, ``output_path``, ``cwd``, ``parameters``...,
    plus ``resolved_parameters`` typed as the CLI types them (``-p``: int/float/bool/None/str,
    ``-r``: str, ``-y``/``-f``: YAML)."""
    from papermill import cli

    ctx = cli.papermill.make_context("papermill", list(args))
    params = dict(ctx.params)
    resolved: dict = {}
    for text in params.get("parameters_yaml") or ():
        resolved.update(cli.yaml.load(text, Loader=cli.NoDatesSafeLoader) or {})
    for name, value in params.get("parameters") or ():
        resolved[name] = cli._resolve_type(value)
    for name, value in params.get("parameters_raw") or ():
        resolved[name] = value
    params["resolved_parameters"] = resolved
    return params


def _is_python(prog: str) -> bool:
    return Path(prog).name.startswith("python")


def entry_points(cmd: str, wdir: Path) -> EntryPoints:
    """What ``cmd`` (run in ``wdir``) runs: ``python -m X`` -> module ``X``; ``python s.py`` ->
    file ``s.py`` (its folder searched first for imports); ``python -c CODE`` -> nothing
    followed; ``papermill [--cwd D] IN OUT ...`` -> notebook ``IN`` (``D`` searched first)."""
    ep = EntryPoints()
    for seg in _segments(cmd):
        prog, args = seg[0], seg[1:]
        if _is_python(prog):
            i = 0
            while i < len(args) and args[i].startswith("-") and args[i] not in ("-m", "-c"):
                i += 1
            if i >= len(args) or args[i] == "-c":
                continue
            if args[i] == "-m" and i + 1 < len(args):
                ep.modules.append(args[i + 1])
            elif args[i] != "-m":
                script = (wdir / args[i]).resolve()
                ep.files.append(script)
                ep.search.append(script.parent)
        elif Path(prog).name == "papermill":
            opts = papermill_args(args)
            ep.notebooks.append((wdir / opts["notebook_path"]).resolve())
            ep.search.append((wdir / (opts.get("cwd") or ".")).resolve())
    return ep


# --------------------------------------------------------------------------- DVC stages


def resolved_stages(root: str | Path | None = None) -> list:
    """Every stage of the repository that runs a command, as DVC resolves it (``foreach``
    entries expanded, ``${...}`` interpolated): DVC ``PipelineStage`` objects with
    ``addressing``, ``cmd``, ``deps``, ``outs``, ``wdir``."""
    from dvc.repo import Repo

    with Repo(str(root or repo_root())) as repo:
        stages = [s for s in repo.index.stages if s.cmd]
    return sorted(stages, key=lambda s: s.addressing)


def _stage_root(stage) -> Path:
    return Path(stage.repo.root_dir)


def declared_deps(stage) -> list[str]:
    """The stage's deps, repo-relative POSIX paths (params files included)."""
    root = _stage_root(stage)
    return [_relative(Path(stage.wdir) / d.def_path, root) for d in stage.deps]


def declared_outs(stage) -> list[str]:
    """The stage's outputs (``outs``, ``metrics``, ``plots``), repo-relative POSIX paths."""
    root = _stage_root(stage)
    return [_relative(Path(stage.wdir) / o.def_path, root) for o in stage.outs]


def _declares_params(stage) -> bool:
    return any(getattr(d, "params", None) is not None for d in stage.deps)


def covered(path: str, deps: Iterable[str]) -> bool:
    """Whether a dep is ``path`` itself or a folder above it."""
    return any(path == d.rstrip("/") or path.startswith(d.rstrip("/") + "/") for d in deps)


def _uncovered(files: Iterable[str], stage) -> list[str]:
    """``files`` that no dep (nor output) of ``stage`` covers, sorted."""
    deps, outs = declared_deps(stage), declared_outs(stage)
    return sorted(f for f in set(files) if not covered(f, deps) and not covered(f, outs))


def stage_entry_points(stage) -> EntryPoints:
    """:func:`entry_points` of the stage's resolved command in its working directory."""
    cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
    return entry_points(cmd, Path(stage.wdir))


def stage_code(stage) -> list[str]:
    """The import closure of what the stage runs (:func:`import_closure` over ``lib/`` and the
    command's own folders), repo-relative; run notebooks are not listed (they are outputs)."""
    root = _stage_root(stage)
    ep = stage_entry_points(stage)
    return import_closure(
        [*ep.search, root / "lib"],
        root,
        modules=ep.modules,
        files=ep.files,
        code=[notebook_code(nb) for nb in ep.notebooks],
    )


def missing_code_deps(stage) -> list[str]:
    """Files of the stage's import closure (:func:`stage_code`) that no declared dep covers."""
    return _uncovered(stage_code(stage), stage)


# --------------------------------------------------------------------------- traced reads

_HOOK = """\
import json as _sd_json, os as _sd_os, sys as _sd_sys
_sd_reads, _sd_writes = set(), set()
def _sd_name(path):
    if isinstance(path, int):
        return None
    try:
        path = _sd_os.fsdecode(_sd_os.fspath(path))
    except TypeError:
        return None
    return _sd_os.path.abspath(path)
def _sd_hook(event, args):
    if event != "open" or not args:
        return
    name = _sd_name(args[0])
    if name is None:
        return
    mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
    if isinstance(mode, str):
        write_only = any(c in mode for c in "wax") and "+" not in mode
    else:
        write_only = (flags or 0) & 3 == _sd_os.O_WRONLY
    (_sd_writes if write_only else _sd_reads).add(name)
_sd_sys.addaudithook(_sd_hook)
try:  # h5py opens files in C, without an audit event: record h5py.File's name
    import h5py as _sd_h5py
    _sd_h5_init = _sd_h5py.File.__init__
    def _sd_h5_file(self, name, *args, **kwargs):
        mode = args[0] if args else kwargs.get("mode", "r")
        n = _sd_name(name)
        if n is not None:
            (_sd_reads if mode in ("r", "r+", "a", None) else _sd_writes).add(n)
        return _sd_h5_init(self, name, *args, **kwargs)
    _sd_h5py.File.__init__ = _sd_h5_file
except ImportError:
    pass
"""

_DUMP = """\
_sd_mods = sorted({_sd_os.path.abspath(m.__file__) for m in list(_sd_sys.modules.values())
                   if isinstance(getattr(m, "__file__", None), str)})
with open(_sd_os.environ["@TRACE_ENV@"], "w") as _sd_f:
    _sd_json.dump({"reads": sorted(_sd_reads), "writes": sorted(_sd_writes),
                   "modules": _sd_mods}, _sd_f)
""".replace("@TRACE_ENV@", TRACE_ENV)


def _code_cell(source: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["stagedeps-trace"]
    return cell


def trace_notebook(stage, workdir: str | Path | None = None) -> dict[str, list[str]]:
    """Run the stage's ``papermill`` command under an audit hook and return the absolute paths
    it opened: ``{"reads": [...], "writes": [...], "modules": [...]}`` (``modules``: the
    ``__file__`` of every module loaded in the kernel).

    The notebook runs with the command's parameters and working directory into a temporary
    copy (``workdir``, default a fresh temporary folder): the repository's notebook is never
    overwritten. A cell installing the hook is put first, one writing the record (to the file
    named by ``$GROUPSC_STAGEDEPS_TRACE``) last.
    """
    import papermill

    cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
    segs = [s for s in _segments(cmd) if Path(s[0]).name == "papermill"]
    if len(segs) != 1:
        raise ValueError(f"{stage.addressing}: not one papermill command: {cmd}")
    opts = papermill_args(segs[0][1:])
    wdir = Path(stage.wdir)
    with tempfile.TemporaryDirectory(prefix="stagedeps-") as tmp:
        tmp = Path(workdir or tmp)
        nb = nbformat.read(str(wdir / opts["notebook_path"]), as_version=4)
        nb.cells.insert(0, _code_cell(_HOOK))
        nb.cells.append(_code_cell(_DUMP))
        src, record = tmp / "input.ipynb", tmp / "trace.json"
        nbformat.write(nb, str(src))
        before = os.environ.get(TRACE_ENV)
        os.environ[TRACE_ENV] = str(record)
        try:
            papermill.execute_notebook(
                str(src),
                str(tmp / "output.ipynb"),
                parameters=opts["resolved_parameters"],
                cwd=str((wdir / (opts.get("cwd") or ".")).resolve()),
                kernel_name=opts.get("kernel"),
                progress_bar=False,
                start_timeout=opts.get("start_timeout") or 60,
            )
        finally:
            if before is None:
                os.environ.pop(TRACE_ENV, None)
            else:
                os.environ[TRACE_ENV] = before
        return json.loads(record.read_text())


def trace_python(code: str, cwd: str | Path) -> dict[str, list[str]]:
    """Run ``code`` in a fresh ``python -c`` (``cwd``) under the audit hook; returns the record
    of :func:`trace_notebook`. ``code`` must not write tracked files."""
    with tempfile.TemporaryDirectory(prefix="stagedeps-") as tmp:
        record = Path(tmp) / "trace.json"
        env = {**os.environ, TRACE_ENV: str(record)}
        subprocess.run(
            [sys.executable, "-c", f"{_HOOK}\n{code}\n{_DUMP}"], cwd=cwd, env=env, check=True
        )
        return json.loads(record.read_text())


def _probe(stage) -> str | None:
    """The probe code of the stage's ``python -m`` module (:data:`PYTHON_PROBES`) or script
    (:data:`SCRIPT_PROBES`), if it has one."""
    ep = stage_entry_points(stage)
    for module in ep.modules:
        if module in PYTHON_PROBES:
            return PYTHON_PROBES[module]
    root = _stage_root(stage)
    for script in ep.files:
        if (rel := _relative(script, root)) in SCRIPT_PROBES:
            return SCRIPT_PROBES[rel]
    return None


def traceable(stage) -> bool:
    """Whether :func:`traced_reads` can run the stage: a notebook, or a probed module or
    script."""
    return bool(stage_entry_points(stage).notebooks) or _probe(stage) is not None


def traced_reads(stage) -> list[str]:
    """The repository files the stage reads when it runs (its notebook executed, or its
    module's probe), repo-relative, sorted: opened for reading, or imported modules. Left out:
    the notebook run, anything under ``.venv/``, ``__pycache__/``, ``.git/``, ``*.egg-info/``,
    files outside the repository, and the stage's declared outputs."""
    root = _stage_root(stage)
    ep = stage_entry_points(stage)
    if ep.notebooks:
        record = trace_notebook(stage)
    elif (code := _probe(stage)) is not None:
        record = trace_python(code, stage.wdir)
    else:
        raise ValueError(f"{stage.addressing}: no read tracer (not a notebook, no probe)")
    skip = {_relative(nb, root) for nb in ep.notebooks}
    outs = declared_outs(stage)
    files = set()
    for path in [*record["reads"], *record["modules"]]:
        rel = _relative(Path(path), root)
        if Path(rel).is_absolute() or rel.startswith("../") or rel in skip:
            continue
        if IGNORED_PARTS & set(Path(rel).parts) or covered(rel, outs):
            continue
        if any(part.endswith(".egg-info") for part in Path(rel).parts):
            continue  # pip's metadata of the editable install, read by importlib.metadata
        if not (root / rel).is_file():
            continue
        files.add(rel)
    return sorted(files)


def missing_read_deps(stage, reads: Iterable[str] | None = None) -> list[str]:
    """Files the stage reads (:func:`traced_reads`, or ``reads`` if given) that no declared dep
    covers; ``params.yaml`` is covered when the stage declares params."""
    reads = traced_reads(stage) if reads is None else list(reads)
    if _declares_params(stage):
        reads = [r for r in reads if r != "params.yaml"]
    return _uncovered(reads, stage)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Print the missing deps of every stage; 1 if any is missing, else 0."""
    p = argparse.ArgumentParser(description="Deps each dvc.yaml stage is missing.")
    p.add_argument(
        "--run-notebooks",
        action="store_true",
        help="also run the notebooks (and probes) to find the files they read (minutes)",
    )
    p.add_argument("stages", nargs="*", help="stage names or addressings (default: all)")
    args = p.parse_args(argv)
    stages = resolved_stages()
    if args.stages:
        wanted = set(args.stages)
        stages = [s for s in stages if {s.addressing, s.addressing.split("@")[0]} & wanted]
    bad = 0
    for stage in stages:
        missing = missing_code_deps(stage)
        if args.run_notebooks and traceable(stage):
            missing = sorted({*missing, *missing_read_deps(stage)})
        if missing:
            bad += 1
            print(f"{stage.addressing}: add to its deps in dvc.yaml:")
            print("\n".join(f"  - {m}" for m in missing))
    if bad:
        print(f"\n{bad} of {len(stages)} stages miss deps", file=sys.stderr)
        return 1
    print(f"{len(stages)} stages: every dep declared")
    return 0


if __name__ == "__main__":
    sys.exit(main())
