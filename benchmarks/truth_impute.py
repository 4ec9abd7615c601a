"""The truth-test figures of issue 21, over several seeds: what ``tests/test_impute.py`` asserts, printed.

    python benchmarks/truth_impute.py            # 5 seeds, about a minute on two cores
    python benchmarks/truth_impute.py --seeds 10

On a linear-Gaussian model (D = 5, d = 2) with 30 % of cells missing completely at random, whose
``LinearGaussianVAE`` gives the exact ``log p(x_obs)``, ``p(x_mis | x_obs)`` and ``p(z | x_obs)``, and a
guide that is the exact ``p(z | x_obs)`` shifted and widened (``tests/programs/exact.py``), per seed:

* **IW log p(x_obs)** (K = 8000, 100 rows): the largest |IW - exact| (target < 0.02 nats), the largest s.e.,
  and the s.d. of (IW - exact) / s.e. (1 when the s.e. is honest);
* **SNIS single imputation** (K = 2000, 200 rows): largest |error / s.e.| against the exact
  ``E[x_mis | x_obs]`` and the s.d. of error / s.e.; the predictive s.d. over the exact conditional s.d.;
* **SIR draws** (M = 40): the largest |sample cov - exact cov| in Wishart s.e., pooled per mask pattern;
* **categorical** (two 3-level columns, 1-D latent, quadrature): largest |error / s.e.| of the level
  probabilities and the s.d. of error / s.e.;
* **Rubin's rules** (proper imputations, 200 data sets): coverage of the 95 % interval, and of the naive
  interval of the conditional-mean single imputation.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ppl_vae as pv  # noqa: E402
from ppl_vae.estimators.impute import impute_cells  # noqa: E402
from tests.programs.exact import MaskedLinear, make_linear_vae, mcar  # noqa: E402
from tests.test_impute import TwoCategoricals  # noqa: E402
from tests.test_rubin import _proper_imputations  # noqa: E402


def linear(seed: int) -> dict[str, float]:
    vae = make_linear_vae()
    torch.manual_seed(seed)
    x = vae.marginal().sample((200,)).detach()
    mask = mcar(200, 5, 0.3, seed=seed)
    x = torch.where(mask, x, torch.zeros(()))
    with torch.no_grad():
        exact = vae.exact_observed_log_likelihood(x, mask)
        mean, cov = vae.exact_conditional(x, mask)
    k = 8000
    lw = pv.log_weights(MaskedLinear(vae, 0.1, 1.1), (x[:100], mask[:100]), k, seed=seed).double()
    err = lw.logsumexp(1) - math.log(k) - exact[:100].double()
    se = (torch.softmax(lw, 1).square().sum(1) - 1 / k).clamp_min(0).sqrt()
    out = impute_cells(
        MaskedLinear(vae, 0.3, 1.2), x, mask, num_samples=2000, multiple=40, seed=seed
    )
    z = ((out.mean - mean) / out.se)[~mask].double()
    sd_ratio = (out.sd / cov.diagonal(dim1=1, dim2=2).clamp_min(1e-30).sqrt())[~mask]
    return {
        "iw max |err|": float(err.abs().max()),
        "iw max se": float(se.max()),
        "iw sd(err/se)": float((err / se).std()),
        "snis max |z|": float(z.abs().max()),
        "snis sd(z)": float(z.std()),
        "sd ratio max |r-1|": float((sd_ratio - 1).abs().max()),
        "sir max |dcov|/se": _sir(out, mask, mean, cov),
    }


def _sir(out, mask, mean, cov) -> float:
    patterns, which = torch.unique(mask, dim=0, return_inverse=True)
    worst = 0.0
    for i, pattern in enumerate(patterns):
        m, rows = (~pattern).nonzero().flatten(), (which == i).nonzero().flatten()
        if len(m) < 2 or len(rows) < 4:
            continue
        res = (out.draws[:, rows][..., m] - mean[rows][:, m]).reshape(-1, len(m)).double()
        exact = cov[rows[0]][m][:, m].double()
        n_eff = len(res) / (1 + out.draws.shape[0] / float(out.row_ess[rows].min()))
        se = ((exact.square() + exact.diag()[:, None] * exact.diag()[None, :]) / n_eff).sqrt()
        worst = max(worst, float(((res.T @ res / len(res) - exact).abs() / se).max()))
    return worst


def categorical(seed: int) -> dict[str, float]:
    prog = TwoCategoricals()
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(300, generator=g)
    x = torch.nn.functional.one_hot(
        torch.distributions.Categorical(logits=prog.logits(z)).sample(), 3
    ).float()
    hole = torch.rand(300, generator=g) < 0.5
    mask = torch.stack([~hole, hole], 1)[..., None].expand(-1, -1, 3).clone()
    first = torch.nn.functional.one_hot(torch.zeros(300, 2, dtype=torch.long), 3).float()
    x = torch.where(mask, x, first)
    out = impute_cells(prog, x, mask, num_samples=1000, seed=seed)
    zs = ((out.mean - prog.exact_probabilities(x, mask)) / out.se)[~mask].double()
    return {"cat max |z|": float(zs.abs().max()), "cat sd(z)": float(zs.std())}


def rubin(seed: int, reps: int = 200, n: int = 60) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    covered = naive = 0
    for _ in range(reps):
        tables, single = _proper_imputations(rng, n, 10)
        low, high = pv.pool(tables, lambda t: (t.y.mean(), t.y.var() / n), dof=n - 1).interval()
        covered += int(low[0] < 1.0 < high[0])
        half = stats.t.ppf(0.975, n - 1) * single.std(ddof=1) / np.sqrt(n)
        naive += int(abs(single.mean() - 1.0) < half)
    return {"rubin coverage": covered / reps, "single-imputation coverage": naive / reps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [{**linear(s), **categorical(s), **rubin(s)} for s in range(args.seeds)]
    print(
        f"truth tests over {args.seeds} seeds (min .. max); torch threads: intra-op "
        f"{torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}"
    )
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"  {key:<28} {min(values):8.4f} .. {max(values):8.4f}")


if __name__ == "__main__":
    main()
