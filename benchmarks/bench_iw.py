"""Throughput and peak memory of ``ppl_vae.iw_log_likelihood`` against plain PyTorch and Pyro.

The model is VAE-shaped as in Burda et al. (2015): MLP 784-400-50 with a Bernoulli likelihood on
logits (``ppl_vae.VAE(784, 50, (400,))``, seeded initial weights), evaluated on random binary
"images" (the time does not depend on the data being MNIST). Estimators of IW_K per point:

* ``ours``: ``iw_log_likelihood(vae.model, vae.guide, x, K, fast="eager")`` with its default chunking:
  Pyro traces of the guide (under a particle plate) and the replayed model every chunk, per-site
  log-densities, running log-sum-exp over particle chunks;
* ``ours-compiled``: the same call with ``fast="compile"``: the chunk traced once and compiled by
  ``torch.compile`` (:mod:`ppl_vae.estimators.compiled`; ``fast="auto"``, the default, does this for jobs of at
  least ``COMPILE_MIN_ROWS`` rows). The one-off compile happens in the warm-up; every timed call still
  pays its own re-capture and the eager check of its first chunk;
* ``ref``: the same estimator written out in plain torch (:func:`reference_iw`): encoder once per chunk
  of points, ``z = mu + sigma * eps``, decoder logits, ``log p(x|z)`` on logits, Normal log-prior minus
  log q, log-sum-exp; two ways of scoring the Bernoulli, each at two chunk sizes:
  ``ref-softplus`` = ``-softplus((1 - 2x) * logits).sum(-1)`` and ``ref-bce`` =
  ``-binary_cross_entropy_with_logits(logits, x).sum(-1)`` (DESIGN's reference), at
  2048 and 4096 rows (particles x points) per decoder call. The ratio uses the fastest of them;
* ``renyi``: ``pyro.infer.RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True)``, one
  point per ``loss`` call (its loss sums over the batch, so per-point values need one call per
  point), as a user runs it (Pyro's default: validation on), and ``renyi-novalidation`` with
  ``pyro.validation_enabled(False)`` (ours validates the data and a 16-row trace once, then runs
  without validation).

All estimators are timed in one process, interleaved (the order rotates every round), ``--repeats``
rounds; the tables give medians (wall clock) and ratios of medians. On a shared machine read the
load average printed with them. Peak memory at K=5000 is measured in fresh subprocesses (on by
default, N=100; ``--memory-points 100 1000 10000`` for more): peak resident set size of the whole
process (``VmHWM``) and its rise over the resident size after building the model and data.

Checks before timing: ours vs ``ref`` and vs ``renyi`` on the same random draws (same seed and
chunking: they must agree to float rounding), and our fast log-density path vs the generic one.

    python benchmarks/bench_iw.py                          # defaults: 1-6 minutes on 2 busy cores
    python benchmarks/bench_iw.py --threads 1 --repeats 7  # 1 intra-op thread: steadier on a busy machine
    python benchmarks/bench_iw.py --memory-only --memory-points 100 1000 10000   # peak RSS at K=5000
    python benchmarks/bench_iw.py --sweep 1024 2048 4096 8192   # rows per call, ours and ref-softplus

With fewer free cores than torch threads, OpenMP's intra-op parallelism can stall (element-wise
ops many times slower): compare ``--threads 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

REFERENCE_ROWS = (2048, 4096)  # rows per decoder call tried for the plain-torch reference

Estimator = Callable[..., torch.Tensor]


# ----------------------------------------------------------------------------- set-up
def build(points: int, seed: int = 0) -> tuple[Any, torch.Tensor]:
    """The seeded 784-400-50 Bernoulli VAE (eval mode) and ``points`` random binary rows (15% ones)."""
    import ppl_vae as pv

    torch.manual_seed(seed)
    vae = pv.VAE(784, 50, hidden_dims=(400,), likelihood="bernoulli").eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = (torch.rand(points, 784, generator=g) < 0.15).float()
    return vae, x


def _ev() -> Any:
    return importlib.import_module("ppl_vae.estimators.importance")


def chunks(n: int, k: int, rows: int) -> tuple[int, int]:
    """(points per call, particles per call) for ``rows`` rows per call: the rule of ppl_vae.estimators."""
    ev = _ev()
    saved = ev.ROWS_PER_CALL
    try:
        ev.ROWS_PER_CALL = rows
        return ev.chunk_sizes(n, k, None, None)
    finally:
        ev.ROWS_PER_CALL = saved


# ----------------------------------------------------------------------------- estimators
def reference_iw(
    vae: Any,
    x: torch.Tensor,
    k: int,
    seed: int = 0,
    rows: int | None = None,
    likelihood: str = "softplus",
) -> torch.Tensor:
    """IW_K per point in plain torch, ``(N,)`` nats, ``rows`` rows per decoder call (default: ours);
    the random stream of ``iw_log_likelihood`` with the same chunking (one ``randn(k_c, n_b, d)`` per
    chunk), so both see the same draws."""
    from torch.nn import functional as F

    n_b, k_c = chunks(len(x), k, rows or _ev().ROWS_PER_CALL)
    d = vae.latent_dim  # log p(z) - log q(z): the -d/2 log(2 pi) terms cancel
    out = torch.empty(len(x))
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(x), n_b):
            xb = x[start : start + n_b]
            loc, scale = vae.encoder(xb)
            log_det = scale.log().sum(-1)
            sign = 1 - 2 * xb
            lse = torch.full((len(xb),), -math.inf)
            for k0 in range(0, k, k_c):
                eps = torch.randn(min(k_c, k - k0), len(xb), d)
                z = loc + scale * eps
                logits = vae.decoder(z)
                if likelihood == "bce":
                    log_px = -F.binary_cross_entropy_with_logits(
                        logits, xb.expand_as(logits), reduction="none"
                    ).sum(-1)
                else:
                    log_px = -F.softplus(logits * sign).sum(-1)
                log_w = log_px - 0.5 * z.pow(2).sum(-1) + 0.5 * eps.pow(2).sum(-1) + log_det
                lse = torch.logaddexp(lse, log_w.logsumexp(0))
            out[start : start + len(xb)] = lse - math.log(k)
    return out


def ours_iw(
    vae: Any, x: torch.Tensor, k: int, seed: int = 0, fast: str = "eager", **chunking: int
) -> torch.Tensor:
    return _ev().iw_log_likelihood(vae.model, vae.guide, x, k, seed=seed, fast=fast, **chunking)


def renyi_iw(
    vae: Any, x: torch.Tensor, k: int, seed: int = 0, validation: bool = True
) -> torch.Tensor:
    """IW_K per point from ``RenyiELBO(alpha=0)``'s loss, one point per call; ``validation``: Pyro's
    argument checks on (Pyro's default, as a user runs it) or off."""
    import pyro

    elbo = pyro.infer.RenyiELBO(
        alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1
    )
    store = pyro.get_param_store()
    out = torch.empty(len(x))
    with (
        torch.random.fork_rng(),
        torch.no_grad(),
        pyro.validation_enabled(validation),
        store.scope(store.get_state()),
    ):
        torch.manual_seed(seed)
        for i in range(len(x)):
            out[i] = -elbo.loss(vae.model, vae.guide, x[i : i + 1])
    return out


def estimators(k: int, with_renyi: bool) -> dict[str, Estimator]:
    table: dict[str, Estimator] = {
        "ours": ours_iw,
        "ours-compiled": functools.partial(ours_iw, fast="compile"),
    }
    for lik in ("softplus", "bce"):
        for rows in REFERENCE_ROWS:
            table[f"ref-{lik}@{rows}"] = functools.partial(reference_iw, rows=rows, likelihood=lik)
    if with_renyi:
        table["renyi"] = renyi_iw
        table["renyi-novalidation"] = functools.partial(renyi_iw, validation=False)
    return table


# ----------------------------------------------------------------------------- checks
def agreement(k: int = 1000, points: int = 12) -> dict[str, float]:
    """Max |difference| per point (nats) between estimators fed the same draws."""
    ev = _ev()
    vae, x = build(points, seed=3)
    n_b, k_c = chunks(points, k, ev.ROWS_PER_CALL)
    ours = ours_iw(vae, x, k, seed=11)
    result = {
        "ours_vs_ref_same_draws": float(
            (ours - reference_iw(vae, x, k, 11, rows=ev.ROWS_PER_CALL)).abs().max()
        ),
        "ours_vs_ref_bce_same_draws": float(
            (ours - reference_iw(vae, x, k, 11, rows=ev.ROWS_PER_CALL, likelihood="bce"))
            .abs()
            .max()
        ),
        "ours_vs_ref_other_draws": float(
            (ours - reference_iw(vae, x, k, 12, rows=ev.ROWS_PER_CALL)).abs().max()
        ),
        "ours_vs_renyi_same_draws": float(
            (ours_iw(vae, x, k, 11, batch_size=1, particle_chunk=k) - renyi_iw(vae, x, k, 11))
            .abs()
            .max()
        ),
    }
    kernels = importlib.import_module("ppl_vae.estimators.kernels")
    saved = kernels.FAST_LOG_PROB
    try:
        kernels.FAST_LOG_PROB = False
        result["fast_vs_generic_path"] = float((ours - ours_iw(vae, x, k, seed=11)).abs().max())
    finally:
        kernels.FAST_LOG_PROB = saved
    result["compiled_vs_eager"] = float(
        (ours - ours_iw(vae, x, k, seed=11, fast="compile")).abs().max()
    )
    result["mean_iw"] = float(ours.mean())
    result["chunks"] = (n_b, k_c)
    return result


# ----------------------------------------------------------------------------- timing
def timed_rounds(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall-clock seconds of each function per round; the order rotates every round."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def throughput(
    ks: list[int], points: dict[int, int], repeats: int, renyi_k: int, renyi_points: int
) -> list[dict]:
    rows_out = []
    for k in ks:
        n = points[k]
        vae, x = build(n)
        ests = estimators(k, with_renyi=k == renyi_k)
        fns = {
            name: functools.partial(f, vae, x[:renyi_points] if name.startswith("renyi") else x, k)
            for name, f in ests.items()
        }
        warm = x[: 2 * chunks(n, k, _ev().ROWS_PER_CALL)[0]]  # two chunks of the timed shape
        for f in ests.values():  # warm-up: imports, first-call costs, the compile of ours-compiled
            f(vae, warm, k)
        times = timed_rounds(fns, repeats)
        for name, ts in times.items():
            m = renyi_points if name.startswith("renyi") else n
            med = statistics.median(ts)
            rows_out.append(
                {
                    "k": k,
                    "points": m,
                    "estimator": name,
                    "median_s": med,
                    "min_s": min(ts),
                    "points_per_s": m / med,
                    "rows_per_s": m * k / med,
                    "all_s": ts,
                }
            )
    return rows_out


def sweep(rows_list: list[int], k: int, n: int, repeats: int) -> list[dict]:
    """Ours and ref-softplus at several rows per call (ours through ROWS_PER_CALL), interleaved."""
    ev = _ev()
    vae, x = build(n)

    def ours_at(rows: int) -> Callable[[], Any]:
        def run() -> Any:
            saved = ev.ROWS_PER_CALL
            try:
                ev.ROWS_PER_CALL = rows
                return ours_iw(vae, x, k)
            finally:
                ev.ROWS_PER_CALL = saved

        return run

    fns: dict[str, Callable[[], Any]] = {}
    for rows in rows_list:
        fns[f"ours@{rows}"] = ours_at(rows)
        fns[f"ref-softplus@{rows}"] = functools.partial(reference_iw, vae, x, k, rows=rows)
    for f in fns.values():
        f()
    times = timed_rounds(fns, repeats)
    return [
        {
            "estimator": name,
            "k": k,
            "points": n,
            "median_s": statistics.median(ts),
            "points_per_s": n / statistics.median(ts),
        }
        for name, ts in times.items()
    ]


# ----------------------------------------------------------------------------- memory (subprocess)
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """This process's peak resident size: ``VmHWM`` (``ru_maxrss`` also counts the parent's size at fork,
    which a big parent - one that compiled with Inductor - would report as ours)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory_worker(which: str, k: int, points: int) -> dict:
    """In a fresh process: build model and data, run one estimator once, report peak RSS."""
    vae, x = build(points)
    base = _rss_mb()
    t0 = time.perf_counter()
    if which == "reference":
        values = reference_iw(vae, x, k)
    else:
        values = ours_iw(vae, x, k, fast="compile" if which == "ours-compiled" else "eager")
    seconds = time.perf_counter() - t0
    peak = _peak_rss_mb()
    return {
        "which": which,
        "k": k,
        "points": points,
        "baseline_mb": base,
        "peak_mb": peak,
        "rise_mb": peak - base,
        "seconds": seconds,
        "mean_iw": float(values.mean()),
        "data_mb": x.numel() * x.element_size() / 2**20,
    }


def run_memory_worker(which: str, k: int, points: int, threads: int | None) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--memory-worker",
        which,
        "--k",
        str(k),
        "--points",
        str(points),
    ] + (["--threads", str(threads)] if threads else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker {which} K={k} N={points} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report
def machine() -> dict:
    import pyro

    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": f"{torch.get_num_threads()} (inter-op {torch.get_num_interop_threads()})",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "load_average": os.getloadavg(),
    }


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--points", type=int, default=200, help="points timed at K <= 1000 (default 200)"
    )
    p.add_argument(
        "--points-at-5000", type=int, default=40, help="points timed at K > 1000 (default 40)"
    )
    p.add_argument(
        "--k",
        type=int,
        nargs="+",
        default=[1000, 5000],
        help="importance samples (default 1000 5000)",
    )
    p.add_argument(
        "--renyi-points", type=int, default=50, help="points for the RenyiELBO route (default 50)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    p.add_argument(
        "--repeats", type=int, default=5, help="interleaved rounds; medians reported (default 5)"
    )
    p.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure peak memory at K=5000 in fresh subprocesses (default on; --no-memory skips)",
    )
    p.add_argument(
        "--memory-points", type=int, nargs="+", default=[100], help="N for --memory (default 100)"
    )
    p.add_argument(
        "--memory-only", action="store_true", help="skip the checks and timings: only --memory"
    )
    p.add_argument(
        "--memory-estimators",
        nargs="+",
        choices=["ours", "ours-compiled", "reference"],
        default=["ours", "ours-compiled", "reference"],
    )
    p.add_argument("--sweep", type=int, nargs="+", metavar="ROWS", help="only sweep rows per call")
    p.add_argument(
        "--memory-worker", choices=["ours", "ours-compiled", "reference"], help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args.k[0], args.points)))
        return 0

    started = time.perf_counter()
    info = machine()
    ev = _ev()
    print("IW log p(x), MLP 784-400-50 Bernoulli VAE, random binary 784-d data")
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}; python "
        f"{info['python']}, torch {info['torch']}, pyro {info['pyro']}; ours: ROWS_PER_CALL "
        f"{ev.ROWS_PER_CALL}, FAST_LOG_PROB {importlib.import_module('ppl_vae.estimators.kernels').FAST_LOG_PROB}; "
        f"load average {_load()}"
    )

    if args.sweep:
        k = args.k[0]
        print(
            f"\nrows per call sweep, K={k}, {args.points} points, {args.repeats} rounds (median points/s)"
        )
        for r in sweep(args.sweep, k, args.points, args.repeats):
            print(f"  {r['estimator']:<22} {r['points_per_s']:8.1f}")
        print(f"load average at the end: {_load()}")
        return 0

    ok = True
    if not args.memory_only:
        ok = checks_and_timings(args)
    if args.memory:
        k = 5000
        print(
            f"\npeak memory at K={k}, one fresh process per run (VmHWM; rise = over the resident "
            f"size after building model and data); torch threads {args.threads or 'default'}"
        )
        print(
            f"{'points':>6}  {'estimator':<13} {'data MB':>8} {'baseline MB':>11} {'peak MB':>8} {'rise MB':>8} {'seconds':>8}"
        )
        for n in args.memory_points:
            for which in args.memory_estimators:
                m = run_memory_worker(which, k, n, args.threads)
                print(
                    f"{n:>6}  {which:<13} {m['data_mb']:>8.1f} {m['baseline_mb']:>11.1f} {m['peak_mb']:>8.1f} "
                    f"{m['rise_mb']:>8.1f} {m['seconds']:>8.1f}",
                    flush=True,
                )
    print(f"\nload average at the end: {_load()}; total {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


def checks_and_timings(args: argparse.Namespace) -> bool:
    """Print the agreement checks and the throughput tables; True when the estimators agree."""
    agree = agreement()
    print(
        f"\nagreement, 12 points, K=1000, same seed and chunks {agree['chunks']} (max |diff| per point, nats):"
    )
    print(
        f"  ours vs ref-softplus {agree['ours_vs_ref_same_draws']:.1e}, vs ref-bce "
        f"{agree['ours_vs_ref_bce_same_draws']:.1e}, vs renyi (1 point x K per call) "
        f"{agree['ours_vs_renyi_same_draws']:.1e}; fast vs generic log-density path "
        f"{agree['fast_vs_generic_path']:.1e}; compiled vs eager {agree['compiled_vs_eager']:.1e}; "
        f"ours vs ref on other draws {agree['ours_vs_ref_other_draws']:.2f} "
        f"(Monte Carlo noise; mean IW {agree['mean_iw']:.2f})"
    )
    ok = (
        max(
            agree[key]
            for key in (
                "ours_vs_ref_same_draws",
                "ours_vs_ref_bce_same_draws",
                "ours_vs_renyi_same_draws",
                "fast_vs_generic_path",
                "compiled_vs_eager",
            )
        )
        < 2e-3
    )

    points = {k: (args.points if k <= 1000 else args.points_at_5000) for k in args.k}
    print(
        f"\nthroughput: {args.repeats} interleaved rounds, medians; rows/s = decoder evaluations "
        f"(particles x points) per second; load average before {_load()}"
    )
    print(
        f"{'K':>5} {'points':>6}  {'estimator':<20} {'median s':>8} {'min s':>7} {'points/s':>9} {'rows/s':>9}"
    )
    results = throughput(args.k, points, args.repeats, 1000, args.renyi_points)
    for k in args.k:
        rows = [r for r in results if r["k"] == k]
        for r in rows:
            print(
                f"{k:>5} {r['points']:>6}  {r['estimator']:<20} {r['median_s']:>8.2f} {r['min_s']:>7.2f} "
                f"{r['points_per_s']:>9.1f} {r['rows_per_s']:>9.3g}"
            )
        refs = [r for r in rows if r["estimator"].startswith("ref")]
        best = max(refs, key=lambda r: r["points_per_s"])
        bce = max((r for r in refs if "bce" in r["estimator"]), key=lambda r: r["points_per_s"])
        best_min = min(r["min_s"] / r["points"] for r in refs)
        renyi = {r["estimator"]: r for r in rows if r["estimator"].startswith("renyi")}
        for label in ("ours", "ours-compiled"):
            ours = next(r for r in rows if r["estimator"] == label)
            print(
                f"{'':>5} {'':>6}  {label} / fastest reference ({best['estimator']}): "
                f"{ours['points_per_s'] / best['points_per_s']:.2f}x its points/s; / fastest ref-bce: "
                f"{ours['points_per_s'] / bce['points_per_s']:.2f}x; best-of-rounds times: "
                f"{best_min / (ours['min_s'] / ours['points']):.2f}x the fastest reference"
            )
            if renyi:
                on, off = renyi["renyi"], renyi["renyi-novalidation"]
                print(
                    f"{'':>5} {'':>6}  {label} / renyi: {ours['points_per_s'] / on['points_per_s']:.2f}x its "
                    f"points/s (Pyro's default validation on; with it off: "
                    f"{ours['points_per_s'] / off['points_per_s']:.2f}x); best-of-rounds: "
                    f"{(on['min_s'] / on['points']) / (ours['min_s'] / ours['points']):.2f}x "
                    f"({(off['min_s'] / off['points']) / (ours['min_s'] / ours['points']):.2f}x)"
                )
    print(f"load average after: {_load()}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
