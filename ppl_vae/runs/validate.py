"""Moved to :mod:`ppl_vae.store.validate` (persistence lives below training); this name stays for old imports."""

from ..store.validate import *  # noqa: F403
