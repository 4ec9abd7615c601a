"""The classic autoencoders' evaluation: reconstruction error only (they define no p(x), so no ELBO)."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ..autoencoders import Autoencoder, ContractiveAE, SparseAE

__all__ = ["evaluate_autoencoder"]


@torch.no_grad()
def evaluate_autoencoder(
    ae: Autoencoder, x: torch.Tensor, batch_size: int = 1024
) -> dict[str, Any]:
    """Reconstruction error of clean ``x: (N, D)`` (normally the test split); no likelihood.

    Returns:
        A JSON-able dict (names and units as in :func:`ppl_vae.diagnostics.reconstruction_error`
        and the VAE's evaluation summary, so the two can be put side by side): ``model`` (spec),
        ``n``, ``loss`` (the training reconstruction error, per point),
        ``mse`` (squared error per coordinate, mean over points and coordinates),
        ``squared_error`` (squared error summed over the D coordinates, mean per point),
        ``bce`` (BCE of the reconstruction probabilities summed over D, mean per point;
        None unless the model reconstructs with BCE, i.e. data in [0, 1]),
        ``penalty`` (the regulariser on ``x``: mean over points; the sparse KL on the whole of ``x``),
        ``mean_code_activation`` (mean of the code over points and units),
        ``log_px`` (None, always: an autoencoder defines no p(x)).

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> x = torch.rand(64, 6, generator=torch.Generator().manual_seed(0))
        >>> ae = pv.make_autoencoder("ae", input_dim=6, latent_dim=2, hidden_dims=(8,))
        >>> result = pv.evaluate_autoencoder(ae, x)
        >>> result["n"], result["log_px"]  # an autoencoder has no likelihood
        (64, None)
    """
    x = ae.check_data(x, "x")
    device = next(ae.parameters()).device
    was_training = ae.training
    ae.eval()
    sq = bce = pen = 0.0
    codes = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        code = ae.encode(xb)
        codes.append(code)
        out = ae.decoder(code)
        if ae.reconstruction == "bce":
            sq += float((torch.sigmoid(out) - xb).pow(2).sum())
            bce += float(F.binary_cross_entropy_with_logits(out, xb, reduction="none").sum())
        else:
            sq += float((out - xb).pow(2).sum())
        if isinstance(ae, ContractiveAE):
            pen += float(ae.lam * ae.jacobian_norm(xb).sum())
    code = torch.cat(codes)
    if isinstance(ae, SparseAE):
        pen = float(ae.penalty(x, code))
    else:
        pen = pen / len(x)
    ae.train(was_training)
    n = len(x)
    return {
        "model": ae.spec,
        "n": n,
        "loss": bce / n if ae.reconstruction == "bce" else sq / n,
        "mse": sq / (n * ae.input_dim),
        "squared_error": sq / n,
        "bce": bce / n if ae.reconstruction == "bce" else None,
        "penalty": pen,
        "mean_code_activation": float(code.mean()),
        "log_px": None,
    }
