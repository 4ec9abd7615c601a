r"""Compiled chunks for the importance-sampling estimators: one Pyro run captured, then fused by Inductor.

The estimators of :mod:`ppl_vae.estimators` evaluate one function many times: for a chunk of
``n`` points and ``k`` particles, the ``(k, n)`` log weights

.. math::

    \log w_{kn} = \log p(x_n, z_{kn}) - \log q(z_{kn} \mid x_n), \qquad z_{kn} = \mu(x_n) + \sigma(x_n) \odot \varepsilon_{kn},

from a guide trace under a particle plate and the model replayed against it. Run eagerly, each
chunk pays Pyro's bookkeeping and one kernel (and one full-size temporary) per tensor operation.
Here the chunk is traced once with ``make_fx`` (the Pyro programs run once, on fake tensors, and
leave a graph of ATen operations: the traces, plates and messengers are gone) and compiled with
``torch.compile`` (Inductor), which fuses the element-wise work and the sums over the data dimension
into the kernels around the decoder's matrix products. The Pyro ``model``/``guide`` stay the single
definition: the graph is whatever they compute.

Random numbers: Inductor is told to call PyTorch's generator (``fallback_random=True``), so the
compiled chunk draws exactly the numbers the eager chunk draws from the same state: same seed,
same draws, results equal up to float rounding.

Safety: the first chunk of every shape in every call is run both ways from the same generator state
and compared (``rtol`` :data:`RTOL`, ``atol`` :data:`ATOL`); the eager result is the one returned for
it. A program that cannot be captured (data-dependent Python), a graph that cannot be compiled (no
C++ compiler for Inductor on the CPU) or one that does not agree runs eagerly, with a warning.

Reuse: a compiled graph is kept (:data:`CACHE_SIZE` of them, least recently used first out) under
its code and the storage of the tensors it reads (the parameters, read live, so in-place updates such
as optimizer steps are seen); a later call recaptures the chunk (tens of milliseconds) and reuses the
compiled graph when both match, and otherwise compiles again (seconds for the first graph in a
process, a fraction of a second once Inductor's on-disk cache holds it).

Reference: Ansel et al. (2024), PyTorch 2: Faster Machine Learning Through Dynamic Python Bytecode
Transformation and Graph Compilation, ASPLOS.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable

import torch

from .._torch_compat import capture, compile_graph

__all__ = ["CACHE_SIZE", "ChunkRunner", "clear_cache"]

Batch = tuple[torch.Tensor, ...]
Chunk = Callable[[Batch, int], torch.Tensor]

#: Compiled graphs kept for reuse by later calls (each holds references to the tensors it reads).
CACHE_SIZE = 8
#: Agreement required between the compiled and the eager chunk on the same draws.
RTOL, ATOL = 1e-4, 1e-3

_CACHE: OrderedDict[tuple, Callable] = OrderedDict()


def clear_cache() -> None:
    """Forget every compiled chunk (and the tensors they hold)."""
    _CACHE.clear()


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _capture(traceable: Chunk, xb: Batch, k: int) -> torch.fx.GraphModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return capture(lambda *rows: traceable(rows, k), *xb)


def _cache_key(graph: torch.fx.GraphModule, xb: Batch) -> tuple:
    """The graph's code and the storage of every tensor it holds (live reads: same storage, same graph)."""
    held = tuple(
        (
            name,
            t.untyped_storage().data_ptr(),
            t.storage_offset(),
            tuple(t.shape),
            t.stride(),
            t.dtype,
            str(t.device),
        )
        for name, t in [*graph.named_buffers(), *graph.named_parameters()]
    )
    shapes = tuple((tuple(t.shape), t.dtype, str(t.device)) for t in xb)
    return graph.code, held, shapes, torch.get_num_threads()


class ChunkRunner:
    """Evaluate ``eager(batch, k) -> (k, n)`` (``batch``: row-aligned tensors) chunk by chunk, compiled for the shapes in ``compile_shapes``.

    Args:
        eager: the chunk as the estimators run it (any tricks, data-dependent Python allowed).
        traceable: the same function written without data-dependent Python (it is traced on fake
            tensors); the numbers must match ``eager``'s up to rounding.
        compile_shapes: ``(n, k)`` chunk shapes worth compiling; other shapes run eagerly.
        explicit: the caller asked for compilation (warn when it falls back), rather than ``"auto"``.
    """

    def __init__(
        self,
        eager: Chunk,
        traceable: Chunk,
        compile_shapes: set[tuple[int, int]],
        explicit: bool = False,
    ) -> None:
        self.eager = eager
        self.traceable = traceable
        self.compile_shapes = compile_shapes
        self.explicit = explicit
        self.graphs: dict[tuple[int, int], Callable | None] = {}

    def __call__(self, xb: Batch, k: int) -> torch.Tensor:
        shape = (len(xb[0]), k)
        if shape not in self.compile_shapes:
            return self.eager(xb, k)
        if shape in self.graphs:
            run = self.graphs[shape]
            if run is None:
                return self.eager(xb, k)
            return run(*xb)
        run, out = self._first(xb, k)
        self.graphs[shape] = run
        return out

    def _first(self, xb: Batch, k: int) -> tuple[Callable | None, torch.Tensor]:
        """Capture and compile (or reuse) the graph for this shape, check it against the eager chunk."""
        device = xb[0].device
        state = _rng_state(device)
        try:
            graph = _capture(self.traceable, xb, k)
            key = _cache_key(graph, xb)
            run = _CACHE.get(key)
            if run is None:
                run = compile_graph(graph)
            compiled = run(*xb)
        except Exception as err:  # noqa: BLE001 - data-dependent Python, no compiler, unsupported ops
            _set_rng_state(state, device)
            self._warn(
                f"could not compile the chunk ({type(err).__name__}: {str(err).strip()[:300]})"
            )
            return None, self.eager(xb, k)
        _set_rng_state(state, device)
        eager = self.eager(xb, k)  # same draws; the stream ends where the eager path leaves it
        same = compiled.shape == eager.shape and bool(
            torch.isclose(compiled, eager, rtol=RTOL, atol=ATOL)
            .logical_or_(compiled.isnan() & eager.isnan())
            .all()
        )
        if not same:
            worst = float((compiled - eager).abs().nan_to_num(nan=float("inf")).max())
            self._warn(
                f"the compiled chunk does not reproduce the eager one (max |difference| {worst:.3g})"
            )
            return None, eager
        _CACHE[key] = run
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return run, eager

    def _warn(self, what: str) -> None:
        mode = "fast='compile'" if self.explicit else "fast='auto'"
        warnings.warn(
            f"ppl_vae ({mode}): {what}; running it eagerly (same numbers, slower). "
            "Pass fast='eager' to skip the attempt.",
            RuntimeWarning,
            stacklevel=4,
        )
