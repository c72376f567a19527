"""The README's and docs' results tables are generated from ``results/summary.csv``
(:mod:`groupsc.readme`) and agree with it."""

from __future__ import annotations

import pandas as pd
import pytest

from groupsc import readme, results
from groupsc.paths import repo_root, results_dir


def test_the_committed_tables_match_the_summary():
    assert readme.main(["--check"]) == 0, "run `python -m groupsc.readme` and commit the files"


def test_every_file_holds_the_task_tables():
    readme_names = ("gray_brief", "grouping_brief", "jpeg", "color", "demosaic")
    docs_names = ("gray",) + readme_names[1:] + ("grouping", "color_subset", "demosaic_subset")
    for file, names in (("README.md", readme_names), ("docs/results.md", docs_names)):
        text = (repo_root() / file).read_text()
        for name in names:
            assert f"<!-- table:{name} -->" in text and f"<!-- /table:{name} -->" in text, file


def test_a_changed_figure_is_caught_and_rewritten():
    summary = pd.read_csv(results_dir() / "summary.csv")
    text = (repo_root() / "README.md").read_text()
    tables = readme.render(summary)
    assert readme.rewrite(text, tables) == text
    row = (summary.method == "SC") & (summary.dataset == "BSD68") & (summary.level == 25)
    row &= (summary.metric == "psnr") & (summary.source == "trained")
    assert row.sum() == 1
    summary.loc[row, "value"] += 0.5
    changed = readme.rewrite(text, readme.render(summary))
    assert changed != text
    sc = next(line for line in changed.splitlines() if line.startswith("| SC | trained"))
    assert f"{summary.loc[row, 'value'].item():.2f} (28.90)" in sc


def test_prose_outside_the_blocks_is_kept_and_unknown_blocks_are_refused():
    text = "intro\n<!-- table:gray -->\nold\n<!-- /table:gray -->\noutro\n"
    assert readme.rewrite(text, {"gray": "new\n"}) == text.replace("old\n", "new\n")
    with pytest.raises(KeyError, match="unknown table 'nope'"):
        readme.rewrite("<!-- table:nope -->\n<!-- /table:nope -->", {"gray": ""}, "README.md")


def test_a_stated_subset_gets_its_own_table_and_grouping_rows():
    summary = pd.read_csv(results_dir() / "summary.csv")
    subset = "CBSD68 (first 10)"
    # the subsets measured so far are replaced by this test's own rows
    summary = summary[~summary.dataset.str.contains(" (first ", regex=False)]
    extra = pd.DataFrame(
        [
            {"method": m, "source": "trained", "task": "color_denoise", "dataset": subset,
             "level": 25.0, "metric": "psnr", "value": v, "n_images": 10, "params": "",
             "budget": "test"}
            for m, v in (("SC", 30.0), ("GroupSC", 30.4))
        ]
        + [  # seconds: the dense model's own record, SC's full record averaged over the subset
            {"method": m, "source": "trained", "task": "color_denoise", "dataset": subset,
             "level": 25.0, "metric": "sec_per_image", "value": v, "n_images": 10, "params": "",
             "budget": b}
            for m, v, b in (("GroupSC", 83.0, "test"), ("SC", 13.0, f"x; {results.DERIVED} y"))
        ]
    )  # fmt: skip
    tables = readme.render(pd.concat([summary, extra], ignore_index=True))
    # the paper's gain is that of the whole set (CBSD68, sigma 25: 31.44 - 30.94)
    assert f"| {subset} | 25 | 30.00 | - | 30.40 (+0.40) | +0.50 |" in tables["grouping"]
    assert f"| {subset} | 25 | - | +0.40 | +0.50 |" in tables["grouping_brief"]
    assert "On a stated subset" in tables["color_subset"]
    assert f"| {subset} σ = 25" in tables["color_subset"]
    assert "stated subset" not in tables["color"]
    # CPU time is counted once: the subset mean of a full evaluation is no evaluation of its own
    assert f"| GroupSC, {subset} σ = 25 | 10 | 83.0 | 14 |" in tables["costs"]
    assert f"SC, {subset}" not in tables["costs"].replace(f"GroupSC, {subset}", "")
    assert readme.render(summary)["color_subset"] == "No stated subset.\n"


def test_blind_models_get_their_own_grouping_rows_and_cbm3d_its_note():
    summary = pd.read_csv(results_dir() / "summary.csv")
    summary = summary[summary.task != "blind_color_denoise"]
    extra = pd.DataFrame(
        [
            {"method": m, "source": s, "task": "blind_color_denoise", "dataset": "CBSD68",
             "level": 15.0, "metric": "psnr", "value": v, "n_images": 68, "params": "",
             "budget": "test"}
            for m, s, v in (("SC", "trained", 33.0), ("GroupSC (k-NN)", "trained", 33.2),
                            ("BM3D", "released", 33.5))
        ]
    )  # fmt: skip
    tables = readme.render(pd.concat([summary, extra], ignore_index=True))
    assert "| CBSD68, blind | 15 | 33.00 | 33.20 (+0.20) | - |" in tables["grouping"]
    assert "BM3D is CBM3D given the σ estimated from the noisy image" in tables["color"]
    without = readme.render(pd.concat([summary, extra[extra.method != "BM3D"]]))
    assert "CBM3D" not in without["color"].split("Blind")[1].splitlines()[0]


def test_a_demosaicking_subset_gets_its_own_table():
    summary = pd.read_csv(results_dir() / "summary.csv")
    summary = summary[~summary.dataset.str.contains(" (first ", regex=False)]
    subset = "CBSD68 (first 10)"
    extra = pd.DataFrame([
        {"method": m, "source": "trained", "task": "demosaic", "dataset": subset, "level": 0.0,
         "metric": "psnr", "value": v, "n_images": 10, "params": "", "budget": "test"}
        for m, v in (("SC", 40.0), ("GroupSC", 40.5))
    ])  # fmt: skip
    assert readme.render(summary)["demosaic_subset"] == "No stated subset.\n"
    tables = readme.render(pd.concat([summary, extra], ignore_index=True))
    table = tables["demosaic_subset"]
    assert "On a stated subset" in table and f"| {subset}" in table
    assert "| 40.50 |" in table.split("On a stated subset")[1]
    assert "stated subset" not in tables["demosaic"]
    assert f"| {subset}, mosaic | - | - | +0.50 | +1.03 |" in tables["grouping_brief"]


def test_the_brief_grouping_table_has_one_line_per_set_with_every_level():
    tables = readme.render(pd.read_csv(results_dir() / "summary.csv"))
    lines = [line for line in tables["grouping_brief"].splitlines() if line.startswith("| BSD68 |")]
    assert len(lines) == 1
    levels = lines[0].split(" | ")[1]
    assert levels == "5 / 15 / 25 / 50"
    full = [line for line in tables["grouping"].splitlines() if line.startswith("| BSD68 |")]
    knn = [line.split(" | ")[3].split("(")[1].rstrip(")") for line in full]
    assert lines[0].split(" | ")[2] == " / ".join(knn)


def test_the_readme_gray_grid_leaves_out_only_the_ablations():
    tables = readme.render(pd.read_csv(results_dir() / "summary.csv"))
    rows = {k: [line for line in tables[k].splitlines() if line.startswith("| ")][1:] for k in
            ("gray", "gray_brief")}  # fmt: skip
    left_out = [line for line in rows["gray"] if line not in rows["gray_brief"]]
    assert left_out and all(readme.ABLATION.search(line.split(" | ")[0]) for line in left_out)
    assert "| SC | trained" in tables["gray_brief"] and "K=12" not in tables["gray_brief"]
