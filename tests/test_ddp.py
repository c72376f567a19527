"""Training under torchrun (DistributedDataParallel, gloo on CPU): 2 processes sharing each batch
give the one-process result up to float rounding."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HELPER = Path(__file__).parent / "helpers" / "ddp_train.py"


def _run(args: list[str], tmp: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[1] / "lib"), env.get("PYTHONPATH", "")]
    )
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(tmp / "model.pt", weights_only=True)


@pytest.mark.parametrize("loss", ["l2", "sum_l2"])
def test_two_processes_train_as_one(tmp_path, loss):
    one = _run(
        [sys.executable, str(HELPER), str(tmp_path / "one"), "--loss", loss], tmp_path / "one"
    )
    two = _run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(HELPER), str(tmp_path / "two"), "--loss", loss,
        ],
        tmp_path / "two",
    )  # fmt: skip
    assert one["budget"]["steps"] == two["budget"]["steps"] == 3
    assert "DDP" in two["budget"]["hardware"] and "DDP" not in one["budget"]["hardware"]
    moved = False
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, atol=2e-6, rtol=1e-5)
        moved |= not torch.equal(value, one["init"][name])
    assert moved  # the weights were trained, not just copied
    log_one = (tmp_path / "one" / "log.csv").read_text().splitlines()
    log_two = (tmp_path / "two" / "log.csv").read_text().splitlines()
    assert len(log_one) == len(log_two) == 4
    assert "check_psnr" in log_one[0].split(",")
    col = log_one[0].split(",").index("check_psnr")
    for a, b in zip(log_one[1:], log_two[1:], strict=True):
        la, lb = float(a.split(",")[1]), float(b.split(",")[1])
        assert abs(la - lb) <= 1e-5 * abs(la)  # the logged loss is the whole batch's
    one_psnr, two_psnr = log_one[2].split(",")[col], log_two[2].split(",")[col]
    assert one_psnr and abs(float(one_psnr) - float(two_psnr)) < 1e-4  # step 2, both ranks
