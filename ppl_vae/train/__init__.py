"""Training: SVI on any Pyro program (:mod:`.svi`), one loop for every model (:mod:`.loop`; the autoencoders'
strategy in :mod:`.autoencoder`), the NaN guard (:mod:`.guard`), the fast paths (:mod:`.fast_elbo`,
:mod:`.fast`, :mod:`.fused`, chosen in :mod:`.paths`), the test ELBO (:mod:`.evaluation`), the optimiser
(:mod:`.optim`) and data-parallel training (:mod:`.distributed`)."""

from ..errors import TrainingDiverged
from .data import TrainData, as_train_data
from .evaluation import mean_elbo, test_elbo
from .fast import CAPTURE_MIN_STEPS, FAST_MODES, FastEngine
from .fast_elbo import ELBOLoss, fast_elbo_loss
from .optim import FUSED_ADAM_MIN_CPU, adam
from .paths import FastPathWarning
from .state import History, TrainState, epoch_seed, resolve_device, state_of, training_summary
from .svi import fit

__all__ = [
    "CAPTURE_MIN_STEPS",
    "ELBOLoss",
    "FAST_MODES",
    "FUSED_ADAM_MIN_CPU",
    "FastEngine",
    "FastPathWarning",
    "History",
    "TrainData",
    "TrainState",
    "TrainingDiverged",
    "adam",
    "as_train_data",
    "epoch_seed",
    "fast_elbo_loss",
    "fit",
    "mean_elbo",
    "resolve_device",
    "state_of",
    "test_elbo",
    "training_summary",
]
