"""The models: VAEs as Pyro programs, and the registry that rebuilds them from their ``config``.

* :class:`VAE` (guide families ``meanfield``/``fullrank``/``iaf:n=K``, MLP or conv nets) and
  :class:`LinearGaussianVAE` (exact ``log p(x)``): :mod:`.vae`;
* :class:`HierarchicalVAE`, two stochastic layers (Burda et al., 2015): :mod:`.hierarchical`;
* :class:`SemiSupervisedVAE`, M2 (Kingma et al., 2014): :mod:`.semisupervised`;
* :func:`build_model` / :func:`register_model` / :data:`MODELS`, :data:`PURE_PROGRAMS`, and
  :func:`make_model` (a model from a short name such as ``"hvae"`` or ``"m2:labelled=0.1"``): :mod:`.registry`,
  :mod:`.names`.
"""

from .hierarchical import ConditionalNormal, HierarchicalVAE
from .names import MODEL_NAMES, canonical_model, make_model, parse_model
from .registry import MODELS, PURE_PROGRAMS, build_model, register_model
from .semisupervised import SemiSupervisedVAE
from .vae import VAE, LinearGaussianVAE, standard_normal_kl

__all__ = [
    "MODELS",
    "MODEL_NAMES",
    "PURE_PROGRAMS",
    "ConditionalNormal",
    "HierarchicalVAE",
    "LinearGaussianVAE",
    "SemiSupervisedVAE",
    "VAE",
    "build_model",
    "canonical_model",
    "make_model",
    "parse_model",
    "register_model",
    "standard_normal_kl",
]
