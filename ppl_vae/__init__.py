"""ppl_vae: variational autoencoders as Pyro probabilistic programs, with honest diagnostics.

    import ppl_vae as pv
    data = pv.load_dataset("digits", binarize="dynamic", seed=0)
    vae = pv.VAE(input_dim=64, latent_dim=8, hidden_dims=(256,), likelihood="bernoulli")
    history = pv.fit(vae, data, objective="analytic", epochs=50, seed=0)
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import Dataset, DatasetMeta, load_dataset
from .likelihoods import make_likelihood
from .models import VAE, LinearGaussianVAE, build_model
from .objectives import available_objectives, parse_objective
from .train import History, TrainingDiverged, fit

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "CheckpointError",
    "Dataset",
    "DatasetMeta",
    "History",
    "LinearGaussianVAE",
    "TrainingDiverged",
    "available_objectives",
    "build_model",
    "fit",
    "load_checkpoint",
    "load_dataset",
    "make_likelihood",
    "parse_objective",
    "save_checkpoint",
]
