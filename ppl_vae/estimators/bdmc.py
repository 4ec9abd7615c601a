r"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015): a certified sandwich around log p(x).

On data simulated from the model, ``(x, z)`` with ``z`` an exact draw from the posterior of its ``x``, forward AIS
(:mod:`.ais`) from ``q`` (or the prior) to the posterior gives a stochastic *lower* bound on ``log p(x)``, and
reverse AIS, the same path walked from ``beta = 1`` to ``0`` started at the exact ``z``, an unbiased estimate of
``1 / p(x)``, so ``-log mean_c w^{rev}_c`` is a stochastic *upper* bound. The gap between the two bounds
bounds the error of either, on data like the model's own.

References:
    Grosse, Ghahramani & Adams (2015), Sandwiching the marginal likelihood using bidirectional Monte Carlo,
    arXiv:1511.02543.
    Grosse, Ancha & Roy (2016), Measuring the reliability of MCMC inference with bidirectional Monte Carlo, NIPS.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import pyro
import pyro.poutine as poutine
import torch

from ..errors import ProgramError
from ..program_errors import translated
from ..programs import PerPointScale, Program, ProgramInfo
from .ais import ais_result, run_ais, start
from .importance import sandbox
from .path_density import CHAIN_PLATE

__all__ = ["bdmc", "simulate"]


def simulate(
    program: Program,
    rows: tuple[torch.Tensor, ...],
    info: ProgramInfo,
) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """Draw ``(x, z)`` from the model on as many rows as ``rows`` has (on the current random stream).

    The model runs once with its observed sites sampled (``poutine.uncondition``); each observed site's draw
    replaces the data tensor the site observes (matched by identity, else by value: normally the first,
    ``x``), and the other tensors (conditioning inputs, labels the model does not observe) stay as given.
    Returns the simulated rows and the latent values (chain dim of size 1, for :func:`run_ais`'s ``exact``).
    """
    with (
        translated("bdmc, simulating the data from the model", program, rows),
        pyro.plate(CHAIN_PLATE, 1, dim=-info.rank),
        PerPointScale(),
    ):
        given = poutine.trace(program.model).get_trace(*rows)
        drawn = poutine.trace(poutine.uncondition(program.model)).get_trace(*rows)
    out = list(rows)
    used: dict[int, str] = {}
    for name in info.observed:
        value = given.nodes[name]["value"]
        index = next((i for i, t in enumerate(rows) if value is t), None)
        if index is None:
            index = next(
                (
                    i
                    for i, t in enumerate(rows)
                    if t.numel() == value.numel()
                    and torch.equal(t.reshape(-1), value.reshape(-1).to(t.dtype))
                ),
                None,
            )
        if index is None or index in used:
            raise ProgramError(
                f"bdmc simulates the data from the model, so each observed site must observe one of the data tensors "
                f"as given; site {name!r} observes a value that is not one of them"
                + (f" (or the same one as site {used[index]!r})" if index in used else "")
                + ": pass the observations as they are scored, e.g. model(x) with pyro.sample(..., obs=x)"
            )
        used[index] = name
        out[index] = (
            drawn.nodes[name]["value"].detach().reshape(rows[index].shape).to(rows[index].dtype)
        )
    latents = {k: drawn.nodes[k]["value"].detach() for k in info.latent}
    return tuple(out), latents


def bdmc(
    model: Any,
    guide: Any = None,
    x: Any = None,
    *,
    num_steps: int = 1000,
    num_chains: int = 16,
    leapfrog_steps: int = 10,
    init: str = "guide",
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    schedule: Any = "sigmoid",
    target_accept: float = 0.65,
    tune_chains: int = 2,
    batch_size: int | None = None,
    fast: str = "auto",
    progress: bool = False,
    data_plate: str | None = None,
    return_simulated: bool = False,
) -> Any:
    """The bidirectional Monte Carlo sandwich of ``log p(x)`` on data simulated from the model, per point.

    ``x`` (with any conditioning inputs, as for the estimators) gives the shapes: the model is run forward with
    its observed sites sampled (``poutine.uncondition``) on as many rows as ``x`` has, giving simulated
    ``(x_n, z_n)`` (the draw of each observed site replaces the data tensor it observes, normally the first;
    conditioning inputs stay as given). Forward AIS on the simulated data gives a stochastic lower bound,
    reverse AIS started at the exact ``z_n`` a stochastic upper bound on ``log p(x_n)``; their gap bounds the
    error of AIS with these settings on data like these (Grosse et al. 2015). Arguments as
    :func:`ais_log_likelihood`; twice its cost.

    Returns:
        A DataFrame with one row per simulated point and columns ``lower``, ``upper``, ``gap`` (nats); with
        ``return_simulated=True``, ``(frame, simulated_rows)`` (a tuple of tensors, the data's layout).

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> _ = torch.manual_seed(0)
        >>> lg = pv.LinearGaussianVAE(input_dim=3, latent_dim=1)
        >>> x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
        >>> frame = pv.bdmc(lg, x, num_steps=50, num_chains=4, leapfrog_steps=2, seed=0)
        >>> list(frame.columns[:3]), len(frame)
        (['lower', 'upper', 'gap'], 4)
    """
    t0 = time.perf_counter()
    program, rows, seed, info, cfg, bar = start(
        model,
        guide,
        x,
        num_steps,
        num_chains,
        leapfrog_steps,
        init,
        schedule,
        target_accept,
        batch_size,
        tune_chains,
        fast,
        data_plate,
        seed,
        generator,
        progress,
        "BDMC",
        passes=2,
    )
    with sandbox(program, seed, rows[0].device), bar:
        sim, z = simulate(program, rows, info)
        fwd, rev = run_ais(program, sim, info, cfg, bar, exact=z)
    settings = cfg.public(seed, schedule)
    lower = ais_result(*fwd, 1.0, settings, 0.0, rows[0].dtype)
    upper = ais_result(*rev, -1.0, settings, 0.0, rows[0].dtype)
    frame = pd.DataFrame(
        {
            "lower": lower.log_likelihood.double().cpu().numpy(),
            "upper": upper.log_likelihood.double().cpu().numpy(),
        }
    )
    frame["gap"] = frame["upper"] - frame["lower"]
    frame.attrs.update(
        settings=settings,
        seconds=time.perf_counter() - t0,
        acceptance=[float(lower.acceptance.mean()), float(upper.acceptance.mean())],
    )
    return (frame, sim) if return_simulated else frame
