r"""The whole SVI step compiled as one unit: batch gather, noise, loss, gradients and Adam, on the device.

The other fast paths (:mod:`.fast`) stop at the gradients: the optimiser then runs as its own kernels,
the mini-batch is gathered by the loop, and the NaN guard reads every loss. Here one step is one
compiled call. For a batch of row indices ``idx``::

    batch = rows[idx]                                     # the gather, inside the graph
    loss  = -ELBO(params; batch), z = mu + sigma * eps     # the Pyro model/guide, eps from torch's generator
    g     = d loss / d params                             # the backward pass, traced
    m, v  = beta1 m + (1 - beta1) g, beta2 v + (1 - beta2) g^2          # Adam, in place
    param -= step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

The Pyro ``model``/``guide`` stay the single definition: the loss is the fast ELBO (or, for the
importance-weighted objectives, the objective's own Pyro loss) traced with ``make_fx`` into ATen
operations (:func:`~ppl_vae._torch_compat.capture`) together with ``autograd.grad`` and
:func:`adam_update` of ``torch.optim.Adam``'s own state tensors (``exp_avg``, ``exp_avg_sq``, ``step``:
checkpoints, resumes and the eager path see the same optimiser), then compiled by Inductor
(:func:`~ppl_vae._torch_compat.compile_step`), which fuses the element-wise work of loss, backward and
update around the matrix products. Random numbers come from PyTorch's generator, so the compiled step
draws what the eager step draws. The bias corrections of Adam are computed on the host per step (in
double precision, as ``torch.optim.Adam`` does) and passed in with the KL weight as one small tensor:
no recompilation when the learning rate, the step or an annealed KL weight changes.

**Checked before use.** Each compiled step (one per batch shape) is run once on copies of the
parameters and optimiser state and compared with the eager step on the same random numbers: the loss
(to 1e-4 relative), each gradient (recovered from Adam's first moment, to 1e-3 of its largest entry),
and each update against ``torch.optim.Adam``'s own (its functional form) applied to that gradient (to
1e-2 in norm; :meth:`FusedStep.verify`). The fast
ELBO itself is checked against Pyro's ELBO on the first batch (:meth:`.fast.FastEngine.check`).
Anything that does not hold falls back, with the reason (a warning, and ``history.meta``).

**The NaN guard** reads the losses in blocks (the update is already applied when a loss is known):
on a non-finite one the parameters *and* the optimiser go back to the last good epoch and the
message names the exact step (:class:`~.guard.Guard` in its lazy mode).

**CUDA**: the compiled step is captured in a CUDA graph (:mod:`.fused_cuda`: static parameter,
optimiser and data tensors; the indices and the per-step scalars copied into static buffers), replayed
per step; the replay is checked against the compiled step before use.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from torch.optim.adam import adam as functional_adam

from .._torch_compat import capture, compile_step
from .fused_cuda import CudaGraphStep

__all__ = ["FusedStep", "adam_problem"]

Rows = tuple[torch.Tensor, ...]

#: Agreement required between the compiled step and the eager step on the same random numbers.
LOSS_RTOL, MOMENT_RTOL, UPDATE_RTOL = 1e-4, 1e-3, 1e-2


def adam_problem(optimizer: Any) -> str | None:
    """Why the fused step cannot reproduce this optimiser's update, or None (plain Adam)."""
    if type(optimizer) is not torch.optim.Adam:
        return f"the optimiser is {type(optimizer).__name__}, not torch.optim.Adam"
    if len(optimizer.param_groups) != 1:
        return "the optimiser has several parameter groups"
    g = optimizer.param_groups[0]
    odd = [
        k
        for k, want in (
            ("amsgrad", False),
            ("maximize", False),
            ("differentiable", False),
            ("capturable", False),
            ("decoupled_weight_decay", False),
        )
        if g.get(k, want) != want
    ]
    if g.get("weight_decay", 0) != 0:
        odd.append("weight_decay")
    if any(torch.is_tensor(g.get(k)) for k in ("lr", "eps")) or any(
        torch.is_tensor(b) for b in g["betas"]
    ):
        odd.append("tensor hyper-parameters")
    return f"Adam options {odd} are not supported by the fused step" if odd else None


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _init_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """Create Adam's state for parameters that have none yet, as ``torch.optim.Adam`` does on its first step."""
    fused = bool(optimizer.param_groups[0].get("fused"))
    for p in params:
        st = optimizer.state[p]
        if len(st) == 0:
            st["step"] = (
                torch.zeros((), dtype=_scalar_dtype(), device=p.device)
                if fused
                else torch.tensor(0.0, dtype=_scalar_dtype())
            )
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


@dataclass
class _Layout:
    """The flat inputs of a compiled step: trained tensors, fixed tensors, Adam state, scalars, rows, indices."""

    train_names: list[str]
    fixed_names: list[str]
    used: list[
        bool
    ]  # per trained tensor: does the loss depend on it (unused ones are left alone, as Adam does)
    n_rows: int


class FusedStep:
    """Compiled whole training steps for one :class:`~.fast.FastEngine` and its optimiser.

    :meth:`epoch` prepares an epoch's full batches (the inputs, a table of the per-step scalars) and
    returns ``step(idx, weight) -> loss``, or None; ``problem`` says why a program, objective or
    optimiser cannot be fused (None when it can); ``failures`` why a compiled step was refused.
    """

    def __init__(self, engine: Any, optimizer: torch.optim.Optimizer, tensor_weight: bool) -> None:
        self.engine = engine
        self.optimizer = optimizer
        self.tensor_weight = tensor_weight  # the fast ELBO takes the KL weight as an input
        self.compiled: dict[tuple, Callable[..., torch.Tensor] | CudaGraphStep | None] = {}
        self.failures: dict[tuple, str] = {}
        self.compile_seconds: dict[tuple, float] = {}
        self.lay: _Layout | None = None  # the layout of the last step built
        self.problem = self._problem()

    # ------------------------------------------------------------------ applicability
    def _problem(self) -> str | None:
        engine = self.engine
        if engine.graph_problem is not None:
            return engine.graph_problem
        problem = adam_problem(self.optimizer)
        if problem is not None:
            return problem
        engine.refresh()
        trained = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        mine = {id(t) for t in engine.tensors[: engine.n_params]}
        if not trained <= mine:
            return "the optimiser trains tensors outside the program's module"
        return None

    def layout(self) -> tuple[_Layout, list[torch.Tensor], list[torch.Tensor]]:
        """The trained tensors (in the optimiser's order) and the fixed ones (frozen parameters, buffers)."""
        engine = self.engine
        engine.refresh()
        by_id = {id(t): n for n, t in zip(engine.names, engine.tensors, strict=True)}
        train = list(self.optimizer.param_groups[0]["params"])
        train_ids = {id(t) for t in train}
        fixed = [
            (n, t)
            for n, t in zip(engine.names, engine.tensors, strict=True)
            if id(t) not in train_ids
        ]
        lay = _Layout([by_id[id(t)] for t in train], [n for n, _ in fixed], [True] * len(train), 0)
        return lay, train, [t for _, t in fixed]

    # ------------------------------------------------------------------ the traced step
    def _traced(self, lay: _Layout, scale: float, weight: float) -> Callable:
        module = self.engine.module
        k, f, r = len(lay.train_names), len(lay.fixed_names), lay.n_rows
        tensor_weight = self.tensor_weight
        adam_args = self._adam_args()

        def step(*flat: torch.Tensor) -> torch.Tensor:
            from torch.func import functional_call

            train, fixed = flat[:k], flat[k : k + f]
            m, v, s = (
                flat[k + f : 2 * k + f],
                flat[2 * k + f : 3 * k + f],
                flat[3 * k + f : 4 * k + f],
            )
            hyper = flat[4 * k + f]
            rows, idx = flat[4 * k + f + 1 : 4 * k + f + 1 + r], flat[-1]
            batch = tuple(t[idx] for t in rows)
            leaves = [p.detach().requires_grad_(True) for p in train]
            tensors = dict(zip(lay.train_names, leaves, strict=True))
            tensors.update(zip(lay.fixed_names, fixed, strict=True))
            kwargs: dict[str, Any] = {"scale": scale}
            if tensor_weight:
                kwargs["latent_weight"] = hyper[2]
            elif weight != 1.0:
                kwargs["latent_weight"] = weight
            with torch.enable_grad():
                loss = functional_call(module, tensors, batch, kwargs)
                grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            lay.used = [g is not None for g in grads]  # Adam skips a parameter without a gradient
            with torch.no_grad():
                step_size, bc2_sqrt = hyper[0], hyper[1]  # read once: one graph node each
                for i, g in enumerate(grads):
                    if g is not None:
                        adam_update(train[i], g, m[i], v[i], s[i], step_size, bc2_sqrt, **adam_args)
            return loss.detach()

        return step

    def _adam_args(self) -> dict[str, float]:
        """``beta1``, ``beta2`` and ``eps`` of this optimiser's (only) group."""
        group = self.optimizer.param_groups[0]
        beta1, beta2 = (float(b) for b in group["betas"])
        return {"beta1": beta1, "beta2": beta2, "eps": float(group["eps"])}

    def _inputs(
        self,
        train: list[torch.Tensor],
        fixed: list[torch.Tensor],
        rows: Rows,
        state: dict | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(before, after)``: the flat inputs before and after the per-step ``hyper`` tensor (minus ``idx``)."""
        st = self.optimizer.state if state is None else state
        m = [st[p]["exp_avg"] for p in train]
        v = [st[p]["exp_avg_sq"] for p in train]
        s = [st[p]["step"] for p in train]
        return [*(p.detach() for p in train), *fixed, *m, *v, *s], list(rows)

    def hyper(self, step: int, weight: float) -> list[float]:
        """``[step_size, sqrt(1 - beta2^t), kl weight]`` for the ``step``-th update (counted from 1),
        computed in double precision on the host as ``torch.optim.Adam`` does: one compiled step serves
        every step, learning rate and KL weight."""
        group = self.optimizer.param_groups[0]
        beta1, beta2 = (float(b) for b in group["betas"])
        return [float(group["lr"]) / (1 - beta1**step), math.sqrt(1 - beta2**step), float(weight)]

    # ------------------------------------------------------------------ compile and check
    def build(
        self, rows: Rows, batch_size: int, scale: float, weight: float
    ) -> Callable[..., torch.Tensor] | CudaGraphStep | None:
        """The compiled step for batches of ``batch_size`` rows of ``rows`` (None when it failed; see
        :attr:`failures`)."""
        key = self.key(rows, batch_size, scale, weight)
        if key in self.compiled:
            return self.compiled[key]
        t0 = time.perf_counter()
        lay, train, fixed = self.layout()
        lay.n_rows = len(rows)
        _init_state(self.optimizer, train)
        before, after = self._inputs(train, fixed, rows)
        dev = rows[0].device
        idx = torch.arange(batch_size, device=dev)
        hyper = torch.tensor(self.hyper(1, weight), dtype=torch.float32, device=dev)
        example = [*before, hyper, *after, idx]
        run: Callable[..., torch.Tensor] | None = None
        try:
            with warnings.catch_warnings(), pyro.validation_enabled(False):
                warnings.simplefilter("ignore")
                run = _compile(capture(self._traced(lay, scale, weight), *example), example)
        except Exception as err:  # noqa: BLE001 - data-dependent Python, unsupported ops, no C++ compiler
            self.failures[key] = (
                f"could not compile the whole step ({type(err).__name__}: {str(err).strip()[:300]})"
            )
        if run is not None:
            bad = self.verify(run, lay, train, fixed, rows, idx, scale, weight)
            if bad is not None:
                self.failures[key] = bad
                run = None
        made: Callable[..., torch.Tensor] | CudaGraphStep | None = run
        if run is not None and dev.type == "cuda":  # static shapes: replay from a CUDA graph
            made = CudaGraphStep.make(self, run, train, fixed, rows, batch_size, weight) or run
        self.compiled[key] = made
        self.lay = lay
        self.compile_seconds[key] = time.perf_counter() - t0
        return made

    @staticmethod
    def key(rows: Rows, batch_size: int, scale: float, weight: float) -> tuple:
        return (
            tuple((tuple(t.shape), t.dtype) for t in rows),
            str(rows[0].device),
            batch_size,
            float(scale),
            None if weight is None else float(weight),
        )

    def verify(
        self,
        run: Callable,
        lay: _Layout,
        train: list[torch.Tensor],
        fixed: list[torch.Tensor],
        rows: Rows,
        idx: torch.Tensor,
        scale: float,
        weight: float,
    ) -> str | None:
        """Run the compiled step and the eager loss and gradients on copies, from the same random numbers;
        None when they agree (see the module docstring), else what differs."""
        dev = rows[0].device
        old = [_copy_state(self.optimizer.state[p]) for p in train]
        new = [_copy_state(st) for st in old]  # the compiled step updates these
        params = [p.detach().clone() for p in train]
        step_no = int(float(old[0]["step"])) + 1 if old and old[0] else 1
        hyper = torch.tensor(self.hyper(step_no, weight), dtype=torch.float32, device=dev)
        states = [[st[key] for st in new] for key in ("exp_avg", "exp_avg_sq", "step")]
        with (
            torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []),
            pyro.validation_enabled(False),
        ):
            torch.manual_seed(13)
            try:
                with torch.no_grad():
                    loss = run(
                        *params, *fixed, *states[0], *states[1], *states[2], hyper, *rows, idx
                    )
            except Exception as err:  # noqa: BLE001 - a compiled step that does not run is not used
                return f"the compiled step failed to run ({type(err).__name__}: {str(err).strip()[:300]})"
            torch.manual_seed(13)
            ref_loss, ref_grads = self._eager_gradients(lay, train, fixed, rows, idx, scale, weight)
        if not (torch.isfinite(loss) and torch.isfinite(ref_loss)):
            return "the first batch's loss is not finite"
        a, b = float(loss), float(ref_loss)
        if not math.isclose(a, b, rel_tol=LOSS_RTOL, abs_tol=LOSS_RTOL):
            return f"the compiled step's loss {a:.8g} differs from the eager step's {b:.8g}"
        for i, name in enumerate(lay.train_names):
            bad = self._check_update(name, ref_grads[i], train[i], params[i], old[i], new[i])
            if bad is not None:
                return bad
        return None

    def _eager_gradients(
        self,
        lay: _Layout,
        train: list[torch.Tensor],
        fixed: list[torch.Tensor],
        rows: Rows,
        idx: torch.Tensor,
        scale: float,
        weight: float,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
        """The eager step's loss and gradients on copies of the parameters (from the current random state)."""
        from torch.func import functional_call

        leaves = [p.detach().clone().requires_grad_(True) for p in train]
        tensors = dict(zip(lay.train_names, leaves, strict=True))
        tensors.update(zip(lay.fixed_names, fixed, strict=True))
        kwargs: dict[str, Any] = {"scale": scale}
        if weight != 1.0:
            kwargs["latent_weight"] = weight
        loss = functional_call(self.engine.module, tensors, tuple(t[idx] for t in rows), kwargs)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        return loss.detach(), grads

    def _check_update(
        self,
        name: str,
        ref_grad: torch.Tensor | None,
        param: torch.Tensor,
        moved: torch.Tensor,
        old: dict[str, Any],
        new: dict[str, Any],
    ) -> str | None:
        """One parameter: the compiled step's gradient (recovered from Adam's first moment) against the
        eager one, and its whole update against ``torch.optim.adam.adam`` applied to that gradient.

        Not the eager update: Adam's step is about lr * sign(g) wherever |g| >> eps, so a gradient element
        within rounding of zero (common under IWAE with peaked weights) flips a whole lr between two
        correct gradients; the gradients themselves are compared."""
        if ref_grad is None:  # no gradient eagerly: the compiled step must leave it alone too
            if not (torch.equal(moved, param.detach()) and torch.equal(new["step"], old["step"])):
                return f"parameter {name!r} has no gradient eagerly but is updated by the compiled step"
            return None
        beta1 = self._adam_args()["beta1"]
        grad = (new["exp_avg"] - beta1 * old["exp_avg"]) / (1.0 - beta1)
        if not _close(grad, ref_grad, MOMENT_RTOL):
            return f"Adam's first moment (the gradient) of {name!r} differs from the eager update"
        ref = _copy_state(old)
        expected = param.detach().clone()
        m, v, s = ([ref[key]] for key in ("exp_avg", "exp_avg_sq", "step"))
        with torch.no_grad():
            _torch_adam(self.optimizer, grad, expected, m, v, s)
        if not _close(new["exp_avg_sq"], ref["exp_avg_sq"], MOMENT_RTOL):
            return f"Adam's second moment of {name!r} differs from the eager update"
        off, step = float((moved - expected).norm()), float((expected - param.detach()).norm())
        if off > UPDATE_RTOL * step + 1e-12:
            return (
                f"the update of {name!r} differs from torch.optim.Adam's on the same gradient "
                f"({off:.3g} vs {step:.3g})"
            )
        return None

    # ------------------------------------------------------------------ one epoch
    def epoch(
        self,
        rows: Rows,
        batch_size: int,
        scale: float,
        first_step: int,
        weights: list[float],
    ) -> Callable[[torch.Tensor, float], torch.Tensor | None] | None:
        """Prepare one epoch's full batches (``len(weights)`` steps from optimiser step ``first_step + 1``):
        returns ``step(idx, weight) -> loss`` (None for a batch of another size), or None when no
        compiled step applies."""
        weight_key = None if self.tensor_weight else (weights[0] if weights else 1.0)
        if not self.tensor_weight and any(w != weight_key for w in weights):
            return None
        run = self.build(rows, batch_size, scale, 1.0 if weight_key is None else weight_key)
        if run is None:
            return None
        lay, train, fixed = self.layout()
        _init_state(self.optimizer, train)
        used = self.lay.used if self.lay is not None else [True] * len(train)
        counts = {
            float(self.optimizer.state[p]["step"]) for p, u in zip(train, used, strict=True) if u
        }
        if len(counts) > 1:  # one bias correction serves every parameter
            return None
        count = int(counts.pop()) if counts else first_step
        dev = rows[0].device
        table = torch.tensor(
            [self.hyper(count + 1 + i, w) for i, w in enumerate(weights)], dtype=torch.float32
        ).to(dev)
        if isinstance(run, CudaGraphStep):
            return run.epoch(self, rows, table, batch_size, train, fixed)
        before, after = self._inputs(train, fixed, rows)
        position = [0]

        def step(idx: torch.Tensor, weight: float) -> torch.Tensor | None:
            i = position[0]
            if len(idx) != batch_size or i >= len(table):
                return None
            position[0] = i + 1
            with torch.no_grad():
                return run(*before, table[i], *after, idx)

        return step


def _compile(graph: torch.fx.GraphModule, example: list[torch.Tensor]) -> Callable:
    """Inductor on the captured step for the shapes of ``example``, random numbers from PyTorch's generator
    (:func:`~ppl_vae._torch_compat.compile_step`)."""
    return compile_step(graph, example)


def adam_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    step_size: torch.Tensor,
    bc2_sqrt: torch.Tensor,
    *,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """``torch.optim.Adam``'s update of one parameter, in place (its ``_single_tensor_adam``, weight decay,
    AMSGrad and maximize off), with the bias corrections as tensors: ``step_size = lr / (1 - beta1^t)``,
    ``bc2_sqrt = sqrt(1 - beta2^t)`` (Kingma & Ba, 2015, Algorithm 1)::

        m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;  p -= step_size m / (sqrt(v) / bc2_sqrt + eps)

    Written out rather than calling ``torch.optim.adam.adam``: the functional form that takes tensor bias
    corrections (``differentiable``; ``capturable`` is refused for CPU tensors) compiles to an update
    about 4x slower than this one (2.8 vs 11.0 ms for 0.69M parameters, one thread); pinned against
    ``torch.optim.Adam`` by ``tests/test_fused.py`` and checked against it by :meth:`FusedStep.verify`.
    """
    step.add_(1)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
    param.sub_(step_size * exp_avg / denom)


def _torch_adam(
    optimizer: torch.optim.Optimizer,
    grad: torch.Tensor,
    param: torch.Tensor,
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
) -> None:
    """``torch.optim.Adam``'s own update (its functional form) of one parameter, in place: the reference."""
    group = optimizer.param_groups[0]
    beta1, beta2 = (float(b) for b in group["betas"])
    functional_adam(
        [param],
        [grad],
        exp_avgs,
        exp_avg_sqs,
        [],
        steps,
        foreach=False,
        amsgrad=False,
        beta1=beta1,
        beta2=beta2,
        lr=float(group["lr"]),
        weight_decay=0.0,
        eps=float(group["eps"]),
        maximize=False,
    )


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.clone() if torch.is_tensor(v) else v) for k, v in state.items()}


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    atol = rtol * max(float(a.abs().max()), float(b.abs().max()), 1e-30)
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol))
