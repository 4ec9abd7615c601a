"""Users' own Pyro programs through every entry point: the table of issue 11.

    python benchmarks/programs_table.py              # about 5 minutes on two CPU cores
    python benchmarks/programs_table.py --epochs 10 --k 2000
    python benchmarks/programs_table.py --only-pyro-examples   # Pyro's own examples (issue 19) alone

The programs are the test suite's (``tests/programs/``), written in Pyro's own idioms: Pyro's example VAE
(sites ``latent``/``obs``), an unsized ``pyro.plate("data")``, a plate with ``subsample_size``, a conv VAE on
``(N, 1, 8, 8)`` images with its data plate named ``"images"``, a conditional VAE on ``(x, y)``, an IAF guide,
M2 with an enumerated label, a global latent outside the plate with ``pyro.param`` guide parameters, and
per-pixel latents in a plate nested in the data plate. Each gets, on sklearn's digits:

* **fit**: the objective it needs, the test ELBO after the first and the last epoch;
* **estimators**: ``iw_log_likelihood`` at K against an independent importance sampler written in plain
  torch on the same networks (``torch_log_weights``), mean difference +- its standard error over points,
  and the smallest per-point IW - ELBO (>= 0 up to float rounding);
* **evaluate**: the median PSIS k-hat, active units and the discrete sites it sampled;
* **compare**: the program as a ``ProgramMethod`` in one ``run_comparison`` (test IW log p(x));
* **posterior tools**: ``amortization_gap`` (mean inference gap, nats) and ``reference_posterior`` (NUTS;
  the Wasserstein-style distance of the guide's mean from the reference, in reference s.d.), or the
  refusal a program gets, in a few words.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pyro
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from programs.structures import M2, GlobalBiasVAE, PixelLatentModel  # noqa: E402
from programs.vaes import (  # noqa: E402
    ConditionalVAE,
    ConvVAE,
    IAFGuideVAE,
    PyroExampleVAE,
    SubsampledPlateVAE,
    UnsizedPlateVAE,
)

import ppl_vae as pv  # noqa: E402


class FlatConvVAE(ConvVAE):
    """The conv VAE fed a Dataset's flat rows: it reshapes them itself, as Pyro's MNIST examples do."""

    def model(self, x):
        super().model(x.reshape(-1, 1, 8, 8))

    def guide(self, x):
        super().guide(x.reshape(-1, 1, 8, 8))


class LabelledM2(M2):
    """M2 with 30 % of the training labels (``-1`` elsewhere) and no test labels, through the Dataset hook."""

    def dataset_inputs(self, dataset, split):
        y = dataset.train_labels if split == "train" else -torch.ones_like(dataset.test_labels)
        if split == "train":
            keep = torch.rand(len(y), generator=torch.Generator().manual_seed(0)) < 0.3
            y = torch.where(keep, y, -torch.ones_like(y))
        return (y,)


def cases(data: Any) -> dict[str, dict[str, Any]]:
    x, xt, y, yt = data.train, data.test[:200], data.train_labels, data.test_labels[:200]
    keep = torch.rand(len(y), generator=torch.Generator().manual_seed(0)) < 0.3
    y_partial = torch.where(keep, y, -torch.ones_like(y))
    conv = ConvVAE()
    images = (x.reshape(-1, 1, 8, 8), xt.reshape(-1, 1, 8, 8))
    return {
        "pyro_example": dict(build=PyroExampleVAE, train=x, test=xt, objective="analytic"),
        "unsized_plate": dict(build=UnsizedPlateVAE, train=x, test=xt, objective="analytic"),
        "subsampled_plate": dict(
            build=lambda: SubsampledPlateVAE(n_full=len(x)), train=x, test=xt, objective="analytic"
        ),
        "conv_images": dict(
            program=pv.Program(conv.model, conv.guide, data_plate="images", owner=conv),
            owner=conv,
            build=FlatConvVAE,
            train=images[0],
            test=images[1],
            objective="analytic",
            data_plate="images",
        ),
        "conditional": dict(
            build=ConditionalVAE, train=(x, y), test=(xt, yt), objective="analytic"
        ),
        "iaf_guide": dict(build=IAFGuideVAE, train=x, test=xt, objective="trace"),
        "m2_enumerated": dict(
            build=lambda: M2(alpha=50.0),
            train=(x, y_partial),
            test=(xt, -torch.ones_like(yt)),
            objective="enum",
            fit={"lr": 3e-3},
            compare=lambda: LabelledM2(alpha=50.0),
        ),
        "global_latent": dict(
            build=GlobalBiasVAE, train=x, test=xt, objective="analytic", fit={"lr": 3e-3}
        ),
        "nested_pixel_plates": dict(
            build=lambda: PixelLatentModel(16),
            objective="analytic",
            compare=None,
            fit={"lr": 3e-2, "batch_size": 32},
        ),
    }


def short(err: Exception) -> str:
    return f"refused ({type(err).__name__}: {str(err).split(';')[0][:70]})"


def row(name: str, case: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    owner = case.get("owner") or case["build"]()
    program = case.get("program", owner)
    if name == "nested_pixel_plates":  # its own data: exact log p(x) is known
        gen = torch.Generator().manual_seed(0)
        case["train"] = torch.randn(400, 16, generator=gen) * 1.3
        case["test"] = torch.randn(200, 16, generator=gen) * 1.3
    out: dict[str, Any] = {"program": name, "objective": case["objective"]}
    t0 = time.perf_counter()
    kw = {"batch_size": 64, **case.get("fit", {})}
    h = pv.fit(
        program,
        case["train"],
        case["objective"],
        epochs=args.epochs,
        test_data=case["test"],
        progress=False,
        **kw,
    )
    out["fit"] = f"{h[0]['test_elbo']:.2f} -> {h[-1]['test_elbo']:.2f}"
    target = pv.fix_globals(program, case["test"]) if name == "global_latent" else program
    iw = pv.iw_log_likelihood(target, case["test"], args.k, seed=0)
    el = pv.elbo(target, case["test"], args.k, seed=0)
    rows = case["test"] if isinstance(case["test"], tuple) else (case["test"],)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if name == "global_latent":
            lw = owner.torch_log_weights_given_bias(
                *rows, h.state.trained_params["b_loc"], k=args.k, generator=gen
            )
            ref = lw.logsumexp(0) - math.log(args.k)
        elif name == "nested_pixel_plates":
            ref = owner.exact_log_likelihood(*rows)
        else:
            lw = owner.torch_log_weights(*rows, k=args.k, generator=gen)
            ref = lw.logsumexp(0) - math.log(args.k)
    diff = (iw - ref).double()
    out["IW - torch"] = (
        f"{float(diff.mean()):+.4f} +- {float(diff.std() / math.sqrt(len(diff))):.4f}"
    )
    if name == "nested_pixel_plates":
        out["IW - torch"] += " (exact)"
    out["min IW-ELBO"] = f"{float((iw - el).min()):+.4f}"
    report = pv.evaluate(target, case["test"], args.k, seed=0)
    s = report.summary
    out["evaluate"] = (
        f"IW {s['iw_mean']:.2f}, k^ {report.points['khat'].median():.2f}, "
        f"AU {s['active_units']}"
        + (f", sampled {s['discrete_sites']}" if s.get("discrete_sites") else "")
    )
    try:
        gap = pv.amortization_gap(
            target,
            rows[0][:8] if len(rows) == 1 else tuple(t[:8] for t in rows),
            steps=30,
            num_samples=200,
            elbo_samples=50,
        )
        out["amortization gap"] = f"{float(gap['inference_gap'].mean()):.3f} (mean of 8)"
    except pv.UserError as err:
        out["amortization gap"] = short(err)
    try:
        ref_post = pv.reference_posterior(
            target,
            rows[0][:4] if len(rows) == 1 else tuple(t[:4] for t in rows),
            [0, 1],
            num_chains=2,
            num_samples=100,
            warmup=100,
        )
        out["NUTS reference"] = f"ok, site {ref_post.site!r}"
    except pv.UserError as err:
        out["NUTS reference"] = short(err)
    out["seconds"] = f"{time.perf_counter() - t0:.0f}"
    return out


def compare_column(table: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, str]:
    data = pv.load_dataset("digits", binarize="dynamic", seed=0)
    methods = [
        pv.ProgramMethod(
            name, case.get("compare", case["build"]), case["objective"], case.get("data_plate")
        )
        for name, case in table.items()
        if case.get("compare", case["build"]) is not None
    ]
    result = pv.run_comparison(
        methods,
        data,
        seeds=[0],
        epochs=args.epochs,
        num_samples=args.k,
        batch_size=64,
        test_points=200,
    )
    got = {
        r["method"].split("/")[0]: f"IW {r['test_iw_log_likelihood']:.2f}"
        for _, r in result.table.iterrows()
    }
    for name in table:
        got.setdefault(name, "not applicable (synthetic data, no Dataset)")
    return got


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--k", type=int, default=1000, help="importance samples per test point")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--only-pyro-examples",
        action="store_true",
        help="only the rows of Pyro's own example programs (issue 19)",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings(
        "ignore"
    )  # the table says what each program got; warnings are in the tests
    pyro.set_rng_seed(0)
    print(
        f"threads: intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}, "
        f"load: {_load()}",
        flush=True,
    )
    examples_table(args)
    if args.only_pyro_examples:
        return
    data = pv.load_dataset("digits", binarize="dynamic", seed=0)
    table = cases(data)
    rows = []
    for name, case in table.items():
        rows.append(row(name, case, args))
        print(" | ".join(f"{k}: {v}" for k, v in rows[-1].items()), flush=True)
    compared = compare_column(table, args)
    cols = [
        "program",
        "objective",
        "fit",
        "IW - torch",
        "min IW-ELBO",
        "evaluate",
        "compare",
        "amortization gap",
        "NUTS reference",
        "seconds",
    ]
    print(f"\nK = {args.k}, {args.epochs} epochs, digits (200 test points)\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        r["compare"] = compared[r["program"]]
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


def _load() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


def examples_table(args: argparse.Namespace) -> None:
    """Pyro's own example programs (``pyro_examples_table.py``), on statically binarised digits."""
    import pyro_examples_table as ex

    digits = pv.load_dataset("digits", binarize="static", seed=0)
    rows = ex.rows(digits, args.k, args.epochs)
    print(f"\nPyro's examples: K = {args.k} (AIR 100), {args.epochs} epochs\n")
    print("| " + " | ".join(ex.COLUMNS) + " |")
    print("|" + "---|" * len(ex.COLUMNS))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in ex.COLUMNS) + " |")


if __name__ == "__main__":
    main()
