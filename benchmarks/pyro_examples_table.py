"""Pyro's own example programs through every entry point: the rows of issue 19 in ``programs_table.py``.

    python benchmarks/programs_table.py --only-pyro-examples      # these rows alone (a few minutes)

The programs are the test suite's (``tests/programs/pyro_examples.py``, following pyro-ppl/pyro's examples;
``pyro.contrib.cevae`` imported). For each: ``fit`` (the test ELBO after the first and the last epoch, or
the training bound where the program's own scale makes it another unit), the estimators against the plain-
torch importance sampler on the same networks (mean per-point IW difference +- its s.e.), ``evaluate``, AIS,
the amortisation gap and the NUTS reference, or the one-line refusal each gets (in a few words) and the
advice that was followed (the program column says which variant ran).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import pyro
import torch
from programs.pyro_examples import (
    AIR,
    DMM,
    SCANVI,
    SSVAE,
    MaskedCVAE,
    PyroVAEImpl,
    QuadrantCVAE,
    as_28x28,
    cevae_data,
    cevae_log_weights,
    quadrant_inputs,
    quadrant_outputs,
    scenes,
    sequences,
)
from pyro.infer import config_enumerate

import ppl_vae as pv


def short(err: Exception) -> str:
    return f"refused ({type(err).__name__}: {str(err).split(';')[0][:90]})"


def _cells(n: int = 120, genes: int = 12, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    rate = torch.distributions.Gamma(2.0, 0.2).sample((n, genes))
    x = torch.poisson(rate, generator=g) * (torch.rand(n, genes, generator=g) > 0.2)
    y = torch.nn.functional.one_hot(torch.randint(3, (n,), generator=g), 3).float()
    return x, y


def cases(digits: Any) -> dict[str, dict[str, Any]]:
    """Each program: how to build it, its data, objective, estimator options and plain-torch reference."""
    xt, x = digits.test[:200], digits.train
    xt28, x28 = as_28x28(xt), as_28x28(x)  # Pyro's CVAE and vae_comparison networks: 28 x 28
    yo = torch.nn.functional.one_hot(digits.train_labels, 10).float()
    cells_x, cells_y = _cells()
    log_lib = cells_x.sum(-1).log()
    seqs, seqs_test = sequences(48, 48, seed=0), sequences(30, 30, seed=1)
    images, images_test = scenes(60, seed=0), scenes(30, seed=1)
    cx, ct, cy = cevae_data(300)

    def scanvi() -> SCANVI:
        return SCANVI(
            12, 3, float(log_lib.mean()), float(log_lib.std()), scale_factor=1 / (20 * 12),
            fixes=("rowwise", "expand"),
        )  # fmt: skip

    def scanvi_ref(m: Any, rows: tuple, k: int, g: torch.Generator) -> torch.Tensor:
        theta = pv.trained_params(m)["inverse_dispersion"]
        return m.torch_log_weights(*rows, k=k, generator=g, theta=theta)

    def air_program(m: AIR) -> pv.Program:
        return pv.Program(lambda d: m.model(d, None), lambda d: m.guide(d, None), owner=m)

    return {
        "vae_comparison (plain object)": dict(
            build=PyroVAEImpl,
            train=x28,
            test=xt28,
            objective="trace",
            compare=PyroVAEImpl,
            compare_data="digits28",
        ),
        "ss_vae_M2, labelled (x, y)": dict(
            build=SSVAE,
            program=lambda m: pv.Program(m.model, config_enumerate(m.guide), owner=m),
            train=x,
            test=(xt, torch.nn.functional.one_hot(digits.test_labels[:200], 10).float()),
            objective="enum",
        ),
        "ss_vae_M2 classify (scale 46)": dict(
            build=SSVAE,
            program=lambda m: pv.Program(m.model_classify, m.guide_classify, owner=m),
            train=(x, yo),
            test=(xt, torch.nn.functional.one_hot(digits.test_labels[:200], 10).float()),
            objective="trace",
            reference=lambda m, rows, k, g: (
                (rows[1] * m.encoder_y(rows[0]).log()).sum(-1).expand(k, -1)
            ),
        ),
        "cvae, .mask() (advice)": dict(
            build=MaskedCVAE,
            train=(quadrant_inputs(x28), quadrant_outputs(x28)),
            test=(quadrant_inputs(xt28), quadrant_outputs(xt28)),
            objective="trace",
            compare=QuadrantCVAE,
            compare_data="digits28",
        ),
        "scanvi, y expanded (advice)": dict(
            build=scanvi,
            train=(cells_x[:80], cells_y[:80]),
            test=(cells_x[80:], cells_y[80:]),
            objective="trace",
            fit={"batch_size": 20, "lr": 5e-2},
            reference=scanvi_ref,
        ),
        "dmm (sites per batch)": dict(
            build=DMM, train=seqs, test=seqs_test, objective="trace", fit={"batch_size": 16}
        ),
        "air, vectorize_particles=False": dict(
            build=AIR,
            program=air_program,
            train=images,
            test=images_test,
            objective="trace",
            estimate={"vectorize_particles": False},
            k=100,
        ),
        "pyro.contrib.cevae": dict(
            build=_cevae,
            train=(cx[:200], ct[:200], cy[:200]),
            test=(cx[200:], ct[200:], cy[200:]),
            objective="analytic",
            reference=lambda m, rows, k, g: cevae_log_weights(m, *rows, k=k, generator=g),
        ),
    }


def _cevae() -> Any:
    from pyro.contrib.cevae import CEVAE

    return CEVAE(5, latent_dim=2, hidden_dim=16, num_layers=2)


def _rows(data: Any) -> tuple[torch.Tensor, ...]:
    return data if isinstance(data, tuple) else (data,)


def _first(rows: tuple[torch.Tensor, ...], n: int) -> tuple[torch.Tensor, ...]:
    return tuple(t[:n] for t in rows)


def _attempt(fn: Callable[[], str]) -> str:
    try:
        return fn()
    except pv.UserError as err:
        return short(err)
    except Exception as err:  # noqa: BLE001 - a bug shows in the table, not as a crash of it
        return f"BUG ({type(err).__name__}: {str(err)[:80]})"


def row(name: str, case: dict[str, Any], k: int, epochs: int) -> dict[str, Any]:
    """One program through fit, IW/ELBO against plain torch, evaluate, AIS, the amortisation gap, NUTS."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    owner = case["build"]()
    program = case.get("program", lambda m: m)(owner)
    k = case.get("k", k)
    opts = case.get("estimate", {})
    test = _rows(case["test"])
    out: dict[str, Any] = {"program": name, "objective": case["objective"]}
    t0 = time.perf_counter()
    h = pv.fit(
        program, case["train"], case["objective"], epochs=epochs, progress=False,
        **{"batch_size": 64, **case.get("fit", {})},
    )  # fmt: skip
    unit = " (scaled)" if h.meta.get("scaled_sites") else ""
    out["fit"] = f"train {h[0]['train_elbo']:.2f} -> {h[-1]['train_elbo']:.2f}{unit}"
    iw = pv.iw_log_likelihood(program, test, k, seed=0, **opts)
    el = pv.elbo(program, test, k, seed=0, **opts)
    ref_fn = case.get("reference") or (
        lambda m, rows, kk, g: m.torch_log_weights(*rows, k=kk, generator=g)
    )
    with torch.no_grad():
        modes = [(m, m.training) for m in program_modules(owner)]
        for m, _ in modes:
            m.eval()
        lw = ref_fn(owner, test, k, torch.Generator().manual_seed(1))
        for m, mode in modes:
            m.training = mode
    diff = (iw - (lw.logsumexp(0) - math.log(k))).double()
    out["IW"] = f"{float(iw.mean()):.2f}"
    out["IW - torch"] = (
        f"{float(diff.mean()):+.3f} +- {float(diff.std() / math.sqrt(len(diff))):.3f}"
    )
    out["min IW-ELBO"] = f"{float((iw - el).min()):+.4f}"
    out["evaluate"] = _attempt(lambda: _evaluate(program, test, k, opts))
    out["AIS"] = _attempt(lambda: _ais(program, test, iw))
    out["amortization gap"] = _attempt(
        lambda: (
            f"{float(pv.amortization_gap(program, _first(test, 8) if len(test) > 1 else test[0][:8], steps=30, num_samples=200, elbo_samples=50)['inference_gap'].mean()):.3f}"
        )  # noqa: E501
    )
    out["NUTS reference"] = _attempt(lambda: _nuts(program, test))
    out["seconds"] = f"{time.perf_counter() - t0:.0f}"
    return out


def program_modules(owner: Any) -> list[torch.nn.Module]:
    from ppl_vae.program_sites import program_modules as modules

    return modules(owner)


def _evaluate(program: Any, test: tuple, k: int, opts: dict) -> str:
    report = pv.evaluate(program, test, k, seed=0, **opts)
    s = report.summary
    return (
        f"IW {s['iw_mean']:.2f}, gap {s['gap_mean']:.2f}, k^ {report.points['khat'].median():.2f}"
    )


def _ais(program: Any, test: tuple, iw: torch.Tensor) -> str:
    rows = _first(test, 16)
    ais = pv.ais_log_likelihood(program, rows, num_steps=50, num_chains=4, leapfrog_steps=5)
    return f"{float(ais.mean()):.2f} (IW {float(iw[:16].mean()):.2f}, 16 pts)"


def _nuts(program: Any, test: tuple) -> str:
    ref = pv.reference_posterior(
        program, _first(test, 4), [0, 1], num_chains=2, num_samples=100, warmup=100
    )
    jit = "" if ref.settings["jit_compile"] else ", jit off (fallback)"
    return f"ok, site {ref.site!r}, max W2 {ref.distances['w2'].max():.2f}{jit}"


def digits28(digits: Any) -> Any:
    """The digits at 28 x 28 (nearest-neighbour), the size Pyro's CVAE networks are built for."""
    train, test = as_28x28(digits.train), as_28x28(digits.test)
    return pv.Dataset.from_tensors(train, test, name="digits28", image_shape=(28, 28))


def compare_column(
    table: dict[str, dict[str, Any]], digits: Any, k: int, epochs: int
) -> dict[str, str]:
    datasets = {"digits": digits, "digits28": digits28(digits)}
    got = {}
    for data_name, data in datasets.items():
        methods = [
            pv.ProgramMethod(name.split(" ")[0], case["compare"], case["objective"])
            for name, case in table.items()
            if case.get("compare") is not None and case.get("compare_data", "digits") == data_name
        ]
        if not methods:
            continue
        result = pv.run_comparison(
            methods, data, epochs=epochs, num_samples=k, batch_size=64, test_points=200
        )
        got.update(
            {
                r["method"].split("/")[0]: f"IW {r['test_iw_log_likelihood']:.2f}"
                for _, r in result.table.iterrows()
            }
        )
    return {
        name: got.get(name.split(" ")[0], "not applicable (synthetic data, no Dataset)")
        for name in table
    }


def rows(digits: Any, k: int, epochs: int) -> list[dict[str, Any]]:
    table = cases(digits)
    out = []
    for name, case in table.items():
        out.append(row(name, copy.copy(case), k, epochs))
        print(" | ".join(f"{a}: {b}" for a, b in out[-1].items()), flush=True)
    compared = compare_column(table, digits, k, epochs)
    for r in out:
        r["compare"] = compared[r["program"]]
    return out


COLUMNS = [
    "program",
    "objective",
    "fit",
    "IW",
    "IW - torch",
    "min IW-ELBO",
    "evaluate",
    "AIS",
    "compare",
    "amortization gap",
    "NUTS reference",
    "seconds",
]
