"""Repository locations and the one check that ``data/`` was pulled."""

from __future__ import annotations

import os
from pathlib import Path


class DataMissingError(FileNotFoundError):
    """Raised when the DVC-tracked ``data/`` folder (or a file in it) is absent."""


def repo_root() -> Path:
    """The repository root: ``$GROUPSC_ROOT`` if set, else the folder holding ``data.dvc``.

    Searches upwards from the current directory first (so notebooks run from ``notebooks/``
    work), then from this file (an editable install inside the repository).
    """
    env = os.environ.get("GROUPSC_ROOT")
    if env:
        return Path(env).resolve()
    for start in (Path.cwd(), Path(__file__).resolve()):
        for folder in (start, *start.parents):
            if (folder / "data.dvc").is_file():
                return folder
    raise RuntimeError(
        "Cannot find the repository root (the folder holding data.dvc). "
        "Run from inside the repository or set GROUPSC_ROOT."
    )


def data_dir() -> Path:
    """``<root>/data``; see :func:`require_data`."""
    return repo_root() / "data"


def results_dir() -> Path:
    """``<root>/results`` (created if missing)."""
    out = repo_root() / "results"
    out.mkdir(parents=True, exist_ok=True)
    return out


def require_data(relative: str | Path) -> Path:
    """Return ``data/<relative>``, or raise :class:`DataMissingError` naming the fix."""
    path = data_dir() / relative
    if not path.exists():
        hint = "the data folder is missing" if not data_dir().exists() else f"{path} is missing"
        raise DataMissingError(
            f"{hint}. Fetch the datasets and released weights with `dvc pull` "
            "(or `make data`) from the repository root."
        )
    return path
