"""ppl_vae: variational autoencoders as Pyro probabilistic programs, with honest diagnostics.

import ppl_vae as pv
data = pv.load_dataset("digits", binarize="dynamic", seed=0)
vae = pv.VAE(input_dim=64, latent_dim=8, hidden_dims=(256,), likelihood="bernoulli")
history = pv.fit(vae, data, objective="analytic", epochs=50, seed=0)
"""

from .analysis import ReferencePosterior, amortization_gap, reference_posterior
from .analysis.compare import Comparison, compare, compare_runs, run_comparison
from .analysis.imputation import Imputation, impute
from .analysis.methods import Method, ProgramMethod
from .analysis.paired import DataMismatch, paired_differences
from .analysis.ppc import PredictiveCheck, predictive_check
from .analysis.ranking import rank_models
from .analysis.rubin import Pooled, pool, rubin
from .analysis.scores import Scores, score
from .autoencoders import (
    Autoencoder,
    ContractiveAE,
    DenoisingAE,
    SparseAE,
    make_autoencoder,
)
from .data import Dataset, DatasetMeta, Schema, infer_schema, load_dataset, split_missing
from .diagnostics import (
    Report,
    active_units,
    evaluate,
    kl_per_dimension,
    psis_diagnostics,
)
from .diagnostics.autoencoders import evaluate_autoencoder
from .errors import CheckpointError, ProgramError, TrainingDiverged, UserError
from .estimators import (
    ais_log_likelihood,
    bdmc,
    elbo,
    iw_log_likelihood,
    log_weights,
    quadrature_log_likelihood,
)
from .estimators.globals import fix_globals
from .estimators.ladder import LadderResult, estimate_log_likelihood
from .likelihoods import (
    TableLikelihood,
    available_likelihoods,
    make_likelihood,
    register_likelihood,
)
from .models import VAE, HierarchicalVAE, LinearGaussianVAE, SemiSupervisedVAE, build_model
from .objectives import available_objectives, format_objective, parse_objective, register_objective
from .params import trained_params
from .program_import import ImportedProgram
from .programs import Program
from .store.checkpoint import load_checkpoint, save_checkpoint
from .train import History, TrainState, fit
from .train.autoencoder import fit_autoencoder

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "Autoencoder",
    "ContractiveAE",
    "DenoisingAE",
    "SparseAE",
    "CheckpointError",
    "Dataset",
    "DatasetMeta",
    "History",
    "LinearGaussianVAE",
    "ImportedProgram",
    "Program",
    "ProgramError",
    "TrainState",
    "UserError",
    "fix_globals",
    "trained_params",
    "Report",
    "TrainingDiverged",
    "active_units",
    "available_objectives",
    "build_model",
    "elbo",
    "evaluate",
    "evaluate_autoencoder",
    "fit_autoencoder",
    "fit",
    "iw_log_likelihood",
    "ais_log_likelihood",
    "estimate_log_likelihood",
    "LadderResult",
    "bdmc",
    "kl_per_dimension",
    "load_checkpoint",
    "load_dataset",
    # tables and missing values (issues 20, 21)
    "Schema",
    "TableLikelihood",
    "infer_schema",
    "split_missing",
    "log_weights",
    "make_autoencoder",
    "make_likelihood",
    "available_likelihoods",
    "register_likelihood",
    "parse_objective",
    "psis_diagnostics",
    "quadrature_log_likelihood",
    "save_checkpoint",
    # comparison of inference methods and q vs the true posterior (issue 4)
    "Comparison",
    "HierarchicalVAE",
    "Method",
    "ProgramMethod",
    "SemiSupervisedVAE",
    "DataMismatch",
    "ReferencePosterior",
    "amortization_gap",
    "compare",
    "compare_runs",
    "format_objective",
    "paired_differences",
    "rank_models",
    "reference_posterior",
    "register_objective",
    "run_comparison",
    # missing values (issue 21)
    "Imputation",
    "Pooled",
    "Scores",
    "impute",
    "pool",
    "rubin",
    "score",
    "PredictiveCheck",
    "predictive_check",
]
