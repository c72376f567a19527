"""The README's and docs' results tables are generated from ``results/summary.csv``
(:mod:`groupsc.readme`) and agree with it."""

from __future__ import annotations

import pandas as pd
import pytest

from groupsc import readme
from groupsc.paths import repo_root, results_dir


def test_the_committed_tables_match_the_summary():
    assert readme.main(["--check"]) == 0, "run `python -m groupsc.readme` and commit the files"


def test_every_file_holds_the_task_tables():
    text = (repo_root() / "README.md").read_text()
    for name in ("gray", "grouping", "jpeg", "color", "demosaic"):
        assert f"<!-- table:{name} -->" in text and f"<!-- /table:{name} -->" in text


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
