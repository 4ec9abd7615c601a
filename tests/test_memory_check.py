"""The memory check counts what training allocates (``benchmarks/memory_check.py`` measures it): the
README's own ``--hidden-dims 20000,20000`` is refused on a 24 GiB machine before anything is allocated
(it passed the old check of 16 bytes per parameter, trained for 282 s and was killed by the kernel),
the hint names what dominates, and the container's limit counts (cgroup v2 or v1)."""

from __future__ import annotations

import pytest
from helpers import one_line_error

from ppl_vae._checks import cgroup_available
from ppl_vae.cli import main
from ppl_vae.errors import ResourceError
from ppl_vae.runs.build import check_model_size, training_memory

GiB = 2**30
VAE = {"class": "VAE", "input_dim": 64, "latent_dim": 8}


@pytest.fixture
def machine(monkeypatch):
    """What a 24 GiB machine has available with a few processes running."""
    monkeypatch.setattr("ppl_vae._checks.available_memory", lambda: 20 * GiB)


def test_the_readmes_example_is_refused_before_anything_is_made(machine, tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["train", "--dataset", "digits", "--hidden-dims", "20000,20000", "--out", str(out)]
    assert main(argv) == 2
    one_line_error(capsys, "804,400,144 parameters", "hidden_dims (20000, 20000)", "--hidden-dims")
    assert not out.exists()
    # what the old check counted (value, gradient, two moments) fit, and the kernel killed the run
    m = training_memory({**VAE, "hidden_dims": (20000, 20000)}, 128, rows=1437, steps=240)
    assert m["params"] * 16 + m["activations"] < 20 * GiB < m["weights"]


def test_the_hint_names_the_batch_when_its_activations_dominate(machine, tmp_path, capsys):
    argv = ["train", "--hidden-dims", "4000", "--objective", "iwae:k=5000", "--out", str(tmp_path)]
    assert main(argv) == 2
    one_line_error(capsys, "choose a smaller --batch-size or fewer samples (k)", "5000 samples")
    config = {**VAE, "hidden_dims": (256,)}
    with pytest.raises(
        ResourceError, match=r"smaller --batch-size \(the activations of 10,000,000,000 rows"
    ):
        check_model_size(config, 10**10, "a vae")  # rows unknown: the batch as given
    # a batch is never larger than the data: --batch-size 10**12 on 1437 rows is a 1437-row batch
    check_model_size(config, 10**12, "a vae", rows=1437, steps=1)
    assert training_memory(config, 10**12, rows=1437)["batch"] == 1437


def test_a_run_long_enough_for_the_compiled_step_counts_its_copies():
    config = {**VAE, "hidden_dims": (3000, 3000)}
    short = training_memory(config, 128, rows=1437, steps=2999)
    long = training_memory(config, 128, rows=1437, steps=3000)
    assert not short["fused"] and long["fused"] and long["weights"] > 1.8 * short["weights"]
    assert training_memory(config, 128)["fused"]  # length unknown: the larger


def test_the_containers_limit_counts(tmp_path):
    def files(limit: str, used: str) -> tuple[str, str]:
        (tmp_path / f"l{limit}").write_text(limit + "\n")
        (tmp_path / f"u{limit}").write_text(used + "\n")
        return str(tmp_path / f"l{limit}"), str(tmp_path / f"u{limit}")

    v2, v1 = files("4294967296", "1073741824"), files("9223372036854771712", "5")
    assert cgroup_available([v2]) == 3 * GiB
    assert cgroup_available([files("max", "7"), v1]) is None  # no limit in either
    assert cgroup_available([(str(tmp_path / "absent"), "x"), v2]) == 3 * GiB
