"""Models by short name, with options: ``"vae"``, ``"vae:nets=conv"``, ``"hvae"``, ``"m2:labelled=0.1"``.

The comparison harness and the command line name a model the way objectives are named
(``name:key=value,...``); :func:`make_model` builds it for data of a given width, with the caller's
defaults for what the name does not say:

==========  ==============================  =====================================================
name        class                           options (default)
==========  ==============================  =====================================================
``vae``     :class:`~.vae.VAE`               ``nets`` (mlp|conv), ``latent``, ``hidden``,
                                            ``activation``
``linear``  :class:`~.vae.LinearGaussianVAE` ``latent``, ``noise`` (learned)
``hvae``    :class:`~.hierarchical.HierarchicalVAE`  ``latent`` (``100-50``), ``hidden1`` (``200-200``),
                                            ``hidden2`` (``100-100``), ``activation`` (tanh)
``m2``      :class:`~.semisupervised.SemiSupervisedVAE`  ``labelled`` (0.1), ``alpha`` (1/labelled),
                                            ``latent``, ``hidden``, ``activation``, ``label_seed`` (0)
==========  ==============================  =====================================================

Only ``vae`` and ``linear`` take a guide family other than ``meanfield``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import UserError
from .hierarchical import HierarchicalVAE
from .semisupervised import SemiSupervisedVAE
from .vae import VAE, LinearGaussianVAE

__all__ = ["MODEL_NAMES", "canonical_model", "make_model", "parse_model"]


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.replace("x", "-").split("-") if t)


#: name -> (class, {option: parser})
MODEL_NAMES: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "vae": (VAE, {"nets": str, "latent": int, "hidden": _ints, "activation": str}),
    "linear": (LinearGaussianVAE, {"latent": int, "noise": float}),
    "hvae": (
        HierarchicalVAE,
        {"latent": _ints, "hidden1": _ints, "hidden2": _ints, "activation": str},
    ),
    "m2": (
        SemiSupervisedVAE,
        {
            "labelled": float,
            "alpha": float,
            "latent": int,
            "hidden": _ints,
            "activation": str,
            "label_seed": int,
        },
    ),
}
#: Class name -> short name (for labels of trained models).
CLASS_NAMES = {cls.__name__: name for name, (cls, _) in MODEL_NAMES.items()}


def parse_model(spec: Any) -> tuple[str, dict[str, Any]]:
    """``"m2:labelled=0.05"`` -> ``("m2", {"labelled": 0.05})`` (options as given, parsed)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"model must be a name such as 'vae', 'hvae' or 'm2'; got {spec!r}")
    name, _, arg_str = spec.strip().partition(":")
    if name not in MODEL_NAMES:
        raise UserError(f"unknown model {name!r}; choose one of {sorted(MODEL_NAMES)}")
    parsers = MODEL_NAMES[name][1]
    options: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in arg_str.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in parsers:
            raise UserError(
                f"model {spec!r}: {name!r} takes key=value options from: {', '.join(parsers)}; got {item!r}"
            )
        if key in options:
            raise UserError(f"model {spec!r}: option {key!r} is given more than once")
        try:
            options[key] = parsers[key](value.strip())
        except ValueError:
            raise UserError(f"model {spec!r}: could not read {key}={value!r}") from None
    return name, options


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return "-".join(str(v) for v in value)
    return format(value, "g") if isinstance(value, float) else str(value)


def canonical_model(spec: str) -> str:
    name, options = parse_model(spec)
    return name + (":" + ",".join(f"{k}={_fmt(v)}" for k, v in options.items()) if options else "")


def make_model(
    spec: str,
    input_dim: int,
    guide: str = "meanfield",
    *,
    latent_dim: int = 8,
    hidden_dims: Sequence[int] = (256,),
    likelihood: str = "bernoulli",
    activation: str = "relu",
    image_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """Build the model a short name describes for rows of ``input_dim`` values.

    ``latent_dim``, ``hidden_dims``, ``likelihood`` and ``activation`` are the defaults of ``vae`` and
    ``m2`` (``hvae`` keeps Burda et al.'s sizes and tanh unless its options say otherwise);
    ``image_shape`` is passed to conv nets; ``num_classes`` to ``m2`` (default 10).
    """
    name, o = parse_model(spec)
    if guide != "meanfield" and name not in ("vae", "linear"):
        raise UserError(
            f"model {name!r} has a mean-field guide per latent site; guide {guide!r} is for 'vae' and "
            "'linear' models"
        )
    if name == "vae":
        nets = o.get("nets", "mlp")
        return VAE(
            input_dim,
            o.get("latent", latent_dim),
            o.get("hidden", tuple(hidden_dims)),
            likelihood,
            o.get("activation", activation),
            guide=guide,
            nets=nets,
            image_shape=image_shape if nets == "conv" else None,
        )
    if name == "linear":
        return LinearGaussianVAE(
            input_dim, o.get("latent", latent_dim), o.get("noise"), guide=guide
        )
    if name == "hvae":
        return HierarchicalVAE(
            input_dim,
            o.get("latent", (100, 50)),
            (o.get("hidden1", (200, 200)), o.get("hidden2", (100, 100))),
            likelihood,
            o.get("activation", "tanh"),
        )
    return SemiSupervisedVAE(
        input_dim,
        num_classes or 10,
        o.get("latent", latent_dim),
        o.get("hidden", tuple(hidden_dims)),
        likelihood,
        o.get("activation", activation),
        labelled_fraction=o.get("labelled", 0.1),
        alpha=o.get("alpha"),
        label_seed=o.get("label_seed", 0),
    )


def model_name(model: nn.Module) -> str:
    """The short name of a trained model's class (``"vae"``, ``"hvae"``, ...), else its class name."""
    return CLASS_NAMES.get(type(model).__name__, type(model).__name__)
