"""Gold-standard log p(x) on MNIST: ELBO, IW (K=5000) and AIS at T = 100, 1 000, 10 000, with the BDMC gap.

    python benchmarks/bench_ais.py                       # train (or reuse) the VAE, then every estimate
    python benchmarks/bench_ais.py --steps 100 1000 --points 100 --train-seconds 300
    python benchmarks/bench_ais.py --quick               # a smoke run: 10 points, T = 10, 30

The model is the MNIST benchmark's (``bench_mnist.py``; Burda et al. 2015): dynamically binarised MNIST
(the official 60 000 / 10 000 split read from ``../shared/data/mnist``), MLP 784-200-200-50 with tanh,
Bernoulli likelihood on logits. Each ``--models`` entry is trained with its objective for
``--train-seconds`` seconds of training (cached in ``--cache``, so a second run only evaluates). On the
first ``--points`` test points (the seeded binarisation of the test set), per point and on average:

* the ELBO and IW_K (``pv.evaluate``, K = ``--iw-k``, the same draws; PSIS k-hat of the weights);
* AIS from the guide (``pv.ais_log_likelihood``) at each T of ``--steps``, ``--chains`` C chains,
  ``--leapfrog`` L leapfrog steps, sigmoid schedule, step size adapted per point toward acceptance 0.65;
* the BDMC sandwich (``pv.bdmc``) at the same T on as many points simulated from the model: forward AIS
  (stochastic lower bound) and reverse AIS from the exact latent (stochastic upper bound), their gap;
* speed: points per second of ``pv.ais_log_likelihood`` against the plain-torch AIS loop below (the same
  algorithm for this VAE: same T, C, L, tuning chains, step-size search and adaptation, analytic gradients
  of the Gaussian terms, autograd only through the decoder), at ``--reference-steps``.

Prints a table and the command; writes JSON and a per-point CSV beside the cache.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import print_machine  # noqa: E402

import ppl_vae as pv  # noqa: E402
from ppl_vae.estimators.ais import ADAPT_RATE, INITIAL_STEP, schedule_betas  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OBJECTIVES = {"vae": "analytic", "iwae5": "iwae:k=5", "iwae50": "iwae:k=50"}
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def default_data_dir() -> str | None:
    shared = REPO.parent / "shared" / "data" / "mnist"
    return str(shared) if shared.is_dir() else os.environ.get("PPL_VAE_DATA")


# ============================================================================ plain-torch AIS (the reference)
class PlainAIS:
    """AIS from q(z|x) for a mean-field Bernoulli VAE in plain torch: the algorithm of ``ppl_vae.estimators.ais``
    written for this one model (``z: (C + tune, n, d)``)."""

    def __init__(self, vae: pv.VAE, x: torch.Tensor, chains: int, tune: int) -> None:
        self.vae, self.x, self.c, self.tune = vae, x, chains, tune
        with torch.no_grad():
            self.loc, self.scale = vae.encode(x)
        self.sign = 1.0 - 2.0 * x  # log Bernoulli(x | logits) = -softplus((1 - 2x) logits)
        self.log_scale = self.scale.log().sum(-1)
        self.d = self.loc.shape[-1]

    def evaluate(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            lik = -F.softplus(self.sign * self.vae.decoder(z)).sum(-1)
            (g_lik,) = torch.autograd.grad(lik.sum(), z)
        z = z.detach()
        w = (z - self.loc) / self.scale
        base = -0.5 * (w * w).sum(-1) - self.log_scale - self.d * HALF_LOG_2PI
        joint = lik.detach() - 0.5 * (z * z).sum(-1) - self.d * HALF_LOG_2PI
        return base, joint, -w / self.scale, g_lik - z

    def hmc(self, z, ev, beta, eps, steps):
        base, joint, gb, gj = ev
        e = eps[:, None] if eps.dim() == 1 else eps[..., None]
        p0 = torch.randn_like(z)
        p = p0 + 0.5 * e * (gb + beta * (gj - gb))
        z1 = z
        for i in range(steps):
            z1 = z1 + e * p
            ev1 = self.evaluate(z1)
            g = ev1[2] + beta * (ev1[3] - ev1[2])
            p = p + (e if i < steps - 1 else 0.5 * e) * g
        log_f0, log_f1 = base + beta * (joint - base), ev1[0] + beta * (ev1[1] - ev1[0])
        log_r = (log_f1 - 0.5 * (p * p).sum(-1)) - (log_f0 - 0.5 * (p0 * p0).sum(-1))
        log_r = torch.where(torch.isfinite(log_r), log_r, torch.full_like(log_r, -math.inf))
        acc = torch.rand_like(log_r).log() < log_r
        z = torch.where(acc[..., None], z1, z)
        ev = tuple(
            torch.where(acc[..., None] if a.dim() == 3 else acc, a, b)
            for a, b in zip(ev1, ev, strict=True)
        )
        return z, ev, log_r.clamp(max=0).exp()

    def find_step(self, z, ev, eps):
        def accept(e):
            return self.hmc(z, ev, 0.0, e, 1)[2][self.c :].mean(0)

        up = accept(eps) > 0.5
        active = torch.ones_like(up)
        for _ in range(20):
            trial = torch.where(up, eps * 2, eps * 0.5)
            a = accept(torch.where(active, trial, eps))
            crossed = torch.where(up, a <= 0.5, a > 0.5)
            eps = torch.where(active & ~(up & crossed), trial, eps)
            active &= ~crossed
            if not bool(active.any()):
                break
        return eps

    def run(self, num_steps: int, leapfrog: int, target: float = 0.65) -> torch.Tensor:
        betas = schedule_betas(num_steps)
        n = len(self.x)
        z = self.loc + self.scale * torch.randn(self.c + self.tune, n, self.d)
        ev = self.evaluate(z)
        eps = self.find_step(z, ev, torch.full((n,), INITIAL_STEP))
        log_w = torch.zeros(self.c, n, dtype=torch.float64)
        for t in range(1, num_steps + 1):
            log_w += float(betas[t] - betas[t - 1]) * (ev[1][: self.c] - ev[0][: self.c]).double()
            if t < num_steps:
                z, ev, a = self.hmc(z, ev, float(betas[t]), eps, leapfrog)
                eps = eps * torch.exp(ADAPT_RATE * (a[self.c :].mean(0) - target))
        return (log_w.logsumexp(0) - math.log(self.c)).float()


def plain_ais(
    vae: pv.VAE,
    x: torch.Tensor,
    num_steps: int,
    chains: int,
    leapfrog: int,
    tune: int = 2,
    seed: int = 0,
    batch_size: int | None = None,
) -> torch.Tensor:
    torch.manual_seed(seed)
    n_b = batch_size or max(1, 4096 // (chains + tune))
    with torch.no_grad():
        return torch.cat(
            [
                PlainAIS(vae, x[i : i + n_b], chains, tune).run(num_steps, leapfrog)
                for i in range(0, len(x), n_b)
            ]
        )


# ============================================================================ the model
def trained_vae(name: str, data: pv.Dataset, args: argparse.Namespace) -> tuple[pv.VAE, dict]:
    path = Path(args.cache) / f"{name}.pt"
    torch.manual_seed(args.seed)
    vae = pv.VAE(784, 50, (200, 200), likelihood="bernoulli", activation="tanh")
    if path.exists():
        saved = torch.load(path, weights_only=False)
        vae.load_state_dict(saved["state"])
        print(
            f"[{name}] reusing {path} ({saved['info']['epochs']:.2f} epochs, {saved['info']['train_seconds']:.0f} s "
            "of training)",
            flush=True,
        )
        return vae, saved["info"]
    trained, epochs = 0.0, 0
    print(f"[{name}] training with {OBJECTIVES[name]} for {args.train_seconds:g} s", flush=True)
    while trained < args.train_seconds:
        record = pv.fit(
            vae,
            data,
            OBJECTIVES[name],
            epochs=1,
            batch_size=100,
            lr=1e-3,
            seed=args.seed + epochs,
            progress=False,
        )[-1]
        trained += record["seconds"]
        epochs += 1
        print(
            f"[{name}] epoch {epochs}: {trained:6.0f} s, test ELBO {record['test_elbo']:.2f}",
            flush=True,
        )
    info = {"objective": OBJECTIVES[name], "epochs": epochs, "train_seconds": trained}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": vae.state_dict(), "info": info}, path)
    return vae, info


# ============================================================================ one model
def bench_model(
    name: str, vae: pv.VAE, x: torch.Tensor, args: argparse.Namespace
) -> tuple[list[dict], pd.DataFrame]:
    vae.eval()
    n = len(x)
    rows, points = [], pd.DataFrame(index=range(n))
    t0 = time.perf_counter()
    report = pv.evaluate(vae, x, num_samples=args.iw_k, seed=0, keep_log_weights=False)
    iw_seconds = time.perf_counter() - t0
    p = report.points
    points["elbo"], points["iw"], points["khat"] = (
        p["elbo"].to_numpy(),
        p["iw_log_likelihood"].to_numpy(),
        p["khat"],
    )
    se = lambda v: float(np.std(v, ddof=1) / math.sqrt(len(v)))  # noqa: E731
    rows.append(
        {
            "model": name,
            "estimate": "ELBO",
            "mean": points["elbo"].mean(),
            "se": se(points["elbo"]),
            "seconds": iw_seconds,
            "note": f"mean of the {args.iw_k} log weights",
        }
    )
    rows.append(
        {
            "model": name,
            "estimate": f"IW K={args.iw_k}",
            "mean": points["iw"].mean(),
            "se": se(points["iw"]),
            "seconds": iw_seconds,
            "note": f"median k-hat {np.median(points['khat']):.2f}",
        }
    )
    kw = dict(num_chains=args.chains, leapfrog_steps=args.leapfrog, seed=0, progress=args.progress)
    for t in args.steps:
        t0 = time.perf_counter()
        res = pv.ais_log_likelihood(vae, x, num_steps=t, return_diagnostics=True, **kw)
        secs = time.perf_counter() - t0
        ais = res.log_likelihood.double().numpy()
        points[f"ais_{t}"] = ais
        diff = ais - points["iw"].to_numpy()
        t1 = time.perf_counter()
        frame = pv.bdmc(vae, x, num_steps=t, **kw)
        bdmc_secs = time.perf_counter() - t1
        points[f"bdmc_lower_{t}"], points[f"bdmc_upper_{t}"] = (
            frame["lower"].to_numpy(),
            frame["upper"].to_numpy(),
        )
        rows.append(
            {
                "model": name,
                "estimate": f"AIS T={t}",
                "mean": float(ais.mean()),
                "se": se(ais),
                "seconds": secs,
                "points_per_s": n / secs,
                "ais_minus_iw": float(diff.mean()),
                "ais_minus_iw_se": se(diff),
                "acceptance": float(res.acceptance.mean()),
                "ess": float(res.ess.mean()),
                "chain_se": float(res.se.mean()),
                "bdmc_lower": float(frame["lower"].mean()),
                "bdmc_upper": float(frame["upper"].mean()),
                "bdmc_gap": float(frame["gap"].mean()),
                "bdmc_gap_se": se(frame["gap"].to_numpy()),
                "bdmc_seconds": bdmc_secs,
            }
        )
        print(
            f"[{name}] AIS T={t}: {ais.mean():.3f} +- {se(ais):.3f} (AIS - IW {diff.mean():+.3f} +- {se(diff):.3f}), "
            f"{secs:.0f} s ({n / secs:.3g} points/s), acceptance {float(res.acceptance.mean()):.2f}; BDMC gap "
            f"{frame['gap'].mean():.3f} +- {se(frame['gap'].to_numpy()):.3f} ({bdmc_secs:.0f} s)",
            flush=True,
        )
    return rows, points


def speed(
    vae: pv.VAE, x: torch.Tensor, args: argparse.Namespace, chains: int, leapfrog: int
) -> dict:
    """Points per second of the generic AIS and the plain-torch loop, interleaved, best of ``--repeats``."""
    t, n = args.reference_steps, len(x)
    generic, plain = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        a = pv.ais_log_likelihood(
            vae, x, num_steps=t, num_chains=chains, leapfrog_steps=leapfrog, seed=0
        )
        generic.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = plain_ais(vae, x, t, chains, leapfrog, seed=0)
        plain.append(time.perf_counter() - t0)
    diff = (a.double() - b.double()).numpy()
    out = {
        "steps": t,
        "chains": chains,
        "leapfrog": leapfrog,
        "points": n,
        "generic_points_per_s": n / min(generic),
        "plain_points_per_s": n / min(plain),
        "ratio": min(plain) / min(generic),
        "generic_seconds": generic,
        "plain_seconds": plain,
        "mean_difference": float(diff.mean()),
        "difference_se": float(diff.std(ddof=1) / math.sqrt(n)),
    }
    print(
        f"speed at T={t}, C={chains}, L={leapfrog}, {n} points: pv.ais_log_likelihood "
        f"{out['generic_points_per_s']:.3g} points/s, plain torch {out['plain_points_per_s']:.3g} points/s: "
        f"{out['ratio']:.2f}x (estimates differ by {out['mean_difference']:+.3f} +- {out['difference_se']:.3f} "
        "nats: different random streams)",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--models", nargs="+", default=["vae"], choices=list(OBJECTIVES))
    p.add_argument(
        "--train-seconds",
        type=float,
        default=600.0,
        help="seconds of training per model (default 600)",
    )
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--leapfrog", type=int, default=5)
    p.add_argument("--iw-k", type=int, default=5000)
    p.add_argument("--reference-steps", type=int, default=100, help="T of the speed comparison")
    p.add_argument(
        "--speed-points",
        type=int,
        default=None,
        help="points of the speed comparison (default --points)",
    )
    p.add_argument(
        "--speed-configs",
        nargs="+",
        default=["4x5", "16x10"],
        help="chains x leapfrog steps of the speed comparisons (default 4x5 16x10)",
    )
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--progress", action="store_true")
    p.add_argument(
        "--speed-only",
        action="store_true",
        help="only the speed comparison (reuses the cached models)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 10 points, T = 10 and 30, K = 500"
    )
    p.add_argument("--cache", default=str(REPO / "runs" / "bench_ais"))
    args = p.parse_args(argv)
    if args.quick:
        args.points, args.steps, args.iw_k, args.reference_steps, args.repeats = (
            10,
            [10, 30],
            500,
            10,
            1,
        )
        args.speed_configs = ["4x5"]
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_ais.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    info = print_machine("bench_ais: AIS and BDMC against IW on MNIST")
    print(
        "no GPU in this run"
        if not torch.cuda.is_available()
        else "GPU present but this benchmark runs on the CPU"
    )
    data = pv.load_dataset(
        "mnist", data_dir=args.data_dir or default_data_dir(), binarize="dynamic", seed=args.seed
    )
    x = data.test[: args.points]
    all_rows, per_point, speeds = [], {}, {}
    for name in args.models:
        vae, train_info = trained_vae(name, data, args)
        if not args.speed_only:
            rows, points = bench_model(name, vae, x, args)
            for r in rows:
                r.update(epochs=train_info["epochs"])
            all_rows += rows
            per_point[name] = points
        for config in args.speed_configs:
            chains, leapfrog = (int(v) for v in config.split("x"))
            speeds[f"{name} C={chains} L={leapfrog}"] = speed(
                vae, x[: args.speed_points or args.points], args, chains, leapfrog
            )
    table = pd.DataFrame(
        all_rows, columns=["model", "estimate", "mean", "se"] if not all_rows else None
    )
    print(
        f"\n{len(x)} test points (MNIST, dynamic binarisation, seeded test draw), nats per point; AIS from the guide "
        f"with C={args.chains} chains (+2 tuning chains), L={args.leapfrog}, sigmoid schedule; BDMC on {len(x)} points "
        "simulated from each model at the same T; no GPU in this session"
    )
    cols = [
        "model",
        "estimate",
        "mean",
        "se",
        "ais_minus_iw",
        "ais_minus_iw_se",
        "bdmc_lower",
        "bdmc_upper",
        "bdmc_gap",
        "bdmc_gap_se",
        "acceptance",
        "seconds",
        "points_per_s",
    ]
    print(
        table.reindex(columns=cols).to_string(
            index=False, float_format=lambda v: f"{v:.3f}", na_rep=""
        )
    )
    for name, points in per_point.items():
        last = f"ais_{args.steps[-1]}"
        diff = points[last] - points["iw"]
        top = diff.sort_values(ascending=False).head(5)
        corr = float(np.corrcoef(diff, points["khat"])[0, 1])
        print(
            f"\n[{name}] AIS T={args.steps[-1]} - IW per point: median {diff.median():+.3f}, max {diff.max():+.3f} "
            f"(points {list(top.index)}); correlation with k-hat {corr:+.2f}; with IW - ELBO "
            f"{float(np.corrcoef(diff, points['iw'] - points['elbo'])[0, 1]):+.2f}"
        )
    for name, sp in speeds.items():
        print(
            f"[{name}] speed: {sp['generic_points_per_s']:.3g} vs {sp['plain_points_per_s']:.3g} points/s "
            f"(plain torch) at T={sp['steps']}, {sp['points']} points: {sp['ratio']:.2f}x"
        )
    print(f"\ncommand: {command}")
    out = Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("speed.json" if args.speed_only else "results.json")).write_text(
        json.dumps(
            {
                "machine": info,
                "args": vars(args),
                "rows": all_rows,
                "speed": speeds,
                "command": command,
            },
            indent=2,
            default=str,
        )
    )
    for name, points in per_point.items():
        points.to_csv(out / f"points_{name}.csv", index_label="point")
    print(f"wrote {out / ('speed.json' if args.speed_only else 'results.json')} and per-point CSVs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
