"""Seconds per epoch of SVI against a plain-PyTorch VAE loop and NumPyro, measured in one process.

    python benchmarks/bench_svi.py                 # 10 000 rows, batch 128 and 512 (several minutes)
    python benchmarks/bench_svi.py --quick         # a smoke run
    python benchmarks/bench_svi.py --short-calls   # fit(epochs=1) called in a loop vs plain epochs
    python benchmarks/bench_svi.py --only 'compile|NumPyro'   # a subset (plain (Adam) always)
    python benchmarks/bench_svi.py --ddp           # 2 torchrun processes vs 1 (data-parallel throughput)

Every method trains the same network (MLP 784-400-50 relu, Bernoulli likelihood on
logits, Adam at lr 1e-3) on the same binary rows with index batching on in-memory
tensors; methods take turns one epoch at a time (the order rotates every round),
and after ``--warmup`` rounds the median of ``--epochs`` epochs is reported with
its ratio to the plain loop's median from the same run:

* ``plain``: the reference, written by hand in PyTorch: manual reparameterisation,
  ``binary_cross_entropy_with_logits`` (sum) + closed-form KL, ``torch.optim.Adam``
  with its defaults, ``loss.item()`` per step.
* ``plain, fused Adam``: the same with ``Adam(fused=True)``.
* ``Pyro SVI``: ``pyro.infer.SVI`` with ``pyro.optim.Adam`` as Pyro's VAE example uses it.
* ``fit fast=...``: :func:`ppl_vae.fit` for one epoch per call (``record["seconds"]``,
  the training loop only). ``off``: Pyro's ``differentiable_loss`` every step;
  ``eager``: the fast ELBO; ``graph``: the captured loss and gradients; ``compile``: the
  whole step compiled (gather, noise, loss, gradients, Adam: ``ppl_vae/train/fused.py``);
  ``auto``: the default, as it runs in these rounds (a short run: graphs), and ``auto, long run``:
  the default after ``FUSE_AFTER_STEPS`` steps of the same training state (its warm-up trains
  that far), where it switches to the compiled whole step.
* ``NumPyro``: the same model and guide in NumPyro (``numpyro.param`` weights, ``TraceMeanField_ELBO``
  or ``Trace_ELBO``, ``numpyro.optim.Adam``), ``svi.update`` in ``jax.lax.fori_loop`` under one ``jit``
  per epoch (the short last batch in a second jitted update), run in the same process when numpyro and
  jax are installed (``pip install -e .[bench]``); the column is skipped with a note otherwise. XLA gets
  the same number of threads as torch.
* ``floor``: the step's 11 matrix products (forward, input and weight gradients; the first layer
  needs no input gradient) timed with ``torch.mm`` at their shapes and layouts, times the steps per
  epoch: what an epoch would take if nothing but the matrix products ran. Its FLOPs (from the layer
  sizes) over that time is the matrix-product throughput printed beside it.
* ``plain iwae:k=5`` and ``fit iwae:k=5 fast=...`` (with ``--iwae``): the hand-written IWAE loop and ours.

``--short-calls`` times whole ``fit(vae, x, objective, epochs=1)`` calls (everything the call does:
checks, setup, the epoch) against plain-PyTorch epochs, interleaved, for both ELBOs at each batch size.

The figures depend on the machine and on its load: read ratios, not seconds.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import pyro.optim
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import print_machine  # noqa: E402

import ppl_vae as pv  # noqa: E402
from ppl_vae.objectives import available_objectives  # noqa: E402
from ppl_vae.train.fast import CAPTURE_MIN_STEPS, FUSE_AFTER_STEPS  # noqa: E402

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
            log_px = -F.binary_cross_entropy_with_logits(
                logits, xb.expand_as(logits), reduction="none"
            ).sum(-1)
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
    """One epoch of :func:`ppl_vae.fit` per call; the model keeps its optimizer between calls.

    ``long_run``: first train the same state past ``FUSE_AFTER_STEPS`` steps (untimed), so that the
    rounds see what ``fast="auto"`` does in a long run."""

    def __init__(
        self, x: torch.Tensor, batch_size: int, objective: str, fast: str, long_run: bool = False
    ) -> None:
        self.data = pv.Dataset.from_tensors(x, None, name="bench", test_fraction=0.0)
        self.batch_size, self.objective, self.fast = batch_size, objective, fast
        self.vae = new_vae()
        self.history: pv.History | None = None
        if long_run:
            steps = -(-len(x) // batch_size)
            self.history = pv.fit(
                self.vae,
                self.data,
                objective,
                epochs=-(-FUSE_AFTER_STEPS // steps),
                batch_size=batch_size,
                seed=0,
                device="cpu",
                progress=False,
                fast=fast,
            )

    def epoch(self) -> float:
        self.history = pv.fit(
            self.vae,
            self.data,
            self.objective,
            epochs=1,
            batch_size=self.batch_size,
            seed=0,
            device="cpu",
            progress=False,
            fast=self.fast,
        )
        return self.history[-1]["seconds"]


def numpyro_available() -> str | None:
    """None when numpyro and jax import, else why not."""
    try:
        import jax  # noqa: F401
        import numpyro  # noqa: F401
    except ImportError as err:
        return f"{err}: pip install -e .[bench] to add the NumPyro column"
    return None


class NumPyroSVI:
    """The same VAE in NumPyro: ``svi.update`` in ``lax.fori_loop`` under one ``jit`` per epoch."""

    def __init__(self, x: torch.Tensor, batch_size: int, analytic: bool) -> None:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist
        from numpyro import handlers
        from numpyro.infer import SVI as NSVI
        from numpyro.infer import Trace_ELBO as NTrace
        from numpyro.infer import TraceMeanField_ELBO as NMeanField

        n, d, h, latent = x.shape[0], D, HIDDEN[0], LATENT
        self.x = jnp.asarray(x.numpy())
        keys = jax.random.split(jax.random.PRNGKey(0), 4)

        def init(key: Any, fan_in: int, fan_out: int) -> Any:  # torch.nn.Linear's default range
            bound = 1 / math.sqrt(fan_in)
            return jax.random.uniform(key, (fan_in, fan_out), minval=-bound, maxval=bound)

        def model(xb: Any) -> None:
            w1, b1 = (
                numpyro.param("dw1", init(keys[0], latent, h)),
                numpyro.param("db1", jnp.zeros(h)),
            )
            w2, b2 = numpyro.param("dw2", init(keys[1], h, d)), numpyro.param("db2", jnp.zeros(d))
            with numpyro.plate("data", xb.shape[0]), handlers.scale(scale=n / xb.shape[0]):
                z = numpyro.sample(
                    "z", dist.Normal(jnp.zeros((xb.shape[0], latent)), 1.0).to_event(1)
                )
                logits = jax.nn.relu(z @ w1 + b1) @ w2 + b2
                numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=xb)

        def guide(xb: Any) -> None:
            w1, b1 = numpyro.param("ew1", init(keys[2], d, h)), numpyro.param("eb1", jnp.zeros(h))
            w2, b2 = (
                numpyro.param("ew2", init(keys[3], h, 2 * latent)),
                numpyro.param("eb2", jnp.zeros(2 * latent)),
            )
            with numpyro.plate("data", xb.shape[0]), handlers.scale(scale=n / xb.shape[0]):
                out = jax.nn.relu(xb @ w1 + b1) @ w2 + b2
                loc, raw = out[:, :latent], out[:, latent:]
                numpyro.sample("z", dist.Normal(loc, jax.nn.softplus(raw) + 1e-4).to_event(1))

        svi = NSVI(model, guide, numpyro.optim.Adam(1e-3), NMeanField() if analytic else NTrace())
        self.state = svi.init(jax.random.PRNGKey(1), self.x[:batch_size])
        full, last = divmod(n, batch_size)
        xs = self.x

        @jax.jit
        def epoch(state: Any, perm: Any) -> Any:
            def body(i: Any, carry: Any) -> Any:
                st, total = carry
                idx = jax.lax.dynamic_slice(perm, (i * batch_size,), (batch_size,))
                st, loss = svi.update(st, xs[idx])
                return st, total + loss

            return jax.lax.fori_loop(0, full, body, (state, 0.0))

        tail = jax.jit(lambda state, idx: svi.update(state, xs[idx]))
        self.run_epoch, self.tail, self.full, self.last, self.batch_size = (
            epoch,
            tail,
            full,
            last,
            batch_size,
        )
        self.rng = torch.Generator().manual_seed(1)
        self.jnp = jnp

    def epoch(self) -> float:
        perm = self.jnp.asarray(torch.randperm(self.x.shape[0], generator=self.rng).numpy())
        t0 = time.perf_counter()
        self.state, total = self.run_epoch(self.state, perm)
        if self.last:
            self.state, loss = self.tail(self.state, perm[self.full * self.batch_size :])
            total = total + loss
        float(total)  # the host reads the epoch's loss (jax dispatches asynchronously)
        return time.perf_counter() - t0


def mm_shapes(batch: int) -> list[tuple[str, tuple[int, int], tuple[int, int], bool, bool]]:
    """The step's matrix products as ``(what, A, B, transpose A, transpose B)`` with torch.nn.Linear's layouts
    (weights ``(out, in)``): forward ``x @ W^T``, input gradient ``g @ W``, weight gradient ``g^T @ x``."""
    layers = [(D, HIDDEN[0]), (HIDDEN[0], 2 * LATENT), (LATENT, HIDDEN[0]), (HIDDEN[0], D)]
    out = []
    for i, (fan_in, fan_out) in enumerate(layers):
        out.append(
            (f"forward {fan_in}->{fan_out}", (batch, fan_in), (fan_out, fan_in), False, True)
        )
        if i != 0:  # the encoder's first layer needs no gradient for its input (the data)
            out.append(
                (
                    f"input grad {fan_in}->{fan_out}",
                    (batch, fan_out),
                    (fan_out, fan_in),
                    False,
                    False,
                )
            )
        out.append(
            (f"weight grad {fan_in}->{fan_out}", (batch, fan_out), (batch, fan_in), True, False)
        )
    return out


def floor_estimate(batch: int, reps: int = 50) -> tuple[float, float, float]:
    """``(seconds per step, GFLOP per step, GFLOP/s)``: the step's matrix products alone, timed with torch.mm."""
    g = torch.Generator().manual_seed(0)
    total, flops = 0.0, 0.0
    for _, a_shape, b_shape, ta, tb in mm_shapes(batch):
        a = torch.randn(*a_shape, generator=g)
        b = torch.randn(*b_shape, generator=g)
        a_op, b_op = (a.t() if ta else a), (b.t() if tb else b)
        for _ in range(5):
            torch.mm(a_op, b_op)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a_op, b_op)
            times.append((time.perf_counter() - t0) / reps)
        total += min(times)
        flops += 2.0 * a_op.shape[0] * a_op.shape[1] * b_op.shape[1]
    return total, flops / 1e9, flops / 1e9 / total


def methods(
    x: torch.Tensor, batch_size: int, args: argparse.Namespace
) -> dict[str, Callable[[], float]]:
    made: dict[str, Callable[[], Callable[[], float]]] = {
        "plain (Adam)": lambda: Plain(x, batch_size, fused=False).epoch,
        "plain (fused Adam)": lambda: Plain(x, batch_size, fused=True).epoch,
    }
    if not args.quick:
        made["Pyro SVI Trace_ELBO"] = lambda: PyroSVI(x, batch_size, analytic=False).epoch
        made["Pyro SVI TraceMeanField_ELBO"] = lambda: PyroSVI(x, batch_size, analytic=True).epoch
    modes = ["auto", "compile"] if args.quick else ["off", "eager", "graph", "auto", "compile"]
    for objective in ("trace", "analytic"):
        for mode in modes:
            made[f"fit {objective} fast={mode}"] = lambda o=objective, m=mode: (
                Fit(x, batch_size, o, m).epoch
            )
        if not args.quick:
            made[f"fit {objective} fast=auto, long run"] = lambda o=objective: (
                Fit(x, batch_size, o, "auto", long_run=True).epoch
            )
        if args.numpyro_note is None:
            made[f"NumPyro {objective}"] = lambda o=objective: (
                NumPyroSVI(x, batch_size, analytic=o == "analytic").epoch
            )
    if args.iwae and "iwae" in available_objectives():
        made["plain iwae:k=5"] = lambda: PlainIWAE(x, batch_size).epoch
        for mode in ("off", "graph", "compile"):
            made[f"fit iwae:k=5 fast={mode}"] = lambda m=mode: (
                Fit(x, batch_size, "iwae:k=5", m).epoch
            )
    return {name: make() for name, make in made.items() if selected(name, args)}


def selected(name: str, args: argparse.Namespace) -> bool:
    """``--only REGEX`` keeps the methods whose name matches (and the reference, always)."""
    return args.only is None or name == "plain (Adam)" or re.search(args.only, name) is not None


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
        print(
            f"  batch {batch_size}: round {rnd + 1}/{args.warmup + args.epochs} done",
            file=sys.stderr,
            flush=True,
        )
    return times


def report(
    batch_size: int, times: dict[str, list[float]], steps: int, floor: float
) -> dict[str, tuple[float, float]]:
    ref = statistics.median(times["plain (Adam)"])
    print(
        f"batch {batch_size} ({steps} steps per epoch): seconds per epoch (median of {len(times['plain (Adam)'])}, "
        "[min - max]), ratio = median / median of plain (Adam), ms per step, x floor"
    )
    print(
        f"  {'method':<36} {'s/epoch':>8}  {'[min - max]':>15}  {'ratio':>6}  {'ms/step':>7}  {'x floor':>7}"
    )
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = (med, med / ref)
        print(
            f"  {name:<36} {med:>8.3f}  [{min(ts):.3f} - {max(ts):.3f}]  {med / ref:>6.2f}  "
            f"{1e3 * med / steps:>7.2f}  {med / (floor * steps):>7.2f}"
        )
    print(
        f"  {'floor (matrix products only)':<36} {floor * steps:>8.3f}  {'':>15}  {floor * steps / ref:>6.2f}  "
        f"{1e3 * floor:>7.2f}  {1.0:>7.2f}"
    )
    rows["floor"] = (floor * steps, floor * steps / ref)
    print()
    return rows


def summary(args: argparse.Namespace, tables: dict[int, dict[str, tuple[float, float]]]) -> None:
    """The issue's table: plain, our default and fastest paths, NumPyro and the floor, as ratios to plain."""
    sizes = args.batch_sizes
    print(
        "summary: ratio to plain (Adam) in the same run (lower is faster); target: fastest <= NumPyro"
    )
    print(f"  {'':<46} " + "  ".join(f"{'B=' + str(b):>7}" for b in sizes))

    def line(label: str, key: str) -> None:
        cells = [f"{tables[b][key][1]:>7.2f}" if key in tables[b] else f"{'-':>7}" for b in sizes]
        print(f"  {label:<46} " + "  ".join(cells))

    line("plain PyTorch (eager, Adam)", "plain (Adam)")
    for objective in ("trace", "analytic"):
        line(f"{objective}: default, short run (fast='auto')", f"fit {objective} fast=auto")
        line(
            f"{objective}: default, long run (fast='auto')", f"fit {objective} fast=auto, long run"
        )
        line(f"{objective}: fastest (fast='compile': whole step)", f"fit {objective} fast=compile")
        line(f"{objective}: NumPyro (jit(fori_loop) per epoch)", f"NumPyro {objective}")
    line("floor (the step's matrix products alone)", "floor")
    if args.numpyro_note is not None:
        print(f"  NumPyro skipped: {args.numpyro_note}")
    iwae = [
        k
        for k in tables[sizes[0]]
        if k.startswith("fit iwae") and "plain iwae:k=5" in tables[sizes[0]]
    ]
    if iwae:
        print("ratios to plain iwae:k=5 (no target):")
        for name in iwae:
            cells = [f"{tables[b][name][0] / tables[b]['plain iwae:k=5'][0]:>7.2f}" for b in sizes]
            print(f"  {name:<46} " + "  ".join(cells))
    print()


def short_calls(x: torch.Tensor, args: argparse.Namespace) -> None:
    """Whole ``fit(vae, x, objective, epochs=1)`` calls in a loop against plain-PyTorch epochs (issue 10's
    short-call target: <= 1.05)."""
    print(
        f"short calls: wall time of fit(vae, x, objective, epochs=1) called {args.epochs + args.warmup} times "
        f"(the first {args.warmup} untimed) vs a plain-PyTorch epoch, interleaved; target <= 1.05"
    )
    print(
        f"  {'batch':>5} {'objective':<9} {'plain s':>8} {'fit s':>8} {'ratio':>6}  path of the last call"
    )
    for batch_size in args.batch_sizes:
        for objective in ("trace", "analytic"):
            plain = Plain(x, batch_size, fused=False)
            vae = new_vae()
            history: list[Any] = []

            def call(
                vae: pv.VAE = vae,
                objective: str = objective,
                batch_size: int = batch_size,
                history: list[Any] = history,
            ) -> float:
                t0 = time.perf_counter()
                history[:] = [
                    pv.fit(
                        vae,
                        x,
                        objective,
                        epochs=1,
                        batch_size=batch_size,
                        seed=0,
                        device="cpu",
                        progress=False,
                    )
                ]
                return time.perf_counter() - t0

            tp, tf = [], []
            for rnd in range(args.warmup + args.epochs):
                a, b = (plain.epoch, call) if rnd % 2 == 0 else (call, plain.epoch)
                ta, tb = a(), b()
                if rnd >= args.warmup:
                    tp.append(ta if a == plain.epoch else tb)
                    tf.append(tb if a == plain.epoch else ta)
            mp, mf = statistics.median(tp), statistics.median(tf)
            path = history[0].meta["fast_path"]["path"]
            print(f"  {batch_size:>5} {objective:<9} {mp:>8.3f} {mf:>8.3f} {mf / mp:>6.2f}  {path}")
    print()


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
    data = (
        ["--dataset", "mnist", "--data-dir", str(data_dir)]
        if data_dir.is_dir()
        else ["--dataset", "digits"]
    )
    configs = [
        ("1 process, 1 thread", [sys.executable, "-m", "ppl_vae.cli"], "1"),
        ("1 process, 2 threads", [sys.executable, "-m", "ppl_vae.cli"], "2"),
        (
            "2 processes (torchrun, gloo), 1 thread each",
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                "2",
                "-m",
                "ppl_vae.cli",
            ],
            "1",
        ),
    ]
    for size in args.ddp_sizes:
        hidden, batch = (int(v) for v in size.lower().split("x"))
        train = [
            "train",
            *data,
            "--n-samples",
            str(args.rows),
            "--latent-dim",
            "50",
            "--hidden-dims",
            str(hidden),
            "--batch-size",
            str(batch),
            "--epochs",
            str(args.epochs + 1),
            "--device",
            "cpu",
            "--no-progress",
        ]
        print(
            f"data-parallel throughput: ppl-vae train on {' '.join(data[:2])} ({args.rows} rows), "
            f"MLP 784-{hidden}-50, global batch {batch}, analytic, median of {args.epochs} epochs after 1 warm-up"
        )
        rows = []
        for name, launcher, threads in configs:
            with tempfile.TemporaryDirectory() as tmp:
                env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(repo)}
                proc = subprocess.run(
                    [*launcher, *train, "--out", f"{tmp}/run"],
                    env=env,
                    capture_output=True,
                    text=True,
                )
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
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch (and XLA) threads (default: torch's choice)",
    )
    p.add_argument("--quick", action="store_true", help="2 000 rows, 2 timed epochs, fewer methods")
    p.add_argument(
        "--iwae", action="store_true", help="also the IWAE rows (plain loop and fit iwae:k=5)"
    )
    p.add_argument("--no-numpyro", action="store_true", help="skip the NumPyro column")
    p.add_argument(
        "--only",
        default=None,
        metavar="REGEX",
        help="time only the methods whose name matches (plain (Adam) always), e.g. 'compile|NumPyro'",
    )
    p.add_argument(
        "--short-calls",
        action="store_true",
        help="instead: repeated fit(..., epochs=1) calls vs plain-PyTorch epochs",
    )
    p.add_argument(
        "--ddp",
        action="store_true",
        help="instead: throughput of 2 torchrun processes vs 1 (ppl-vae train on MNIST if present)",
    )
    p.add_argument(
        "--ddp-sizes",
        nargs="+",
        default=["400x512", "1024x1024"],
        metavar="HIDDENxBATCH",
        help="MLP hidden width and global batch for --ddp (default: 400x512 1024x1024)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.epochs = min(args.rows, 2_000), min(args.epochs, 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.get_num_threads() == 1:  # XLA: as many threads as torch (set before jax is imported)
        os.environ.setdefault(
            "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
    args.numpyro_note = "--no-numpyro" if args.no_numpyro else numpyro_available()
    print_machine("bench_svi: seconds per epoch, SVI vs plain PyTorch and NumPyro")
    print(
        f"data: {args.rows} random binary rows of 784 (p=0.3); MLP 784-400-50 relu, Bernoulli logits, "
        f"Adam lr 1e-3; CAPTURE_MIN_STEPS={CAPTURE_MIN_STEPS}, FUSE_AFTER_STEPS={FUSE_AFTER_STEPS}\n"
    )
    if args.ddp:
        ddp_throughput(args)
        return 0
    x = make_data(args.rows)
    if args.short_calls:
        short_calls(x, args)
        return 0
    tables = {}
    for batch_size in args.batch_sizes:
        times = run(batch_size, x, args)
        floor, gflop, rate = floor_estimate(batch_size)
        steps = -(-args.rows // batch_size)
        print(
            f"floor at batch {batch_size}: {gflop:.3f} GFLOP per step in 11 matrix products, {1e3 * floor:.2f} ms "
            f"at the measured {rate:.0f} GFLOP/s"
        )
        tables[batch_size] = report(batch_size, times, steps, floor)
    summary(args, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
