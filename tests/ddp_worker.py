"""Run by ``torchrun`` in tests/test_distributed.py: ``ppl-vae train`` on each rank, then save its parameters.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT -- TRAIN ARGS...

Wraps the ``fit`` that :func:`ppl_vae.runs.train_run` calls (``ppl_vae.runs.folder.fit``) so that, after training, every rank
writes its parameters to ``OUT/rank{RANK}.safetensors``; the CLI itself runs unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

import ppl_vae.runs.folder
from ppl_vae.cli import main

_fit = ppl_vae.runs.folder.fit


def _fit_and_save(model, *args, **kwargs):
    history = _fit(model, *args, **kwargs)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(Path(OUT) / f"rank{os.environ['RANK']}.safetensors"))
    return history


if __name__ == "__main__":
    OUT = sys.argv[1]
    ppl_vae.runs.folder.fit = _fit_and_save
    sys.exit(main(sys.argv[sys.argv.index("--") + 1 :]))
