"""The evaluation entry point and the summary table."""

import json

import pandas as pd
import pytest

from groupsc import evaluate as ev
from groupsc import results
from groupsc.methods import METHODS, get_method, method_info
from groupsc.paths import repo_root


def test_cli_errors_are_one_line_with_the_known_names(capsys):
    assert (
        ev.main(["--method", "nope", "--task", "jpeg", "--dataset", "LIVE1", "--level", "10"]) == 2
    )
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and "dncnn-s" in err and "Traceback" not in err
    assert (
        ev.main(["--method", "input", "--task", "jpeg", "--dataset", "LIVE", "--level", "10"]) == 2
    )
    assert "known datasets" in capsys.readouterr().err


def test_method_task_mismatch_is_explained():
    with pytest.raises(ValueError, match="does not do task"):
        get_method("dcsc-updated", "gray_denoise", 25)
    with pytest.raises(ValueError, match="sigma 15, 25 and 50"):
        get_method("dncnn-s", "gray_denoise", 30)


def test_every_method_is_labelled():
    for key, (info, _) in METHODS.items():
        assert info.key == key
        assert info.source in ("released", "trained")
        assert method_info(key) is info


def test_evaluate_writes_csv_and_record(tmp_path, have_data):
    table, rec = ev.evaluate(
        "input", "jpeg", "Classic5", 10, limit=2, out_dir=tmp_path, progress=False
    )
    key = "input__jpeg__Classic5__10__first2"  # a partial evaluation has its own name
    assert rec.key == key and rec.n_images == 2
    on_disk = pd.read_csv(tmp_path / f"{key}.csv")
    assert list(on_disk.columns) == ["name", "psnr", "ssim", "psnrb", "seconds"]
    assert list(on_disk.name) == ["baboon", "barbara"]
    stored = json.loads((tmp_path / f"{key}.json").read_text())
    assert stored["psnr"] == pytest.approx(table.psnr.mean())
    # JPEG at q=10 leaves visible blocks: PSNR-B is below PSNR on every image
    assert (table.psnrb < table.psnr).all()
    with pytest.raises(ValueError, match="partial evaluation"):  # never among the full ones
        results.measured_rows(tmp_path)
    full = tmp_path / "full"
    full.mkdir()
    stored["key"] = "input__jpeg__Classic5__10"
    (full / "input__jpeg__Classic5__10.json").write_text(json.dumps(stored))
    rows = results.measured_rows(full)
    assert set(rows.metric) == {"psnr", "ssim", "psnrb", "sec_per_image"}
    assert (rows.source == "released").all() and (rows.n_images == 2).all()


def test_a_stated_subset_sits_beside_the_full_evaluations_on_the_same_images(tmp_path, have_data):
    sub, full = tmp_path / "subset", tmp_path / "full"
    ev.evaluate("input", "jpeg", "Classic5", 10, limit=2, out_dir=sub, progress=False)
    whole, _ = ev.evaluate("input", "jpeg", "Classic5", 10, out_dir=full, progress=False)
    rows = results.subset_rows(sub, full)
    assert set(rows.dataset) == {"Classic5 (first 2)"} and (rows.n_images == 2).all()
    psnr = rows[rows.metric == "psnr"]
    assert len(psnr) == 2  # the subset's own record and the full one over the same images
    # the harness seeds each image: the full evaluation's first two images are the subset's
    assert psnr.value.iloc[0] == pytest.approx(psnr.value.iloc[1], abs=1e-9)
    assert psnr.value.iloc[0] == pytest.approx(whole.psnr.iloc[:2].mean(), abs=1e-5)  # CSV digits
    assert psnr.value.iloc[0] != pytest.approx(whole.psnr.mean(), abs=1e-3)
    assert "its mean over the images of" in psnr.budget.iloc[1]
    csv = full / "input__jpeg__Classic5__10.csv"
    pd.read_csv(csv).iloc[1:].to_csv(csv, index=False)  # a full record lacking a subset image
    with pytest.raises(ValueError, match="lacks images of the subset"):
        results.subset_rows(sub, full)


def test_killed_evaluation_resumes_where_it_stopped(tmp_path, have_data, monkeypatch):
    whole, rec_whole = ev.evaluate("input", "gray_denoise", "Set12", 25, limit=3, progress=False)
    real = get_method("input", "gray_denoise", 25)
    calls = []

    def restorer(fails_at: int | None):
        def restore(obs):
            calls.append(1)
            if len(calls) == fails_at:
                raise KeyboardInterrupt  # killed during the second image
            return real(obs)

        return lambda method, task, level: restore

    args = ("input", "gray_denoise", "Set12", 25)
    kw = {"limit": 3, "out_dir": tmp_path, "progress": False}
    monkeypatch.setattr(ev, "get_method", restorer(fails_at=2))
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(*args, **kw)
    partial = tmp_path / ".partial" / "input__gray_denoise__Set12__25__first3.csv"
    assert list(pd.read_csv(partial, dtype={"name": str}).name) == ["01"]
    calls.clear()
    monkeypatch.setattr(ev, "get_method", restorer(fails_at=None))
    table, rec = ev.evaluate(*args, **kw)
    assert len(calls) == 2  # image 01 was not restored again
    assert list(table.name) == ["01", "02", "03"]
    pd.testing.assert_frame_equal(table.drop(columns="seconds"), whole.drop(columns="seconds"))
    assert rec.psnr == pytest.approx(rec_whole.psnr, abs=1e-6)
    assert not partial.exists()
    # another seed is another evaluation: nothing is taken from a partial of seed 0
    calls.clear()
    monkeypatch.setattr(ev, "get_method", restorer(fails_at=2))
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(*args, **kw)
    calls.clear()
    monkeypatch.setattr(ev, "get_method", restorer(fails_at=None))
    ev.evaluate(*args, seed=1, **kw)
    assert len(calls) == 3


def test_published_rows_are_the_reference_csvs():
    pub = results.published_rows()
    n = sum(len(pd.read_csv(repo_root() / "references" / f)) for f in results.PUBLISHED_FILES)
    assert len(pub) == n
    assert (pub.source == "published").all()
    assert set(pub.metric) <= set(results.METRICS)
    assert pub.budget.str.startswith("paper: ").all()


def test_published_demosaicking_rows_are_named_as_the_harness_names_its_runs():
    """The papers' demosaicking column BSD68 is the color set, and the task has no level:
    a measured CBSD68 row (level 0, as validate_level returns) meets the paper's 42.91."""
    pub = results.published_rows()
    demosaic = pub[pub.task == "demosaic"]
    assert "BSD68" not in set(demosaic.dataset) and (demosaic.level == 0).all()
    measured = ["GroupSC", "trained", "demosaic", "CBSD68", 0.0, "psnr", 40.0, 68, "", ""]
    summary = pd.concat([pub, pd.DataFrame([measured], columns=results.COLUMNS)])
    comp = results.comparison(summary, metrics=("psnr",))
    assert 42.91 in set(comp[comp.dataset == "CBSD68"].published)


def test_comparison_pairs_measured_with_published():
    summary = pd.DataFrame(
        [
            [
                "DnCNN-S",
                "published",
                "gray_denoise",
                "BSD68",
                25.0,
                "psnr",
                29.23,
                None,
                "",
                "paper: x",
            ],
            [
                "DnCNN",
                "published",
                "gray_denoise",
                "BSD68",
                25.0,
                "psnr",
                29.22,
                None,
                "",
                "paper: y",
            ],
            ["DnCNN-S", "released", "gray_denoise", "BSD68", 25.0, "psnr", 29.25, 68, "", ""],
            ["DnCNN-S", "released", "gray_denoise", "Set12", 25.0, "psnr", 30.0, 12, "", ""],
        ],
        columns=results.COLUMNS,
    )
    comp = results.comparison(summary, metrics=("psnr",))
    bsd = comp[comp.dataset == "BSD68"].sort_values("published")
    assert list(bsd.published) == [29.22, 29.23]
    assert bsd.delta.round(2).tolist() == [0.03, 0.02]
    assert comp[comp.dataset == "Set12"].published.isna().all()


def test_lineage_sums_the_chain_of_fine_tuned_runs(tmp_path, monkeypatch):
    """A fine-tuned run's budget names the runs it started from and the chain's total minutes."""
    ck = tmp_path / "checkpoints"
    for run, minutes in (("a_gray_25", 60.0), ("b_gray_25", 20.0), ("c_gray_25", 30.0)):
        (ck / run).mkdir(parents=True)
        (ck / run / "train.json").write_text(
            json.dumps({"train_minutes": minutes, "init_minutes": 1.0})
        )
    monkeypatch.setattr(results, "repo_root", lambda: tmp_path)
    finetunes = {
        "c_gray_25": {"init": {"from_run": "b_gray_25"}},
        "b_gray_25": {"init": {"from_run": "a_gray_25"}},
    }
    rec = {
        "key": "c__gray_denoise__BSD68__25",
        "task": "gray_denoise",
        "level": 25.0,
        "source": "trained",
    }
    assert results._lineage(rec, finetunes) == (
        "; started from b_gray_25 (21 min) <- a_gray_25 (61 min): 113 min in all"
    )
    assert results._lineage({**rec, "key": "a__gray_denoise__BSD68__25"}, finetunes) == ""
    assert results._lineage({**rec, "source": "released"}, finetunes) == ""


def test_comparison_finetune_budgets_name_their_parent():
    """The summary budget of a comparison model fine-tuned at another sigma (DnCNN-S at 15,
    train.comparison_finetunes) names the sigma-25 run it started from."""
    rows = results.measured_rows()
    rows = rows[(rows.method == "DnCNN-S (trained)") & (rows.level == 15)]
    assert len(rows) > 0
    assert rows.budget.str.contains("started from dncnn-s_gray_25 ").all()


def test_add_seconds_matches_method_and_setting():
    summary = pd.DataFrame(
        [
            ["A", "trained", "gray_denoise", "BSD68", 25.0, "sec_per_image", 2.0, 68, "", ""],
            ["A", "trained", "gray_denoise", "Set12", 25.0, "sec_per_image", 3.0, 12, "", ""],
            ["A", "trained", "gray_denoise", "BSD68", 25.0, "psnr", 29.0, 68, "", ""],
        ],
        columns=results.COLUMNS,
    )
    table = pd.DataFrame({"method": ["A", "A", "B"], "dataset": ["Set12", "BSD68", "BSD68"]})
    out = results.add_seconds(table, summary)
    assert out["s/image"].tolist()[:2] == [3.0, 2.0] and pd.isna(out["s/image"].iloc[2])
    only = results.add_seconds(pd.DataFrame({"method": ["A"]}), summary, "sec", dataset="Set12")
    assert only.sec.tolist() == [3.0]
