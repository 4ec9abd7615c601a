"""Pyro's example programs, copied verbatim from pyro-ppl/pyro@ff6ae1c95 for ``tests/test_pyro_examples.py``.

They are Apache-2.0 (the licence headers kept in each file; the licence text in ``LICENSE.md`` beside them,
copied from the same commit), unlike the rest of ppl_vae (MIT). Each file lists, under its header, what was
removed (data loading, main(), argparse, plotting) and which imports were made relative. Subclassed at the
tests' sizes in ``tests/programs/pyro_examples.py``; excluded from ruff (upstream style).
"""
