"""q(z | x) against the truth it approximates: the amortisation gap (:mod:`.amortization`) and NUTS reference
posteriors (:mod:`.reference`)."""

from .amortization import amortization_gap
from .reference import ReferencePosterior, gaussian_kl, gaussian_w2, reference_posterior

__all__ = [
    "ReferencePosterior",
    "amortization_gap",
    "gaussian_kl",
    "gaussian_w2",
    "reference_posterior",
]
