"""Run by ``torchrun`` in tests/test_distributed.py: two ``fit`` calls in one process (the second reuses
the process group the first one started), then each rank saves its parameters to
``OUT/rank{RANK}.safetensors``.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_two_fits.py OUT
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import ppl_vae as pv

if __name__ == "__main__":
    out = Path(sys.argv[1])
    data = pv.load_dataset("digits", binarize="dynamic", seed=0)
    torch.manual_seed(0)
    vae = pv.VAE(64, 4, (32,))
    first = pv.fit(
        vae, data, "analytic", epochs=2, batch_size=64, lr=3e-3, device="cpu", progress=False
    )
    second = pv.fit(
        vae, data, "analytic", epochs=2, batch_size=64, lr=3e-3, device="cpu", progress=False
    )
    state = {k: v.detach().contiguous() for k, v in vae.state_dict().items()}
    save_file(
        state,
        str(out / f"rank{os.environ['RANK']}.safetensors"),
        metadata={
            "epochs": str(len(second)),
            "first_elbo": str(first[0]["train_elbo"]),
            "last_elbo": str(second[-1]["train_elbo"]),
        },
    )
