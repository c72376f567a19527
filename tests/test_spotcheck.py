"""The spot check of DVC stages (groupsc.spotcheck): names, verdicts, the report."""

import math

import numpy as np
import pandas as pd
import pytest

from groupsc import spotcheck as sc
from groupsc.fit import all_runs, load_params

# the JPEG input itself: milliseconds, and it has PSNR-B
CHEAP = "evaluate_released_jpeg@input-Classic5-10"
CHEAP_TRAINING = "finetune_comparison@dncnn-s_gray_15"  # starts from dncnn-s_gray_25: seeded


@pytest.fixture(scope="module")
def params():
    return load_params()


def test_stage_names_resolve_as_dvc_names_them(params):
    names = [CHEAP, "train_comparison@dncnn-s_gray_25", "evaluate_sparse_gray@sc-BSD68-25", CHEAP]
    stages = sc.resolve(names, params)
    assert [s.address for s in stages] == names[:3]  # each once, in order
    assert [s.kind for s in stages] == ["evaluation", "training", "evaluation"]
    assert stages[0].entry == dict(method="input", task="jpeg", dataset="Classic5", level=10)
    assert stages[2].entry == dict(method="sc", task="gray_denoise", dataset="BSD68", level=25)
    assert stages[1].key == "dncnn-s_gray_25" and stages[1].entry["kind"] == "dncnn"
    assert sc.committed_path(stages[0]).name == "input__jpeg__Classic5__10.csv"
    assert sc.committed_path(stages[1]).parts[-3:] == ("checkpoints", "dncnn-s_gray_25", "log.csv")
    every = sc.resolve([], params, all_evaluations=True, all_trainings=True)
    grids = params["grids"].values()
    n_grid = sum(len(g["method"]) * len(g["dataset"]) * len(g["level"]) for g in grids)
    n_eval = n_grid + sum(len(params[section]) for section in sc.EVAL_GROUPS.values())
    assert sum(s.kind == "evaluation" for s in every) == n_eval
    assert sum(s.kind == "training" for s in every) == len(all_runs(params))
    assert "finetune@groupsc_gray_25" in {s.address for s in every}


@pytest.mark.parametrize(
    "argv",
    [
        ["train@nope"],
        ["evaluate@sc_bsd68_25"],  # an entry of a matrix group under another group
        ["sc_gray_25"],  # a run name without its stage group
        [],
        [CHEAP, "--images", "0"],
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, tmp_path, capsys):
    out = tmp_path / "spot.csv"
    assert sc.main([*argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    assert not out.exists()
    if argv[:1] == ["train@nope"]:
        assert "'train@nope'" in captured.err and "<group>@<entry>" in captured.err


def test_cheap_evaluation_stage_is_same(tmp_path, capsys, have_data):
    out = tmp_path / "spot.csv"
    assert sc.main([CHEAP, "--images", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("stage")
    assert lines[1].startswith(CHEAP) and " same " in lines[1]
    report = pd.read_csv(out)
    assert list(report.columns) == sc.COLUMNS and len(report) == 1
    row = report.iloc[0]
    assert row.verdict == "same" and row["items"] == 1 and row.kind == "evaluation"
    assert len(row.commit) == 40 and row.dirty in (True, False)
    assert row.max_abs_d_psnrb <= sc.TOLERANCES["psnrb"] and math.isnan(row.max_rel_d_loss)
    assert sc.main([CHEAP, "--out", str(out)]) == 0  # a second run appends
    assert len(pd.read_csv(out)) == 2


def test_tampered_committed_psnr_is_different(tmp_path, params, have_data):
    stage = sc.resolve([CHEAP], params)[0]
    table = sc.read_table(sc.committed_path(stage))
    table.to_csv(tmp_path / "copy.csv", index=False, float_format="%.6f")
    table.loc[0, "psnr"] += 0.001  # ten times the tolerance
    table.to_csv(tmp_path / "tampered.csv", index=False, float_format="%.6f")
    same = sc.spot_check(stage, params, images=1, committed=tmp_path / "copy.csv")
    assert same["verdict"] == "same"
    row = sc.spot_check(stage, params, images=1, committed=tmp_path / "tampered.csv")
    assert row["verdict"] == "DIFFERENT" and row["items"] == 1
    assert row["max_abs_d_psnr"] == pytest.approx(0.001, abs=1e-5)
    assert row["max_abs_d_ssim"] <= sc.TOLERANCES["ssim"]


def test_cheap_training_stage_is_same_and_a_tampered_log_is_not(tmp_path, params, have_data):
    stage = sc.resolve([CHEAP_TRAINING], params)[0]
    log = sc.read_table(sc.committed_path(stage))
    row = sc.spot_check(stage, params, steps=1)
    assert row["verdict"] == "same" and row["items"] == 1, row
    log.loc[0, "loss"] *= 1.001
    log.to_csv(tmp_path / "log.csv", index=False)
    row = sc.spot_check(stage, params, steps=1, committed=tmp_path / "log.csv")
    assert row["verdict"] == "DIFFERENT" and row["max_rel_d_loss"] == pytest.approx(1e-3, rel=0.01)


def test_training_steps_are_capped_by_the_committed_log(tmp_path, params, monkeypatch):
    stage = sc.resolve([CHEAP_TRAINING], params)[0]
    log = pd.DataFrame({"step": [1, 2, 3], "loss": [0.5, 0.25, 0.125]})
    log.to_csv(tmp_path / "log.csv", index=False)
    asked = []

    def fake(stage, steps):
        asked.append(steps)
        return log.head(steps), "committed init weights"

    monkeypatch.setattr(sc, "rerun_training", fake)
    assert sc.spot_check(stage, params, steps=10, committed=tmp_path / "log.csv")["items"] == 3
    assert sc.spot_check(stage, params, steps=2, committed=tmp_path / "log.csv")["items"] == 2
    assert asked == [3, 2]


def test_comparisons_allow_the_rounding_of_the_files_only():
    new = pd.DataFrame(
        {
            "name": ["01", "02"],
            "psnr": [30.0194254, 31.5],
            "ssim": [0.8708821, 0.9],
            "psnrb": [np.nan, np.nan],
        }
    )
    old = new.round(6)
    deltas = sc.compare_evaluation(new, old)
    assert deltas["psnrb"] == 0 and sc.verdict(deltas, 2) == "same"
    shifted = old.assign(psnr=old.psnr + 2e-4)
    assert sc.verdict(sc.compare_evaluation(new, shifted), 2) == "DIFFERENT"
    one_nan = old.assign(psnrb=[1.0, np.nan])
    assert sc.compare_evaluation(new, one_nan)["psnrb"] == math.inf
    assert sc.compare_evaluation(new, old.iloc[::-1])["psnr"] == math.inf  # other images
    assert sc.verdict({"psnr": 0.0}, 0) == "DIFFERENT"  # nothing compared shows nothing

    losses = pd.DataFrame({"step": [1, 2], "loss": [0.116877123, 2.12713456e-3]})
    rounded = losses.assign(loss=[float(f"{x:.6g}") for x in losses.loss])
    assert sc.verdict(sc.compare_training(losses, rounded), 2) == "same"
    off = losses.assign(loss=losses.loss * (1 + 2e-4))
    assert sc.verdict(sc.compare_training(off, rounded), 2) == "DIFFERENT"


def test_every_evaluation_and_training_stage_of_dvc_can_be_spot_checked(params):
    """The stages DVC resolves that run an evaluation into results/per_image or a training are
    exactly those the spot check knows, with the entry their command runs."""
    from groupsc.stagedeps import resolved_stages

    known = sc.all_stages(params)
    dvc_stages = {
        s.addressing: s.cmd
        for s in resolved_stages()
        if ("groupsc.evaluate" in s.cmd and "results/per_image" in s.cmd) or "groupsc.fit" in s.cmd
    }
    assert set(dvc_stages) == set(known)
    for address, cmd in dvc_stages.items():
        stage = known[address]
        if stage.kind == "evaluation":
            e = stage.entry
            expected = (
                f"--method {e['method']} --task {e['task']} --dataset {e['dataset']} "
                f"--level {e['level']} "
            )
            assert expected in cmd, (address, cmd)
        else:
            assert cmd.endswith(f"groupsc.fit {stage.key}"), (address, cmd)
