"""Bad input as a new user hits it: one line naming the fix, never a traceback or a silent result.

Levels, thread counts and limits; partial evaluations kept away from the committed results;
damaged checkpoint and resume files; mistyped ``params.yaml`` entries; images a model cannot
take; Ctrl-C during training and evaluation.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from groupsc import evaluate as ev
from groupsc.checkpoint import CheckpointError
from groupsc.degradations import validate_level
from groupsc.fit import load_params, run_config
from groupsc.paths import repo_root
from groupsc.train import TrainConfig, TrainingInterrupted, train

ROOT = repo_root()


def _one_line_error(text: str) -> str:
    """The last line of ``text``, checked to be an ``error:`` line (and no traceback above)."""
    assert "Traceback" not in text, text
    last = text.strip().splitlines()[-1]
    assert re.match(r"(\S+: )?error: ", last), text  # ours, or argparse's "prog: error: ..."
    return last


# -- levels, threads, limits -----------------------------------------------------------------
@pytest.mark.parametrize(
    "task, level, expected",
    [
        ("gray_denoise", 25, 25.0),
        ("gray_denoise", "15", 15.0),
        ("blind_color_denoise", 50, 50.0),
        ("jpeg", 10, 10),
        ("jpeg", "40", 40),
        ("jpeg", 20.0, 20),
        ("demosaic", None, 0.0),
        ("demosaic", 0, 0.0),
    ],
)
def test_good_levels_are_normalized(task, level, expected):
    out = validate_level(task, level)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    "task, level",
    [
        ("gray_denoise", "nan"),
        ("gray_denoise", "inf"),
        ("gray_denoise", "1e9"),
        ("gray_denoise", 0),
        ("gray_denoise", -5),
        ("gray_denoise", None),
        ("color_denoise", "abc"),
        ("jpeg", 10.7),
        ("jpeg", 0),
        ("jpeg", 101),
        ("demosaic", 25),
        ("deblur", 25),
    ],
)
def test_bad_levels_are_refused_in_one_line(task, level):
    with pytest.raises(ValueError) as err:
        validate_level(task, level)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("level", ["nan", "inf", "1e9", "0"])
def test_evaluate_refuses_a_bad_sigma_and_writes_nothing(level, tmp_path, capsys, have_data):
    argv = ["--method", "input", "--task", "gray_denoise", "--dataset", "Set12", "--level", level]
    assert ev.main([*argv, "--out-dir", str(tmp_path), "--no-summary"]) == 2
    assert "noise sigma" in _one_line_error(capsys.readouterr().err)
    assert not any(tmp_path.iterdir())


def test_evaluate_refuses_a_fractional_jpeg_quality(tmp_path, capsys, have_data):
    argv = ["--method", "input", "--task", "jpeg", "--dataset", "Classic5", "--level", "10.7"]
    assert ev.main([*argv, "--out-dir", str(tmp_path), "--no-summary"]) == 2
    assert "integer in 1..100" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("flag, value", [("--threads", "0"), ("--limit", "0"), ("--limit", "-1")])
def test_non_positive_counts_are_refused(flag, value, capsys):
    argv = ["--method", "input", "--task", "gray_denoise", "--dataset", "Set12", "--level", "25"]
    with pytest.raises(SystemExit) as exit_:
        ev.main([*argv, flag, value])
    assert exit_.value.code == 2
    assert "whole number >= 1" in _one_line_error(capsys.readouterr().err)


def test_a_limited_evaluation_has_its_own_name_and_leaves_the_summary(tmp_path, have_data):
    summary = ROOT / "results" / "summary.csv"
    before = summary.read_bytes()
    argv = ["--method", "input", "--task", "gray_denoise", "--dataset", "Set12", "--level", "25"]
    assert ev.main([*argv, "--limit", "2", "--out-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "input__gray_denoise__Set12__25__first2.csv",
        "input__gray_denoise__Set12__25__first2.json",
    ]
    assert summary.read_bytes() == before  # no summary rebuild after a partial evaluation


def test_a_limited_evaluation_may_not_write_among_the_full_ones(capsys, have_data):
    committed = sorted((ROOT / "results" / "per_image").iterdir())
    argv = ["--method", "input", "--task", "gray_denoise", "--dataset", "Set12", "--level", "25"]
    out = str(ROOT / "results" / "per_image")
    assert ev.main([*argv, "--limit", "1", "--out-dir", out, "--no-summary"]) == 2
    assert "results/limited" in _one_line_error(capsys.readouterr().err)
    assert sorted((ROOT / "results" / "per_image").iterdir()) == committed


def test_every_measured_summary_row_shows_its_image_count():
    from groupsc.results import build_summary

    s = build_summary()
    measured = s[s.source != "published"]
    assert measured.n_images.notna().all() and (measured.n_images >= 1).all()
    bsd68 = measured[measured.dataset == "BSD68"]
    assert set(bsd68.n_images) == {68}  # every committed BSD68 figure averages the whole set


# -- damaged checkpoints and resume files ------------------------------------------------------
@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    """A repository root whose ``checkpoints/sc_gray_25/model.pt`` a test may damage."""
    root = tmp_path / "root"
    (root / "checkpoints" / "sc_gray_25").mkdir(parents=True)
    for name in ("data.dvc", "params.yaml"):
        shutil.copy(ROOT / name, root / name)
    (root / "data").symlink_to(ROOT / "data")
    monkeypatch.setenv("GROUPSC_ROOT", str(root))
    return root


def _damage(path: Path, how: str) -> None:
    good = (ROOT / "checkpoints" / "sc_gray_25" / "model.pt").read_bytes()
    data = {
        "truncated": good[: len(good) // 2],
        "random bytes": np.random.default_rng(0).bytes(4096),
        "empty": b"",
        "text": b"not a checkpoint\n",
    }[how]
    path.write_bytes(data)


@pytest.mark.parametrize("how", ["truncated", "random bytes", "empty", "text"])
def test_a_damaged_model_gets_one_line_naming_the_file_and_the_fix(
    how, fake_root, tmp_path, capsys
):
    _damage(fake_root / "checkpoints" / "sc_gray_25" / "model.pt", how)
    argv = ["--method", "sc", "--task", "gray_denoise", "--dataset", "Set12", "--level", "25"]
    assert ev.main([*argv, "--out-dir", str(tmp_path), "--no-summary"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "checkpoints/sc_gray_25/model.pt" in line
    assert "git checkout" in line and "groupsc.fit sc_gray_25" in line
    assert "weights_only" not in line  # never the advice to unpickle


def test_a_foreign_pickle_is_refused_not_unpickled(fake_root):
    from groupsc.methods import load_trained

    torch.save({"model": Path("x")}, fake_root / "checkpoints" / "sc_gray_25" / "model.pt")
    with pytest.raises(CheckpointError, match="other than tensors") as err:
        load_trained("sc_gray_25")
    assert "weights_only" not in str(err.value)


def test_a_missing_model_names_the_training_command(fake_root):
    from groupsc.methods import load_trained
    from groupsc.paths import DataMissingError

    with pytest.raises(DataMissingError, match=r"dvc repro train@sc_gray_25"):
        load_trained("sc_gray_25")


def _tiny():
    from groupsc.models.sparse import SparseCoding

    torch.manual_seed(0)
    return SparseCoding(patch=5, atoms=16, steps=2)


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_a_damaged_resume_file_gets_one_line(how, tmp_path, have_data):
    cfg = TrainConfig(batch=2, crop=24, max_steps=3, save_every=1)
    assert train(_tiny(), cfg, tmp_path, progress=False, stop_after=2) == {}
    resume = tmp_path / "resume.pt"
    resume.write_bytes(resume.read_bytes()[:1000] if how == "truncated" else b"")
    with pytest.raises(CheckpointError) as err:
        train(_tiny(), cfg, tmp_path, progress=False)
    assert str(resume) in str(err.value) and "delete it" in str(err.value)
    assert "\n" not in str(err.value)


# -- params.yaml -------------------------------------------------------------------------------
def _params_with(edit) -> dict:
    params = copy.deepcopy(load_params())
    edit(params["train"])
    return params


G, S = "groupsc_gray_25", "sc_gray_25"


@pytest.mark.parametrize(
    "run, edit, words",
    [
        (G, lambda t: t["finetunes"][G]["init"].update(from_run="sc_gray_2"), "from_run"),
        (G, lambda t: t["finetunes"][G]["train"].update(lrr=1e-3), "'lrr'"),
        (G, lambda t: t["finetunes"][G]["init"].update(kapa=2.0), "'kapa'"),
        (S, lambda t: t["runs"][S].update(trian={}), "'trian'"),
        (S, lambda t: t["runs"][S].update(kind="sparse"), "kind"),
        (S, lambda t: t["presets"]["cpu"].update(bacth=4), "'bacth'"),
        (S, lambda t: t["runs"][S]["train"].update(levels=[0]), "sigma"),
    ],
)
def test_a_mistyped_params_entry_is_named(run, edit, words):
    with pytest.raises(ValueError) as err:
        run_config(run, _params_with(edit))
    assert words in str(err.value) and "params.yaml" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_mistyped_model_key_is_named(monkeypatch, tmp_path):
    import groupsc.fit as fit

    params = _params_with(lambda t: t["runs"]["sc_gray_25"]["model"].update(atom=64))
    monkeypatch.setattr(fit, "load_params", lambda: params)
    with pytest.raises(ValueError, match=r"run 'sc_gray_25', model: .*atom"):
        fit.fit("sc_gray_25", max_steps=1, out_root=tmp_path, progress=False)


# -- images a model cannot take ------------------------------------------------------------------
def test_an_image_smaller_than_the_patch_is_refused_by_name(tmp_path, have_data):
    from groupsc.methods import get_method

    small = tmp_path / "tiny.png"
    Image.fromarray(np.full((6, 40), 128, np.uint8)).save(small)
    restore = get_method("sc", "gray_denoise", 25)
    with pytest.raises(ValueError, match=r"tiny\.png: .*smaller than the patch"):
        ev._run_images(restore, [small], "sc", "gray_denoise", "Set12", 25.0, 0, None, False)


def test_a_text_file_named_png_in_a_dataset_is_named(tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    (root / "data" / "test" / "Set12").mkdir(parents=True)
    shutil.copy(ROOT / "data.dvc", root / "data.dvc")
    (root / "data" / "test" / "Set12" / "01.png").write_text("hello\n")
    monkeypatch.setenv("GROUPSC_ROOT", str(root))
    argv = ["--method", "input", "--task", "gray_denoise", "--dataset", "Set12", "--level", "25"]
    assert ev.main([*argv, "--out-dir", str(tmp_path / "out"), "--no-summary"]) == 2
    assert "01.png" in _one_line_error(capsys.readouterr().err)


# -- Ctrl-C ------------------------------------------------------------------------------------
def test_ctrl_c_in_training_saves_the_step_reached_and_the_run_resumes(tmp_path, have_data):
    cfg = TrainConfig(batch=2, crop=24, max_steps=10**6, max_minutes=1.0, save_every=10**6)
    default = signal.getsignal(signal.SIGINT)

    def ctrl_c_once_training_listens() -> None:
        # the loop's own handler replaces pytest's once the run has started (a fixed delay
        # raced the start on a loaded machine and killed the xdist worker instead)
        deadline = time.time() + 120
        while signal.getsignal(signal.SIGINT) is default and time.time() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Thread(target=ctrl_c_once_training_listens)
    timer.start()
    with pytest.raises(TrainingInterrupted, match="run the same command to resume") as err:
        train(_tiny(), cfg, tmp_path, progress=False)
    timer.join()
    resume = torch.load(tmp_path / "resume.pt", weights_only=True)
    step = resume["state"]["step"]
    assert step >= 1 and len(resume["log"]) == step and f"step {step} " in str(err.value)
    # the same call continues (here to 3 steps more: a resumed run may change its stopping)
    budget = train(_tiny(), dataclasses.replace(cfg, max_steps=step + 3), tmp_path, progress=False)
    log = (tmp_path / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in log] == list(range(1, budget["steps"] + 1))
    assert budget["steps"] > step


def _interrupt(cmd: list[str], ready, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``cmd``, send it SIGINT once ``ready()`` holds, return its exit and output.

    The child gets SIGINT's default disposition: a test run started in the background by a
    non-interactive shell (``.ci/run &``) ignores SIGINT, and an ignored signal is inherited
    across exec, so the command would never see the Ctrl-C the test sends.
    """
    err_file = tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(err_file, "w") as err:
        proc = subprocess.Popen(
            cmd,
            stderr=err,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.time() + 120
        while not ready(err_file) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err_file.read_text())


def test_ctrl_c_on_the_training_command(tmp_path, have_data):
    cmd = [sys.executable, "-m", "groupsc.fit", "dncnn-s_gray_25", "--max-steps", "5000"]
    done = _interrupt(
        [*cmd, "--out-root", str(tmp_path)],
        lambda f: re.search(r"\| [1-9]\d*/5000", f.read_text()) is not None,  # a step done
        tmp_path,
    )
    assert done.returncode == 130, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert re.fullmatch(
        r"interrupted at step \d+ of 5000: the state is saved in .*resume\.pt; "
        r"run the same command to resume",
        last,
    ), last
    assert (tmp_path / "dncnn-s_gray_25" / "resume.pt").exists()


def test_ctrl_c_on_the_evaluation_command(tmp_path, have_data):
    out = tmp_path / "out"
    partial = out / ".partial" / "bm3d__gray_denoise__Set12__25.csv"
    cmd = [sys.executable, "-m", "groupsc.evaluate", "--method", "bm3d", "--task", "gray_denoise"]
    cmd += ["--dataset", "Set12", "--level", "25", "--threads", "1", "--no-summary"]
    done = _interrupt(
        [*cmd, "--out-dir", str(out)],
        lambda f: partial.exists() and len(partial.read_text().splitlines()) >= 2,
        tmp_path,
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"interrupted bm3d__gray_denoise__Set12__25: \d+ of 12 images are kept in .*\.csv; "
        r"run the same command to continue",
        last,
    ), last
