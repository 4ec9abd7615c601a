"""Seconds per epoch of SVI against a plain-PyTorch VAE loop, measured in one process.

    python benchmarks/bench_svi.py                 # 10 000 rows, batch 128 and 512 (a few minutes)
    python benchmarks/bench_svi.py --quick         # a smoke run (seconds)
    python benchmarks/bench_svi.py --compile       # also the torch.compile'd step (slow to compile)
    python benchmarks/bench_svi.py --ddp           # 2 torchrun processes vs 1 (data-parallel throughput)

Every method trains the same network (MLP 784-400-50 relu, Bernoulli likelihood on
logits, Adam at lr 1e-3) on the same binary rows with index batching on in-memory
tensors; methods take turns one epoch at a time (the order rotates every round),
and after ``--warmup`` rounds the median of ``--epochs`` epochs is reported with
its ratio to the plain loop's median from the same run:

* ``plain``: the reference, written by hand in PyTorch: manual reparameterisation,
  ``binary_cross_entropy_with_logits`` (sum) + closed-form KL, ``torch.optim.Adam``
  with its defaults, ``loss.item()`` per step.
* ``plain, fused Adam``: the same with ``Adam(fused=True)`` (what our loop uses).
* ``Pyro SVI``: ``pyro.infer.SVI`` with ``pyro.optim.Adam`` as Pyro's VAE example uses it.
* ``fit fast=...``: :func:`ppl_vae.fit` for one epoch per call (``record["seconds"]``,
  the training loop only). ``off``: Pyro's ``differentiable_loss`` every step;
  ``eager``: the fast ELBO; ``graph``: the captured step (what ``fast="auto"`` uses
  for runs of at least ``CAPTURE_MIN_STEPS`` steps per batch shape); ``compile``: the
  captured step compiled by Inductor.
* ``plain iwae:k=5``: the hand-written IWAE loop (5 particles, ``-sum_n logmeanexp_k log w``) and
  ``fit iwae:k=5 fast=off|graph|compile``: our IWAE (Pyro's loss, or its captured graph), with their
  ratio to the plain IWAE loop printed at the end.

The figures depend on the machine and on its load: read ratios, not seconds.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import pyro.optim
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import print_machine  # noqa: E402

import ppl_vae as pv  # noqa: E402
from ppl_vae.objectives import available_objectives  # noqa: E402
from ppl_vae.train import CAPTURE_MIN_STEPS  # noqa: E402

D, LATENT, HIDDEN = 784, 50, (400,)


def make_data(rows: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, D, generator=g) < 0.3).float()


def new_vae(seed: int = 0) -> pv.VAE:
    torch.manual_seed(seed)
    return pv.VAE(D, LATENT, HIDDEN, likelihood="bernoulli", activation="relu")


class Plain:
    """The hand-written reference loop on the same network."""

    def __init__(self, x: torch.Tensor, batch_size: int, fused: bool) -> None:
        self.x, self.batch_size = x, batch_size
        self.vae = new_vae()
        self.opt = torch.optim.Adam(self.vae.parameters(), lr=1e-3, fused=fused or None)
        self.gen = torch.Generator().manual_seed(1)

    def epoch(self) -> float:
        x, n, vae, opt = self.x, len(self.x), self.vae, self.opt
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=self.gen)
        total = 0.0
        for start in range(0, n, self.batch_size):
            xb = x[perm[start : start + self.batch_size]]
            loc, scale = vae.encoder(xb)
            z = loc + scale * torch.randn_like(loc)
            logits = vae.decoder(z)
            rec = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
            kl = 0.5 * (scale.pow(2) + loc.pow(2) - 1.0 - 2.0 * scale.log()).sum()
            loss = (rec + kl) * (n / len(xb))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        return time.perf_counter() - t0


class PlainIWAE(Plain):
    """The hand-written IWAE loop (k particles) on the same network."""

    def __init__(self, x: torch.Tensor, batch_size: int, k: int = 5) -> None:
        super().__init__(x, batch_size, fused=False)
        self.k = k

    def epoch(self) -> float:
        x, n, vae, opt, k = self.x, len(self.x), self.vae, self.opt, self.k
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=self.gen)
        for start in range(0, n, self.batch_size):
            xb = x[perm[start : start + self.batch_size]]
            loc, scale = vae.encoder(xb)
            eps = torch.randn((k, *loc.shape))
            z = loc + scale * eps
            logits = vae.decoder(z)
            log_px = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
            log_w = log_px - 0.5 * z.pow(2).sum(-1) + 0.5 * eps.pow(2).sum(-1) + scale.log().sum(-1)
            loss = -(log_w.logsumexp(0) - math.log(k)).sum() * (n / len(xb))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        return time.perf_counter() - t0


class PyroSVI:
    """``pyro.infer.SVI`` with ``pyro.optim.Adam``, validation off, as in Pyro's VAE example."""

    def __init__(self, x: torch.Tensor, batch_size: int, analytic: bool) -> None:
        self.x, self.batch_size = x, batch_size
        self.vae = new_vae()
        self.store = pyro.get_param_store()
        elbo = TraceMeanField_ELBO() if analytic else Trace_ELBO()
        self.svi = SVI(self.vae.model, self.vae.guide, pyro.optim.Adam({"lr": 1e-3}), loss=elbo)
        self.gen = torch.Generator().manual_seed(1)
        self.scope_state: dict | None = None

    def epoch(self) -> float:
        x, n = self.x, len(self.x)
        with self.store.scope(self.scope_state) as state, pyro.validation_enabled(False):
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=self.gen)
            for start in range(0, n, self.batch_size):
                xb = x[perm[start : start + self.batch_size]]
                with pyro.poutine.scale(scale=n / len(xb)):
                    self.svi.step(xb)
            seconds = time.perf_counter() - t0
        self.scope_state = state
        return seconds


class Fit:
    """One epoch of :func:`ppl_vae.fit` per call; the model keeps its optimizer between calls."""

    def __init__(self, x: torch.Tensor, batch_size: int, objective: str, fast: str) -> None:
        self.data = pv.Dataset.from_tensors(x, None, name="bench", test_fraction=0.0)
        self.batch_size, self.objective, self.fast = batch_size, objective, fast
        self.vae = new_vae()

    def epoch(self) -> float:
        h = pv.fit(self.vae, self.data, self.objective, epochs=1, batch_size=self.batch_size, seed=0,
                   device="cpu", progress=False, fast=self.fast)
        return h[-1]["seconds"]


def methods(x: torch.Tensor, batch_size: int, args: argparse.Namespace) -> dict[str, Callable[[], float]]:
    out: dict[str, Callable[[], float]] = {
        "plain (Adam)": Plain(x, batch_size, fused=False).epoch,
        "plain (fused Adam)": Plain(x, batch_size, fused=True).epoch,
    }
    if not args.quick:
        out["Pyro SVI Trace_ELBO"] = PyroSVI(x, batch_size, analytic=False).epoch
        out["Pyro SVI TraceMeanField_ELBO"] = PyroSVI(x, batch_size, analytic=True).epoch
    modes = ["off", "eager", "graph"] + (["compile"] if args.compile else [])
    for objective in ("trace", "analytic"):
        for mode in modes:
            out[f"fit {objective} fast={mode}"] = Fit(x, batch_size, objective, mode).epoch
    if "iwae" in available_objectives() and not args.quick:
        out["plain iwae:k=5"] = PlainIWAE(x, batch_size).epoch
        for mode in ["off", "graph"] + (["compile"] if args.compile else []):
            out[f"fit iwae:k=5 fast={mode}"] = Fit(x, batch_size, "iwae:k=5", mode).epoch
    return out


def run(batch_size: int, x: torch.Tensor, args: argparse.Namespace) -> dict[str, list[float]]:
    fns = methods(x, batch_size, args)
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for rnd in range(args.warmup + args.epochs):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = fns[name]()
            if rnd >= args.warmup:
                times[name].append(seconds)
        print(f"  batch {batch_size}: round {rnd + 1}/{args.warmup + args.epochs} done", file=sys.stderr, flush=True)
    return times


def report(batch_size: int, times: dict[str, list[float]]) -> list[tuple[str, float, float]]:
    ref = statistics.median(times["plain (Adam)"])
    print(f"batch {batch_size}: seconds per epoch (median of {len(times['plain (Adam)'])}, [min - max]), "
          "ratio = median / median of plain (Adam)")
    print(f"  {'method':<34} {'s/epoch':>8}  {'[min - max]':>15}  {'ratio':>6}")
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append((name, med, med / ref))
        print(f"  {name:<34} {med:>8.3f}  [{min(ts):.3f} - {max(ts):.3f}]  {med / ref:>6.2f}")
    print()
    return rows


def ddp_throughput(args: argparse.Namespace) -> None:
    """Seconds per epoch of ``ppl-vae train`` in 1 process vs 2 ``torchrun`` processes (gloo) on the CPU.

    One table per ``HIDDENxBATCH`` size: the MLP 784-HIDDEN-50 and the global batch. Small sizes are
    bound by gloo's all-reduce of the gradients (one per step); larger ones by the arithmetic.
    """
    import json
    import os
    import subprocess
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    data_dir = repo.parent / "shared" / "data" / "mnist"
    data = ["--dataset", "mnist", "--data-dir", str(data_dir)] if data_dir.is_dir() else ["--dataset", "digits"]
    configs = [
        ("1 process, 1 thread", [sys.executable, "-m", "ppl_vae.cli"], "1"),
        ("1 process, 2 threads", [sys.executable, "-m", "ppl_vae.cli"], "2"),
        ("2 processes (torchrun, gloo), 1 thread each",
         [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ppl_vae.cli"],
         "1"),
    ]
    for size in args.ddp_sizes:
        hidden, batch = (int(v) for v in size.lower().split("x"))
        train = ["train", *data, "--n-samples", str(args.rows), "--latent-dim", "50", "--hidden-dims", str(hidden),
                 "--batch-size", str(batch), "--epochs", str(args.epochs + 1), "--device", "cpu", "--no-progress"]
        print(f"data-parallel throughput: ppl-vae train on {' '.join(data[:2])} ({args.rows} rows), "
              f"MLP 784-{hidden}-50, global batch {batch}, analytic, median of {args.epochs} epochs after 1 warm-up")
        rows = []
        for name, launcher, threads in configs:
            with tempfile.TemporaryDirectory() as tmp:
                env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(repo)}
                proc = subprocess.run([*launcher, *train, "--out", f"{tmp}/run"], env=env, capture_output=True,
                                      text=True)
                if proc.returncode != 0:
                    print(f"  {name}: failed\n{proc.stderr[-2000:]}")
                    continue
                history = json.loads(Path(f"{tmp}/run/metrics.json").read_text())["history"]
            secs = statistics.median(r["seconds"] for r in history[1:])
            rows.append((name, secs))
        base = rows[0][1] if rows else float("nan")
        print(f"  {'configuration':<46} {'s/epoch':>8} {'rows/s':>8} {'speed-up':>8}")
        for name, secs in rows:
            print(f"  {name:<46} {secs:>8.2f} {args.rows / secs:>8.0f} {base / secs:>8.2f}")
        print()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10_000, help="training rows (default 10 000)")
    p.add_argument("--epochs", type=int, default=5, help="timed epochs per method (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="also time fast='compile' (Inductor; slow to compile)")
    p.add_argument("--quick", action="store_true", help="2 000 rows, 2 timed epochs, fewer methods")
    p.add_argument("--ddp", action="store_true",
                   help="instead: throughput of 2 torchrun processes vs 1 (ppl-vae train on MNIST if present)")
    p.add_argument("--ddp-sizes", nargs="+", default=["400x512", "1024x1024"], metavar="HIDDENxBATCH",
                   help="MLP hidden width and global batch for --ddp (default: 400x512 1024x1024)")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.epochs = min(args.rows, 2_000), min(args.epochs, 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    print_machine("bench_svi: seconds per epoch, SVI vs plain PyTorch")
    print(f"data: {args.rows} random binary rows of 784 (p=0.3); MLP 784-400-50 relu, Bernoulli logits, "
          f"Adam lr 1e-3; CAPTURE_MIN_STEPS={CAPTURE_MIN_STEPS}\n")
    if args.ddp:
        ddp_throughput(args)
        return 0
    x = make_data(args.rows)
    summary = {}
    for batch_size in args.batch_sizes:
        summary[batch_size] = report(batch_size, run(batch_size, x, args))
    print("ratios to plain (Adam), target <= 1.00 for trace and analytic:")
    print(f"  {'method':<34} " + "  ".join(f"{'B=' + str(b):>7}" for b in args.batch_sizes))
    for i, (name, _, _) in enumerate(summary[args.batch_sizes[0]]):
        print(f"  {name:<34} " + "  ".join(f"{summary[b][i][2]:>7.2f}" for b in args.batch_sizes))
    iwae = [name for name, _, _ in summary[args.batch_sizes[0]] if name.startswith("fit iwae")]
    if iwae:
        print("ratios to plain iwae:k=5 (no target):")
        for name in iwae:
            cells = []
            for b in args.batch_sizes:
                secs = {row[0]: row[1] for row in summary[b]}
                cells.append(f"{secs[name] / secs['plain iwae:k=5']:>7.2f}")
            print(f"  {name:<34} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
