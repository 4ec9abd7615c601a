"""``fit``: stochastic variational inference on any Pyro program, trained and measured correctly.

For N training points and a mini-batch B the loss of a step is the objective's negative bound with
every site *inside the data plate* scaled by N/|B| and every site outside it (a global latent, a
Bayesian decoder weight) by 1, as Pyro's own subsampling does (:class:`~ppl_vae.programs.DataPlateScale`):
an unbiased estimate of the full-data negative ELBO and its gradient (Hoffman et al., 2013). The
optimiser (``torch.optim.Adam``) trains every parameter the programs register: ``pyro.module``'s
and plain ``pyro.param`` sites (their unconstrained values), inside a scoped parameter store whose
plain values are kept on the returned state (``history.state.trained_params``) and seen by every later
call given the same program.

Before the first step the program is inspected once with validation on
(:func:`~ppl_vae.programs.inspect_program`): the data plate found by name, ``max_plate_nesting``
read from the program, the objective bound to it (an objective that cannot train the program is
refused, naming the site and the objective that can), and the first batch's loss evaluated by the
objective's own Pyro ELBO with validation on, so Pyro's checks of the user's program are raised, not
swallowed. The hot loop then runs with validation off. Where a fast path (:mod:`.fast`) does not apply,
training runs on the Pyro ELBO and the reason is reported once.

References:
    Hoffman, Blei, Wang & Paisley (2013), Stochastic Variational Inference, JMLR 14.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, cast

import pyro
import torch

from .._torch_compat import tensor_edits
from ..errors import ArgumentTypeError, ProgramError, UserError
from ..objectives import Objective, parse_objective
from ..params import param_scope
from ..priors import Prior, warn_sampled_kl
from ..program_errors import from_program, program_failure
from ..program_inspection import inspect_program
from ..program_sites import ProgramWarning, restored_modes
from ..programs import (
    DataLike,
    DataPlateScale,
    Program,
    ProgramInfo,
    ProgramLike,
    as_program,
    rows_slice,
    with_data_plate,
)
from ..store.tracking import check_fit_log, fit_log
from .data import Rows, TrainData, as_train_data, validate
from .distributed import DistContext
from .distributed import setup as setup_distributed
from .evaluation import test_elbo
from .fast import FAST_MODES, FastEngine, FastMode
from .loop import FusedStepFn, run_epochs
from .optim import adam, collect_parameters, unregistered_parameters, warn_unregistered
from .paths import choose_engines, fast_meta, warn_once, whole_step_meta
from .state import (
    History,
    TrainState,
    new_state,
    remember,
    resolve_device,
    state_of,
    training_summary,
)

__all__ = ["fit"]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_fit_args(
    epochs: object, batch_size: object, lr: object, fast: object, time_budget: object
) -> None:
    """``fit``'s numbers and mode, checked before anything runs (one line naming the argument)."""
    for arg, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserError(
                f"{arg} must be a {'non-negative' if low == 0 else 'positive'} integer; got {value!r}"
            )
    if not (_is_number(lr) and cast(float, lr) > 0):
        raise UserError(f"lr must be a positive finite number; got {lr!r}")
    if fast not in FAST_MODES:
        raise UserError(f"fast must be one of {FAST_MODES}; got {fast!r}")
    if time_budget is not None and not (_is_number(time_budget) and cast(float, time_budget) > 0):
        raise UserError(
            f"time_budget must be a positive finite number of seconds (or None); got {time_budget!r}"
        )


# ====================================================================== the strategy
class SVIStrategy:
    """One SVI step of a program under an objective (the loss strategy of :func:`~.loop.run_epochs`)."""

    def __init__(
        self,
        program: Program,
        objective: Objective,
        info: ProgramInfo,
        state: TrainState,
        engine: FastEngine | None,
        ddp: Any = None,
        dataset: Any = None,
    ) -> None:
        self.program = program
        self.dataset = dataset  # a Dataset given to fit, for the program's epoch_metrics hook
        self.objective = objective
        self.info = info
        self.state = state
        self.engine = engine
        self.ddp = ddp
        self.label = objective.spec
        self.module = program.module
        self.defers_updates = (
            False  # set by fit when the compiled whole step may run (the guard reads in blocks)
        )
        self.explicit = (
            False  # fast="compile" was asked for: a fallback of the whole step is warned about
        )

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        with (
            param_scope(self.program, self.state.params, keep=True),
            pyro.validation_enabled(False),
        ):
            yield

    def begin_epoch(self, seed: int, device: torch.device) -> None:
        if self.module is not None:
            self.module.train()

    def kl_weight(self, step: int, epoch: int) -> float:
        return self.objective.kl_weight(step, epoch)

    def fused_epoch(
        self, rows: Rows, first_step: int, epoch: int, batch_size: int
    ) -> FusedStepFn | None:
        """The compiled whole step (:mod:`.fused`) for this epoch's full batches, or None (the reason is
        kept on the engine, and warned about once when the step was asked for or failed)."""
        engine, optimizer = self.engine, self.state.optimizer
        if engine is None or optimizer is None or self.ddp is not None or not self.defers_updates:
            return None
        n = len(rows[0])
        full = n // batch_size if n >= batch_size else 1
        weights = [self.kl_weight(first_step + i, epoch) for i in range(full)]
        step = engine.fused_epoch(rows, optimizer, batch_size, first_step, weights)
        if step is not None:
            engine.fused_epochs.append(epoch)
        elif engine.fused_reason is not None and (self.explicit or engine.fused_failed):
            warn_once(
                self.state,
                f"the compiled whole step does not apply ({engine.fused_reason}); training "
                "with the captured loss graph and torch.optim.Adam",
            )
        return step

    def loss(self, batch: Rows, scale: float, weight: float, step: int) -> torch.Tensor:
        """One batch's loss, with its gradients left in the parameters' ``.grad``; an exception from the
        programs is one :class:`ProgramError` line naming the step and the site."""
        try:
            return self._loss(batch, scale, weight)
        except Exception as err:
            if not from_program(err):
                raise
            raise program_failure(
                err, f"fit {self.label!r}, training step {step + 1}", self.program, batch
            ) from err

    def _loss(self, batch: Rows, scale: float, weight: float) -> torch.Tensor:
        if self.ddp is not None:
            loss = self.ddp(*batch, scale=scale, latent_weight=weight)
        elif self.engine is not None:
            loss, done = self.engine.loss(batch, scale, weight)
            if done:
                return loss
        else:
            with DataPlateScale(self.info.data_plate, scale, weight):
                loss = self.objective.loss(self.program.model, self.program.guide, *batch)
        if loss.requires_grad:
            loss.backward()
        return loss.detach()

    def epoch_record(self, total: float, n: int, scale: float) -> dict[str, Any]:
        return {"train_elbo": -total / (scale * n)}

    def test_record(self, test: Rows | None, seed: int, ctx: DistContext) -> dict[str, Any]:
        if self.module is not None:
            self.module.eval()
        value = (
            test_elbo(self.program, self.info, test, seed, ctx=ctx) if test is not None else None
        )
        record: dict[str, Any] = {"test_elbo": value}
        hook = getattr(self.program.owner, "epoch_metrics", None)
        if callable(hook) and self.dataset is not None:  # e.g. a classifier's test accuracy (M2)
            with torch.no_grad():
                record.update(hook(self.dataset))
        return record

    def checkpoint_params(self) -> dict[str, torch.Tensor]:
        wanted = set(self.info.param_names)
        return {  # the unconstrained tensors (the store's named_parameters), as Pyro's SVI trains them
            name: value.detach()
            for name, value in pyro.get_param_store().named_parameters()
            if name in wanted
        }


# ====================================================================== fit
def fit(
    program: ProgramLike,
    data: DataLike,
    objective: str | Objective = "analytic",
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "auto",
    test_data: DataLike | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    time_budget: float | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    fast: FastMode = "auto",
    data_plate: str | None = None,
    state: TrainState | None = None,
    log: Literal["mlflow"] | None = None,
) -> History:
    """Train a program by SVI on ``data`` and return the per-epoch history.

    Args:
        program: an object with Pyro ``.model``/``.guide`` (e.g. :class:`ppl_vae.VAE`, or an ``nn.Module``
            written as in Pyro's examples) or :class:`ppl_vae.Program` (see :mod:`ppl_vae.programs`).
        data: a :class:`~ppl_vae.data.Dataset` (train/test splits, binarisation), a tensor ``(N, ...)``, or
            a tuple of row-aligned tensors ``(x, y, ...)`` passed as ``model(*batch)``.
        objective: a name such as ``"trace"``, ``"analytic"``, ``"enum"``, ``"iwae:k=5"`` (see
            :mod:`ppl_vae.objectives`); checked against the program.
        epochs: number of further epochs (a second call, or ``state=``, continues where one stopped).
        batch_size: mini-batch size; the last batch of an epoch may be smaller (under data-parallel
            training, the global batch over all ranks).
        lr: Adam learning rate.
        seed: seeds shuffling, dynamic binarisation and the samples of z, per epoch.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        test_data: with tensor data, the test split (same form as ``data``); scored after every epoch.
        checkpoint_dir: a checkpoint is committed there after every epoch (one writer per folder).
        resume: load weights, optimizer, parameters and history from ``checkpoint_dir`` first.
        progress: show a progress bar.
        time_budget: stop after the epoch in which this many seconds of training have passed.
        callback: called with each epoch's record.
        fast: ``"auto"``, ``"graph"``, ``"eager"``, ``"compile"`` or ``"off"`` (see :mod:`ppl_vae.train.fast`);
            every mode trains the same program to the same objective.
        data_plate: the name of the data plate (default ``"data"``).
        state: a :class:`TrainState` to continue (default: the one remembered for this program).
        log: ``"mlflow"``: log the settings as parameters, every epoch's record as metrics (step =
            epoch) and the checkpoint as artifacts, into the active MLflow run or a new one (needs
            ``ppl_vae[mlflow]``; see :mod:`ppl_vae.store.tracking`).

    Returns:
        :class:`History`: ``train_elbo`` is the training objective's bound averaged over the epoch's
        batches (nats per point, as the parameters moved); ``test_elbo`` the ELBO on the test split at the
        end of the epoch (nats per point); ``.state`` the training state, ``.meta`` what was decided.

    Raises:
        UserError: bad data or arguments; ProgramError: a program the objective cannot train (named);
        TrainingDiverged: the loss became non-finite (everything restored to the last good epoch).

    Examples:
        >>> import ppl_vae as pv
        >>> data = pv.load_dataset("two_moons", n_samples=200, seed=0)
        >>> vae = pv.VAE(input_dim=2, latent_dim=2, hidden_dims=(16,), likelihood="gaussian")
        >>> history = pv.fit(vae, data, "analytic", epochs=2, progress=False)
        >>> [record["epoch"] for record in history], history.state.epoch
        ([1, 2], 2)
        >>> list(history.to_frame().columns[:4])
        ['epoch', 'step', 'train_elbo', 'test_elbo']
        >>> history = pv.fit(vae, data, "analytic", epochs=1, progress=False)  # continues: epoch 3
        >>> history.state.epoch
        3
    """
    check_fit_args(epochs, batch_size, lr, fast, time_budget)
    log = cast("Literal['mlflow'] | None", check_fit_log(log))
    program = as_program(program, data_plate=data_plate)
    obj = parse_objective(objective)
    _say_sampled_kl(program, obj)
    asked = resolve_device(device)
    if state is not None and not isinstance(state, TrainState):
        raise ArgumentTypeError(
            f"state must be a TrainState (history.state); got {type(state).__name__}"
        )
    state = state or state_of(program.key) or new_state(program.key, seed)
    train = _train_data(data, test_data, program, state.validated)
    ctx = setup_distributed(asked)
    dev = ctx.device
    train = train.to(dev)
    if program.module is not None:
        program.module.to(dev)
    first = rows_slice(train.train, slice(0, min(batch_size, train.n)))
    program, info, obj, params, pure, resumed = _set_up(
        program, obj, state, train, first, ctx, batch_size, lr, resume, checkpoint_dir
    )
    state.seed = seed
    history = state.history
    engine, ddp = choose_engines(
        program, obj, fast, info, pure, state, ctx, first, train.n, batch_size, epochs
    )
    history.meta.update(
        fast_meta(fast, engine, obj, state),
        objective=obj.spec,
        discrete_sites=list(info.non_reparam),
    )
    _report_program(state, info, history)
    strategy = _strategy(program, obj, info, state, engine, ddp, train, fast, epochs, batch_size)
    history.state = state
    remember(program.key, state)  # reachable even if training stops with an error
    save = _saver(program, strategy, train, checkpoint_dir, lr, batch_size)
    settings = {  # what fit(..., log="mlflow") records as the MLflow run's parameters
        "objective": obj.spec,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "device": str(dev),
        "fast": fast,
        "data_plate": data_plate or "data",
        "program": type(program.module if program.module is not None else program).__name__,
        "model": getattr(program.module, "config", None),
        "n_train": train.n,
    }
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    with (
        _locked(checkpoint_dir),
        restored_modes(program.modules),
        fit_log(log, settings, callback, folder, ctx.is_main) as callback,
    ):
        run_epochs(
            strategy,
            train,
            state,
            params,
            epochs=epochs,
            batch_size=batch_size,
            seed=state.seed,
            ctx=ctx,
            checkpoint_dir=checkpoint_dir,
            save=save,
            progress=progress,
            time_budget=time_budget,
            callback=callback,
            resumed_epoch=resumed,
        )
    history.state = state
    remember(program.key, state)
    if engine is not None:
        history.meta["fast_path"]["whole_step"] = whole_step_meta(engine)
    return history


def _say_sampled_kl(program: Program, obj: Objective) -> None:
    """A prior whose registry entry has no closed-form KL: the analytic objective samples it (said once)."""
    prior = getattr(program.module, "prior", None)
    if isinstance(prior, Prior) and obj.entry is not None:
        warn_sampled_kl(prior, obj.entry.trait("surrogate"))


def _set_up(
    program: Program,
    obj: Objective,
    state: TrainState,
    train: TrainData,
    first: Rows,
    ctx: DistContext,
    batch_size: int,
    lr: float,
    resume: bool,
    checkpoint_dir: str | Path | None,
) -> tuple[Program, ProgramInfo, Objective, list[torch.Tensor], list[torch.Tensor], int | None]:
    """The program inspected and the objective bound (or the last call's, when nothing it depends on
    changed), the optimiser (kept while it trains the same tensors), a resume: ``(program with the data
    plate found, info, bound objective, trained tensors, plain pyro.param tensors, resumed epoch)``."""
    dev = ctx.device
    module_ids = (
        tuple(id(p) for p in program.module.parameters()) if program.module is not None else ()
    )
    key = (
        id(program.key),
        obj.spec,
        batch_size,
        id(state.validated.get("key")),
        str(dev),
        resume,
        module_ids,
    )
    setup = state.setup if state.setup is not None and state.setup[0] == key else None
    with (
        param_scope(program, state.params, keep=True, fresh_modules=setup is None),
        torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []),
    ):
        if setup is None:
            info, obj, params, pure = _inspect(program, obj, train, first, ctx)
        else:
            info, obj, params, pure = setup[1:]
        program = with_data_plate(program, info)
        trained = [id(p) for p in params]
        optimizer = state.optimizer
        if (
            optimizer is None
            or [id(p) for g in optimizer.param_groups for p in g["params"]] != trained
        ):
            optimizer = state.optimizer = adam(params, lr)
        resumed = _resume(program, state, checkpoint_dir, dev, info) if resume else None
        for group in optimizer.param_groups:  # after a resume: the lr asked for, not the saved one
            group["lr"] = lr
    state.setup = None if resume else (key, info, obj, params, pure)
    state.info = info
    state.objective = obj.spec
    return program, info, obj, params, pure, resumed


def _strategy(
    program: Program,
    obj: Objective,
    info: ProgramInfo,
    state: TrainState,
    engine: FastEngine | None,
    ddp: Any,
    train: TrainData,
    fast: FastMode,
    epochs: int,
    batch_size: int,
) -> SVIStrategy:
    """The SVI strategy of this call, with whether the compiled whole step may run (said once when it was
    asked for and does not apply)."""
    strategy = SVIStrategy(program, obj, info, state, engine, ddp, train.dataset)
    if engine is None or ddp is not None or state.optimizer is None:
        return strategy
    steps_per_epoch = max(1, -(-train.n // batch_size))
    strategy.defers_updates = engine.may_fuse(state.optimizer, state.step, epochs, steps_per_epoch)
    strategy.explicit = fast == "compile"
    if strategy.explicit and not strategy.defers_updates and engine.fused_reason is not None:
        warn_once(
            state,
            f"the compiled whole step does not apply ({engine.fused_reason}); training with "
            "the compiled loss graph and torch.optim.Adam",
        )
    return strategy


def _saver(
    program: Program,
    strategy: SVIStrategy,
    train: TrainData,
    checkpoint_dir: str | Path | None,
    lr: float,
    batch_size: int,
) -> Callable[[TrainState], None] | None:
    """What commits a checkpoint after each epoch (None without ``checkpoint_dir``)."""
    if checkpoint_dir is None:
        return None
    folder = checkpoint_dir

    def save(st: TrainState) -> None:
        from ..store.checkpoint import save_checkpoint

        save_checkpoint(
            folder,
            program.module,
            optimizer=st.optimizer,
            training=training_summary(st, lr=lr, batch_size=batch_size),
            data_meta=train.meta,
            params=strategy.checkpoint_params(),
        )

    return save


def _report_program(state: TrainState, info: ProgramInfo, history: History) -> None:
    """Record (``history.meta``) and say once what makes the history's numbers other than nats per point:
    the program's own ``poutine.scale`` (its objective, kept in training) and observations outside their
    likelihood's support."""
    history.meta["scaled_sites"] = {name: scale for name, scale in info.scaled}
    history.meta["outside_support"] = {name: share for name, share in info.outside_support}
    if info.scaled:
        shown = ", ".join(
            f"{n!r} x {v:.3g}" if isinstance(v, float) else f"{n!r} x {v}" for n, v in info.scaled
        )
        message = (
            f"the program scales its sites itself (poutine.scale: {shown}): fit trains that objective, so "
            "train_elbo and test_elbo are in its scaled units, not nats per point (history.meta"
            "['scaled_sites']); iw_log_likelihood, elbo and evaluate remove the scales"
        )
        if message not in state.reported:
            state.reported.add(message)
            warnings.warn(f"ppl_vae.fit: {message}", ProgramWarning, stacklevel=3)
    for name, share in info.outside_support:
        message = (
            f"{share:.1%} of the values observed at site {name!r} (first rows) lie outside the support of "
            "its distribution (validation off does not make them fit): transform the data into the "
            "support (binarise grey levels) or choose a likelihood that holds them"
        )
        if message not in state.reported:
            state.reported.add(message)
            warnings.warn(f"ppl_vae.fit: {message}", ProgramWarning, stacklevel=3)


def _input_key(obj: Any) -> Any:
    """What identifies ``fit``'s data argument without reading it (an in-place edit changes
    its :func:`~ppl_vae._torch_compat.tensor_edits`)."""
    if torch.is_tensor(obj):
        return (
            id(obj),
            obj.untyped_storage().data_ptr(),
            obj.storage_offset(),
            tuple(obj.shape),
            obj.dtype,
            obj.device,
            tensor_edits(obj),
        )
    if isinstance(obj, (tuple, list)):
        return tuple(_input_key(o) for o in obj)
    return None if obj is None else ("object", id(obj), type(obj).__name__)


def _train_data(data: Any, test_data: Any, program: Program, memo: dict[str, Any]) -> TrainData:
    """``as_train_data`` + ``validate``, remembered across calls of one training state: the same tensors
    (identity, storage, version) are not converted and scanned again (a notebook calling
    ``fit(..., epochs=1)`` in a loop pays the data checks once)."""
    key = (_input_key(data), _input_key(test_data))
    seen = memo.get("input")
    tensors = torch.is_tensor(data) or isinstance(
        data, (tuple, list)
    )  # a Dataset is only packed, not scanned
    if tensors and seen is not None and seen[0] == key and seen[1] is data and seen[2] is test_data:
        train = seen[3]
    else:
        train = as_train_data(
            data, test_data, getattr(program.owner, "dataset_inputs", None), program.owner
        )
    train = validate(train, program.check_data, memo)
    memo["input"] = (
        key,
        data,
        test_data,
        train,
    )  # the objects are held, so their ids cannot be reused
    return train


def _inspect(
    program: Program,
    obj: Objective,
    train: TrainData,
    first: Rows,
    ctx: DistContext,
) -> tuple[ProgramInfo, Objective, list[torch.Tensor], list[torch.Tensor]]:
    """Inspect the program once (validation on), bind the objective, collect what to train."""
    info = inspect_program(program, train.train)
    obj = obj.bind(info)
    if info.full_size is not None and info.full_size != train.n:
        raise ProgramError(
            f"the data plate {info.data_plate!r} declares {info.full_size} rows (pyro.plate(..., "
            f"{info.full_size}, subsample_size=...)) but fit trains on {train.n}: declare the size of the "
            "data you train on, or drop size/subsample_size and let fit scale the plate by N/|B|"
        )
    _validate_loss(program, obj, info, first, train.n)
    named = collect_parameters()
    if not named:
        raise ProgramError(
            "the programs register no trainable parameters: every pyro.module parameter has "
            "requires_grad=False and there is no pyro.param site; nothing for fit to train"
        )
    params = [t for _, t in named]
    pure = [t for name, t in named if name in info.param_names]
    warn_unregistered(unregistered_parameters(program.module, params), type(program.owner).__name__)
    if ctx.active and pure:
        raise ProgramError(
            f"data-parallel training synchronises module parameters; pyro.param site(s) "
            f"{sorted(info.param_names)} would drift apart: register them in an nn.Module "
            "(pyro.nn.PyroModule) or train in one process"
        )
    return info, obj, params, pure


@contextlib.contextmanager
def _locked(folder: str | Path | None) -> Iterator[None]:
    if folder is None:
        yield
        return
    from ..store.lock import lock_folder

    with lock_folder(folder):
        yield


def _validate_loss(
    program: Program, obj: Objective, info: ProgramInfo, batch: Rows, n: int
) -> None:
    """The objective's own Pyro loss on the first batch with validation on: Pyro's checks of the user's
    program (supports, shapes, enumeration) are raised here, never swallowed by a fast path."""
    with pyro.validation_enabled(True), DataPlateScale(info.data_plate, n / len(batch[0])):
        try:
            loss = obj.loss(program.model, program.guide, *batch)
        except UserError:
            raise
        except Exception as err:
            pyro_check = (ValueError, RuntimeError, NotImplementedError, AssertionError)
            if not from_program(err) and not isinstance(err, pyro_check):
                raise
            raise program_failure(
                err,
                f"objective {obj.spec!r} cannot train this program: its loss on the first batch failed",
                advice=_objective_advice(err, obj),
            ) from err
    if torch.is_tensor(loss) and not torch.isfinite(loss):
        raise UserError(
            f"the loss of the first batch is {float(loss)} before any training: check the data and "
            "the initial parameters"
        )


def _objective_advice(err: BaseException, obj: Objective) -> str | None:
    """What to do when an objective's own loss refuses the program (Pyro's check on the first batch)."""
    text = str(err)
    if "fully reparameterized" in text or "reparametrized" in text:
        return (
            f"{obj.spec!r} needs every guide site reparameterised: a guide pyro.factor(..., has_rsample=False) "
            "or a discrete site is not; use 'trace' (score-function terms for them)"
        )
    if "particle" in text or "vectoriz" in text:
        return (
            "the objective draws several particles in one vectorised run: use 'trace' or 'analytic'"
        )
    return None


def _resume(
    program: Program,
    state: TrainState,
    directory: str | Path | None,
    dev: torch.device,
    info: ProgramInfo,
) -> int:
    """Load weights, optimizer, plain params and counters from ``directory`` (inside the param scope)."""
    from ..store.checkpoint import load_model_state, load_optimizer_state, load_params, read_config

    if directory is None:
        raise UserError("resume=True needs checkpoint_dir (where the run's checkpoint is)")
    config = read_config(directory)
    if program.module is not None:
        load_model_state(directory, program.module, dev)
    loaded = load_params(directory, dev)
    store = pyro.get_param_store()
    missing = sorted(set(info.param_names) - set(loaded))
    if missing:
        raise UserError(
            f"the checkpoint in {str(directory)!r} has no values for pyro.param site(s) {missing}"
        )
    unconstrained = dict(store.named_parameters())
    with torch.no_grad():
        for name in info.param_names:
            unconstrained[name].copy_(loaded[name])
    if state.optimizer is not None:
        load_optimizer_state(directory, state.optimizer, dev)
    training = config.get("training") or {}
    state.epoch = int(training.get("epoch", 0))
    state.step = int(training.get("step", 0))
    state.seed = int(training.get("seed", state.seed))
    state.history = History(training.get("history", []))
    return state.epoch
