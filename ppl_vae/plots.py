"""Pictures of trained models: latent maps, reconstructions, prior samples, interpolations, curves.

Every function takes a model (a :class:`~ppl_vae.models.VAE` or an autoencoder of
:mod:`ppl_vae.autoencoders`) and a :class:`~ppl_vae.data.Dataset` (or a
:class:`~ppl_vae.runs.Run`, which holds both), returns a
:class:`matplotlib.figure.Figure` and, given ``path=``, also writes it as a PNG.
Figures are built with the object-oriented API (``Figure(...)``, no ``pyplot``), so
nothing is registered in a global figure manager and the functions work the same
in a script, under the Agg backend of the CLI, and in a notebook (where a returned
figure is shown inline).

How data are drawn is read from the dataset's metadata: ``kind == "image"`` gives
image grids of ``image_shape``; ``"points2d"`` gives scatters in the data plane;
``"tabular"`` gives heat maps (rows x columns) or scatters of the first two principal
components.

Latent maps show the posterior means ``E_q[z | x]`` of a VAE (or the codes ``f(x)`` of an
autoencoder) of the test split: directly when d = 2, as the first two principal
components (PCA fitted on those means) when d > 2, coloured by label when the data
have labels.

=========================  ===========================================================
:func:`plot_latent`        latent map (2-D latents directly, else PCA of the means)
:func:`plot_reconstructions` originals above reconstructions (images) / arrows (2-D)
:func:`plot_samples`       decodes of ``z ~ N(0, I)`` (VAE only: an autoencoder has no prior)
:func:`plot_decoded`       decodes of latent points you choose (any model)
:func:`plot_interpolation` decodes along the straight line between two inputs' latents
:func:`plot_curves`        train/test ELBO (VAE) or loss (autoencoder) per epoch, many runs
:func:`plot_overview_2d`   2-D data, reconstructions and prior samples on one scatter
:func:`plot_khat`          PSIS k-hat per point (from :mod:`ppl_vae.diagnostics`)
:func:`plot_gap_hist`      histogram of IW log p(x) - ELBO per point (from :mod:`ppl_vae.diagnostics`)
:func:`plot_elbo_vs_iw`    per-point ELBO against IW log p(x), coloured by k-hat
:func:`plot_run`           the above for a run folder, written as PNGs (``ppl-vae plot``)
=========================  ===========================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .data import Dataset
from .errors import ArgumentTypeError, UserError

DPI = 120
KINDS = ("latent", "recon", "samples", "interpolate", "curves", "overview", "khat", "gap")
#: what ``--kind all`` draws (``samples`` only for models with a prior, ``overview`` only for 2-D data)
ALL_KINDS = ("latent", "recon", "samples", "interpolate", "curves", "overview")

__all__ = [
    "KINDS",
    "can_sample",
    "latent_means",
    "model_label",
    "plot_curves",
    "plot_decoded",
    "plot_elbo_vs_iw",
    "plot_gap_hist",
    "plot_interpolation",
    "plot_khat",
    "plot_latent",
    "plot_overview_2d",
    "plot_reconstructions",
    "plot_run",
    "plot_samples",
    "save_report_figures",
]


# --------------------------------------------------------------------------- helpers
def latent_means(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """The point in latent space that represents each row of ``x: (N, D)``: ``(N, d)`` on the CPU.

    For a VAE the posterior mean ``E_q[z | x]`` (``encode`` returns ``(loc, scale)``); for an
    autoencoder its code ``f(x)``.
    """
    device = _device(model)
    parts = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out = model.encode(x[start : start + batch_size].to(device))
            parts.append((out[0] if isinstance(out, tuple) else out).cpu())
    return torch.cat(parts)


def can_sample(model: torch.nn.Module) -> bool:
    """True for models with a prior to sample from (the VAE); False for autoencoders."""
    return callable(getattr(model, "sample", None))


def model_label(model: torch.nn.Module) -> str:
    """A short description for titles: ``"VAE d=8, bernoulli"``, ``"DenoisingAE d=2 (dae:...)"``."""
    d = getattr(model, "latent_dim", "?")
    spec = getattr(model, "spec", None)
    if spec is not None:  # an autoencoder: "dae:reconstruction=mse,sigma=0.3" -> "(mse, sigma=0.3)"
        params = spec.partition(":")[2].replace("reconstruction=", "").replace(",", ", ")
        return f"{type(model).__name__} d={d} ({params})"
    lik = getattr(getattr(model, "likelihood", None), "spec", None)
    return f"{type(model).__name__} d={d}" + (f", {lik}" if lik else "")


def _device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _unpack(model: Any, data: Dataset | None, name: str | None) -> tuple[torch.nn.Module, Dataset, str]:
    """Accept ``(model, data)`` or a ``Run`` in place of the model; return model, data and a title label."""
    if hasattr(model, "model") and hasattr(model, "data") and hasattr(model, "history"):  # a Run
        run = model
        model, data = run.model, run.data if data is None else data
        if name is None and getattr(run, "path", None) is not None:
            name = f"run {Path(run.path).name}: {model_label(model)}"
    if data is None:
        raise UserError("pass the data (a ppl_vae Dataset) the model was trained on, or a Run")
    if not isinstance(data, Dataset):
        raise ArgumentTypeError(f"data must be a ppl_vae Dataset (for its metadata); got {type(data).__name__}")
    return model, data, name or model_label(model)


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _wrap(text: str, width: int = 72) -> str:
    """Wrap each line of a title to ``width`` characters (long run names and model specs)."""
    import textwrap

    return "\n".join(textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False)
                     for line in text.split("\n"))


def _title(ax: Axes, text: str, fontsize: float = 10) -> None:
    """Set a title wrapped to the width of the figure (about 11 characters per inch at 10 pt)."""
    inches = ax.figure.get_figwidth()
    spec = ax.get_subplotspec()
    if spec is not None:  # one panel of a grid the caller composed: wrap to the panel's share of the width
        cols = spec.colspan
        inches *= (cols.stop - cols.start) / spec.get_gridspec().ncols
    width = max(30, int(inches * 110 / fontsize))
    ax.set_title(_wrap(text, width), fontsize=fontsize)


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    return fig


def _tile(images: np.ndarray, ncol: int, pad: int = 1) -> np.ndarray:
    """``(n, h, w)`` images -> one ``(rows*(h+pad)-pad, ncol*(w+pad)-pad)`` array, NaN between tiles."""
    n, h, w = images.shape
    rows = math.ceil(n / ncol)
    grid = np.full((rows * (h + pad) - pad, ncol * (w + pad) - pad), np.nan)
    for k in range(n):
        r, c = divmod(k, ncol)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = images[k]
    return grid


def _show_grid(ax: Axes, grid: np.ndarray, vmin: float = 0.0, vmax: float = 1.0) -> None:
    import matplotlib

    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")


def _image_range(data: Dataset) -> tuple[float, float]:
    lo, hi = data.meta.value_range
    return (0.0, 1.0) if lo >= 0 and hi <= 1 else (lo, hi)


def _images(x: torch.Tensor, data: Dataset) -> np.ndarray:
    shape = data.meta.image_shape
    return x.detach().cpu().float().numpy().reshape(len(x), *shape)


def _pick(x: torch.Tensor, n: int) -> torch.Tensor:
    return x[: min(n, len(x))]


def _label_colours(labels: np.ndarray | None) -> tuple[list[Any], Any]:
    import matplotlib

    if labels is None:
        return [], None
    classes = np.unique(labels)
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "viridis"]
    return list(classes), cmap


def _scatter_by_label(ax: Axes, xy: np.ndarray, labels: np.ndarray | None, *, s: float = 8, alpha: float = 0.7,
                      label_prefix: str = "class") -> None:
    """Scatter ``xy: (N, 2)``; coloured by label with a legend (<= 10 classes) or a colour bar."""
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=s, alpha=alpha, color="tab:blue", linewidths=0, label="test points")
        return
    classes, cmap = _label_colours(labels)
    if len(classes) <= 10:
        for k, c in enumerate(classes):
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=s, alpha=alpha, color=cmap(k % 10), linewidths=0,
                       label=f"{label_prefix} {c}")
    else:
        sc = ax.scatter(xy[:, 0], xy[:, 1], s=s, alpha=alpha, c=labels, cmap=cmap, linewidths=0)
        ax.figure.colorbar(sc, ax=ax, label="label")


def _legend(ax: Axes, *, outside: bool = False, markerscale: float = 1.5, **kwargs: Any) -> None:
    """A small legend; ``outside=True`` puts it to the right of the axes, clear of the points."""
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    if outside:
        kwargs.update(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    ax.legend(fontsize=8, markerscale=markerscale, **kwargs)


def _pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(points)
    return pca.transform(points), pca.explained_variance_ratio_, pca


# --------------------------------------------------------------------------- latent map
def plot_latent(
    model: Any,
    data: Dataset | None = None,
    *,
    split: str = "test",
    name: str | None = None,
    max_points: int = 5000,
    ax: Axes | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Latent map of ``split``: posterior means (VAE) or codes (autoencoder), coloured by label.

    d = 2: the latent plane itself (a VAE's prior N(0, I) is drawn as its 1- and 2-sigma circles);
    d = 1: the latent on the x axis against a random jitter; d > 2: the first two principal
    components of the means, with the share of their variance each explains.
    """
    model, data, name = _unpack(model, data, name)
    x = data.test if split == "test" else data.train
    labels = data.test_labels if split == "test" else data.train_labels
    x = _pick(x, max_points)
    labels = None if labels is None else labels[: len(x)].numpy()
    z = latent_means(model, x).numpy()
    d = z.shape[1]
    own_axes = ax is None
    fig, ax = _new_axes(ax, (7.0, 5.2))
    is_vae = can_sample(model)
    what = "posterior means E[z | x]" if is_vae else "codes f(x)"
    if d == 1:
        jitter = np.random.default_rng(0).uniform(-1, 1, len(z))
        xy = np.stack([z[:, 0], jitter], 1)
        xlabel, ylabel = "z (1-D latent)", "random jitter (no meaning)"
    elif d == 2:
        xy = z
        xlabel, ylabel = ("z1", "z2") if is_vae else ("code unit 1", "code unit 2")
    else:
        xy, ratio, _ = _pca_2d(z)
        xlabel = f"PC1 of {what} ({100 * ratio[0]:.0f}% of variance)"
        ylabel = f"PC2 ({100 * ratio[1]:.0f}% of variance)"
    _scatter_by_label(ax, xy, labels)
    if is_vae and d == 2:
        t = np.linspace(0, 2 * np.pi, 200)
        for r, style in ((1, "--"), (2, ":")):
            ax.plot(r * np.cos(t), r * np.sin(t), color="grey", linestyle=style, linewidth=1,
                    label=f"prior N(0, I): {r} sd")
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    shown = "" if d <= 2 else f" (PCA of d={d})"
    _title(ax, f"Latent map: {what} of the {split} split{shown}\n{name}")
    _legend(ax, outside=own_axes, loc=None if own_axes else "best")
    return _finish(fig, path)


# --------------------------------------------------------------------------- reconstructions
def plot_reconstructions(
    model: Any,
    data: Dataset | None = None,
    *,
    n: int = 10,
    name: str | None = None,
    ax: Axes | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Test inputs and their reconstructions (decoded posterior mean / code).

    Images: ``n`` originals in the top row, their reconstructions below. 2-D points: every
    test point and its reconstruction joined by a line. Tabular data: heat maps of the first
    ``n`` rows and of their reconstructions.
    """
    model, data, name = _unpack(model, data, name)
    kind = data.meta.kind
    model.eval()
    if kind == "image":
        x = _pick(data.test, n)
        rec = model.reconstruct(x.to(_device(model))).cpu()
        grid = _tile(np.concatenate([_images(x, data), _images(rec, data)]), ncol=len(x))
        fig, ax = _new_axes(ax, (max(4.0, 0.75 * len(x)), 2.4))
        _show_grid(ax, grid, *_image_range(data))
        h = data.meta.image_shape[0]
        ax.set_yticks([h / 2 - 0.5, h + 1 + h / 2 - 0.5], ["original", "reconstruction"])
        ax.set_xticks([(data.meta.image_shape[1] + 1) * k + data.meta.image_shape[1] / 2 - 0.5
                       for k in range(len(x))], [str(k) for k in range(len(x))], fontsize=7)
        ax.set_xlabel("test example")
        _title(ax, f"Reconstructions of test inputs (top: input, bottom: decoded)\n{name}")
        return _finish(fig, path)
    if kind == "points2d":
        x = data.test
        rec = model.reconstruct(x.to(_device(model))).cpu().numpy()
        xn = x.numpy()
        fig, ax = _new_axes(ax, (6.0, 5.2))
        segments = np.stack([xn, rec], 1)
        from matplotlib.collections import LineCollection

        ax.add_collection(LineCollection(segments, colors="grey", linewidths=0.5, alpha=0.5))
        ax.scatter(xn[:, 0], xn[:, 1], s=8, color="tab:blue", alpha=0.6, linewidths=0, label="test point x")
        ax.scatter(rec[:, 0], rec[:, 1], s=8, color="tab:red", alpha=0.8, linewidths=0, label="reconstruction")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.set_aspect("equal", adjustable="datalim")
        _title(ax, f"Reconstructions of the test split (grey: x to its reconstruction)\n{name}")
        _legend(ax, loc="best")
        return _finish(fig, path)
    x = _pick(data.test, n)
    rec = model.reconstruct(x.to(_device(model))).cpu().numpy()
    fig = Figure(figsize=(8.0, 0.3 * len(x) + 2.0), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    vmin, vmax = float(min(x.min(), rec.min())), float(max(x.max(), rec.max()))
    for a, m, title in ((axes[0], x.numpy(), "input"), (axes[1], rec, "reconstruction")):
        im = a.imshow(m, aspect="auto", vmin=vmin, vmax=vmax, cmap="viridis", interpolation="nearest")
        a.set_title(title, fontsize=9)
        a.set_xlabel("column")
    axes[0].set_ylabel("test row")
    fig.colorbar(im, ax=axes, label="value")
    fig.suptitle(_wrap(f"Reconstructions of the first {len(x)} test rows\n{name}", 90), fontsize=10)
    return _finish(fig, path)


# --------------------------------------------------------------------------- prior samples
def plot_samples(
    model: Any,
    data: Dataset | None = None,
    *,
    n: int = 64,
    seed: int = 0,
    name: str | None = None,
    ax: Axes | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Decoder means for ``n`` draws ``z ~ N(0, I)`` (seeded): an image grid, or a scatter over the data.

    Raises ``ValueError`` for an autoencoder: it has no prior, so there is nothing to sample
    (:func:`plot_decoded` draws the decodes of latent points you choose, for any model).
    """
    model, data, name = _unpack(model, data, name)
    if not can_sample(model):
        raise UserError(
            f"{type(model).__name__} has no prior over its code, so 'samples from the prior' are not "
            "defined for it; only the VAE can be sampled (plot the latent map or an interpolation instead)"
        )
    model.eval()
    gen = torch.Generator(device=_device(model)).manual_seed(seed)
    samples = model.sample(n, generator=gen).cpu()
    return _draw_decodes(samples, data, ax=ax, path=path, title=f"Samples from the prior (seed {seed})\n{name}",
                         what=f"{n} draws z ~ N(0, I), each shown as the mean of p(x | z)",
                         short=f"{n} samples: mean of p(x | z), z ~ N(0, I)")


def plot_decoded(
    model: Any,
    data: Dataset | None = None,
    z: torch.Tensor | None = None,
    *,
    title: str = "Decoded latent points",
    what: str | None = None,
    name: str | None = None,
    ax: Axes | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Decode latent points ``z: (n, d)`` you choose and draw them like :func:`plot_samples` does.

    Works for every model (an autoencoder too): e.g. points spread over the region its codes
    occupy, to see what it decodes where it saw no data.
    """
    model, data, name = _unpack(model, data, name)
    if z is None or z.dim() != 2 or z.shape[1] != model.latent_dim:
        raise UserError(f"z must be a tensor (n, {model.latent_dim}); got "
                         f"{None if z is None else tuple(z.shape)}")
    model.eval()
    with torch.no_grad():
        decoded = model.decode(z.to(_device(model))).cpu()
    return _draw_decodes(decoded, data, ax=ax, path=path, title=f"{title}\n{name}",
                         what=what or f"{len(z)} decoded latent points", short=what or "decoded latent points")


def _draw_decodes(x: torch.Tensor, data: Dataset, *, ax: Axes | None, path: str | Path | None, title: str,
                  what: str, short: str) -> Figure:
    """Images in a square grid, or a scatter over the training data (PCA plane for tabular data)."""
    n, kind = len(x), data.meta.kind
    if kind == "image":
        ncol = int(math.ceil(math.sqrt(n)))
        fig, ax = _new_axes(ax, (5.0, 5.0 * math.ceil(n / ncol) / ncol + 0.6))
        _show_grid(ax, _tile(_images(x, data), ncol=ncol), *_image_range(data))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(what)
        _title(ax, title)
        return _finish(fig, path)
    fig, ax = _new_axes(ax, (6.0, 5.2))
    if kind == "points2d":
        xy_data, xy = data.train.numpy(), x.numpy()
        xlabel, ylabel = "x1", "x2"
    else:
        xy_data, _, pca = _pca_2d(data.train.numpy())
        xy = pca.transform(x.numpy())
        xlabel, ylabel = "PC1 of the training data", "PC2 of the training data"
    ax.scatter(xy_data[:, 0], xy_data[:, 1], s=6, color="lightgrey", linewidths=0, label="training data")
    ax.scatter(xy[:, 0], xy[:, 1], s=10, color="tab:orange", linewidths=0, label=short)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if kind == "points2d":
        ax.set_aspect("equal", adjustable="datalim")
    _title(ax, title)
    _legend(ax, loc="best")
    return _finish(fig, path)


# --------------------------------------------------------------------------- interpolation
def default_pair(data: Dataset) -> tuple[int, int]:
    """Two test indices to interpolate between: the first test point and the first of another class."""
    labels = data.test_labels
    if labels is None or len(labels) < 2:
        return 0, min(1, len(data.test) - 1)
    other = (labels != labels[0]).nonzero().flatten()
    return 0, int(other[0]) if len(other) else 1


def plot_interpolation(
    model: Any,
    data: Dataset | None = None,
    *,
    i: int | None = None,
    j: int | None = None,
    steps: int = 10,
    name: str | None = None,
    ax: Axes | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Decode ``(1 - t) z_i + t z_j`` for ``steps`` values of t in [0, 1], ``z`` = latent means of test rows i, j.

    Images: one row, the two inputs at its ends. 2-D points: the decoded path over the data,
    coloured by t, beside the straight line between the two inputs. Default i, j: the first
    test point and the first test point of another class.
    """
    model, data, name = _unpack(model, data, name)
    if i is None or j is None:
        i0, j0 = default_pair(data)
        i, j = (i0 if i is None else i), (j0 if j is None else j)
    n_test = len(data.test)
    for arg, idx in (("i", i), ("j", j)):
        if not 0 <= idx < n_test:
            raise UserError(f"{arg}={idx} is not a test index (0..{n_test - 1})")
    model.eval()
    dev = _device(model)
    ends = data.test[[i, j]]
    z = latent_means(model, ends)
    t = torch.linspace(0, 1, steps)[:, None]
    path_z = (1 - t) * z[0] + t * z[1]
    with torch.no_grad():
        decoded = model.decode(path_z.to(dev)).cpu()
    labels = data.test_labels
    ends_desc = f"test {i}" + (f" (class {int(labels[i])})" if labels is not None else "") + \
        f" to test {j}" + (f" (class {int(labels[j])})" if labels is not None else "")
    kind = data.meta.kind
    if kind == "image":
        imgs = np.concatenate([_images(ends[:1], data), _images(decoded, data), _images(ends[1:], data)])
        fig, ax = _new_axes(ax, (max(5.0, 0.7 * (steps + 2)), 2.0))
        _show_grid(ax, _tile(imgs, ncol=len(imgs), pad=1), *_image_range(data))
        w = data.meta.image_shape[1]
        ticks = [(w + 1) * k + w / 2 - 0.5 for k in range(len(imgs))]
        ax.set_xticks(ticks, ["x_i"] + [f"{float(v):.2f}" for v in t[:, 0]] + ["x_j"], fontsize=7)
        ax.set_yticks([])
        ax.set_xlabel("t: decode((1 - t) z_i + t z_j); ends: the two inputs")
        _title(ax, f"Interpolation in latent space, {ends_desc}\n{name}")
        return _finish(fig, path)
    fig, ax = _new_axes(ax, (6.0, 5.2))
    dec = decoded.numpy()
    e = ends.numpy()
    if kind == "points2d":
        base = data.train.numpy()
        xlabel, ylabel = "x1", "x2"
    else:
        base, _, pca = _pca_2d(data.train.numpy())
        dec, e = pca.transform(dec), pca.transform(e)
        xlabel, ylabel = "PC1 of the training data", "PC2 of the training data"
    ax.scatter(base[:, 0], base[:, 1], s=5, color="lightgrey", linewidths=0, label="training data")
    ax.plot(e[:, 0], e[:, 1], "k--", linewidth=1, label="straight line in data space")
    ax.plot(dec[:, 0], dec[:, 1], color="tab:red", linewidth=1, alpha=0.6)
    sc = ax.scatter(dec[:, 0], dec[:, 1], c=t[:, 0].numpy(), cmap="plasma", s=30, zorder=3,
                    label="decoded latent path")
    ax.scatter(e[:, 0], e[:, 1], marker="*", s=200, color="black", zorder=4, label="the two test inputs")
    fig.colorbar(sc, ax=ax, label="t")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if kind == "points2d":
        ax.set_aspect("equal", adjustable="datalim")
    _title(ax, f"Interpolation in latent space, {ends_desc}\n{name}")
    _legend(ax, loc="best", markerscale=0.6)
    return _finish(fig, path)


# --------------------------------------------------------------------------- 2-D overview
def plot_overview_2d(
    model: Any,
    data: Dataset | None = None,
    *,
    n_samples: int = 500,
    seed: int = 0,
    name: str | None = None,
    ax: Axes | None = None,
    path: str | Path | None = None,
) -> Figure:
    """2-D data: the test points, their reconstructions and (VAE only) prior samples on one scatter."""
    model, data, name = _unpack(model, data, name)
    if data.meta.kind != "points2d":
        raise UserError(f"plot_overview_2d is for 2-D point data; {data.meta.name!r} is {data.meta.kind!r}")
    model.eval()
    x = data.test.numpy()
    rec = model.reconstruct(data.test.to(_device(model))).cpu().numpy()
    fig, ax = _new_axes(ax, (6.0, 5.2))
    ax.scatter(x[:, 0], x[:, 1], s=8, color="tab:blue", alpha=0.5, linewidths=0, label="test data")
    ax.scatter(rec[:, 0], rec[:, 1], s=8, color="tab:red", alpha=0.7, linewidths=0, label="reconstructions")
    if can_sample(model):
        gen = torch.Generator(device=_device(model)).manual_seed(seed)
        s = model.sample(n_samples, generator=gen).cpu().numpy()
        ax.scatter(s[:, 0], s[:, 1], s=8, color="tab:orange", alpha=0.7, linewidths=0,
                   label=f"prior samples (mean of p(x | z)), n={n_samples}")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_aspect("equal", adjustable="datalim")
    extra = ", prior samples" if can_sample(model) else " (an autoencoder has no prior to sample)"
    _title(ax, f"Data, reconstructions{extra}\n{name}")
    _legend(ax, loc="best")
    return _finish(fig, path)


# --------------------------------------------------------------------------- training curves
def _history_of(run: Any) -> tuple[str | None, list[dict]]:
    """(label, records) from a Run, a run folder path, a History/list of records."""
    if isinstance(run, (str, Path)):  # the history committed with the checkpoint (metrics.json is a view)
        from .runs import read_history

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
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    for ax, panel in zip(axes, panels, strict=True):
        for k, label, history in groups[panel]:
            epochs = [r["epoch"] for r in history]
            if panel == "elbo":
                train = [r.get("train_elbo") for r in history]
                test = [r.get("test_elbo") for r in history]
            else:
                train = [r.get("train_reconstruction", r.get("train_loss")) for r in history]
                test = [r.get("test_loss") for r in history]
            colour = cmap(k % 10)
            label = _wrap(label, 45)
            ax.plot(epochs, train, linestyle="--", color=colour, linewidth=1.2, label=f"{label}: train")
            if any(v is not None for v in test):
                ax.plot(epochs, [np.nan if v is None else v for v in test], color=colour, linewidth=1.8,
                        marker="o" if len(epochs) <= 30 else None, markersize=3, label=f"{label}: test")
        ax.set_xlabel("epoch")
        if panel == "elbo":
            ax.set_ylabel("ELBO (nats per data point, higher is better)")
            ax.set_title("VAE: train ELBO (dashed, during the epoch) and test ELBO (solid)", fontsize=10)
        else:
            ax.set_ylabel("reconstruction error per data point (lower is better)")
            ax.set_title("Autoencoders: reconstruction error, train (dashed; inputs as trained on,\n"
                         "e.g. corrupted for a DAE; no penalty) and clean test split (solid)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if title is None:
        title = "Training curves: " + ", ".join(label for label, _ in items)
    fig.suptitle(_wrap(title, 80 * len(panels)), fontsize=11)
    return _finish(fig, path)


# --------------------------------------------------------------------------- diagnostics (evaluate)
def plot_khat(report: Any, *, path: str | Path | None = None) -> Figure:
    """PSIS k-hat per point of an :class:`ppl_vae.diagnostics.Report` (thresholds 0.5 and 0.7)."""
    from .diagnostics.psis import KHAT_BAD, KHAT_GOOD

    khat = report.points["khat"].to_numpy()
    idx = np.arange(len(khat))
    fig, ax = _new_axes(None, (7, 3.6))
    finite = np.isfinite(khat)
    colour = np.where(khat > KHAT_BAD, "tab:red", np.where(khat > KHAT_GOOD, "tab:orange", "tab:blue"))
    ax.scatter(idx[finite], khat[finite], s=6, c=colour[finite], alpha=0.7, linewidths=0)
    for level, style, label in ((KHAT_GOOD, ":", "0.5 (good below)"), (KHAT_BAD, "--", "0.7 (unreliable above)")):
        ax.axhline(level, color="grey", linestyle=style, linewidth=1, label=label)
    s = report.summary
    ax.set_xlabel("data point")
    ax.set_ylabel("PSIS k-hat (Pareto shape)")
    ax.set_title(f"Importance-weight tails per point: {report.name}, K={s['num_samples']}\n"
                 f"{100 * s['khat_share_above_0.5']:.1f}% above 0.5, {100 * s['khat_share_above_0.7']:.1f}% above 0.7",
                 fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    return _finish(fig, path)


def plot_gap_hist(report: Any, *, path: str | Path | None = None) -> Figure:
    """Histogram of the per-point gap IW log p(x) - ELBO of an :class:`ppl_vae.diagnostics.Report`."""
    gap = report.points["gap"].to_numpy()
    gap = gap[np.isfinite(gap)]
    fig, ax = _new_axes(None, (6, 3.6))
    ax.hist(gap, bins=min(60, max(10, len(gap) // 10)), color="tab:blue", alpha=0.8)
    s = report.summary
    ax.axvline(s["gap_mean"], color="black", linestyle="--", linewidth=1,
               label=f"mean {s['gap_mean']:.3f} ± {s['gap_se']:.3f} (s.e.)")
    ax.set_xlabel("IW log p(x) - ELBO (nats per data point)")
    ax.set_ylabel("number of points")
    ax.set_title(f"Gap between IW (K={s['num_samples']}) and ELBO: {report.name}", fontsize=10)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def save_report_figures(report: Any, directory: str | Path) -> dict[str, Path]:
    """Write ``khat.png`` and ``gap_hist.png`` of an evaluation report into ``directory``; returns the paths."""
    out = Path(directory)
    paths = {"khat": out / "khat.png", "gap_hist": out / "gap_hist.png"}
    plot_khat(report, path=paths["khat"])
    plot_gap_hist(report, path=paths["gap_hist"])
    return paths


def plot_elbo_vs_iw(report: Any, *, path: str | Path | None = None) -> Figure:
    """Per-point ELBO (x) against the importance-weighted log p(x) (y) of a Report, coloured by k-hat.

    Points sit on or above the diagonal (IW >= ELBO from the same draws); the vertical distance
    is the gap, a lower bound on KL(q(z | x) || p(z | x)).
    """
    pts = report.points
    elbo_v, iw_v, khat = (pts[c].to_numpy() for c in ("elbo", "iw_log_likelihood", "khat"))
    fig, ax = _new_axes(None, (6.0, 5.2))
    groups = ((khat < 0.5, "tab:blue", "k-hat < 0.5 (good)"),
              ((khat >= 0.5) & (khat < 0.7), "tab:orange", "0.5 <= k-hat < 0.7 (usable)"),
              (khat >= 0.7, "tab:red", "k-hat >= 0.7 (IW unreliable)"))
    for sel, colour, label in groups:
        if sel.any():
            ax.scatter(elbo_v[sel], iw_v[sel], s=8, color=colour, alpha=0.7, linewidths=0,
                       label=f"{label}: {int(sel.sum())} points")
    lo, hi = float(np.nanmin(elbo_v)), float(np.nanmax(iw_v))
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1, label="IW = ELBO")
    s = report.summary
    ax.set_xlabel("ELBO (nats per data point)")
    ax.set_ylabel(f"IW log p(x), K={s['num_samples']} (nats per data point)")
    _title(ax, f"ELBO vs IW log p(x) per point (mean gap {s['gap_mean']:.3f} nats)\n{report.name}")
    _legend(ax, loc="lower right", markerscale=1.5)
    return _finish(fig, path)


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
    from .runs import load_run

    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    unknown = sorted(set(kinds) - set(KINDS) - {"all"})
    if unknown:
        raise UserError(f"unknown plot kind(s) {unknown}; choose from {', '.join(KINDS)} or all")
    run = load_run(run_dir, device=device)
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    model, data = run.model, run.data
    name = f"run {run_dir.resolve().name}: {model_label(model)}, {data.meta.name}"
    wanted: list[str] = []
    for kind in kinds:
        if kind == "all":
            for k in ALL_KINDS:
                if k == "samples" and not can_sample(model):
                    if skipped is not None:
                        skipped.append(f"samples: {type(model).__name__} has no prior to sample from")
                    continue
                if k == "overview" and data.meta.kind != "points2d":
                    continue
                wanted.append(k)
        else:
            wanted.append(kind)
    wanted = list(dict.fromkeys(wanted))
    paths: list[Path] = []
    report = None
    for kind in wanted:
        path = out / f"{kind}.png"
        if kind == "latent":
            fig = plot_latent(model, data, name=name)
        elif kind == "recon":
            fig = plot_reconstructions(model, data, name=name)
        elif kind == "samples":
            fig = plot_samples(model, data, name=name)
        elif kind == "interpolate":
            fig = plot_interpolation(model, data, name=name)
        elif kind == "overview":
            fig = plot_overview_2d(model, data, name=name)
        elif kind == "curves":
            fig = plot_curves([run], labels=[run_dir.resolve().name], title=f"Training curves: {name}")
        else:  # khat, gap
            if not (callable(getattr(model, "model", None)) and callable(getattr(model, "guide", None))):
                raise UserError(f"{kind!r} needs a VAE (importance weights need p(x, z) and q(z | x)); "
                                 f"{type(model).__name__} defines no likelihood")
            if report is None:
                from .diagnostics import evaluate

                report = evaluate(model, data.test, num_samples=num_samples, name=name)
            fig = (plot_khat if kind == "khat" else plot_gap_hist)(report)
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    return paths
