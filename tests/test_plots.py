"""Pictures: every plot returns a Figure with labelled axes and a title naming the model, saves a
PNG, picks images or scatters from the data's metadata; `ppl-vae plot` and `ppl-vae sample` write files."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ppl_vae import plots  # noqa: E402
from ppl_vae.autoencoders import DenoisingAE, SparseAE  # noqa: E402
from ppl_vae.cli import main  # noqa: E402
from ppl_vae.data import Dataset, load_dataset  # noqa: E402
from ppl_vae.models import VAE  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _legend_texts(fig) -> list[str]:
    """The entries of a figure's legend: the axes' own, or the one placed below the figure."""
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(
        fig.legends
    )
    assert legends, "the figure has no legend"
    return [t.get_text() for legend in legends for t in legend.get_texts()]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits_data():
    return load_dataset("digits", binarize="static", seed=0)


@pytest.fixture(scope="module")
def clusters():
    return load_dataset("three_clusters", seed=0, n_samples=300)


def _vae(data: Dataset, d: int) -> VAE:
    torch.manual_seed(0)
    lik = "bernoulli" if data.meta.kind == "image" else "gaussian"
    return VAE(data.meta.input_dim, d, (32,), likelihood=lik)


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def _labelled(fig: Figure) -> list[str]:
    """Every axes with content has an x label or ticks that say something; return the titles."""
    titles = [fig.get_suptitle()] if fig.get_suptitle() else []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        titles.append(ax.get_title())
        assert ax.get_xlabel() or ax.get_ylabel(), f"unlabelled axes in {titles}"
    return titles


@pytest.mark.parametrize("d", [2, 5])
def test_every_plot_on_images_returns_a_titled_figure_and_png(digits_data, tmp_path, d):
    vae = _vae(digits_data, d)
    makers = {
        "latent": plots.plot_latent,
        "recon": plots.plot_reconstructions,
        "samples": plots.plot_samples,
        "interpolate": plots.plot_interpolation,
    }
    for kind, make in makers.items():
        path = tmp_path / f"{kind}.png"
        fig = make(vae, digits_data, name="my-run", path=path)
        assert isinstance(fig, Figure)
        assert _is_png(path)
        titles = _labelled(fig)
        assert any("my-run" in t for t in titles), (kind, titles)
        if kind != "latent":
            assert fig.axes[0].images, f"{kind}: image data should be drawn as images"
    latent = plots.plot_latent(vae, digits_data)
    xlabel = latent.axes[0].get_xlabel()
    assert ("PC1" in xlabel) == (d > 2), xlabel
    # ten digit classes: one legend entry per class
    texts = [t.get_text() for t in latent.axes[0].get_legend().get_texts()]
    assert [t for t in texts if t.startswith("class")] == [f"class {k}" for k in range(10)]


def test_two_d_data_are_drawn_as_scatters(clusters, tmp_path):
    vae = _vae(clusters, 2)
    for make in (
        plots.plot_latent,
        plots.plot_reconstructions,
        plots.plot_samples,
        plots.plot_interpolation,
        plots.plot_overview_2d,
    ):
        fig = make(vae, clusters, path=tmp_path / "p.png")
        assert not fig.axes[0].images and fig.axes[0].collections
        _labelled(fig)
    overview = plots.plot_overview_2d(vae, clusters)
    labels = _legend_texts(overview)
    assert (
        labels[0] == "test data"
        and labels[1] == "reconstructions"
        and labels[2].startswith("prior samples")
    )
    assert overview.axes[0].get_xlabel() == "x1"
    with pytest.raises(ValueError, match="2-D point data"):
        plots.plot_overview_2d(
            _vae(load_dataset("digits", binarize="static"), 2),
            load_dataset("digits", binarize="static"),
        )


def test_tabular_data_get_heat_maps_and_pca_scatters(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = Dataset.from_tensors(torch.randn(80, 5, generator=g), name="table")
    assert data.meta.kind == "tabular"
    vae = _vae(data, 3)
    fig = plots.plot_reconstructions(vae, data, n=6)
    assert len(fig.axes[0].images) == 1 and fig.axes[1].images
    assert "PC1" in plots.plot_samples(vae, data).axes[0].get_xlabel()
    assert plots.plot_interpolation(vae, data, i=0, j=3, path=tmp_path / "i.png").axes
    # no labels: one colour, no class legend
    fig = plots.plot_latent(vae, data)
    assert not any(t.get_text().startswith("class") for t in fig.axes[0].get_legend().get_texts())


def test_latent_means_for_vae_and_autoencoder(clusters):
    vae = _vae(clusters, 2)
    loc, _ = vae.encode(clusters.test)
    assert torch.equal(plots.latent_means(vae, clusters.test), loc.detach())
    ae = DenoisingAE(2, 3, (8,), reconstruction="mse")
    assert plots.latent_means(ae, clusters.test).shape == (len(clusters.test), 3)
    assert plots.can_sample(vae) and not plots.can_sample(ae)


def test_autoencoders_plot_but_refuse_prior_samples(clusters):
    ae = SparseAE(2, 2, (8,), reconstruction="mse")
    titles = _labelled(plots.plot_latent(ae, clusters))
    assert "codes f(x)" in titles[0] and "SparseAE" in titles[0]
    plots.plot_interpolation(ae, clusters)
    assert (
        len(plots.plot_overview_2d(ae, clusters).axes[0].collections) == 2
    )  # data + reconstructions
    with pytest.raises(ValueError, match="no prior"):
        plots.plot_samples(ae, clusters)


def test_curves_put_several_runs_on_one_axis_and_separate_vae_from_ae():
    vae_runs = {
        "trace": [{"epoch": e, "train_elbo": -30 + e, "test_elbo": -31 + e} for e in (1, 2, 3)],
        "analytic": [{"epoch": e, "train_elbo": -29 + e, "test_elbo": -30 + e} for e in (1, 2, 3)],
    }
    fig = plots.plot_curves(vae_runs)
    assert len(fig.axes) == 1
    labels = _legend_texts(fig)
    assert labels == ["trace: train", "trace: test", "analytic: train", "analytic: test"]
    assert "ELBO" in fig.axes[0].get_ylabel() and fig.axes[0].get_xlabel() == "epoch"
    mixed = dict(
        vae_runs,
        dae=[{"epoch": 1, "train_loss": 3.0, "train_reconstruction": 2.5, "test_loss": 2.0}],
    )
    fig = plots.plot_curves(mixed)
    assert len(fig.axes) == 2 and "reconstruction" in fig.axes[1].get_ylabel()
    np.testing.assert_allclose(
        fig.axes[1].lines[0].get_ydata(), [2.5]
    )  # train reconstruction, not the penalty
    with pytest.raises(ValueError, match="empty"):
        plots.plot_curves({"a": []})


def test_khat_and_gap_plots_from_an_evaluation(clusters, tmp_path):
    from ppl_vae.diagnostics import evaluate

    report = evaluate(_vae(clusters, 2), clusters.test[:40], num_samples=100, name="tiny")
    for make, name in (
        (plots.plot_khat, "khat.png"),
        (plots.plot_gap_hist, "gap.png"),
        (plots.plot_elbo_vs_iw, "elbo_iw.png"),
    ):
        fig = make(report, path=tmp_path / name)
        assert _is_png(tmp_path / name) and "tiny" in fig.axes[0].get_title()
        _labelled(fig)
    # one dot per point, split by k-hat band; every dot on or above the diagonal IW = ELBO
    fig = plots.plot_elbo_vs_iw(report)
    offsets = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert len(offsets) == 40 and (offsets[:, 1] >= offsets[:, 0] - 1e-9).all()


def test_plot_decoded_draws_any_models_decodes(digits_data, clusters):
    ae = DenoisingAE(64, 3, (8,))
    z = torch.zeros(9, 3)
    fig = plots.plot_decoded(ae, digits_data, z, title="Decodes of zero")
    assert fig.axes[0].images and "Decodes of zero" in fig.axes[0].get_title()
    fig = plots.plot_decoded(
        SparseAE(2, 2, (8,), reconstruction="mse"), clusters, torch.rand(50, 2)
    )
    assert len(fig.axes[0].collections[1].get_offsets()) == 50
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        plots.plot_decoded(ae, digits_data, torch.zeros(4, 2))


def test_cli_plot_all_and_sample_on_digits_and_clusters(tmp_path, capsys):
    digits_run, tc_run, ae_run = tmp_path / "digits", tmp_path / "tc", tmp_path / "ae"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--n-samples",
                "300",
                "--out",
                str(digits_run),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--dataset",
                "three_clusters",
                "--latent-dim",
                "2",
                "--epochs",
                "1",
                "--out",
                str(tc_run),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--dataset",
                "two_moons",
                "--model",
                "dae",
                "--latent-dim",
                "2",
                "--sigma",
                "0.2",
                "--epochs",
                "1",
                "--out",
                str(ae_run),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "test recon" in capsys.readouterr().out
    expected = {"latent", "recon", "samples", "interpolate", "curves"}
    for run, extra in ((digits_run, set()), (tc_run, {"overview"})):
        assert main(["plot", str(run), "--kind", "all", "--out", str(run / "png")]) == 0
        assert {p.stem for p in (run / "png").glob("*.png")} == expected | extra
        assert all(_is_png(p) for p in (run / "png").glob("*.png"))
    assert main(["plot", str(ae_run), "--kind", "all"]) == 0
    out = capsys.readouterr().out
    assert "skipped samples" in out
    assert {p.stem for p in ae_run.glob("*.png")} == expected - {"samples"} | {"overview"}
    assert main(["plot", str(ae_run), "--kind", "samples"]) == 2
    assert "no prior" in capsys.readouterr().err

    assert main(["sample", str(digits_run), "-n", "16", "--out", str(tmp_path / "s.npy")]) == 0
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (16, 64) and (arr >= 0).all() and (arr <= 1).all()
    assert main(["sample", str(tc_run), "-n", "20", "--out", str(tmp_path / "s.png")]) == 0
    assert _is_png(tmp_path / "s.png")
    assert main(["sample", str(ae_run), "--out", str(tmp_path / "x.npy")]) == 2
    assert main(["sample", str(digits_run), "--out", str(tmp_path / "x.txt")]) == 2
    assert "must end in .png, .npy or .csv" in capsys.readouterr().err
