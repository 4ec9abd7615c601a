"""Training curves of one or several runs (train/test ELBO for VAEs, reconstruction loss for autoencoders)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..errors import UserError
from ._common import add_legend, finish, integer_ticks, wrap_title


# --------------------------------------------------------------------------- training curves
def _history_of(run: Any) -> tuple[str | None, list[dict]]:
    """(label, records) from a Run, a run folder path, a History/list of records."""
    if isinstance(
        run, (str, Path)
    ):  # the history committed with the checkpoint (metrics.json is a view)
        from ..runs import read_history

        cfg, history = read_history(run)
        return f"{Path(run).name} ({cfg.get('objective') or '?'})".replace(",", ", "), list(history)
    if hasattr(run, "history") and hasattr(run, "config"):
        label = Path(run.path).name if getattr(run, "path", None) is not None else None
        obj = run.config.get("objective") if isinstance(run.config, dict) else None
        text = f"{label} ({obj})" if label else obj
        return (text.replace(",", ", ") if text else None), list(run.history)
    return None, list(run)


def plot_curves(
    runs: Any,
    labels: Sequence[str] | None = None,
    *,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Train (dashed) and test (solid) curves per epoch for several runs, one colour per run.

    Args:
        runs: a Run, a run folder, a History (list of epoch records), or a sequence / mapping
            ``{label: run}`` of them. VAE runs (``train_elbo``/``test_elbo``, nats per point) and
            autoencoder runs (``train_reconstruction``/``test_loss``: reconstruction error per point)
            go on separate axes, since the two are different quantities.
        labels: names for the runs (default: run folder and objective, or ``run k``).
    """
    items = _labelled_histories(runs, labels)
    groups: dict[str, list[tuple[int, str, list[dict]]]] = {"elbo": [], "loss": []}
    for k, (label, history) in enumerate(items):
        if not history:
            continue
        groups["elbo" if "train_elbo" in history[0] else "loss"].append((k, label, history))
    panels = [g for g in ("elbo", "loss") if groups[g]]
    if not panels:
        raise UserError("no epochs to plot: every run's history is empty")
    fig = Figure(figsize=(6.4 * len(panels), 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        for k, label, history in groups[panel]:
            _draw_run(ax, panel, k, label, history)
        _label_panel(ax, panel, len(panels))
    if title is None:
        title = "Training curves: " + ", ".join(label for label, _ in items)
    fig.suptitle(wrap_title(title, 80 * len(panels)), fontsize=11)
    return finish(fig, path)


def _labelled_histories(runs: Any, labels: Sequence[str] | None) -> list[tuple[str, list[dict]]]:
    """``(label, history)`` per run, from one run or a sequence or mapping of them."""
    if isinstance(runs, Mapping):
        labels, runs = list(runs.keys()), list(runs.values())
    elif not isinstance(runs, (list, tuple)) or (runs and isinstance(runs[0], dict)):
        runs = [runs]
    items = []
    for k, run in enumerate(runs):
        label, history = _history_of(run)
        if labels is not None:
            label = labels[k]
        items.append((label or f"run {k}", history))
    return items


def _draw_run(ax: Any, panel: str, k: int, label: str, history: list[dict]) -> None:
    """One run's train (dashed) and test (solid) curve in the colour of its index."""
    import matplotlib

    epochs = [r["epoch"] for r in history]
    if panel == "elbo":
        train = [r.get("train_elbo") for r in history]
        test = [r.get("test_elbo") for r in history]
    else:
        train = [r.get("train_reconstruction", r.get("train_loss")) for r in history]
        test = [r.get("test_loss") for r in history]
    colour = matplotlib.colormaps["tab10"](k % 10)
    label = wrap_title(label, 45)
    ax.plot(epochs, train, linestyle="--", color=colour, linewidth=1.2, label=f"{label}: train")
    if any(v is not None for v in test):
        ax.plot(
            epochs,
            [np.nan if v is None else v for v in test],
            color=colour,
            linewidth=1.8,
            marker="o" if len(epochs) <= 30 else None,
            markersize=3,
            label=f"{label}: test",
        )


def _label_panel(ax: Any, panel: str, n_panels: int) -> None:
    ax.set_xlabel("epoch")
    if panel == "elbo":
        ax.set_ylabel("ELBO (nats per data point, higher is better)")
        ax.set_title(
            wrap_title("VAE: train ELBO (dashed, during the epoch) and test ELBO (solid)", 40),
            fontsize=10,
        )
    else:
        ax.set_ylabel("reconstruction error per data point (lower is better)")
        ax.set_title(
            wrap_title(
                "Autoencoders: reconstruction error, train (dashed; inputs as trained on, e.g. "
                "corrupted for a DAE; no penalty) and clean test split (solid)",
                40,
            ),
            fontsize=10,
        )
    ax.grid(alpha=0.3)
    integer_ticks(ax.xaxis)
    # one panel: its legend below the figure; two: each to the right of its own panel
    add_legend(ax, markerscale=1, side="below" if n_panels == 1 else "right")
