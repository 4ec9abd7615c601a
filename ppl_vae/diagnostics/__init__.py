"""How good is the inference? PSIS k-hat (:mod:`.psis`), posterior collapse and reconstructions
(:mod:`.collapse`), and ``evaluate``'s per-point report (:mod:`.report`)."""

from .collapse import (
    LatentSummary,
    active_units,
    kl_per_dimension,
    latent_activity,
    latent_summary,
    reconstruction_error,
)
from .psis import KHAT_BAD, KHAT_GOOD, PSISDiagnostics, importance_ess, psis_diagnostics
from .report import Report, evaluate

__all__ = [
    "KHAT_BAD",
    "KHAT_GOOD",
    "LatentSummary",
    "PSISDiagnostics",
    "Report",
    "active_units",
    "evaluate",
    "importance_ess",
    "kl_per_dimension",
    "latent_activity",
    "latent_summary",
    "psis_diagnostics",
    "reconstruction_error",
]
