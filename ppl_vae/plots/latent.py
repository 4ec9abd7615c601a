"""Latent maps, reconstructions, prior samples, decodes of chosen points, interpolations, the 2-D overview."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..data import Dataset
from ..errors import UserError
from ._common import (
    add_legend,
    add_title,
    as_images,
    can_sample,
    finish,
    image_hw,
    image_range,
    integer_ticks,
    latent_means,
    model_device,
    new_axes,
    pca_2d,
    pick_rows,
    prior_means,
    scatter_by_label,
    show_grid,
    tile_images,
    unpack_run,
    wrap_title,
)


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
    model, data, name = unpack_run(model, data, name)
    x = data.test if split == "test" else data.train
    label_tensor = data.test_labels if split == "test" else data.train_labels
    x = pick_rows(x, max_points)
    labels = None if label_tensor is None else label_tensor[: len(x)].numpy()
    z = latent_means(model, x).numpy()
    d = z.shape[1]
    own_axes = ax is None
    fig, ax = new_axes(ax, (7.0, 5.2))
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
        xy, ratio, _ = pca_2d(z)
        xlabel = f"PC1 of {what} ({100 * ratio[0]:.0f}% of variance)"
        ylabel = f"PC2 ({100 * ratio[1]:.0f}% of variance)"
    scatter_by_label(ax, xy, labels)
    if is_vae and d == 2:
        t = np.linspace(0, 2 * np.pi, 200)
        for r, style in ((1, "--"), (2, ":")):
            ax.plot(
                r * np.cos(t),
                r * np.sin(t),
                color="grey",
                linestyle=style,
                linewidth=1,
                label=f"prior N(0, I): {r} sd",
            )
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    shown = "" if d <= 2 else f" (PCA of d={d})"
    add_title(ax, f"Latent map: {what} of the {split} split{shown}\n{name}")
    add_legend(ax, outside=own_axes, side="right")
    return finish(fig, path)


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
    model, data, name = unpack_run(model, data, name)
    kind, own_axes = data.meta.kind, ax is None
    model.eval()
    if kind == "image":
        x = pick_rows(data.test, n)
        rec = model.reconstruct(x.to(model_device(model))).cpu()
        grid = tile_images(np.concatenate([as_images(x, data), as_images(rec, data)]), ncol=len(x))
        fig, ax = new_axes(ax, (max(4.0, 0.75 * len(x)), 2.4))
        show_grid(ax, grid, *image_range(data))
        h, w = image_hw(data)
        ax.set_yticks([h / 2 - 0.5, h + 1 + h / 2 - 0.5], ["original", "reconstruction"])
        ax.set_xticks(
            [(w + 1) * k + w / 2 - 0.5 for k in range(len(x))],
            [str(k) for k in range(len(x))],
            fontsize=7,
        )
        ax.set_xlabel("test example")
        add_title(ax, f"Reconstructions of test inputs (top: input, bottom: decoded)\n{name}")
        return finish(fig, path)
    if kind == "points2d":
        x = data.test
        rec = model.reconstruct(x.to(model_device(model))).cpu().numpy()
        xn = x.numpy()
        fig, ax = new_axes(ax, (6.0, 5.2))
        segments = np.stack([xn, rec], 1)
        from matplotlib.collections import LineCollection

        ax.add_collection(LineCollection(list(segments), colors="grey", linewidths=0.5, alpha=0.5))
        ax.scatter(
            xn[:, 0], xn[:, 1], s=8, color="tab:blue", alpha=0.6, linewidths=0, label="test point x"
        )
        ax.scatter(
            rec[:, 0],
            rec[:, 1],
            s=8,
            color="tab:red",
            alpha=0.8,
            linewidths=0,
            label="reconstruction",
        )
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.set_aspect("equal", adjustable="datalim")
        add_title(ax, f"Reconstructions of the test split (grey: x to its reconstruction)\n{name}")
        add_legend(ax, outside=own_axes)
        return finish(fig, path)
    return _table_reconstructions(model, data, n, name, path)


def column_names(data: Dataset) -> list[str]:
    """A table's column names (from its schema), else ``"0"``, ``"1"``, ..."""
    schema = data.meta.schema or {}
    names = [c.get("name") for c in schema.get("columns", []) if isinstance(c, dict)]
    given = [n for n in names if isinstance(n, str)]
    if len(given) == len(names) == data.meta.input_dim:
        return given
    return [str(j) for j in range(data.meta.input_dim)]


def _table_reconstructions(model: Any, data: Dataset, n: int, name: str, path) -> Figure:
    """Heat maps of the first ``n`` test rows and their reconstructions, columns by name, each column
    standardised by the training split's mean and sd (one column in thousands would hide the others)."""
    x = pick_rows(data.test, n)
    rec = model.reconstruct(x.to(model_device(model))).cpu().numpy()
    train = data.train.numpy()
    mean, sd = np.nanmean(train, 0), np.nanstd(train, 0)
    sd = np.where(sd > 0, sd, 1.0)
    shown = [(x.numpy() - mean) / sd, (rec - mean) / sd]
    names = column_names(data)
    fig = Figure(
        figsize=(max(8.0, 0.45 * len(names) + 3), 0.3 * len(x) + 3.0), layout="constrained"
    )
    axes = fig.subplots(1, 2, sharey=True)
    # the colour scale of the inputs (at least +-3 sd): a reconstruction far outside it saturates, and
    # the colour bar's arrows say so, rather than washing the inputs out
    limit = max(3.0, float(np.nanmax(np.abs(shown[0]))))
    step = max(1, math.ceil(len(names) / 30))  # at most 30 column labels per panel
    for a, m, title in ((axes[0], shown[0], "input"), (axes[1], shown[1], "reconstruction")):
        im = a.imshow(
            m, aspect="auto", vmin=-limit, vmax=limit, cmap="RdBu_r", interpolation="nearest"
        )
        a.set_title(title, fontsize=9)
        ticks = list(range(0, len(names), step))
        a.set_xticks(ticks, [names[j] for j in ticks], rotation=45, ha="right", fontsize=7)
        a.set_xlabel("column")
    axes[0].set_ylabel("test row")
    integer_ticks(axes[0].yaxis)
    outside = bool(np.nanmax(np.abs(shown[1])) > limit)
    fig.colorbar(
        im,
        ax=axes,
        extend="both" if outside else "neither",
        label="value, standardised per column (training mean 0, sd 1)",
    )
    fig.suptitle(
        wrap_title(f"Reconstructions of the first {len(x)} test rows\n{name}", 90), fontsize=10
    )
    return finish(fig, path)


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
    model, data, name = unpack_run(model, data, name)
    if not can_sample(model):
        raise UserError(
            f"{type(model).__name__} has no prior over its code, so 'samples from the prior' are not "
            "defined for it; only the VAE can be sampled (plot the latent map or an interpolation instead)"
        )
    model.eval()
    gen = torch.Generator(device=model_device(model)).manual_seed(seed)
    samples = prior_means(model, n, gen).cpu()
    return _draw_decodes(
        samples,
        data,
        ax=ax,
        path=path,
        title=f"Samples from the prior (seed {seed})\n{name}",
        what=f"{n} draws z ~ N(0, I), each shown as the mean of p(x | z)",
        short=f"{n} samples: mean of p(x | z), z ~ N(0, I)",
    )


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
    model, data, name = unpack_run(model, data, name)
    if z is None or z.dim() != 2 or z.shape[1] != model.latent_dim:
        raise UserError(
            f"z must be a tensor (n, {model.latent_dim}); got "
            f"{None if z is None else tuple(z.shape)}"
        )
    model.eval()
    with torch.no_grad():
        decoded = model.decode(z.to(model_device(model))).cpu()
    return _draw_decodes(
        decoded,
        data,
        ax=ax,
        path=path,
        title=f"{title}\n{name}",
        what=what or f"{len(z)} decoded latent points",
        short=what or "decoded latent points",
    )


def _draw_decodes(
    x: torch.Tensor,
    data: Dataset,
    *,
    ax: Axes | None,
    path: str | Path | None,
    title: str,
    what: str,
    short: str,
) -> Figure:
    """Images in a square grid, or a scatter over the training data (PCA plane for tabular data)."""
    n, kind = len(x), data.meta.kind
    if kind == "image":
        ncol = int(math.ceil(math.sqrt(n)))
        fig, ax = new_axes(ax, (5.0, 5.0 * math.ceil(n / ncol) / ncol + 0.6))
        show_grid(ax, tile_images(as_images(x, data), ncol=ncol), *image_range(data))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(what)
        add_title(ax, title)
        return finish(fig, path)
    own_axes = ax is None
    fig, ax = new_axes(ax, (6.0, 5.2))
    if kind == "points2d":
        xy_data, xy = data.train.numpy(), x.numpy()
        xlabel, ylabel = "x1", "x2"
    else:
        xy_data, _, pca = pca_2d(data.train.numpy())
        xy = pca.transform(x.numpy())
        xlabel, ylabel = "PC1 of the training data", "PC2 of the training data"
    ax.scatter(
        xy_data[:, 0], xy_data[:, 1], s=6, color="lightgrey", linewidths=0, label="training data"
    )
    ax.scatter(xy[:, 0], xy[:, 1], s=10, color="tab:orange", linewidths=0, label=short)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if kind == "points2d":
        ax.set_aspect("equal", adjustable="datalim")
    add_title(ax, title)
    add_legend(ax, outside=own_axes)
    return finish(fig, path)


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
    model, data, name = unpack_run(model, data, name)
    if i is None or j is None:
        i0, j0 = default_pair(data)
        i, j = (i0 if i is None else i), (j0 if j is None else j)
    n_test = len(data.test)
    for arg, idx in (("i", i), ("j", j)):
        if not 0 <= idx < n_test:
            raise UserError(f"{arg}={idx} is not a test index (0..{n_test - 1})")
    model.eval()
    dev = model_device(model)
    ends = data.test[[i, j]]
    z = latent_means(model, ends)
    t = torch.linspace(0, 1, steps)[:, None]
    path_z = (1 - t) * z[0] + t * z[1]
    with torch.no_grad():
        decoded = model.decode(path_z.to(dev)).cpu()
    labels = data.test_labels
    ends_desc = (
        f"test {i}"
        + (f" (class {int(labels[i])})" if labels is not None else "")
        + f" to test {j}"
        + (f" (class {int(labels[j])})" if labels is not None else "")
    )
    kind, own_axes = data.meta.kind, ax is None
    if kind == "image":
        imgs = np.concatenate(
            [as_images(ends[:1], data), as_images(decoded, data), as_images(ends[1:], data)]
        )
        fig, ax = new_axes(ax, (max(5.0, 0.7 * (steps + 2)), 2.0))
        show_grid(ax, tile_images(imgs, ncol=len(imgs), pad=1), *image_range(data))
        w = image_hw(data)[1]
        ticks = [(w + 1) * k + w / 2 - 0.5 for k in range(len(imgs))]
        ax.set_xticks(ticks, ["x_i"] + [f"{float(v):.2f}" for v in t[:, 0]] + ["x_j"], fontsize=7)
        ax.set_yticks([])
        ax.set_xlabel("t: decode((1 - t) z_i + t z_j); ends: the two inputs")
        add_title(ax, f"Interpolation in latent space, {ends_desc}\n{name}")
        return finish(fig, path)
    fig, ax = new_axes(ax, (6.0, 5.2))
    dec = decoded.numpy()
    e = ends.numpy()
    if kind == "points2d":
        base = data.train.numpy()
        xlabel, ylabel = "x1", "x2"
    else:
        base, _, pca = pca_2d(data.train.numpy())
        dec, e = pca.transform(dec), pca.transform(e)
        xlabel, ylabel = "PC1 of the training data", "PC2 of the training data"
    ax.scatter(base[:, 0], base[:, 1], s=5, color="lightgrey", linewidths=0, label="training data")
    ax.plot(e[:, 0], e[:, 1], "k--", linewidth=1, label="straight line in data space")
    ax.plot(dec[:, 0], dec[:, 1], color="tab:red", linewidth=1, alpha=0.6)
    sc = ax.scatter(
        dec[:, 0],
        dec[:, 1],
        c=t[:, 0].numpy(),
        cmap="plasma",
        s=30,
        zorder=3,
        label="decoded latent path",
    )
    ax.scatter(
        e[:, 0], e[:, 1], marker="*", s=200, color="black", zorder=4, label="the two test inputs"
    )
    fig.colorbar(sc, ax=ax, label="t")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if kind == "points2d":
        ax.set_aspect("equal", adjustable="datalim")
    add_title(ax, f"Interpolation in latent space, {ends_desc}\n{name}")
    add_legend(ax, outside=own_axes, markerscale=0.6)
    return finish(fig, path)


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
    model, data, name = unpack_run(model, data, name)
    if data.meta.kind != "points2d":
        raise UserError(
            f"plot_overview_2d is for 2-D point data; {data.meta.name!r} is {data.meta.kind!r}"
        )
    model.eval()
    x = data.test.numpy()
    rec = model.reconstruct(data.test.to(model_device(model))).cpu().numpy()
    own_axes = ax is None
    fig, ax = new_axes(ax, (6.0, 5.2))
    ax.scatter(x[:, 0], x[:, 1], s=8, color="tab:blue", alpha=0.5, linewidths=0, label="test data")
    ax.scatter(
        rec[:, 0], rec[:, 1], s=8, color="tab:red", alpha=0.7, linewidths=0, label="reconstructions"
    )
    if can_sample(model):
        gen = torch.Generator(device=model_device(model)).manual_seed(seed)
        s = prior_means(model, n_samples, gen).cpu().numpy()
        ax.scatter(
            s[:, 0],
            s[:, 1],
            s=8,
            color="tab:orange",
            alpha=0.7,
            linewidths=0,
            label=f"prior samples (mean of p(x | z)), n={n_samples}",
        )
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_aspect("equal", adjustable="datalim")
    extra = ", prior samples" if can_sample(model) else " (an autoencoder has no prior to sample)"
    add_title(ax, f"Data, reconstructions{extra}\n{name}")
    add_legend(ax, outside=own_axes)
    return finish(fig, path)
