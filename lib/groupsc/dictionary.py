"""Dictionary initialization with scikit-learn (paper section 3.6 and appendix B).

The paper initializes ``C = D = W`` with a dictionary learned by SPAMS on training patches and
normalized by its largest singular value. We use scikit-learn's
``MiniBatchDictionaryLearning`` (the same l1 dictionary-learning objective, online algorithm of
Mairal et al. 2010) on centered clean patches.
"""

from __future__ import annotations

import numpy as np
import torch

from groupsc.data import load_dataset
from groupsc.patches import center, extract


def sample_patches(
    dataset: str, patch: int, n: int, *, mode: str = "gray", seed: int = 0
) -> np.ndarray:
    """``n`` random centered ``patch x patch`` patches of a dataset, ``(n, C patch^2)`` float32."""
    rng = np.random.default_rng(seed)
    images = load_dataset(dataset, mode)
    per_image = int(np.ceil(n / len(images)))
    out = []
    for _, img in images:
        t = torch.from_numpy(img)
        t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
        p = extract(t, patch)  # (1, m, L)
        idx = rng.choice(p.shape[2], size=min(per_image, p.shape[2]), replace=False)
        pc, _ = center(p[:, :, idx], t.shape[1])
        out.append(pc[0].T.numpy())
    allp = np.concatenate(out)
    return allp[rng.permutation(len(allp))[:n]].astype(np.float32)


def learn_dictionary(
    samples: np.ndarray, atoms: int, *, alpha: float = 0.1, epochs: int = 2, seed: int = 0
) -> torch.Tensor:
    """Learn ``atoms`` unit-norm atoms from ``samples`` ``(n, m)``; returns ``(m, atoms)``."""
    from sklearn.decomposition import MiniBatchDictionaryLearning

    dl = MiniBatchDictionaryLearning(
        n_components=atoms,
        alpha=alpha,
        batch_size=256,
        max_iter=epochs,
        random_state=seed,
        fit_algorithm="lars",
        transform_algorithm="lasso_lars",
    )
    dl.fit(samples)
    return torch.from_numpy(dl.components_.T.astype(np.float32).copy())
