"""Dense vs sparse (windowed kNN) GroupSC similarities: timings on one 56 x 56 block.

Run: ``PYTHONPATH=lib python benchmarks/bench_neighbors.py [--threads 1] [--quick]``.

Prints three tables (milliseconds, best of ``--reps`` calls, per call, for the whole batch):

1. aggregation back-ends for ``out[:, i] = sum_j S_ij x[:, j]`` (n = 256, k = 16, batch 1):
   ``torch.gather``, an ``index_select`` loop over the k neighbours, a COO and a CSR product
   (the one :mod:`groupsc.neighbors` uses), forward and forward + backward;
2. components, dense vs sparse, for batch 1 and 8 and a few ``(radius, k)``: the similarity
   (dense ``SparseCoding.similarity`` vs :func:`knn_similarity`), one weighted-norm
   aggregation (``(B*B) @ Sigma`` vs :func:`weighted_sq_norms`), the whole prox of eq. (11),
   the two LISTA products ``D @ alpha`` and ``C^T @ resid`` (the same for both), and the
   estimated cost of one GroupSC step: LISTA + prox + 5/24 of a similarity (5 similarity
   computations in 24 steps, as in the reference settings);
3. end to end: the 24-step GroupSC forward on the block (``SparseCoding.sums``) with the dense
   similarities and with the library's k-NN model (``SparseCoding(knn=...)``, the same forward
   options), forward and forward + backward, and how far the sparse output is from the
   dense one (PSNR between the two outputs, dB) and from the clean block.

The model for (3) is not trained: C = D = W an overcomplete DCT, thresholds picked on the
block, kappa = 1, nu = sigmoid(1) (or a trained GroupSC from
``--checkpoint checkpoints/<run>/model.pt``).
Its accuracy numbers are a proxy for the approximation error, not a result.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from groupsc import neighbors as NB
from groupsc import patches as P
from groupsc import prox as PX
from groupsc.models.sparse import LEGACY_FORWARD, SparseCoding

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="Sparse invariant checks")

BLOCK, PATCH, ATOMS, STEPS, REFRESH = 56, 9, 256, 24, 6


def timeit(fn: Callable[[], object], reps: int, warm: bool = True) -> float:
    """Best wall time of ``fn()`` over ``reps`` calls in ms, after one warm-up call. The best
    (not the median) because other jobs share the CPU: interference only adds time."""
    if warm:
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def fwd_bwd(fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        out = fn()
        torch.autograd.grad((out * out).sum(), inputs)

    return run


def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return fn()

    return run


# -- 1. aggregation back-ends ---------------------------------------------------------------
def backends_table(reps: int) -> None:
    torch.manual_seed(0)
    side = BLOCK - PATCH + 1
    x = torch.rand(1, 1, BLOCK, BLOCK)
    sim = NB.knn_similarity(x, PATCH, torch.ones(PATCH * PATCH), 7, 16)
    size, n, k = side * side, ATOMS, 16
    rows = torch.rand(size, n)
    idx = sim.col.view(size, k)

    def gather(v, r):
        g = r.t()[:, idx.reshape(-1)].view(n, size, k)
        return (g * v.view(1, size, k)).sum(-1).t()

    def loop(v, r):
        vv = v.view(size, k)
        out = r.index_select(0, idx[:, 0]) * vv[:, :1]
        for t in range(1, k):
            out = out + r.index_select(0, idx[:, t]) * vv[:, t : t + 1]
        return out

    def coo(v, r):
        s = torch.sparse_coo_tensor(torch.stack([sim.row, sim.col]), v, (size, size))
        return torch.sparse.mm(s, r)

    def csr(v, r):
        return NB.aggregate(r.t().unsqueeze(0), sim.with_values(v))[0].t()

    print("\n1. aggregation back-ends, n = 256, L = 2304, k = 16, batch 1 (ms)")
    print(f"{'back-end':<22}{'forward':>10}{'fwd+bwd':>10}")
    for name, fn in (
        ("torch.gather", gather),
        ("index_select loop", loop),
        ("sparse COO", coo),
        ("sparse CSR (used)", csr),
    ):
        v = sim.values.clone().requires_grad_()
        r = rows.clone().requires_grad_()
        f = timeit(no_grad(lambda fn=fn, v=v, r=r: fn(v, r)), reps)
        fb = timeit(fwd_bwd(lambda fn=fn, v=v, r=r: fn(v, r), [v, r]), reps)
        print(f"{name:<22}{f:>10.2f}{fb:>10.2f}")


# -- 2. components ----------------------------------------------------------------------------
def dense_similarity(x: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """``SparseCoding.similarity``: ``(N, L, L)``."""
    z = P.extract(x, PATCH) * kappa[None, :, None]
    sq = (z * z).sum(1)
    d = sq[:, :, None] + sq[:, None, :] - 2 * z.transpose(1, 2) @ z
    return torch.exp(-d.clamp_min(0))


def time_case(
    setting: tuple[int, int] | None, x: torch.Tensor, b: torch.Tensor, reps: int
) -> tuple[float, float, float, float, float, float]:
    """(sim fwd, sim f+b, agg fwd, agg f+b, prox fwd, prox f+b) in ms; ``setting=None``: dense."""
    kappa = torch.ones(PATCH * PATCH, requires_grad=True)
    xg = x.clone().requires_grad_()
    lam = torch.full((ATOMS, 1), 0.02)

    def make(xx: torch.Tensor):
        if setting is None:
            return dense_similarity(xx, kappa)
        return NB.knn_similarity(xx, PATCH, kappa, *setting)

    def sim_out() -> torch.Tensor:
        s = make(xg)
        return s if setting is None else s.values

    sim_f = timeit(no_grad(lambda: make(x)), reps)
    sim_fb = timeit(fwd_bwd(sim_out, [xg, kappa]), reps)
    with torch.no_grad():
        s0 = make(x)
    bg = b.clone().requires_grad_()
    sv = (s0 if setting is None else s0.values).clone().requires_grad_()

    def agg() -> torch.Tensor:
        if setting is None:
            return (bg * bg) @ sv
        return NB.weighted_sq_norms(bg * bg, s0.with_values(sv))

    def prox() -> torch.Tensor:
        if setting is None:
            return PX.RelaxedGroupLasso(lam, sv).prox(bg)
        return PX.SparseRelaxedGroupLasso(lam, s0.with_values(sv)).prox(bg)

    return (
        sim_f,
        sim_fb,
        timeit(no_grad(agg), reps),
        timeit(fwd_bwd(agg, [sv, bg]), reps),
        timeit(no_grad(prox), reps),
        timeit(fwd_bwd(prox, [sv, bg]), reps),
    )


def lista_times(nb: int, reps: int) -> tuple[float, float]:
    """The two LISTA products of a step, ``alpha + C^T (y - D alpha)``, fwd and fwd+bwd."""
    m, length = PATCH * PATCH, (BLOCK - PATCH + 1) ** 2
    c = (torch.randn(m, ATOMS) / 30).requires_grad_()
    alpha = torch.randn(ATOMS, nb * length, requires_grad=True)
    y = torch.randn(m, nb * length)

    def two() -> torch.Tensor:
        return alpha + c.t() @ (y - c @ alpha)

    return timeit(no_grad(two), reps), timeit(fwd_bwd(two, [c, alpha]), reps)


def components_table(batches: list[int], settings: list[tuple[int, int]], reps: int) -> None:
    torch.manual_seed(0)
    length = (BLOCK - PATCH + 1) ** 2
    print(
        "\n2. components per block batch (ms); step = 2 LISTA products + prox + 5/24 "
        "similarity;\n   x = speedup of the step over dense"
    )
    lista = {nb: lista_times(nb, reps) for nb in batches}
    for nb in batches:
        print(
            f"   LISTA products (2 x 81 x {ATOMS} x L per image), batch {nb}: forward "
            f"{lista[nb][0]:.2f}, fwd+bwd {lista[nb][1]:.2f} (the same for both methods)"
        )
    print(
        f"{'batch':>5} {'method':<13}{'sim fwd':>9}{'sim f+b':>9}{'agg fwd':>9}{'agg f+b':>9}"
        f"{'prox fwd':>9}{'prox f+b':>9}{'step fwd':>9}{'step f+b':>9}{'x fwd':>7}{'x f+b':>7}"
    )
    frac = 5 / STEPS
    for nb in batches:
        x = torch.rand(nb, 1, BLOCK, BLOCK)
        b = torch.randn(nb, ATOMS, length) * 0.1
        ref = None
        for setting in [None, *settings]:
            t = time_case(setting, x, b, reps)
            step = (lista[nb][0] + t[4] + frac * t[0], lista[nb][1] + t[5] + frac * t[1])
            ref = ref or step
            name = "dense" if setting is None else f"r={setting[0]} k={setting[1]}"
            cols = "".join(f"{v:>9.2f}" for v in (*t, *step))
            print(f"{nb:>5} {name:<13}{cols}{ref[0] / step[0]:>7.1f}{ref[1] / step[1]:>7.1f}")


# -- 3. end to end ----------------------------------------------------------------------------
def knn_groupsc(dense: SparseCoding, radius: int, k: int, mode: str) -> SparseCoding:
    """The library's k-NN GroupSC with ``dense``'s sizes and forward options."""
    return SparseCoding(
        patch=dense.patch,
        atoms=dense.atoms,
        steps=dense.steps,
        channels=dense.channels,
        prox="group",
        window=dense.window,
        refresh=dense.refresh,
        knn={"radius": radius, "k": k, "mode": mode},
        **dense.forward_options(),
    )


def dct_dictionary(patch: int, atoms: int) -> torch.Tensor:
    """Overcomplete 2-D DCT, ``(patch^2, atoms)``, unit-norm atoms."""
    side = math.isqrt(atoms)
    d1 = np.cos(np.outer(np.arange(patch), np.arange(side)) * np.pi / side)
    d1[:, 1:] -= d1[:, 1:].mean(0)
    d = np.kron(d1, d1)
    return torch.from_numpy(d / np.linalg.norm(d, axis=0)).float()


def test_block(seed: int = 0) -> torch.Tensor:
    """A 56 x 56 crop of Set12 'house' (05.png) if ``data/`` is there, else a synthetic block."""
    try:
        from groupsc.data import image_paths, load_image

        path = next(p for p in image_paths("Set12") if p.stem == "05")
        img = torch.from_numpy(load_image(path))[100 : 100 + BLOCK, 100 : 100 + BLOCK]
        return img[None, None].float()
    except Exception:
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(BLOCK), torch.arange(BLOCK), indexing="ij")
        img = 0.5 + 0.3 * torch.sin(xx / 3.0) * (yy < 28) + 0.2 * (xx + yy > 60)
        return (img + 0.02 * torch.randn(BLOCK, BLOCK, generator=g)).clamp(0, 1)[None, None]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def end_to_end_table(
    settings: list[tuple[int, int]],
    reps: int,
    batch8: bool,
    checkpoint: str | None,
    modes: list[str],
    sigma: float,
) -> None:
    torch.manual_seed(0)
    clean = test_block()
    noisy = clean + sigma / 255 * torch.randn_like(clean)
    if checkpoint:
        ck = torch.load(checkpoint, weights_only=True)
        cfg = {k: v for k, v in ck["model_config"].items() if k not in ("kind", "prox")}
        cfg = {**LEGACY_FORWARD, **cfg}  # a checkpoint that records no options: the legacy ones
        dense = SparseCoding(prox="group", **cfg)
        dense.load_state_dict(ck["model"])
        source = "trained model " + checkpoint
    else:
        dense = SparseCoding(patch=PATCH, atoms=ATOMS, steps=STEPS, prox="group")
        dense.set_dictionary(dct_dictionary(PATCH, ATOMS))
        sc = SparseCoding(patch=PATCH, atoms=ATOMS, steps=STEPS)
        sc.set_dictionary(dct_dictionary(PATCH, ATOMS))
        best = None
        with torch.no_grad():
            for lam in (0.01, 0.02, 0.04, 0.08):
                sc.lam.fill_(lam)
                score = psnr(sc(noisy), clean)
                best = max(best or (score, lam), (score, lam))
            dense.lam.fill_(best[1])
        source = f"untrained: DCT dictionary, lam = {best[1]} (best SC on the block), kappa = 1"
    state = dense.state_dict()
    print(
        f"\n3. end to end, one {BLOCK}x{BLOCK} block, {dense.steps} steps, refresh every "
        f"{dense.refresh} ({source}); sigma = {sigma:g} noise.\n   vs dense: PSNR (dB) between "
        "this output and the dense one; mass: share of the dense Sigma row mass kept on the"
        "\n   input; SC: the same model without similarities (soft-thresholding), the floor "
        "of any GroupSC variant's time"
    )
    print(
        f"{'method':<24}{'fwd b1':>9}{'f+b b1':>9}{'fwd b8':>9}{'x fwd':>7}{'x f+b':>7}"
        f"{'vs dense':>10}{'PSNR':>8}{'mass':>7}"
    )
    with torch.no_grad():
        dense_mass = dense.similarity(noisy).sum(-2)  # column i: the neighbours of i
    batch = noisy.repeat(8, 1, 1, 1) + 0.0
    ref_out = None
    ref_t = None
    variants = [("dense", None), ("SC (no Sigma)", "soft")] + [
        (f"r={r} k={k} {mode}", (r, k, mode)) for mode in modes for r, k in settings
    ]
    for name, cfgv in variants:
        mass = float("nan")
        if cfgv is None:
            model = dense
        elif cfgv == "soft":
            model = SparseCoding(
                patch=dense.patch, atoms=dense.atoms, steps=dense.steps, channels=dense.channels
            )
            model.load_state_dict(state, strict=False)
        else:
            r, k, mode = cfgv
            model = knn_groupsc(dense, r, k, mode)
            model.load_state_dict(state)
            with torch.no_grad():
                sim = model.make_similarity().start(noisy, model.kappa)
                mass = float((sim.row_sums() / dense_mass).mean())

        def fwd(model=model, inp=noisy):
            num, den = model.sums(inp)
            return num / den

        t_f = timeit(no_grad(fwd), reps)
        params = [model.C, model.D, model.lam]
        if hasattr(model, "kappa"):
            params += [model.kappa, model.nu_logit]
        t_fb = timeit(fwd_bwd(fwd, params), max(1, reps // 2))
        t_8 = (
            timeit(no_grad(lambda model=model: fwd(model, batch)), 1, warm=False)
            if batch8
            else float("nan")
        )
        with torch.no_grad():
            out = fwd().clamp(0, 1)
        if ref_out is None:
            ref_out, ref_t = out, (t_f, t_fb)
        gap = psnr(out, ref_out) if cfgv else float("inf")
        print(
            f"{name:<24}{t_f:>9.1f}{t_fb:>9.1f}{t_8:>9.1f}{ref_t[0] / t_f:>7.1f}"
            f"{ref_t[1] / t_fb:>7.1f}{gap:>10.1f}{psnr(out, clean):>8.2f}{mass:>7.2f}"
        )
    print(f"{'noisy input':<24}{'':>51}{psnr(noisy.clamp(0, 1), clean):>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="batch 1 only, fewer settings")
    ap.add_argument("--checkpoint", default=None, help="model.pt of a trained GroupSC")
    ap.add_argument("--sigma", type=float, default=25.0, help="noise level of table 3 (/255)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); block {BLOCK}, "
        f"patch {PATCH}, {ATOMS} atoms, L = {(BLOCK - PATCH + 1) ** 2}"
    )
    settings = [(7, 16)] if args.quick else [(5, 16), (7, 8), (7, 16), (7, 32), (10, 16)]
    backends_table(args.reps)
    components_table([1] if args.quick else [1, 8], settings, args.reps)
    e2e = [(7, 16)] if args.quick else [(5, 16), (7, 8), (7, 16), (10, 16), (7, 32)]
    modes = ["window", "fixed"]
    end_to_end_table(e2e, args.reps, not args.quick, args.checkpoint, modes, args.sigma)


if __name__ == "__main__":
    main()
