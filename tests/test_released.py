"""Released weights load into our architectures and reproduce stored full-run values.

The reference values are the per-image rows written by the `evaluate` DVC stages
(results/per_image/*.csv), so this checks that the harness still gives what the full run gave.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from groupsc.evaluate import evaluate
from groupsc.models import count_parameters
from groupsc.paths import require_data, results_dir
from groupsc.released import DNCNN_FILES, load_dcsc_updated, load_dncnn, read_matconvnet_convs


@pytest.mark.parametrize(
    "name, n_convs, params",
    [
        ("DnCNN-S-25", 17, 555_137),
        ("DnCNN-B", 20, 665_921),
        ("CDnCNN-B", 20, 668_227),
        ("DnCNN-3", 20, 665_921),
    ],
)
def test_dncnn_files(name, n_convs, params, have_data):
    convs = read_matconvnet_convs(require_data(DNCNN_FILES[name]))
    assert len(convs) == n_convs
    assert all(w.shape[2:] == (3, 3) for w, _ in convs)
    assert count_parameters(load_dncnn(name)) == params


def test_dcsc_updated_file(have_data):
    model = load_dcsc_updated()
    assert count_parameters(model) == 315_937
    assert model.steps == 40 and model.g.in_channels == 144 and model.s.in_channels == 128


def test_unknown_released_name():
    with pytest.raises(KeyError, match="known"):
        load_dncnn("DnCNN-S-30")


def _stored(key: str) -> pd.DataFrame:
    path = results_dir() / "per_image" / f"{key}.csv"
    if not path.exists():
        pytest.fail(f"{path} missing: it is a committed pipeline output (run `dvc repro`)")
    return pd.read_csv(path, dtype={"name": str})  # image names like 101085 are not numbers


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, task, dataset, level, n",
    [
        ("dncnn-s", "gray_denoise", "BSD68", 25, 3),
        ("cdncnn-b", "blind_color_denoise", "CBSD68", 25, 2),
        ("dncnn-3", "jpeg", "Classic5", 10, 2),
        ("dcsc-updated", "jpeg", "Classic5", 10, 1),
    ],
)
def test_end_to_end_matches_full_run(method, task, dataset, level, n, have_data):
    torch.set_num_threads(2)
    table, rec = evaluate(method, task, dataset, level, limit=n, progress=False)
    stored = _stored(f"{method}__{task}__{dataset}__{float(level):g}").head(n)
    assert list(table.name) == list(stored.name)
    np.testing.assert_allclose(table.psnr, stored.psnr, atol=0.01)
    np.testing.assert_allclose(table.ssim, stored.ssim, atol=1e-4)
    if task == "jpeg":
        np.testing.assert_allclose(table.psnrb, stored.psnrb, atol=0.01)
    assert rec.n_images == n
