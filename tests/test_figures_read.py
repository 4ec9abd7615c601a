"""Figures a person reads: drawn, then measured. No title runs off the figure (long run names and paths
wrap or shorten), count and epoch axes tick in whole numbers, legends sit clear of the data, a table's
reconstruction names its columns, and a comparison's method labels do not overlap."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ppl_vae import plots  # noqa: E402
from ppl_vae.analysis.comparison import Comparison, plot_comparison  # noqa: E402
from ppl_vae.data import load_dataset  # noqa: E402
from ppl_vae.diagnostics import Report  # noqa: E402
from ppl_vae.models import VAE  # noqa: E402

LONG = "a-run-folder-name-that-someone-made-very-long-on-purpose-to-see-what-happens-2026-12-07"
PATH = "/home/statistician/projects/2026/hospital-readmissions/runs/" + LONG


def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _inside(fig, artist) -> bool:
    box = artist.get_window_extent(_drawn(fig))
    return box.x0 >= -1 and box.x1 <= fig.bbox.width + 1 and box.y1 <= fig.bbox.height + 1


def _titles(fig):
    found = [ax.title for ax in fig.axes if ax.get_title()]
    return found + [t for t in fig.texts if t.get_text()]  # the suptitle


def _report() -> Report:
    rng = np.random.default_rng(0)
    n = 40
    points = pd.DataFrame(
        {
            "elbo": rng.normal(-30, 1, n),
            "iw_log_likelihood": rng.normal(-29.5, 1, n),
            "gap": np.abs(rng.normal(0.5, 0.2, n)),
            "khat": rng.uniform(-0.2, 1.0, n),
        }
    )
    summary = {
        "name": f"{PATH} (test, digits)",
        "num_samples": 100,
        "khat_share_above_0.5": 0.3,
        "khat_share_above_0.7": 0.1,
        "gap_mean": 0.5,
        "gap_se": 0.03,
    }
    return Report(points, summary)


def _legend_boxes(fig):
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [lg.get_window_extent(_drawn(fig)) for lg in [*legends, *fig.legends]]


@pytest.mark.parametrize("make", [plots.plot_khat, plots.plot_gap_hist, plots.plot_elbo_vs_iw])
def test_report_figures_keep_titles_inside_legends_clear_and_counts_whole(make):
    fig = make(_report())
    for title in _titles(fig):
        assert _inside(fig, title), title.get_text()
    data_box = fig.axes[0].get_window_extent(_drawn(fig))
    for box in _legend_boxes(fig):
        assert not box.overlaps(data_box), "the legend sits on the data"
    if make is plots.plot_gap_hist:
        ticks = fig.axes[0].get_yticks()
        assert np.allclose(ticks, np.round(ticks)), ticks  # a count of points


def test_a_long_path_in_a_title_is_shortened_not_clipped():
    text = plots.wrap_title(f"Samples from the prior\nrun {PATH}: VAE d=8, digits", 50)
    assert all(len(line) <= 50 for line in text.splitlines()), text
    assert "run .../" in text and "2026-12-07:" in text, text  # the path's end is kept


def test_training_curves_tick_whole_epochs_with_the_legend_below():
    history = [{"epoch": e, "train_elbo": -30.0 + e, "test_elbo": -31.0 + e} for e in range(1, 6)]
    fig = plots.plot_curves({LONG: history}, title=f"Training curves: {PATH}")
    ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 5]
    assert ticks and np.allclose(ticks, np.round(ticks)), ticks
    for title in _titles(fig):
        assert _inside(fig, title), title.get_text()
    data_box = fig.axes[0].get_window_extent(_drawn(fig))
    assert _legend_boxes(fig) and not any(b.overlaps(data_box) for b in _legend_boxes(fig))


def test_a_tables_reconstruction_names_its_columns(tmp_path):
    frame = pd.DataFrame(
        np.random.default_rng(0).normal(size=(60, 4)) * [1, 10, 100, 1000],
        columns=["age", "weight_kg", "cholesterol", "income"],
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = load_dataset(f"csv:{tmp_path / 't.csv'}")
    torch.manual_seed(0)
    vae = VAE(4, 2, (8,), likelihood="gaussian")
    fig = plots.plot_reconstructions(vae, data, n=5)
    for ax in fig.axes[:2]:
        assert [t.get_text() for t in ax.get_xticklabels()] == list(frame.columns)
    assert "standardised per column" in fig.axes[-1].get_ylabel()


def test_a_comparisons_method_labels_do_not_overlap():
    methods = [
        "analytic",
        "vae:nets=conv/iaf:n=2/iwae:k=5,grad=dreg",
        "vae/fullrank/analytic",
        "m2:labelled=0.1/enum",
        "hvae/trace:anneal=10",
    ]
    rows = [
        {"method": m, "seed": s, "num_samples": 100, "test_iw_log_likelihood": -30.0 + i}
        for i, m in enumerate(methods)
        for s in (0, 1)
    ]
    curves = pd.DataFrame(
        [
            {"method": m, "seed": s, "epoch": e, "test_elbo": -31.0 + e}
            for m in methods
            for s in (0, 1)
            for e in (1, 2, 3)
        ]
    )
    comparison = Comparison(pd.DataFrame(rows), pd.DataFrame(), curves, {}, {}, {}, methods[0])
    fig = plot_comparison(comparison)
    renderer = _drawn(fig)
    labels = [t for t in fig.axes[1].get_xticklabels() if t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert len(boxes) == len(methods)
    for a, b in zip(boxes, boxes[1:], strict=False):
        assert a.x1 <= b.x0, "two method labels overlap"
    for title in _titles(fig):
        assert _inside(fig, title), title.get_text()
    ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 3]
    assert np.allclose(ticks, np.round(ticks))
    curves_box = fig.axes[0].get_window_extent(renderer)
    assert not any(b.overlaps(curves_box) for b in _legend_boxes(fig))
