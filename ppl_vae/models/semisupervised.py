r"""The semi-supervised VAE M2 (Kingma, Rezende, Mohamed & Welling, 2014) as one Pyro program.

For a batch ``(x: (N, D), y: (N,))`` with ``y_n`` a class label where it is given and ``-1`` where not::

    model:  z_n ~ N(0, I_d),  y_n ~ Cat(1/C),  x_n | y_n, z_n ~ p(x | decoder([z_n, onehot(y_n)]))
            y_n observed where labelled (site "y_observed"), latent where not (site "y")
            + alpha * log q(y_n | x_n) for labelled points (site "y_classify", observed, scaled by alpha)
    guide:  y_n ~ q(y | x_n) = Cat(classifier(x_n))   where unlabelled (site "y", enumerable)
            z_n ~ N(mu([x_n, onehot(y_n)]), diag sigma(...)^2)

For a labelled point the bound is Kingma et al.'s ``L(x, y)``, for an unlabelled one ``U(x) =
E_q(y|x)[L(x, y)] + H(q(y | x))``, and the classification term ``alpha * log q(y | x)`` (their eq. 9) is
an observed site of the model, as in Pyro's ``examples/vae/ss_vae_M2.py``. Labelled and unlabelled
points share every mini-batch: the sites are masked per point (``poutine.mask``), so one data plate
holds both.

**Objectives.** ``enum`` sums y out exactly for unlabelled points (``TraceEnum_ELBO`` enumerates the
guide's ``infer={"enumerate": "parallel"}`` site; the enumeration weights are q(y | x), whose score term
is never masked); ``trace`` samples y with a score-function gradient; ``analytic`` and the
importance-weighted objectives are refused (y has no reparameterised sampler).

**Labels.** ``fit(m2, dataset)`` takes the labels from the Dataset through :meth:`dataset_inputs`:
a seeded fraction ``labelled_fraction`` of the training points keeps its label, the rest get ``-1``;
the test split is unlabelled (its bound is ``log p(x)``), and :meth:`accuracy` scores the classifier.
With tensors, pass ``(x, y)`` with ``-1`` for unlabelled rows.

References:
    Kingma, Rezende, Mohamed & Welling (2014), Semi-Supervised Learning with Deep Generative Models, NeurIPS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import DataError, UserError
from ..likelihoods import Likelihood, check_matrix, make_likelihood
from ..nets import Decoder, GaussianEncoder, check_sizes, mlp
from .registry import PURE_PROGRAMS, register_model

__all__ = ["SemiSupervisedVAE"]


@register_model
class SemiSupervisedVAE(nn.Module):
    """M2: a class label y and a continuous code z generate x; q(y | x) is a classifier (see the module docstring).

    Args:
        input_dim: D.
        num_classes: C.
        latent_dim: d (of z).
        hidden_dims: widths of the hidden layers of the encoder q(z | x, y), the classifier q(y | x) and
            (mirrored) the decoder.
        likelihood, activation: as for :class:`~ppl_vae.models.VAE`.
        labelled_fraction: the share of training points whose label :meth:`dataset_inputs` keeps (0, 1].
        alpha: weight of ``log q(y | x)`` per labelled point; default ``1 / labelled_fraction`` (the
            classification term weighs as much as N points' log-likelihood terms; Kingma et al.'s
            ``alpha = 0.1 N`` is ``0.1 / labelled_fraction`` here, which on 8x8 digits leaves q(y | x)
            close to uniform after 30 epochs of ``enum``; Pyro's example uses 46 per point).
        label_seed: which points keep their label (a seeded draw, the same for every model with this seed).
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int = 10,
        latent_dim: int = 8,
        hidden_dims: Sequence[int] = (256,),
        likelihood: str | Likelihood = "bernoulli",
        activation: str = "relu",
        labelled_fraction: float = 0.1,
        alpha: float | None = None,
        label_seed: int = 0,
    ) -> None:
        super().__init__()
        hidden = check_sizes(input_dim, latent_dim, hidden_dims)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise UserError(f"num_classes must be an integer >= 2; got {num_classes!r}")
        if not (isinstance(labelled_fraction, (int, float)) and 0 < labelled_fraction <= 1):
            raise UserError(
                f"labelled_fraction must be a number in (0, 1]; got {labelled_fraction!r}"
            )
        if alpha is not None and not (
            isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0
        ):
            raise UserError(
                f"alpha must be a finite number >= 0 (or None: 1 / labelled_fraction); got {alpha!r}"
            )
        self.input_dim, self.num_classes, self.latent_dim = input_dim, num_classes, latent_dim
        self.hidden_dims, self.activation = hidden, activation
        self.labelled_fraction, self.alpha_arg, self.label_seed = (
            float(labelled_fraction),
            alpha,
            int(label_seed),
        )
        self.alpha = float(1.0 / labelled_fraction if alpha is None else alpha)
        self.likelihood = make_likelihood(likelihood, input_dim)
        self.classifier = mlp(input_dim, hidden, num_classes, activation)
        self.encoder = GaussianEncoder(input_dim + num_classes, latent_dim, hidden, activation)
        self.decoder = Decoder(
            latent_dim + num_classes, self.likelihood.out_dim(), hidden, activation
        )

    # ------------------------------------------------------------------ helpers
    def _labels(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labelled: (N,) bool, label: (N,) long with -1 replaced by 0)``."""
        if y is None:
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device), x.new_zeros(
                x.shape[0], dtype=torch.long
            )
        y = y.long()
        labelled = y >= 0
        return labelled, y.clamp(min=0)

    def _join(self, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[a, onehot(y)]`` broadcast over leading dims (y enumerated: ``(C, 1)`` against ``a: (N, k)``)."""
        onehot = F.one_hot(y, self.num_classes).to(a.dtype)
        lead = torch.broadcast_shapes(a.shape[:-1], onehot.shape[:-1])
        return torch.cat(
            [a.expand(lead + a.shape[-1:]), onehot.expand(lead + onehot.shape[-1:])], dim=-1
        )

    # ------------------------------------------------------------------ Pyro programs
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(z) p(y) p(x | y, z), y observed where labelled, plus ``alpha log q(y | x)`` for labelled points."""
        pyro.module("decoder", self.decoder)
        pyro.module("likelihood", self.likelihood)
        pyro.module("classifier", self.classifier)
        n = x.shape[0]
        labelled, label = self._labels(x, y)
        with pyro.plate("data", n, dim=-1, device=x.device):  # type: ignore[arg-type]  # Pyro annotates str
            z = pyro.sample(
                "z",
                dist.Normal(
                    x.new_zeros(n, self.latent_dim), x.new_ones(n, self.latent_dim)
                ).to_event(1),
            )
            prior = dist.Categorical(logits=x.new_zeros(n, self.num_classes))
            with poutine.mask(mask=labelled):  # type: ignore[call-overload]  # a bool tensor
                pyro.sample("y_observed", prior, obs=label)
            with poutine.mask(mask=~labelled):  # type: ignore[call-overload]  # a bool tensor
                y_latent = pyro.sample("y", prior)
            y_value = torch.where(labelled, label, y_latent)
            pyro.sample("x", self.likelihood.dist(self.decoder(self._join(z, y_value))), obs=x)
            if self.alpha > 0:
                with poutine.mask(mask=labelled), poutine.scale(scale=self.alpha):  # type: ignore[call-overload]  # a bool tensor
                    pyro.sample(
                        "y_classify", dist.Categorical(logits=self.classifier(x)), obs=label
                    )

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q(y | x) where unlabelled (enumerable), then q(z | x, y)."""
        pyro.module("encoder", self.encoder)
        pyro.module("classifier", self.classifier)
        labelled, label = self._labels(x, y)
        with pyro.plate("data", x.shape[0], dim=-1, device=x.device):  # type: ignore[arg-type]  # Pyro annotates str
            with poutine.mask(mask=~labelled):  # type: ignore[call-overload]  # a bool tensor
                y_latent = pyro.sample(
                    "y",
                    dist.Categorical(logits=self.classifier(x)),
                    infer={"enumerate": "parallel"},
                )
            y_value = torch.where(labelled, label, y_latent)
            pyro.sample("z", dist.Normal(*self.encoder(self._join(x, y_value))).to_event(1))

    # ------------------------------------------------------------------ labels and accuracy
    def labelled_mask(self, n: int) -> torch.Tensor:
        """Which of ``n`` training points keep their label: ``round(labelled_fraction * n)`` (at least 1)
        points drawn with ``label_seed``, ``(n,)`` bool."""
        k = max(1, round(self.labelled_fraction * n))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.label_seed))
        mask = torch.zeros(n, dtype=torch.bool)
        mask[order[:k]] = True
        return mask

    def dataset_inputs(self, dataset: Any, split: str) -> tuple[torch.Tensor, ...]:
        """The label column ``fit`` appends after x: ``(y,)``, ``-1`` where unlabelled (the whole test split)."""
        labels = dataset.train_labels if split == "train" else dataset.test_labels
        rows = dataset.train if split == "train" else dataset.test
        if labels is None:
            if split == "train":
                raise DataError(
                    f"SemiSupervisedVAE needs labels: dataset {dataset.meta.name!r} has none; "
                    "load a labelled dataset (digits, mnist) or pass (x, y) tensors with -1 for unlabelled"
                )
            return (torch.full((len(rows),), -1, dtype=torch.long, device=rows.device),)
        self.check_labels(labels)
        y = torch.full_like(labels, -1)
        if split == "train":
            mask = self.labelled_mask(len(labels)).to(labels.device)
            y[mask] = labels[mask]
        return (y,)

    def check_labels(self, y: torch.Tensor, arg: str = "labels") -> None:
        if y.numel() and (int(y.max()) >= self.num_classes or int(y.min()) < -1):
            raise DataError(
                f"{arg} must be class indices in [0, {self.num_classes}) or -1 (unlabelled); got values "
                f"in [{int(y.min())}, {int(y.max())}]: set num_classes"
            )

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """q(y | x): ``(N, C)`` class probabilities."""
        return torch.softmax(self.classifier(x), dim=-1)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Share of points whose most probable class under q(y | x) is ``y``."""
        x = self.check_data(x)
        dev = next(self.parameters()).device
        pred = self.classifier(x.to(dev)).argmax(-1)
        return float((pred == y.to(dev).long()).float().mean())

    @torch.no_grad()
    def classifier_entropy(self, x: torch.Tensor) -> float:
        """Mean entropy of q(y | x) in nats (log C for a classifier that has learned nothing)."""
        p = self.predict_proba(x.to(next(self.parameters()).device))
        return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())

    def epoch_metrics(self, dataset: Any) -> dict[str, float]:
        """The program contract's hook, called by ``fit`` after every epoch with the Dataset it trains on:
        the classifier's accuracy and entropy on the test split (recorded in the history and checkpoints)."""
        if dataset.test_labels is None or not len(dataset.test):
            return {}
        dev = next(self.parameters()).device
        return {
            "test_accuracy": self.accuracy(dataset.test.to(dev), dataset.test_labels.to(dev)),
            "classifier_entropy": self.classifier_entropy(dataset.test.to(dev)),
        }

    def accuracy_callback(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        key: str = "test_accuracy",
    ) -> Callable[[dict[str, Any]], None]:
        """A ``fit(..., callback=...)`` that adds the classifier's accuracy on ``(x, y)`` to each epoch's
        record (and so to the history)."""

        def record(rec: dict[str, Any]) -> None:
            was = self.training
            self.eval()
            rec[key] = self.accuracy(x, y)
            self.train(was)

        return record

    # ------------------------------------------------------------------ plain-torch helpers
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x, y) at the classifier's most probable y: ``(loc, scale)``, each ``(N, d)``."""
        y = self.classifier(x).argmax(-1)
        return self.encoder(self._join(x, y))

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(self._join(z, y)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        y = self.classifier(x).argmax(-1)
        return self.decode(self.encoder(self._join(x, y))[0], y)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Means of ``p(x | y, z)`` for ``z ~ N(0, I)`` and ``y`` uniform (or given): ``(n, D)``."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        if y is None:
            y = torch.randint(0, self.num_classes, (n,), generator=generator).to(device)
        return self.decode(z, y.to(device))

    def check_data(self, x: object, arg: str = "x") -> torch.Tensor:
        x = check_matrix(x, self.input_dim, arg)
        self.likelihood.check(x, arg)
        return x

    @property
    def config(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "input_dim": self.input_dim,
            "num_classes": self.num_classes,
            "latent_dim": self.latent_dim,
            "hidden_dims": list(self.hidden_dims),
            "likelihood": self.likelihood.spec,
            "activation": self.activation,
            "labelled_fraction": self.labelled_fraction,
            "alpha": self.alpha_arg,
            "label_seed": self.label_seed,
        }

    def extra_repr(self) -> str:
        return (
            f"D={self.input_dim}, C={self.num_classes}, d={self.latent_dim}, "
            f"labelled_fraction={self.labelled_fraction:g}, alpha={self.alpha:g}"
        )


PURE_PROGRAMS.update({SemiSupervisedVAE.model, SemiSupervisedVAE.guide})
