"""The compiled whole step (:mod:`.fused`) replayed from a CUDA graph, where shapes are static.

Parameters and Adam's state are static tensors already (updated in place by the step); the data rows,
the batch indices and the per-step scalars live in static buffers that are filled before each replay.
The replay is checked once against the compiled step on copies from the same generator state (the
real tensors and the generator are put back afterwards); a capture that fails or disagrees leaves the
compiled step in use, with a warning. A resume or the NaN guard's restore replaces the optimiser's
state tensors: :meth:`CudaGraphStep.rebind` copies their values into the captured ones and points the
optimiser back at them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["CudaGraphStep"]

Rows = tuple[torch.Tensor, ...]
#: Agreement required between a replay and the compiled step.
RTOL = 1e-4


class CudaGraphStep:
    """The compiled step replayed from a CUDA graph: parameters and optimiser state are static tensors
    already; the rows, indices and per-step scalars live in static buffers filled before each replay."""

    def __init__(self) -> None:
        self.graph: Any = None
        self.rows: list[torch.Tensor] = []
        self.idx = torch.zeros(0, dtype=torch.long)
        self.hyper = torch.zeros(0)
        self.before: list[torch.Tensor] = []
        self.out = torch.zeros(())

    @classmethod
    def make(
        cls,
        fused: Any,
        run: Callable,
        train: list[torch.Tensor],
        fixed: list[torch.Tensor],
        rows: Rows,
        batch_size: int,
        weight: float,
    ) -> CudaGraphStep | None:
        self = cls()
        dev = rows[0].device
        self.rows = [t.clone() for t in rows]
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=dev)
        self.hyper = torch.tensor(fused.hyper(1, weight), dtype=torch.float32, device=dev)
        before, _ = fused._inputs(train, fixed, rows)
        if any(
            t.device != dev for t in before
        ):  # e.g. Adam's step counters on the host (non-fused Adam)
            return None
        self.before = before
        try:
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side), torch.no_grad(), torch.random.fork_rng(devices=[dev]):
                for _ in range(2):  # warm up on copies (allocations, library handles)
                    run(*[t.clone() for t in before], self.hyper, *self.rows, self.idx)
            torch.cuda.current_stream(dev).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(self.graph):
                self.out = run(*before, self.hyper, *self.rows, self.idx)
        except Exception as err:  # noqa: BLE001 - capture is an optimisation: keep the compiled step
            warnings.warn(
                f"ppl_vae.fit: could not capture the compiled step in a CUDA graph ({type(err).__name__}: "
                f"{err}); replaying the compiled step without one",
                RuntimeWarning,
                stacklevel=5,
            )
            return None
        if not self._replays_like(run, before, dev):
            warnings.warn(
                "ppl_vae.fit: the CUDA graph of the compiled step does not reproduce it; replaying the "
                "compiled step without one",
                RuntimeWarning,
                stacklevel=5,
            )
            return None
        return self

    def rebind(
        self, fused: Any, train: list[torch.Tensor], fixed: list[torch.Tensor], rows: Rows
    ) -> bool:
        """Point the optimiser's state back at the captured tensors (a resume or the NaN guard's restore
        replaces them), copying the current values in; False if a parameter itself was replaced."""
        current, _ = fused._inputs(train, fixed, rows)
        k, f = len(train), len(fixed)
        for j, (now, captured) in enumerate(zip(current, self.before, strict=True)):
            if now.data_ptr() == captured.data_ptr():
                continue
            if j < k + f or now.shape != captured.shape:
                return False
            with torch.no_grad():
                captured.copy_(now)
            which, i = divmod(j - k - f, k)
            fused.optimizer.state[train[i]][("exp_avg", "exp_avg_sq", "step")[which]] = captured
        return True

    def _replays_like(self, run: Callable, before: list[torch.Tensor], dev: torch.device) -> bool:
        """One replay against the compiled step on copies from the same generator state; the real tensors
        and the generator are put back afterwards."""
        saved = [t.clone() for t in before]
        rng = torch.cuda.get_rng_state(dev)
        self.idx.copy_(torch.arange(len(self.idx), device=dev))
        self.graph.replay()
        got = [t.clone() for t in before]
        loss = self.out.clone()
        torch.cuda.set_rng_state(rng, dev)
        copies = [t.clone() for t in saved]
        with torch.no_grad():
            want = run(*copies, self.hyper, *self.rows, self.idx)
        torch.cuda.set_rng_state(rng, dev)
        with torch.no_grad():
            for t, s in zip(before, saved, strict=True):
                t.copy_(s)
        ok = torch.allclose(loss, want, rtol=RTOL, atol=RTOL)
        return bool(ok) and all(
            torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(got, copies, strict=True)
        )

    def epoch(
        self,
        fused: Any,
        rows: Rows,
        table: torch.Tensor,
        batch_size: int,
        train: list[torch.Tensor],
        fixed: list[torch.Tensor],
    ) -> Callable | None:
        if not self.rebind(fused, train, fixed, rows):
            return None
        for static, t in zip(self.rows, rows, strict=True):
            static.copy_(t)
        position = [0]

        def step(idx: torch.Tensor, weight: float) -> torch.Tensor | None:
            i = position[0]
            if len(idx) != batch_size or i >= len(table):
                return None
            position[0] = i + 1
            self.idx.copy_(idx)
            self.hyper.copy_(table[i])
            self.graph.replay()
            return self.out.clone()

        return step
