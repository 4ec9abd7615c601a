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

===============================  ===========================================================
:func:`plot_latent`              latent map (2-D latents directly, else PCA of the means)
:func:`plot_reconstructions`     originals above reconstructions (images) / arrows (2-D)
:func:`plot_samples`             decodes of ``z ~ N(0, I)`` (VAE only: an autoencoder has no prior)
:func:`plot_decoded`             decodes of latent points you choose (any model)
:func:`plot_interpolation`       decodes along the straight line between two inputs' latents
:func:`plot_curves`              train/test ELBO (VAE) or loss (autoencoder) per epoch, many runs
:func:`plot_overview_2d`         2-D data, reconstructions and prior samples on one scatter
:func:`plot_khat`                PSIS k-hat per point (from :mod:`ppl_vae.diagnostics`)
:func:`plot_gap_hist`            histogram of IW log p(x) - ELBO per point (from :mod:`ppl_vae.diagnostics`)
:func:`plot_elbo_vs_iw`          per-point ELBO against IW log p(x), coloured by k-hat
:func:`plot_predictive_check`    observed statistics against their replicated distributions (``ppl-vae check``)
:func:`plot_run`                 the above for a run folder, written as PNGs (``ppl-vae plot``)
===============================  ===========================================================

Modules: :mod:`.latent` (latent maps, reconstructions, samples, interpolations, the 2-D overview),
:mod:`.curves`, :mod:`.reports` (figures of an evaluation), :mod:`.checks` (a predictive check), :mod:`.runs` (a run folder's PNGs).
"""

from ._common import (
    KINDS,
    can_sample,
    latent_means,
    model_label,
    png_bytes,
    save_png,
    wrap_title,
)
from .checks import plot_predictive_check
from .curves import plot_curves
from .latent import (
    default_pair,
    plot_decoded,
    plot_interpolation,
    plot_latent,
    plot_overview_2d,
    plot_reconstructions,
    plot_samples,
)
from .reports import (
    plot_elbo_vs_iw,
    plot_gap_hist,
    plot_khat,
    report_figure_files,
    save_report_figures,
)
from .runs import plot_run

__all__ = [
    "KINDS",
    "can_sample",
    "default_pair",
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
    "plot_predictive_check",
    "plot_reconstructions",
    "plot_run",
    "plot_samples",
    "png_bytes",
    "report_figure_files",
    "save_png",
    "save_report_figures",
    "wrap_title",
]
