"""Models by short name, with options: ``"vae"``, ``"vae:nets=conv"``, ``"hvae"``, ``"m2:labelled=0.1"``.

The comparison harness and the command line name a model the way objectives are named
(``name:key=value,...``, the registry's grammar: :mod:`ppl_vae.registry`); :func:`make_model` builds it
for data of a given width, with the caller's defaults (:class:`ModelDefaults`) for what the name does
not say. Each name is a ``model`` entry of the registry, whose traits say what the rest of the code
needs: ``cls`` (the class it builds) and ``guide_families`` (whether it takes a guide family other
than ``meanfield``). The entries and their options: ``python -m ppl_vae.registry_docs model``.

Rebuilding a trained model from its ``config`` is another mapping, by *class* name
(:mod:`.registry`: ``config["class"]`` -> the class), because a checkpoint records the constructor's
arguments, not a short name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import UserError
from ..likelihoods import Likelihood
from ..registry import REGISTRY, Param, register
from .hierarchical import HierarchicalVAE
from .semisupervised import SemiSupervisedVAE
from .vae import VAE, LinearGaussianVAE

__all__ = ["MODEL_NAMES", "ModelDefaults", "canonical_model", "make_model", "parse_model"]


@dataclass(frozen=True)
class ModelDefaults:
    """What a model entry's factory is given besides its options: the data's width and the caller's
    defaults for the options a name leaves out."""

    input_dim: int
    guide: str = "meanfield"
    latent_dim: int = 8
    hidden_dims: tuple[int, ...] = (256,)
    likelihood: str | Likelihood | Mapping[str, str] = "bernoulli"
    activation: str = "relu"
    image_shape: Sequence[int] | None = None
    num_classes: int | None = None
    #: a table's schema (``Dataset.meta.schema``): ``likelihood`` is then "auto", one spec for every
    #: column, or ``{column: spec}`` (:class:`~ppl_vae.likelihoods.TableLikelihood`); vae and hvae only
    schema: Mapping[str, Any] | None = None


def _vae(
    nets: str | None,
    latent: int | None,
    hidden: tuple[int, ...] | None,
    activation: str | None,
    prior: str,
    *,
    defaults: ModelDefaults,
) -> VAE:
    d = defaults
    nets = "mlp" if nets is None else nets
    return VAE(
        d.input_dim,
        d.latent_dim if latent is None else latent,
        d.hidden_dims if hidden is None else hidden,
        d.likelihood,
        d.activation if activation is None else activation,
        guide=d.guide,
        nets=nets,
        image_shape=d.image_shape if nets == "conv" else None,
        prior=prior,
        schema=d.schema,
    )


def _linear(latent: int | None, noise: float | None, *, defaults: ModelDefaults) -> VAE:
    return LinearGaussianVAE(
        defaults.input_dim,
        defaults.latent_dim if latent is None else latent,
        noise,
        guide=defaults.guide,
    )


def _hvae(
    latent: tuple[int, ...],
    hidden1: tuple[int, ...],
    hidden2: tuple[int, ...],
    activation: str,
    *,
    defaults: ModelDefaults,
) -> HierarchicalVAE:
    return HierarchicalVAE(
        defaults.input_dim,
        latent,
        (hidden1, hidden2),
        defaults.likelihood,
        activation,
        schema=defaults.schema,
    )


def _m2(
    labelled: float,
    alpha: float | None,
    latent: int | None,
    hidden: tuple[int, ...] | None,
    activation: str | None,
    label_seed: int,
    *,
    defaults: ModelDefaults,
) -> SemiSupervisedVAE:
    d = defaults
    if not isinstance(d.likelihood, str | Likelihood):
        raise UserError("model 'm2' has one likelihood for every column: a spec, not a mapping")
    return SemiSupervisedVAE(
        d.input_dim,
        d.num_classes or 10,
        d.latent_dim if latent is None else latent,
        d.hidden_dims if hidden is None else hidden,
        d.likelihood,
        d.activation if activation is None else activation,
        labelled_fraction=labelled,
        alpha=alpha,
        label_seed=label_seed,
    )


_LATENT = Param("latent", None, int, "latent size d (default: the caller's latent_dim)")
_HIDDEN = Param("hidden", None, tuple, "hidden widths, e.g. 400-400 (default: the caller's)")
_ACTIVATION = Param("activation", None, str, "hidden non-linearity (default: the caller's)")
register(
    "model",
    "vae",
    _vae,
    params=(
        Param("nets", None, str, "mlp (default) or conv"),
        _LATENT,
        _HIDDEN,
        _ACTIVATION,
        Param("prior", "standard_normal", str, "p(z), a prior spec: mog:k=10, vamp:k=50"),
    ),
    doc="one stochastic layer, pv.VAE; any guide family; nets=conv for images; prior=mog|vamp",
    cls=VAE,
    guide_families=True,
)
register(
    "model",
    "linear",
    _linear,
    params=(_LATENT, Param("noise", None, float, "fixed noise scale (default: learned)")),
    doc="probabilistic PCA with exact log p(x) and posterior, pv.LinearGaussianVAE",
    cls=LinearGaussianVAE,
    guide_families=True,
)
register(
    "model",
    "hvae",
    _hvae,
    params=(
        Param("latent", (100, 50), tuple, "latent sizes d1-d2"),
        Param("hidden1", (200, 200), tuple, "widths between x and z1"),
        Param("hidden2", (100, 100), tuple, "widths between z1 and z2"),
        Param("activation", "tanh", str, "hidden non-linearity"),
    ),
    doc="two stochastic layers x - z1 - z2 at the sizes of Burda et al. 2015, pv.HierarchicalVAE",
    cls=HierarchicalVAE,
    guide_families=False,
)
register(
    "model",
    "m2",
    _m2,
    params=(
        Param("labelled", 0.1, float, "share of training points that keep their label"),
        Param("alpha", None, float, "weight of the classification loss (default 1/labelled)"),
        _LATENT,
        _HIDDEN,
        _ACTIVATION,
        Param("label_seed", 0, int, "seed of the labelled subset"),
    ),
    doc="semi-supervised M2 of Kingma et al. 2014, a class label and a code, pv.SemiSupervisedVAE",
    cls=SemiSupervisedVAE,
    guide_families=False,
)
REGISTRY.add_column(
    "model", "guide families", lambda e: "any" if e.trait("guide_families") else "meanfield"
)

#: name -> the class it builds (a live view of the registry's ``model`` entries).
MODEL_NAMES = REGISTRY.view("model", lambda e: e.trait("cls"))


def parse_model(spec: object) -> tuple[str, dict[str, object]]:
    """``"m2:labelled=0.05"`` -> ``("m2", {"labelled": 0.05})`` (options as given, parsed)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"model must be a name such as 'vae', 'hvae' or 'm2'; got {spec!r}")
    parsed = REGISTRY.parse("model", spec)
    return parsed.name, dict(parsed.given)


def canonical_model(spec: str) -> str:
    """The spec with its options in their declared order (options at their default left out)."""
    return str(REGISTRY.parse("model", spec))


def make_model(
    spec: str,
    input_dim: int,
    guide: str = "meanfield",
    *,
    latent_dim: int = 8,
    hidden_dims: Sequence[int] = (256,),
    likelihood: str | Likelihood | Mapping[str, str] = "bernoulli",
    activation: str = "relu",
    image_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    schema: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build the model a short name describes for rows of ``input_dim`` values.

    ``latent_dim``, ``hidden_dims``, ``likelihood`` and ``activation`` are the defaults of ``vae`` and
    ``m2`` (``hvae`` keeps Burda et al.'s sizes and tanh unless its options say otherwise);
    ``image_shape`` is passed to conv nets; ``num_classes`` to ``m2`` (default 10); ``schema`` (a table's,
    ``Dataset.meta.schema``) to ``vae`` and ``hvae``, whose ``likelihood`` is then a family per column.
    """
    parsed = REGISTRY.parse("model", spec)
    if guide != "meanfield" and not parsed.entry.trait("guide_families"):
        takes = [e.name for e in REGISTRY.entries("model") if e.trait("guide_families")]
        raise UserError(
            f"model {parsed.name!r} has a mean-field guide per latent site; guide {guide!r} is for "
            f"{' and '.join(map(repr, takes))} models"
        )
    if schema is not None and parsed.name not in ("vae", "hvae"):
        raise UserError(
            f"model {parsed.name!r} has one likelihood for every column; a family per table column "
            "(schema=) is for the 'vae' and 'hvae' models"
        )
    defaults = ModelDefaults(
        input_dim,
        guide,
        latent_dim,
        tuple(hidden_dims),
        likelihood,
        activation,
        image_shape,
        num_classes,
        schema,
    )
    model: nn.Module = parsed.build(defaults=defaults)
    return model


def model_name(model: nn.Module) -> str:
    """The short name of a trained model's class (``"vae"``, ``"hvae"``, ...), else its class name."""
    cls_name = type(model).__name__
    for entry in REGISTRY.entries("model"):
        if entry.trait("cls").__name__ == cls_name:
            return entry.name
    return cls_name
