"""What every figure shares: model and data helpers, axes, titles, image grids, label colours, PCA."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..data import Dataset
from ..errors import ArgumentTypeError, UserError

DPI = 120
KINDS = ("latent", "recon", "samples", "interpolate", "curves", "overview", "khat", "gap")
#: what ``--kind all`` draws (``samples`` only for models with a prior, ``overview`` only for 2-D data)
ALL_KINDS = ("latent", "recon", "samples", "interpolate", "curves", "overview")


# --------------------------------------------------------------------------- helpers
def latent_means(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """The point in latent space that represents each row of ``x: (N, D)``: ``(N, d)`` on the CPU.

    For a VAE the posterior mean ``E_q[z | x]`` (``encode`` returns ``(loc, scale)``); for an
    autoencoder its code ``f(x)``.
    """
    device = model_device(model)
    parts = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out = cast(Any, model).encode(x[start : start + batch_size].to(device))
            parts.append((out[0] if isinstance(out, tuple) else out).cpu())
    return torch.cat(parts)


def can_sample(model: torch.nn.Module) -> bool:
    """True for models with a prior to sample from (the VAE); False for autoencoders."""
    return callable(getattr(model, "sample", None))


def prior_means(model: torch.nn.Module, n: int, generator: torch.Generator) -> torch.Tensor:
    """The means of ``p(x | z)`` for ``n`` prior draws (``model.sample(..., mean=True)``: since issue 20
    ``sample`` draws from ``p(x | z)``; models whose ``sample`` takes no ``mean`` return means)."""
    import inspect

    sample = cast(Callable[..., torch.Tensor], getattr(model, "sample"))  # noqa: B009
    if "mean" in inspect.signature(sample).parameters:
        return sample(n, generator=generator, mean=True)
    return sample(n, generator=generator)


def model_label(model: torch.nn.Module) -> str:
    """A short description for titles: ``"VAE d=8, bernoulli"``, ``"DenoisingAE d=2 (dae:...)"``."""
    d = getattr(model, "latent_dim", "?")
    spec = getattr(model, "spec", None)
    if spec is not None:  # an autoencoder: "dae:reconstruction=mse,sigma=0.3" -> "(mse, sigma=0.3)"
        params = spec.partition(":")[2].replace("reconstruction=", "").replace(",", ", ")
        return f"{type(model).__name__} d={d} ({params})"
    lik = getattr(getattr(model, "likelihood", None), "spec", None)
    return f"{type(model).__name__} d={d}" + (f", {lik}" if lik else "")


def model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def unpack_run(
    model: Any, data: Dataset | None, name: str | None
) -> tuple[torch.nn.Module, Dataset, str]:
    """Accept ``(model, data)`` or a ``Run`` in place of the model; return model, data and a title label."""
    if hasattr(model, "model") and hasattr(model, "data") and hasattr(model, "history"):  # a Run
        run = model
        model, data = run.model, run.data if data is None else data
        if name is None and getattr(run, "path", None) is not None:
            name = f"run {Path(run.path).name}: {model_label(model)}"
    if data is None:
        raise UserError("pass the data (a ppl_vae Dataset) the model was trained on, or a Run")
    if not isinstance(data, Dataset):
        raise ArgumentTypeError(
            f"data must be a ppl_vae Dataset (for its metadata); got {type(data).__name__}"
        )
    return model, data, name or model_label(model)


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return _figure(ax), ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def shorten(word: str, width: int) -> str:
    """A word that cannot fit on a line of ``width``: a path keeps its last parts (``.../runs/a``), any
    other word its two ends (``a-very-long-ru...experiment``), so that no title is clipped."""
    if len(word) <= width:
        return word
    width = max(12, width - 8)  # room for a short word beside it on the line
    if "/" in word.strip("/"):
        parts, kept = word.rstrip("/").split("/"), ""
        for part in reversed(parts):
            if len(part) + len(kept) + 4 > width:
                break
            kept = f"/{part}{kept}"
        return f"...{kept}" if kept else f".../{shorten(parts[-1], width - 4 + 8)}"
    half = max(4, (width - 3) // 2)
    return f"{word[:half]}...{word[-half:]}"


def _figure(ax: Axes) -> Figure:
    """The figure an axes is drawn in (the root one when it sits in a subfigure)."""
    fig = ax.get_figure(root=True)
    if not isinstance(fig, Figure):
        raise ArgumentTypeError("ax is not in a figure: pass axes made by plt.subplots or Figure")
    return fig


def wrap_title(text: str, width: int = 72) -> str:
    """Wrap each line of a title to ``width`` characters (long run names, paths and model specs); a word
    longer than a line is shortened (:func:`shorten`), never clipped by the figure's edge."""
    import textwrap

    return "\n".join(
        textwrap.fill(
            " ".join(shorten(w, width) for w in line.split(" ")),
            width,
            break_long_words=False,
            break_on_hyphens=False,
        )
        for line in text.split("\n")
    )


def integer_ticks(*axes: Any) -> None:
    """Whole-number ticks on an axis of counts or epochs (no 2.5 epochs, no 7.5 points)."""
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.set_major_locator(MaxNLocator(integer=True))


def add_title(ax: Axes, text: str, fontsize: float = 10) -> None:
    """Set a title wrapped to the width of the figure (about 11 characters per inch at 10 pt)."""
    inches = _figure(ax).get_figwidth()
    spec = ax.get_subplotspec()
    if (
        spec is not None
    ):  # one panel of a grid the caller composed: wrap to the panel's share of the width
        cols = spec.colspan
        inches *= (cols.stop - cols.start) / spec.get_gridspec().ncols
    width = max(30, int(inches * 110 / fontsize))
    ax.set_title(wrap_title(text, width), fontsize=fontsize)


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes (rendered in memory, then written like any other file)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` atomically (temp file, fsync, rename; a link at ``path`` is refused)."""
    from ..store.files import write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, png_bytes(fig, dpi))
    return path


def finish(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        save_png(fig, path)
    return fig


def tile_images(images: np.ndarray, ncol: int, pad: int = 1) -> np.ndarray:
    """``(n, h, w)`` images -> one ``(rows*(h+pad)-pad, ncol*(w+pad)-pad)`` array, NaN between tiles."""
    n, h, w = images.shape
    rows = math.ceil(n / ncol)
    grid = np.full((rows * (h + pad) - pad, ncol * (w + pad) - pad), np.nan)
    for k in range(n):
        r, c = divmod(k, ncol)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = images[k]
    return grid


def show_grid(ax: Axes, grid: np.ndarray, vmin: float = 0.0, vmax: float = 1.0) -> None:
    import matplotlib

    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")


def image_range(data: Dataset) -> tuple[float, float]:
    lo, hi = data.meta.value_range
    return (0.0, 1.0) if lo >= 0 and hi <= 1 else (lo, hi)


def image_hw(data: Dataset) -> tuple[int, int]:
    """The first two entries of ``data.meta.image_shape`` (height, width); an error for non-images."""
    shape = data.meta.image_shape
    if shape is None:
        raise ValueError(f"dataset {data.meta.name!r} has no image_shape: it is not images")
    return int(shape[0]), int(shape[1])


def as_images(x: torch.Tensor, data: Dataset) -> np.ndarray:
    shape = data.meta.image_shape
    if shape is None:
        raise ValueError("as_images: the dataset has no image_shape")
    return x.detach().cpu().float().numpy().reshape(len(x), *shape)


def pick_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    return x[: min(n, len(x))]


def label_colours(labels: np.ndarray | None) -> tuple[list[Any], Any]:
    import matplotlib

    if labels is None:
        return [], None
    classes = np.unique(labels)
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "viridis"]
    return list(classes), cmap


def scatter_by_label(
    ax: Axes,
    xy: np.ndarray,
    labels: np.ndarray | None,
    *,
    s: float = 8,
    alpha: float = 0.7,
    label_prefix: str = "class",
) -> None:
    """Scatter ``xy: (N, 2)``; coloured by label with a legend (<= 10 classes) or a colour bar."""
    if labels is None:
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=s,
            alpha=alpha,
            color="tab:blue",
            linewidths=0,
            label="test points",
        )
        return
    classes, cmap = label_colours(labels)
    if len(classes) <= 10:
        for k, c in enumerate(classes):
            sel = labels == c
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                s=s,
                alpha=alpha,
                color=cmap(k % 10),
                linewidths=0,
                label=f"{label_prefix} {c}",
            )
    else:
        sc = ax.scatter(xy[:, 0], xy[:, 1], s=s, alpha=alpha, c=labels, cmap=cmap, linewidths=0)
        ax.figure.colorbar(sc, ax=ax, label="label")


def add_legend(
    ax: Axes,
    *,
    outside: bool = True,
    side: Literal["below", "right"] = "below",
    markerscale: float = 1.5,
    **kwargs: Any,
) -> None:
    """A small legend clear of the data: below the figure (``side="below"``, room made by the layout) or
    to the right of the axes (``"right"``: a long list such as ten classes); ``outside=False`` puts it
    inside at ``loc``, for axes a caller composed into a figure of their own."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if outside and side == "below":
        ax.figure.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(3, len(handles)),
            fontsize=8,
            markerscale=markerscale,
            frameon=False,
            **kwargs,
        )
        return
    if outside:
        kwargs.update(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    else:
        kwargs.setdefault("loc", "best")
    ax.legend(fontsize=8, markerscale=markerscale, **kwargs)


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(points)
    return pca.transform(points), pca.explained_variance_ratio_, pca
