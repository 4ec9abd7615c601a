"""Stochastic variational inference for a VAE: the training loop.

For a data set of N points and a mini-batch B, the objective's loss on the batch
is scaled by N / |B| (the scale of every site in model and guide, i.e. over the
data plate), so each step is an unbiased estimate of the full-data negative
ELBO and its gradient (Hoffman et al., 2013):

    loss(B) = -(N / |B|) sum_{n in B} ELBO_n,      ELBO_n = E_q[log p(x_n, z) - log q(z | x_n)]

The network parameters are updated by a plain ``torch.optim.Adam`` (the fused
single-kernel implementation where the device has one) on the module's own
parameters; Pyro's ``pyro.module`` registrations run inside a scoped parameter
store, so nothing leaks into (or is read from) the global one and two models can
be trained in one process.

Reproducibility: every epoch re-seeds its own random streams from
``(seed, epoch)`` inside :func:`torch.random.fork_rng`, so the same seed gives
the same history on CPU, resuming from a checkpoint gives the same numbers as
an uninterrupted run, and the caller's global RNG is left as it was.

Safety: a non-finite loss stops training; the model is put back to the state at
the end of the last good epoch (which is also the last checkpoint on disk) and
:class:`TrainingDiverged` names the epoch and step. On the CPU every step is
checked before the update; on CUDA the check reads the losses back in blocks of
steps (no host sync per step), and on a bad one also puts the optimizer back to
the end of the last good epoch, naming the same step.

Speed (the ``fast=`` argument of :func:`fit`). The model and guide stay the single
definition; what changes is how much of Pyro runs per step:

* ``"off"``: ``objective.loss(model, guide, x)``, i.e. Pyro's
  ``Trace_ELBO``/``TraceMeanField_ELBO.differentiable_loss`` (full traces, replay,
  ``compute_log_prob`` of every site, score parts, ``.item()`` per site).
* ``"eager"``: :func:`fast_elbo_loss`: the same two programs run under one light
  messenger that scales, replays the guide's latents into the model and records
  the sample sites, and the surrogate is summed in Pyro's own order from the same
  ``log_prob``/``kl_divergence`` calls: the same number and gradients (checked
  against Pyro's ELBO on the first batch before training starts).
* ``"graph"``: the eager step (loss and ``autograd.grad``) is captured once per batch
  shape with ``make_fx`` into an ATen graph and replayed with no Python or Pyro
  work; it draws the same random numbers and gives the same values.
* ``"compile"``: that graph compiled by ``torch.compile`` (Inductor, fused kernels;
  random numbers still from PyTorch's generator). Costs tens of seconds per shape.
* ``"auto"`` (default): ``"graph"`` for batch shapes run often enough to repay the
  capture (``CAPTURE_MIN_STEPS``) when the model and guide are the library's own
  (:class:`~ppl_vae.models.VAE` and its likelihoods); ``"eager"`` otherwise. A graph
  replays tensor operations only: Python side effects in a user's program (counters,
  prints, state on ``self``) would not run, so user programs get graphs only when asked.

The fast ELBO (``"eager"``) applies to ``trace`` and ``analytic`` (one particle, any KL
weight; graphs only at weight 1) when the guide's latent sites are all reparameterised, not
enumerated and all in the model. The importance-weighted objectives (``iwae``, ``renyi``:
:class:`~ppl_vae.objectives.VectorizedRenyiELBO`) get graphs of their own Pyro loss
(``"graph"``/``"compile"``/``"auto"`` as above; ``"eager"`` is Pyro's loss there). Every graph
is replayed once against the eager step on the same random numbers before it is used (loss
and gradients to 1e-6 relative; 1e-3 compiled) and dropped, with a warning, if they differ.
Anything else, including a user's model/guide that breaks these assumptions, runs on
Pyro's ELBO as before, with no error.

Data-parallel training: under ``torchrun`` (or inside an initialised
``torch.distributed`` process group) :func:`fit` trains with
``DistributedDataParallel``; see :mod:`ppl_vae.distributed` for the semantics.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.enum import get_importance_trace
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch import nn
from torch.distributions import kl_divergence
from tqdm import tqdm

from .checkpoint import load_model_state, load_optimizer_state, read_config, save_checkpoint
from .compiled import inductor_random
from .data import Dataset
from .distributed import DistContext, parameters_in_sync
from .distributed import setup as setup_distributed
from .likelihoods import LIKELIHOODS
from .models import VAE
from .objectives import Objective, VectorizedRenyiELBO, parse_objective, scale_latents

FAST_MODES = ("auto", "graph", "eager", "compile", "off")
#: ``fast="auto"`` captures a graph for a batch shape when a fit call runs it this often.
CAPTURE_MIN_STEPS = 300
#: Adam is fused on the CPU only for models with at least this many parameters.
FUSED_ADAM_MIN_CPU = 1 << 17
#: On CUDA the NaN guard reads the losses back once per this many steps.
CUDA_CHECK_EVERY = 32


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model was restored to the last good epoch."""


class History(list):
    """Per-epoch records (dicts with ``epoch``, ``step``, ``train_elbo``, ``test_elbo``, ``seconds``, ...)."""

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self))

    #: the training state (optimizer, epoch, step, parameters) of the fit call that returned it
    state: Any = None

    @property
    def final_test_elbo(self) -> float | None:
        return self[-1].get("test_elbo") if self else None


@dataclass
class TrainState:
    """What ``fit`` keeps on the model between calls, so a second call continues training."""

    epoch: int = 0
    step: int = 0
    history: History = field(default_factory=History)
    optimizer: torch.optim.Optimizer | None = None
    objective: str | None = None
    seed: int = 0
    engine: Any = field(default=None, repr=False)  # the fast step (checked program, captured graphs)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but torch sees no CUDA device: use device='cpu' or 'auto'")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from None


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919) % (2**63 - 1)


def _as_dataset(data: Dataset | torch.Tensor, test_data: torch.Tensor | None) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, torch.Tensor):
        return Dataset.from_tensors(data, test_data, name="tensor", test_fraction=0.0)
    raise TypeError(f"data must be a ppl_vae Dataset or a torch.Tensor (N, D); got {type(data).__name__}")


def _rng_devices(dev: torch.device) -> list[torch.device]:
    return [dev] if dev.type == "cuda" else []


@torch.no_grad()
def mean_elbo(
    vae: VAE, x: torch.Tensor, batch_size: int = 1024, seed: int = 0
) -> float:
    """Mean ELBO in nats per data point with the closed-form KL, one sample of z per point.

    The fixed ``seed`` makes per-epoch test values comparable across epochs and methods.
    """
    if x is None or len(x) == 0:
        return float("nan")
    return -_elbo_sum(vae, x, batch_size, seed) / len(x)


@torch.no_grad()
def _elbo_sum(vae: VAE, x: torch.Tensor, batch_size: int = 1024, seed: int = 0) -> float:
    elbo = TraceMeanField_ELBO(max_plate_nesting=1)
    total = 0.0
    with torch.random.fork_rng(devices=_rng_devices(x.device)), pyro.validation_enabled(False):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            total += elbo.loss(vae.model, vae.guide, x[start : start + batch_size])
    return total


# ====================================================================== the fast ELBO
class _SiteRecorder(Messenger):
    """One light pass over a Pyro program: scale every site, replay latents, record sample sites.

    Stands in for ``poutine.trace(poutine.replay(poutine.scale(...)))``: it multiplies each
    sample site's scale by the mini-batch ``scale`` (latent sites also by ``latent_weight``,
    as :class:`~ppl_vae.objectives.scale_latents` does), replays the latent values of
    ``replay`` (the guide's sites) like ``poutine.replay``, and keeps the final messages.
    """

    def __init__(self, scale: float = 1.0, latent_weight: float = 1.0, replay: dict[str, dict] | None = None) -> None:
        super().__init__()
        self.scale = scale
        self.latent_weight = latent_weight
        self.replay = replay
        self.sites: dict[str, dict[str, Any]] = {}

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "sample":
            return
        if self.replay is not None and not msg["is_observed"]:
            guide_msg = self.replay.get(msg["name"])
            if guide_msg is not None:
                msg["done"] = True
                msg["value"] = guide_msg["value"]
                msg["infer"] = guide_msg["infer"]
        if isinstance(msg["fn"], _Subsample):
            return
        if not msg["is_observed"] and self.latent_weight != 1.0:
            msg["scale"] = self.latent_weight * msg["scale"]
        if self.scale != 1.0:
            msg["scale"] = self.scale * msg["scale"]

    def _postprocess_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "sample" or isinstance(msg["fn"], _Subsample):
            return
        if msg["name"] in self.sites:
            raise RuntimeError(f"Multiple sample sites named '{msg['name']}'")
        self.sites[msg["name"]] = msg


def _log_prob_sum(site: dict[str, Any]) -> torch.Tensor:
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, site["scale"], site["mask"]).sum()


def _surrogate_loss(model_sites: dict, guide_sites: dict, analytic: bool) -> torch.Tensor:
    """Minus the surrogate ELBO, summed in the order of Pyro's ``_differentiable_loss_particle``."""
    elbo: Any = 0.0
    if not analytic:  # Trace_ELBO: log p over the model's sites, minus log q over the guide's
        for site in model_sites.values():
            elbo = elbo + _log_prob_sum(site)
        for site in guide_sites.values():
            elbo = elbo - _log_prob_sum(site)
        return -elbo
    for name, site in model_sites.items():  # TraceMeanField_ELBO: closed-form KL where registered
        if site["is_observed"]:
            elbo = elbo + _log_prob_sum(site)
            continue
        guide_site = guide_sites[name]
        try:
            kl = kl_divergence(guide_site["fn"], site["fn"])
        except NotImplementedError:
            elbo = elbo + _log_prob_sum(site) - _log_prob_sum(guide_site)
            continue
        kl = scale_and_mask(kl, guide_site["scale"], guide_site["mask"])
        if torch.is_tensor(kl):
            elbo = elbo - kl.sum()
        else:
            elbo = elbo - kl * torch.Size(guide_site["fn"].batch_shape).numel()
    return -elbo


def fast_elbo_loss(
    model: Callable, guide: Callable, x: torch.Tensor, *, analytic: bool, scale: float = 1.0,
    latent_weight: float = 1.0,
) -> torch.Tensor:
    """The differentiable negative ELBO of ``model``/``guide`` on ``x`` without Pyro's trace machinery.

    Equal (same samples, same value, same gradients) to
    ``Trace_ELBO().differentiable_loss`` (``analytic=False``) or
    ``TraceMeanField_ELBO().differentiable_loss`` (``analytic=True``) under
    ``poutine.scale(scale)`` and ``scale_latents(latent_weight)``, for one particle and a guide
    whose latent sites are reparameterised, not enumerated and all present in the model
    (:func:`fast_path_problem` says whether a pair qualifies).
    """
    guide_run = _SiteRecorder(scale, latent_weight)
    with guide_run:
        guide(x)
    model_run = _SiteRecorder(scale, latent_weight, replay=guide_run.sites)
    with model_run:
        model(x)
    return _surrogate_loss(model_run.sites, guide_run.sites, analytic)


def _structure_problem(model_sites: dict, guide_sites: dict) -> str | None:
    for name, site in guide_sites.items():
        if site["is_observed"]:
            return f"the guide observes site {name!r}"
        if site["infer"].get("enumerate"):
            return f"guide site {name!r} is enumerated"
        if not getattr(site["fn"], "has_rsample", False):
            return f"guide site {name!r} ({type(site['fn']).__name__}) has no reparameterised sampler"
        if name not in model_sites:
            return f"guide site {name!r} is not in the model (auxiliary)"
    for name, site in model_sites.items():
        if site["infer"].get("enumerate"):
            return f"model site {name!r} is enumerated"
        if not site["is_observed"] and name not in guide_sites:
            return f"model site {name!r} is not in the guide"
    return None


def _sample_nodes(trace: Any) -> dict[str, dict[str, Any]]:
    return {name: site for name, site in trace.nodes.items() if site["type"] == "sample"}


def fast_path_problem(
    model: Callable, guide: Callable, x: torch.Tensor, *, analytic: bool, params: list[torch.Tensor],
    scale: float = 1.0,
) -> str | None:
    """Check once whether :func:`fast_elbo_loss` may stand in for Pyro's ELBO on this pair.

    Runs Pyro's own trace with validation on (site shapes, model/guide match), checks the
    structure, then compares loss and gradients with Pyro's ``differentiable_loss`` on the
    same samples. Returns None when the fast path applies, else the reason it does not.
    The caller's random state is left as it was.
    """
    devices = _rng_devices(x.device)
    with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(20_150_923)
        try:
            with pyro.validation_enabled(True), poutine.scale(scale=scale):
                model_trace, guide_trace = get_importance_trace("flat", 1, model, guide, (x,), {})
        except Exception as err:  # noqa: BLE001 - any failure means: use Pyro's ELBO as before
            return f"Pyro's checks failed on the first batch ({type(err).__name__}: {err})"
        problem = _structure_problem(_sample_nodes(model_trace), _sample_nodes(guide_trace))
        if problem is not None:
            return problem
        elbo = (TraceMeanField_ELBO if analytic else Trace_ELBO)(max_plate_nesting=1)
        with pyro.validation_enabled(False):
            torch.manual_seed(7)
            with poutine.scale(scale=scale):
                ref = elbo.differentiable_loss(model, guide, x)
            torch.manual_seed(7)
            try:
                fast = fast_elbo_loss(model, guide, x, analytic=analytic, scale=scale)
            except Exception as err:  # noqa: BLE001
                return f"the fast ELBO failed ({type(err).__name__}: {err})"
        if not _same_loss_and_grads(ref, fast, params, rtol=1e-5):
            return "the fast ELBO does not reproduce Pyro's loss and gradients on the first batch"
    return None


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor | None]:
    if not loss.requires_grad:
        return [None] * len(params)
    return list(torch.autograd.grad(loss, params, allow_unused=True))


def _close(a: torch.Tensor | None, b: torch.Tensor | None, rtol: float) -> bool:
    if a is None or b is None:
        return (a is None or not a.any()) and (b is None or not b.any())
    atol = rtol * max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def _same_loss_and_grads(a: torch.Tensor, b: torch.Tensor, params: list[torch.Tensor], rtol: float) -> bool:
    if not (torch.isfinite(a) and torch.isfinite(b)):
        return False
    if not math.isclose(float(a), float(b), rel_tol=rtol, abs_tol=rtol):
        return False
    return all(_close(ga, gb, rtol) for ga, gb in zip(_grads(a, params), _grads(b, params), strict=True))


class ELBOLoss(nn.Module):
    """``forward(x, scale, latent_weight)`` -> the objective's differentiable loss on a batch.

    Its parameters are the VAE's: the module wrapped by ``DistributedDataParallel`` and
    captured by the graph path. ``fast=True`` computes :func:`fast_elbo_loss`; otherwise
    ``objective.loss`` under ``poutine.scale`` and :class:`~ppl_vae.objectives.scale_latents`.
    """

    def __init__(self, vae: VAE, objective: Objective, fast: bool) -> None:
        super().__init__()
        self.vae = vae
        self.objective = objective
        self.fast = fast
        self.analytic = isinstance(objective.elbo, TraceMeanField_ELBO)

    def forward(self, x: torch.Tensor, scale: float = 1.0, latent_weight: float = 1.0) -> torch.Tensor:
        if self.fast:
            return fast_elbo_loss(self.vae.model, self.vae.guide, x, analytic=self.analytic,
                                  scale=scale, latent_weight=latent_weight)
        with poutine.scale(scale=scale):
            return _loss_with_kl_weight(self.objective, self.vae, x, latent_weight)


def fast_path_supports(objective: Objective) -> bool:
    """Whether an objective is one the fast ELBO reproduces (``trace``/``analytic``, one particle)."""
    return (
        type(objective.elbo) in (Trace_ELBO, TraceMeanField_ELBO)
        and objective.elbo.num_particles == 1
        and type(objective).loss is Objective.loss
    )


def graph_path_supports(objective: Objective) -> bool:
    """Whether the training step can be captured as a graph: the fast ELBO's objectives, and the
    importance-weighted ones (``iwae``/``renyi``), whose own Pyro loss is captured."""
    return fast_path_supports(objective) or (
        type(objective.elbo) is VectorizedRenyiELBO and type(objective).loss is Objective.loss
    )


class _FastEngine:
    """The fast step for one VAE and objective: checked once, then eager or captured per batch shape.

    For the fast ELBO's objectives the eager step is :func:`fast_elbo_loss`; for the
    importance-weighted ones it is the objective's own Pyro loss (nothing to check).
    """

    def __init__(self, vae: VAE, objective: Objective, mode: str) -> None:
        self.vae = vae
        self.objective = objective
        self.mode = mode
        self.module = ELBOLoss(vae, objective, fast=fast_path_supports(objective))
        self.problem: str | None = None
        self.checked = False
        self.graphs: dict[tuple, Callable | None] = {}
        self.planned: dict[tuple, int] = {}
        self.refresh()

    def check(self, x: torch.Tensor, scale: float) -> bool:
        """Whether the fast ELBO stands in for Pyro's on this VAE (decided once, on a copy of it)."""
        if not self.module.fast:
            return True  # the eager step is the objective's own loss
        if not self.checked:
            saved = self.vae.__dict__.pop("_train_state", None)  # not the optimizer, graphs, ...
            try:  # a copy, so that a program with side effects (counters, ...) does not see extra calls
                probe = copy.deepcopy(self.vae)
            except Exception:  # noqa: BLE001
                probe = self.vae
            finally:
                if saved is not None:
                    self.vae._train_state = saved
            params = [p for p in probe.parameters() if p.requires_grad]
            self.problem = fast_path_problem(probe.model, probe.guide, x, analytic=self.module.analytic,
                                             params=params, scale=scale)
            self.checked = True
        return self.problem is None

    def pure_programs(self) -> bool:
        """The library's own model/guide/likelihood: programs with no Python state between calls."""
        return (type(self.vae).model is VAE.model and type(self.vae).guide is VAE.guide
                and type(self.vae.likelihood) in LIKELIHOODS.values())

    # -------------------------------------------------------------- graphs
    def refresh(self) -> None:
        """Re-read the module's parameters and buffers (the tensors a graph takes, in this order)."""
        params = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        buffers = list(self.module.named_buffers())
        names = [n for n, _ in params + buffers]
        if names != getattr(self, "names", names):
            self.graphs.clear()  # graphs take the tensors in this order
        self.names = names
        self.tensors = [t for _, t in params + buffers]
        self.n_params = len(params)

    def graph_for(self, x: torch.Tensor, scale: float) -> Callable | None:
        """The captured (or compiled) step for this batch shape, or None where it does not pay/work."""
        if self.mode not in ("auto", "graph", "compile"):
            return None
        key = (tuple(x.shape), x.dtype, str(x.device), float(scale))
        if key in self.graphs:
            return self.graphs[key]
        if self.mode == "auto" and (self.planned.get(tuple(x.shape), 0) < CAPTURE_MIN_STEPS
                                    or not self.pure_programs()):
            return None
        self.graphs[key] = self._capture(x, scale)
        return self.graphs[key]

    def _capture(self, x: torch.Tensor, scale: float) -> Callable | None:
        from torch.func import functional_call
        from torch.fx.experimental.proxy_tensor import make_fx

        self.refresh()
        module, names, k = self.module, self.names, self.n_params

        def step(tensors: list[torch.Tensor], xb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
            loss = functional_call(module, dict(zip(names, tensors, strict=True)), (xb,), {"scale": scale})
            grads = torch.autograd.grad(loss, tensors[:k], allow_unused=True)
            grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads, strict=False)]
            return loss.detach(), grads

        example = [t.detach().requires_grad_(i < k) for i, t in enumerate(self.tensors)]
        try:
            with warnings.catch_warnings(), pyro.validation_enabled(False):
                warnings.simplefilter("ignore")
                graph = make_fx(step, tracing_mode="fake", _allow_non_fake_inputs=True)(example, x)
            graph.graph.eliminate_dead_code()  # e.g. the plate's unused index tensors
            graph.recompile()
        except Exception as err:  # noqa: BLE001 - data-dependent Python, unsupported ops: stay eager
            warnings.warn(f"ppl_vae.fit: could not capture the training step as a graph ({type(err).__name__}: "
                          f"{err}); running it eagerly", RuntimeWarning, stacklevel=3)
            return None
        run: Callable = graph
        if self.mode == "compile":
            run = torch.compile(graph, dynamic=False)
        if not self._verify(run, x, scale):
            warnings.warn("ppl_vae.fit: the captured training step does not reproduce the eager step; "
                          "running it eagerly", RuntimeWarning, stacklevel=3)
            return None
        return run

    def _random_as_eager(self) -> Any:
        """Inductor draws random numbers its own way unless told to call PyTorch's generator."""
        return inductor_random() if self.mode == "compile" else contextlib.nullcontext()

    def _verify(self, run: Callable, x: torch.Tensor, scale: float) -> bool:
        """Replay the graph and the eager step on the same random numbers; compare loss and gradients."""
        params = self.tensors[: self.n_params]
        devices = _rng_devices(x.device)
        with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
            torch.manual_seed(11)
            eager = self.module(x, scale=scale)
            eager_grads = _grads(eager, params)
            torch.manual_seed(11)
            try:
                with torch.no_grad(), self._random_as_eager():
                    loss, grads = run(self.tensors, x)
            except Exception:  # noqa: BLE001
                return False
        rtol = 1e-6 if self.mode != "compile" else 1e-3
        if not math.isclose(float(loss), float(eager.detach()), rel_tol=rtol, abs_tol=rtol):
            return False
        return all(_close(a, b, rtol) for a, b in zip(grads, eager_grads, strict=True))

    def run_graph(self, run: Callable, x: torch.Tensor) -> torch.Tensor:
        """One step's loss, with the gradients written into ``.grad`` of the VAE's parameters."""
        with torch.no_grad(), self._random_as_eager():
            loss, grads = run(self.tensors, x)
        for p, g in zip(self.tensors, grads, strict=False):
            p.grad = g
        return loss


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where this torch and device support it and it pays.

    On the CPU the fused kernel always opens an OpenMP parallel region; for a small model
    (under ``FUSED_ADAM_MIN_CPU`` parameters) that costs more than it saves, and on a busy
    machine the region waits for a descheduled thread (tens of milliseconds per step), while the
    plain implementation's small element-wise ops stay on one thread.
    """
    if all(p.device.type == "cpu" for p in params) and sum(p.numel() for p in params) < FUSED_ADAM_MIN_CPU:
        return torch.optim.Adam(params, lr=lr)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ====================================================================== fit
def fit(
    vae: VAE,
    data: Dataset | torch.Tensor,
    objective: str | Objective = "analytic",
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "auto",
    test_data: torch.Tensor | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    time_budget: float | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    fast: str = "auto",
) -> History:
    """Train ``vae`` by SVI on ``data`` and return the per-epoch history.

    Args:
        vae: the model (its ``model``/``guide`` Pyro programs are trained).
        data: a :class:`~ppl_vae.data.Dataset` (train and test splits, binarisation) or a
            tensor ``(N, D)`` of training data (then ``test_data`` is optional).
        objective: a name such as ``"trace"``, ``"analytic"`` (see :mod:`ppl_vae.objectives`).
        epochs: number of further epochs to run (a second call continues where the first stopped).
        batch_size: mini-batch size; the last batch of an epoch may be smaller. Under
            data-parallel training, the global batch over all ranks.
        lr: Adam learning rate.
        seed: seeds shuffling, dynamic binarisation and the samples of z, per epoch.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        checkpoint_dir: if given, a checkpoint is written atomically after every epoch.
        resume: load the weights, optimizer and history from ``checkpoint_dir`` first.
        progress: show a progress bar.
        time_budget: stop after the epoch in which this many seconds of training have passed.
        callback: called with each epoch's record.
        fast: how the ELBO is evaluated: ``"auto"`` (default), ``"graph"``, ``"eager"``,
            ``"compile"`` or ``"off"`` (Pyro's ELBO every step); see the module docstring.
            Every mode trains the same model/guide to the same objective.

    Returns:
        :class:`History`: ``train_elbo`` is the training objective's bound averaged over the
        epoch's batches (nats per point, as the parameters moved); ``test_elbo`` is the
        closed-form-KL ELBO on the test split at the end of the epoch (nats per point).

    Raises:
        ValueError: bad data or arguments (named in the message).
        TrainingDiverged: the loss became non-finite (model restored to the last good epoch).
    """
    for arg, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if arg == "epochs" else 1):
            raise ValueError(f"{arg} must be a {'non-negative' if arg == 'epochs' else 'positive'} integer; got {value!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number; got {lr!r}")
    if fast not in FAST_MODES:
        raise ValueError(f"fast must be one of {FAST_MODES}; got {fast!r}")
    dataset = _as_dataset(data, test_data)
    obj = parse_objective(objective)
    dev = resolve_device(device)

    # validate once at the boundary; the hot loop then runs with validation off
    train_x = vae.check_data(dataset.train, "data.train")
    test_x = vae.check_data(dataset.test, "data.test") if dataset.test is not None and len(dataset.test) else None
    if dataset.meta.binarize == "dynamic":
        vae.check_data(dataset.train_probs.clamp(0, 1).round(), "data.train_probs")

    ctx = setup_distributed(dev)
    return _fit(vae, dataset, obj, train_x, test_x, ctx, epochs=epochs, batch_size=batch_size, lr=lr,
                seed=seed, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                time_budget=time_budget, callback=callback, fast=fast)


def _fit(
    vae: VAE, dataset: Dataset, obj: Objective, train_x: torch.Tensor, test_x: torch.Tensor | None,
    ctx: DistContext, *, epochs: int, batch_size: int, lr: float, seed: int,
    checkpoint_dir: str | Path | None, resume: bool, progress: bool, time_budget: float | None,
    callback: Callable[[dict[str, Any]], None] | None, fast: str,
) -> History:
    dev = ctx.device
    world, rank = ctx.world_size, ctx.rank
    dataset = dataset.to(dev)
    vae.to(dev)
    if test_x is not None:
        test_x = test_x.to(dev)

    state: TrainState = getattr(vae, "_train_state", None) or TrainState(seed=seed)
    params = [p for p in vae.parameters()]
    if state.optimizer is None or any(
        p.device != dev for g in state.optimizer.param_groups for p in g["params"]
    ):
        state.optimizer = _adam(params, lr)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir (where the run's checkpoint is)")
        _resume(vae, state, Path(checkpoint_dir), dev)
    vae._train_state = state
    state.objective = obj.spec
    optimizer = state.optimizer

    # the fast step: kept on the train state so that a second fit call reuses its checks and graphs
    engine: _FastEngine | None = None
    if fast != "off" and graph_path_supports(obj):
        engine = state.engine
        if not (isinstance(engine, _FastEngine) and engine.vae is vae and engine.mode == fast
                and engine.objective.spec == obj.spec):
            engine = _FastEngine(vae, obj, fast)
        state.engine = engine
        engine.refresh()

    n = train_x.shape[0]
    scale = float(n)
    if engine is not None:
        full, last = divmod(n, batch_size)
        engine.planned = {(batch_size, train_x.shape[1]): full * epochs, (last, train_x.shape[1]): epochs}

    ddp = None
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel

        use_fast = (engine is not None and engine.module.fast
                    and engine.check(dataset.train[:batch_size], scale / min(batch_size, n)))
        loss_module = ELBOLoss(vae, obj, fast=use_fast)
        ddp = DistributedDataParallel(loss_module, device_ids=[dev] if dev.type == "cuda" else None)

    lazy_guard = dev.type == "cuda" and ddp is None
    good = _clone_state(vae)
    good_optimizer = copy.deepcopy(optimizer.state_dict()) if lazy_guard else None
    main = ctx.is_main
    started = time.perf_counter()
    bar = tqdm(total=epochs, desc=f"fit {obj.spec}", unit="epoch", disable=not (progress and main), leave=False)
    try:
        with pyro.get_param_store().scope(), torch.random.fork_rng(devices=_rng_devices(dev)), \
                pyro.validation_enabled(False):
            for _ in range(epochs):
                epoch = state.epoch + 1
                epoch_seed = _epoch_seed(seed, epoch)
                # rank 0 draws z from the single-process stream; other ranks from their own
                torch.manual_seed(epoch_seed if rank == 0 else _epoch_seed(epoch_seed, rank))
                gen = torch.Generator().manual_seed(epoch_seed + 1)
                x_epoch = dataset.resample_train(gen)  # the same draw on every rank
                perm = torch.randperm(n, generator=gen).to(dev)
                epoch_start_step = state.step
                t0 = time.perf_counter()
                vae.train()
                total = 0.0
                pending: list[tuple[torch.Tensor, int, int]] = []  # CUDA: (loss, rows, batch start)
                for batch_start in range(0, n, batch_size):
                    idx = perm[batch_start : batch_start + batch_size]
                    rows = len(idx)
                    if ddp is not None and rows < world:
                        continue  # a last batch too small to give every rank a row (at most world-1 rows)
                    step_scale = scale / rows
                    weight = obj.kl_weight(state.step, epoch)
                    if ddp is not None:
                        xb = x_epoch[ctx.shard(idx)]
                        optimizer.zero_grad(set_to_none=True)
                        loss = ddp(xb, scale=world * step_scale, latent_weight=weight)
                        loss.backward()
                        loss = ctx.all_reduce_sum(loss.detach().reshape(1))[0] / world
                    else:
                        xb = x_epoch[idx]
                        loss = _step(engine, obj, vae, optimizer, xb, step_scale, weight)
                    if lazy_guard:
                        pending.append((loss.detach(), rows, batch_start))
                        if len(pending) % CUDA_CHECK_EVERY == 0:
                            _check_pending(pending, epoch, epoch_start_step, vae, optimizer, good,
                                           good_optimizer, state, checkpoint_dir)
                        optimizer.step()
                        state.step += 1
                        continue
                    value = float(loss)
                    if not math.isfinite(value):
                        vae.load_state_dict(good)
                        raise TrainingDiverged(_diverged_message(value, epoch, state.step + 1, batch_start,
                                                                 state.epoch, checkpoint_dir))
                    optimizer.step()
                    state.step += 1
                    total += value * rows
                if lazy_guard:
                    total = _check_pending(pending, epoch, epoch_start_step, vae, optimizer, good,
                                           good_optimizer, state, checkpoint_dir)
                    torch.cuda.synchronize(dev)
                seconds = time.perf_counter() - t0
                vae.eval()
                record = {
                    "epoch": epoch,
                    "step": state.step,
                    "train_elbo": -total / (scale * n),
                    "test_elbo": _test_elbo(vae, test_x, seed, ctx) if test_x is not None else None,
                    "seconds": seconds,
                    "kl_weight": obj.kl_weight(max(state.step - 1, 0), epoch),  # the epoch's last step
                    "objective": obj.spec,
                }
                if ddp is not None:
                    record["world_size"] = world
                    if not parameters_in_sync(vae, ctx):
                        raise RuntimeError(f"data-parallel replicas hold different parameters after epoch {epoch}")
                state.epoch = epoch
                state.history.append(record)
                good = _clone_state(vae)
                if lazy_guard:
                    good_optimizer = copy.deepcopy(optimizer.state_dict())
                if checkpoint_dir is not None and main:
                    save_checkpoint(
                        checkpoint_dir, vae, optimizer=optimizer,
                        training=training_summary(state, lr=lr, batch_size=batch_size),
                        data_meta=dataset.meta.to_dict(),
                    )
                if callback is not None:
                    callback(record)
                bar.update(1)
                bar.set_postfix(train=f"{record['train_elbo']:.2f}", test=f"{record['test_elbo'] or float('nan'):.2f}")
                if time_budget is not None and ctx.any(time.perf_counter() - started >= time_budget):
                    break
    finally:
        bar.close()
    state.history.state = state
    return state.history


def _step(
    engine: _FastEngine | None, obj: Objective, vae: VAE, optimizer: torch.optim.Optimizer,
    xb: torch.Tensor, step_scale: float, weight: float,
) -> torch.Tensor:
    """Loss of one batch, with its gradients left in the parameters' ``.grad``."""
    if engine is not None and engine.check(xb, step_scale):
        run = engine.graph_for(xb, step_scale) if weight == 1.0 else None
        if run is not None:
            return engine.run_graph(run, xb)
        loss = engine.module(xb, scale=step_scale, latent_weight=weight)
    else:
        with poutine.scale(scale=step_scale):
            loss = _loss_with_kl_weight(obj, vae, xb, weight)
    optimizer.zero_grad(set_to_none=True)
    if loss.requires_grad:
        loss.backward()
    return loss.detach()


def _check_pending(
    pending: list[tuple[torch.Tensor, int, int]], epoch: int, epoch_start_step: int, vae: VAE,
    optimizer: torch.optim.Optimizer, good: dict[str, torch.Tensor], good_optimizer: dict | None,
    state: TrainState, checkpoint_dir: str | Path | None,
) -> float:
    """CUDA NaN guard: read this epoch's losses back at once; on a bad one restore and raise."""
    if not pending:
        return 0.0
    losses = torch.stack([loss.reshape(()) for loss, _, _ in pending]).double()
    rows = torch.tensor([r for _, r, _ in pending], dtype=torch.float64, device=losses.device)
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return float((losses * rows).sum())
    j = int((~finite).nonzero()[0])
    vae.load_state_dict(good)
    if good_optimizer is not None:
        optimizer.load_state_dict(good_optimizer)
    state.step = epoch_start_step + j
    raise TrainingDiverged(_diverged_message(float(losses[j]), epoch, state.step + 1, pending[j][2],
                                             state.epoch, checkpoint_dir))


def _diverged_message(value: float, epoch: int, step: int, batch_start: int, good_epoch: int,
                      checkpoint_dir: str | Path | None) -> str:
    where = f" (last good checkpoint: {checkpoint_dir}, epoch {good_epoch})" if checkpoint_dir else ""
    return (
        f"loss became {value} at epoch {epoch}, step {step} "
        f"(batch starting at row {batch_start} of the shuffled epoch); training stopped "
        f"and the model was restored to the end of epoch {good_epoch}{where}. "
        "Try a smaller lr or check the data"
    )


def _test_elbo(vae: VAE, test_x: torch.Tensor, seed: int, ctx: DistContext) -> float:
    if not ctx.active:
        return mean_elbo(vae, test_x, seed=seed)
    shard = ctx.shard(torch.arange(len(test_x), device=test_x.device))
    part = _elbo_sum(vae, test_x[shard], seed=seed) if len(shard) else 0.0
    total = ctx.all_reduce_sum(torch.tensor([part], dtype=torch.float64, device=ctx._comm_device()))
    return -float(total[0]) / len(test_x)


def _loss_with_kl_weight(obj: Objective, vae: VAE, xb: torch.Tensor, weight: float) -> torch.Tensor:
    if weight == 1.0:
        return obj.loss(vae.model, vae.guide, xb)
    with scale_latents(weight):
        return obj.loss(vae.model, vae.guide, xb)


def training_summary(state: TrainState, **settings: Any) -> dict[str, Any]:
    """The JSON-able part of a :class:`TrainState` (for checkpoints and metrics.json)."""
    return {
        "epoch": state.epoch,
        "step": state.step,
        "seed": state.seed,
        "objective": state.objective,
        "history": list(state.history),
        **settings,
    }


def _resume(vae: VAE, state: TrainState, directory: Path, dev: torch.device) -> None:
    config = read_config(directory)
    load_model_state(directory, vae, dev)
    load_optimizer_state(directory, state.optimizer, dev)
    training = config.get("training", {})
    state.epoch = int(training.get("epoch", 0))
    state.step = int(training.get("step", 0))
    state.history = History(training.get("history", []))
