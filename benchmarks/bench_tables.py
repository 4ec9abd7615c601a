"""Per-column likelihoods on two tables that ship with scikit-learn: held-out log p(x) and seconds per epoch.

    python benchmarks/bench_tables.py                 # both tables, 3 seeds (a few minutes on 2 cores)
    python benchmarks/bench_tables.py --quick         # a smoke run
    python benchmarks/bench_tables.py --threads 1

Tables (original units, as a statistician has them):

* ``diabetes``: scikit-learn's ``load_diabetes(scaled=False)`` (442 rows: age, sex, bmi, bp, s1-s6, target),
  plus a derived count ``visits ~ Poisson(exp(0.3 + 0.08 (bmi - 26)))`` and a derived categorical
  ``bmi_class`` (under/normal/over/obese, strings);
* ``breast_cancer``: ``load_breast_cancer`` (569 rows, 30 measurements, the diagnosis as strings).

For each table and seed the same VAE (latent 4, hidden 64, 300 epochs, Adam 3e-3, batch 64, the
``analytic`` objective) is trained twice on the same split:

* ``gaussian``: every column typed ``real`` (levels as their integer codes, what a user had to do before
  tables), a Gaussian with learned scale on each, standardised;
* ``auto``: the inferred schema, one family per column (``likelihood="auto"``).

Both report held-out IW log p(x) per row (K = 1000) **in the data's original units**, so they are in the
same nats; the paired difference (auto - gaussian) per test row is averaged over rows and seeds with its
standard error over rows. On the whole table the comparison mixes measures: the Gaussian scores a
discrete column by a density, the count/binary/categorical families by a probability mass, so the line
``continuous columns only`` repeats the comparison on the columns both models treat as densities (the
same data without the discrete columns): that one is apples to apples.

Seconds per epoch: the ``auto`` model against the same network with Gaussian likelihoods on an all-real
table of the same size (the ``gaussian`` table), epochs interleaved in one process, median of 20 after 3
warm-up epochs (target: per-column likelihoods cost <= 1.3x). Read ratios, not seconds; the load average
is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import print_machine  # noqa: E402

import ppl_vae as pv  # noqa: E402

EPOCHS, K, LATENT, HIDDEN, LR, BATCH = 300, 1000, 4, (64,), 3e-3, 64


def diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    f = load_diabetes(as_frame=True, scaled=False).frame
    rng = np.random.default_rng(0)
    f["visits"] = rng.poisson(np.exp(0.3 + 0.08 * (f["bmi"] - 26)))
    f["bmi_class"] = pd.cut(
        f["bmi"], [0, 18.5, 25, 30, 100], labels=["under", "normal", "over", "obese"]
    ).astype(str)
    return f


def breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    f = data.frame.copy()
    f["target"] = np.where(f["target"] == 1, "benign", "malignant")
    return f.rename(columns={"target": "diagnosis"})


def _key(value: object) -> str:
    """A level as text, whole numbers without their ``.0`` (a column read as floats has levels 1, 2)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def as_codes(frame: pd.DataFrame, schema: pv.Schema) -> pd.DataFrame:
    """The table a user had to make before: levels replaced by their integer codes, every column real."""
    out = frame.copy()
    for c in schema:
        if c.levels is not None:
            lookup = {_key(v): i for i, v in enumerate(c.levels)}
            out[c.name] = out[c.name].map(lambda v, lk=lookup: lk[_key(v)]).astype(float)
    return out[list(schema.names)]


def fit_eval(data: pv.Dataset, likelihood, seed: int, epochs: int, k: int) -> torch.Tensor:
    vae = pv.VAE(len(data.schema), LATENT, HIDDEN, likelihood=likelihood, schema=data.schema)
    pv.fit(vae, data, "analytic", epochs=epochs, batch_size=BATCH, lr=LR, seed=seed, progress=False)
    return pv.iw_log_likelihood(vae, data.test, num_samples=k, seed=seed).double()


def compare(
    frame: pd.DataFrame, seeds: list[int], epochs: int, k: int
) -> tuple[dict, pv.Dataset, pv.Dataset]:
    auto = pv.load_dataset(frame, seed=0, standardize=True)
    codes = as_codes(frame, auto.schema)
    gauss = pv.load_dataset(
        codes, seed=0, standardize=True, types={c: "real" for c in codes.columns}
    )
    continuous = [c.name for c in auto.schema if c.type in ("real", "positive")]
    auto_c = pv.load_dataset(frame[continuous], seed=0, standardize=True)
    gauss_c = pv.load_dataset(
        frame[continuous], seed=0, standardize=True, types={c: "real" for c in continuous}
    )
    assert list(auto.test_index) == list(gauss.test_index) == list(auto_c.test_index)
    rows: dict[str, list[np.ndarray]] = {"all": [], "cont": [], "auto": [], "gauss": []}
    for seed in seeds:
        a, g = fit_eval(auto, "auto", seed, epochs, k), fit_eval(gauss, "gaussian", seed, epochs, k)
        rows["all"].append((a - g).numpy())
        rows["auto"].append(a.numpy())
        rows["gauss"].append(g.numpy())
        ac, gc = (
            fit_eval(auto_c, "auto", seed, epochs, k),
            fit_eval(gauss_c, "gaussian", seed, epochs, k),
        )
        rows["cont"].append((ac - gc).numpy())
    return {key: np.stack(v) for key, v in rows.items()}, auto, gauss


def mean_se(diff: np.ndarray) -> tuple[float, float]:
    per_row = diff.mean(0)  # average the seeds per test row; the s.e. is over rows
    return float(per_row.mean()), float(per_row.std(ddof=1) / np.sqrt(len(per_row)))


def seconds_per_epoch(
    auto: pv.Dataset, gauss: pv.Dataset, rounds: int = 20, warmup: int = 3
) -> tuple[float, float]:
    models = {
        "auto": (
            pv.VAE(len(auto.schema), LATENT, HIDDEN, likelihood="auto", schema=auto.schema),
            auto,
        ),
        "gaussian": (
            pv.VAE(len(gauss.schema), LATENT, HIDDEN, likelihood="gaussian", schema=gauss.schema),
            gauss,
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for r in range(warmup + rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            vae, data = models[name]
            history = pv.fit(
                vae, data, "analytic", epochs=1, batch_size=BATCH, lr=LR, seed=r, progress=False
            )
            if r >= warmup:  # the epoch itself (fit's record), not the call's checks and setup
                times[name].append(float(history.to_frame()["seconds"].iloc[-1]))
    return statistics.median(times["auto"]), statistics.median(times["gaussian"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run (1 seed, 20 epochs, K=100)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print_machine("bench_tables")
    epochs, k = (20, 100) if args.quick else (EPOCHS, K)
    seeds = [0] if args.quick else list(range(args.seeds))
    print(
        f"VAE latent {LATENT}, hidden {HIDDEN}, {epochs} epochs, batch {BATCH}, lr {LR}; IW K={k}; seeds {seeds}"
    )
    warnings.filterwarnings("ignore", category=UserWarning)
    for name, make in (("diabetes", diabetes), ("breast_cancer", breast_cancer)):
        frame = make()
        t0 = time.perf_counter()
        rows, auto, gauss = compare(frame, seeds, epochs, k)
        kinds = pd.Series(auto.schema.types).value_counts().to_dict()
        print(
            f"\n== {name}: {auto.meta.n_train} train / {auto.meta.n_test} test rows, {len(auto.schema)} columns {kinds}"
        )
        print(
            f"   families: {', '.join(f'{c}={s}' for c, s in pv.TableLikelihood(auto.schema).specs.items())}"
        )
        print(
            f"   held-out IW log p(x) per row, original units: gaussian {rows['gauss'].mean():.2f}, auto {rows['auto'].mean():.2f}"
        )
        m, se = mean_se(rows["all"])
        print(
            f"   auto - gaussian, whole table:            {m:+.2f} +- {se:.2f} nats/row (discrete columns: mass vs density)"
        )
        m, se = mean_se(rows["cont"])
        print(
            f"   auto - gaussian, continuous columns only: {m:+.2f} +- {se:.2f} nats/row (same measure)"
        )
        sa, sg = seconds_per_epoch(auto, gauss)
        print(
            f"   seconds/epoch: auto {sa:.4f}, all-real gaussian {sg:.4f}: ratio {sa / sg:.2f}x (torch threads {torch.get_num_threads()})"
        )
        print(
            f"   ({time.perf_counter() - t0:.0f} s; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())})"
        )


if __name__ == "__main__":
    main()
