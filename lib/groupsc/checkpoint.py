"""Reading checkpoint files safely, with one-line errors that name the file and the fix.

Every checkpoint of this project (``model.pt``, ``resume.pt``) holds only tensors and plain
Python values, so it loads with ``torch.load(..., weights_only=True)``. A file that does not
load that way is damaged or foreign: it is reported as such and never unpickled with
arbitrary code.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from groupsc.paths import DataMissingError


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message is one line with the fix."""


def _problem(raw: bytes) -> str | None:
    """What is visibly wrong with the bytes of a would-be checkpoint, or None."""
    if not raw:
        return "the file is empty"
    if not zipfile.is_zipfile(io.BytesIO(raw)):
        return "not a PyTorch checkpoint (truncated, or another kind of file)"
    return None


Fix = str | Callable[[], str]  # the advice, or a function building it (only on failure)


def load_checkpoint(path: str | Path, fix: Fix, map_location=None) -> dict:
    """``torch.load(path, weights_only=True)``, or a :class:`CheckpointError` naming ``fix``.

    Args:
        path: the file.
        fix: what to do about a missing or damaged file, e.g. "retrain it with `dvc repro
            train@sc_gray_25`, or restore it with `git checkout -- <path>`" (or a function
            returning it, called only when the file is missing or damaged).
        map_location: as for :func:`torch.load`.
    Returns:
        The checkpoint's dictionary.
    Raises:
        DataMissingError: the file does not exist; CheckpointError: it does not load.
    """
    return read_checkpoint(path, fix, map_location)[0]


def read_checkpoint(path: str | Path, fix: Fix, map_location=None) -> tuple[dict, bytes]:
    """Like :func:`load_checkpoint`, also returning the file's bytes (to hash them)."""
    path = Path(path)
    if not path.is_file():
        raise DataMissingError(f"{path} is missing: {_advice(fix)}")
    raw = path.read_bytes()
    problem = _problem(raw)
    if problem is None:
        try:
            ck = torch.load(io.BytesIO(raw), weights_only=True, map_location=map_location)
        except pickle.UnpicklingError:
            problem = "it holds objects other than tensors and plain values (not ours)"
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile):
            problem = "the archive is damaged (truncated or corrupt)"
        else:
            if isinstance(ck, dict):
                return ck, raw
            problem = f"it holds a {type(ck).__name__}, not a checkpoint dictionary"
    raise CheckpointError(f"{path} cannot be read: {problem}; {_advice(fix)}")


def _advice(fix: Fix) -> str:
    return fix() if callable(fix) else fix


def require_keys(ck: dict, keys: tuple[str, ...], path: str | Path, fix: Fix) -> None:
    """Raise :class:`CheckpointError` if the checkpoint ``ck`` lacks any of ``keys``."""
    absent = [k for k in keys if k not in ck]
    if absent:
        raise CheckpointError(
            f"{path} cannot be read: it lacks {', '.join(absent)} (not a checkpoint of this "
            f"project, or an old one); {_advice(fix)}"
        )
