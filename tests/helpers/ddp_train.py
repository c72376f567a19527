"""A tiny training run for the DistributedDataParallel test (tests/test_ddp.py).

python tests/helpers/ddp_train.py OUT [--loss sum_l2]                  # one process
python -m torch.distributed.run --standalone --nproc_per_node 2 tests/helpers/ddp_train.py OUT
"""

import argparse

import torch

from groupsc.models.sparse import SparseCoding
from groupsc.train import TrainConfig, train

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--loss", default="l2")
p.add_argument("--prox", default="group")
args = p.parse_args()
torch.manual_seed(0)
knn = {"radius": 3, "k": 6, "mode": "fixed"} if args.prox == "group" else None
model = SparseCoding(patch=5, atoms=16, steps=4, prox=args.prox, window=24, refresh=2, knn=knn)
cfg = TrainConfig(
    dataset="Set12", crop=24, batch=4, max_steps=3, check_every=2, save_every=100, threads=1,
    adam_eps=1e-3, loss=args.loss, backtrack="train_psnr", check_images=2,
)  # fmt: skip
train(model, cfg, args.out, progress=False)
