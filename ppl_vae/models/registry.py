"""Model classes by name: rebuild a model from its ``config`` (checkpoints), and the programs safe to replay.

Every model of ppl_vae has a JSON-able ``config`` (``{"class": name, **constructor arguments}``);
:func:`build_model` calls ``MODELS[config["class"]](**rest)``. :func:`register_model` adds a class (the
autoencoders register themselves so their checkpoints load like a VAE's).

:data:`PURE_PROGRAMS` lists the model/guide functions with no Python side effects between calls:
``fit(fast="auto")`` may replay them as captured graphs (see :mod:`ppl_vae.train.fast`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import UserError

__all__ = ["MODELS", "PURE_PROGRAMS", "build_model", "register_model"]

MODELS: dict[str, type[nn.Module]] = {}

#: Model/guide functions with no Python side effects between calls: ``fit(fast="auto")`` may replay them
#: as captured graphs (a user's program gets graphs only when it asks; see :mod:`ppl_vae.train.fast`).
PURE_PROGRAMS: set = set()


def register_model(cls: type[nn.Module]) -> type[nn.Module]:
    """Let :func:`build_model` rebuild ``cls`` from its ``config`` (``cls(**config)`` minus ``"class"``).

    Usable as a class decorator.
    """
    MODELS[cls.__name__] = cls
    return cls


def build_model(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from its ``config`` (as stored beside a checkpoint).

    Examples:
        >>> import ppl_vae as pv
        >>> vae = pv.VAE(input_dim=6, latent_dim=2, hidden_dims=(8,))
        >>> again = pv.build_model(vae.config)  # same architecture, fresh weights
        >>> type(again).__name__, again.config == vae.config
        ('VAE', True)
    """
    config = dict(config)
    cls_name = config.pop("class", "VAE")
    if cls_name not in MODELS:
        raise UserError(f"unknown model class {cls_name!r} in config; known: {sorted(MODELS)}")
    for key in ("hidden_dims", "image_shape", "latent_dims"):  # JSON turns tuples into lists
        if isinstance(config.get(key), list):
            config[key] = tuple(tuple(v) if isinstance(v, list) else v for v in config[key])
    return MODELS[cls_name](**config)
