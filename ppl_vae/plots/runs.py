"""Every figure of a run folder, written as PNGs (``ppl-vae plot``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..errors import UserError
from ..store.lock import lock_folder
from ._common import ALL_KINDS, KINDS, can_sample, model_label, save_png
from .curves import plot_curves
from .latent import (
    plot_interpolation,
    plot_latent,
    plot_overview_2d,
    plot_reconstructions,
    plot_samples,
)
from .reports import plot_gap_hist, plot_khat


# --------------------------------------------------------------------------- run folders
def plot_run(
    run_dir: str | Path,
    kinds: Sequence[str] | str = ("all",),
    out_dir: str | Path | None = None,
    *,
    num_samples: int = 1000,
    device: str = "cpu",
    skipped: list[str] | None = None,
) -> list[Path]:
    """Draw the figures ``kinds`` of a run folder as PNGs in ``out_dir`` (default: the run folder).

    ``kinds``: any of :data:`KINDS` or ``"all"`` (latent, recon, samples, interpolate, curves and,
    for 2-D data, overview; ``samples`` is left out for an autoencoder, which has no prior).
    ``khat`` and ``gap`` run :func:`ppl_vae.diagnostics.evaluate` on the test split with
    ``num_samples`` importance samples (VAE only). Files: ``KIND.png``. Returns the paths
    written; the reasons for kinds left out of ``all`` are appended to ``skipped``.
    """
    from ..runs import load_run

    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    unknown = sorted(set(kinds) - set(KINDS) - {"all"})
    if unknown:
        raise UserError(f"unknown plot kind(s) {unknown}; choose from {', '.join(KINDS)} or all")
    run = load_run(run_dir, device=device)
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    with lock_folder(out):  # one writer per folder; each PNG written beside and renamed in
        return _draw(run, run_dir, out, kinds, num_samples, skipped)


def _wanted(kinds: list[str], model: Any, data: Any, skipped: list[str] | None) -> list[str]:
    """The figures to draw: ``"all"`` expanded to those that apply (samples need a prior, the overview
    2-D points), each once, in order."""
    wanted: list[str] = []
    for kind in kinds:
        if kind != "all":
            wanted.append(kind)
            continue
        for k in ALL_KINDS:
            if k == "samples" and not can_sample(model):
                if skipped is not None:
                    skipped.append(f"samples: {type(model).__name__} has no prior to sample from")
                continue
            if k == "overview" and data.meta.kind != "points2d":
                continue
            wanted.append(k)
    return list(dict.fromkeys(wanted))


def _draw(run, run_dir: Path, out: Path, kinds: list[str], num_samples: int, skipped) -> list[Path]:
    model, data = run.model, run.data
    name = f"run {run_dir.resolve().name}: {model_label(model)}, {data.meta.name}"
    simple: dict[str, Callable[..., Figure]] = {
        "latent": plot_latent,
        "recon": plot_reconstructions,
        "samples": plot_samples,
        "interpolate": plot_interpolation,
        "overview": plot_overview_2d,
    }
    paths: list[Path] = []
    report = None
    for kind in _wanted(kinds, model, data, skipped):
        if kind in simple:
            fig = simple[kind](model, data, name=name)
        elif kind == "curves":
            fig = plot_curves(
                [run], labels=[run_dir.resolve().name], title=f"Training curves: {name}"
            )
        else:  # khat, gap
            report = report if report is not None else _report(model, data, kind, num_samples, name)
            fig = (plot_khat if kind == "khat" else plot_gap_hist)(report)
        paths.append(save_png(fig, out / f"{kind}.png"))
    return paths


def _report(model: Any, data: Any, kind: str, num_samples: int, name: str) -> Any:
    """The evaluation the k-hat and gap figures read (a VAE only)."""
    if not (callable(getattr(model, "model", None)) and callable(getattr(model, "guide", None))):
        raise UserError(
            f"{kind!r} needs a VAE (importance weights need p(x, z) and q(z | x)); "
            f"{type(model).__name__} defines no likelihood"
        )
    from ..diagnostics import evaluate

    return evaluate(model, data.test, num_samples=num_samples, name=name)
