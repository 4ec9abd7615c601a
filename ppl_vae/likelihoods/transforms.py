r"""From a column's model-space value to the standardised variable a family's network works with, and back.

A table column's model value ``v`` (what the programs see) relates to the original value ``x`` by the
schema's transform (:mod:`ppl_vae.data.schema`): ``y = shift + scale * v`` with ``y = x`` (identity,
standardize) or ``y = log x`` (log-standardize). A family works with its own natural variable ``w``
(``x`` for a Gaussian, ``log x`` for a log-normal), standardised with the train statistics
``u = (w - m) / s``, so its network always sees values near N(0, 1) whatever the column's scale::

    v  --affine-->  y  --op-->  w  --affine-->  u        op: identity, exp (y = log x, w = x) or log (y = x, w = log x)

Linear columns (op the identity) fold into one affine ``u = a v + b``, computed in float64 constants, so a
column of values near 1e5 loses nothing to float32 rounding of a shift. The density in original units is
``p(x) = p_u(u) |du/dx| = p_u(u) / s`` (times ``1 / x`` when ``w = log x``): :meth:`ValueMap.log_jacobian`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["ValueMap"]

_ID, _EXP, _LOG = 0, 1, 2


def _stat(value: float | None, default: float) -> float:
    return default if value is None or not math.isfinite(value) or value == 0 else float(value)


class ValueMap(nn.Module):
    """The maps ``v <-> u`` of the module docstring for a block of columns (buffers, not parameters).

    Args:
        n: the number of columns.
        columns: their :class:`~ppl_vae.data.schema.Column` s, or None (raw values: ``u = v``).
        log_natural: the family's variable is ``log x`` (log-normal) rather than ``x``.
    """

    a: torch.Tensor
    b: torch.Tensor
    m: torch.Tensor
    s: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor
    op: torch.Tensor
    log_s: torch.Tensor

    def __init__(self, n: int, columns: Sequence[Any] | None, log_natural: bool = False) -> None:
        super().__init__()
        self.log_natural = log_natural
        shift, scale = torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
        m, s = torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
        op = torch.zeros(n, dtype=torch.long)
        for j, c in enumerate(columns or ()):
            shift[j], scale[j] = c.shift, c.scale
            y_log = c.transform == "log-standardize"
            if log_natural:
                m[j], s[j] = _stat(c.log_mean, 0.0), _stat(c.log_std, 1.0)
                op[j] = _ID if y_log else _LOG
            else:
                m[j], s[j] = _stat(c.mean, 0.0), _stat(c.std, 1.0)
                op[j] = _EXP if y_log else _ID
        if columns is None and log_natural:
            op[:] = _LOG
        linear = op == _ID
        # u = a v + b on linear columns; otherwise y = shift + scale v, w = op(y), u = (w - m) / s
        a = torch.where(linear, scale / s, scale)
        b = torch.where(linear, (shift - m) / s, shift)
        #: u = v (the data were standardised with the family's own statistics)
        self.identity = bool(linear.all() and (a == 1).all() and (b == 0).all())
        #: u = v = w: raw values, no transform and no Jacobian (a whole row of plain numbers)
        self.trivial = self.identity and bool((m == 0).all() and (s == 1).all())
        self.all_linear = bool(linear.all())
        for key, t in (("a", a), ("b", b), ("m", m), ("s", s), ("shift", shift), ("scale", scale)):
            self.register_buffer(key, t.float(), persistent=False)
        self.register_buffer("op", op, persistent=False)
        self.register_buffer("log_s", s.log().float(), persistent=False)

    def to_u(self, v: torch.Tensor) -> torch.Tensor:
        """Model values ``(..., n)`` -> standardised natural values ``u``."""
        if self.identity:
            return v
        t = v * self.a + self.b
        if self.all_linear:
            return t
        w = torch.where(
            self.op == _EXP, t.exp(), torch.where(self.op == _LOG, t.clamp_min(1e-30).log(), t)
        )
        return torch.where(self.op == _ID, t, (w - self.m) / self.s)

    def from_w(self, w: torch.Tensor) -> torch.Tensor:
        """Natural values ``w`` (``x`` or ``log x``) -> model values ``v``."""
        if self.trivial:
            return w
        if not self.all_linear:
            w = torch.where(
                self.op == _EXP, w.clamp_min(1e-30).log(), torch.where(self.op == _LOG, w.exp(), w)
            )
        return (w - self.shift) / self.scale

    def w_of_u(self, u: torch.Tensor) -> torch.Tensor:
        return self.m + self.s * u

    def natural(self, v: torch.Tensor) -> torch.Tensor:
        """Model values -> natural values ``w``."""
        return self.w_of_u(self.to_u(v)) if not self.trivial else v

    def log_jacobian(self, u: torch.Tensor) -> torch.Tensor:
        """``log |du/dx|`` per cell: ``-log s`` (and ``-log x = -w`` for a log-natural family)."""
        jac = -self.log_s
        if self.log_natural:
            return jac - self.w_of_u(u)
        return jac.expand_as(u) if not self.trivial else u.new_zeros(()).expand_as(u)
