"""The user-error family: what the command line prints in one line with exit status 2.

Every mistake a user can make (a bad argument, data outside a likelihood's support, a run
folder that would be overwritten, a corrupt or hand-edited file, a program that breaks the
program contract, a run that diverged, a size the machine cannot hold) raises a subclass of
:class:`UserError`. They are ``ValueError`` s, so API callers can keep catching ``ValueError``;
some also derive from the built-in class a Python user would expect (``TypeError`` for a wrong
type, ``FileNotFoundError`` for a missing file, ...).

Anything that is *not* a :class:`UserError` is a bug in ppl_vae (or in a library it calls): the
CLI prints its traceback and exits with status 1, so it can be reported and fixed.
"""

from __future__ import annotations

__all__ = [
    "ArgumentTypeError",
    "CheckpointError",
    "DataError",
    "MissingFileError",
    "ProgramError",
    "ResourceError",
    "RunError",
    "RunExistsError",
    "RunLockedError",
    "TrainingDiverged",
    "UserError",
]


class UserError(ValueError):
    """A mistake in what the user asked for or gave us; the message says what and how to fix it."""


class ArgumentTypeError(UserError, TypeError):
    """An argument of the wrong type (names the argument and the type it got)."""


class DataError(UserError):
    """Data that cannot be used as given: wrong shape, non-finite values, outside a likelihood's support."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or a run needs) does not exist."""


class ProgramError(UserError):
    """A Pyro model/guide that breaks the program contract (the message names the site and the fix)."""


class RunError(UserError):
    """A run folder that cannot be used as asked (missing, incomplete, from another version)."""


class RunExistsError(RunError, FileExistsError):
    """Something the user made is in the way: we refuse rather than overwrite or delete it."""


class RunLockedError(RunError):
    """Another process is writing to this run folder (one writer per folder)."""


class CheckpointError(RunError):
    """A checkpoint is missing, truncated, corrupt, edited, or does not match what it is loaded into."""


class ResourceError(UserError):
    """A size the machine cannot hold (memory, disk) or a file system that refuses writes."""


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite; the model was restored to the last good epoch."""
