"""``ppl-vae check RUN``: a forked CLI (``tests/cli_forkserver.py``) checks a trained run, commits
RUN/check/ (check.csv, check.png, MANIFEST.json) as one set, and refuses to replace it without --force."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from cli_forkserver import ForkServer
from helpers import files_of

from ppl_vae.store.outputs import read_output_set

TRAIN = [
    "train",
    "--dataset",
    "digits",
    "--hidden-dims",
    "32",
    "--latent-dim",
    "4",
    "--epochs",
    "2",
]
TRAIN += ["--no-progress"]
PNG_END = b"IEND\xaeB`\x82"


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def run(server, tmp_path_factory):
    base = tmp_path_factory.mktemp("check")
    rc, text, _ = server.call([*TRAIN, "--out", base / "run"], base / "log")
    assert rc == 0, text
    return base / "run"


def _one_line(text: str, *needles: str) -> None:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_check_writes_a_set_and_refuses_a_second_without_force(server, run, tmp_path):
    rc, text, _ = server.call(["check", run, "-n", "20", "--seed", "3"], tmp_path / "a")
    assert rc == 0, text
    assert "mean (posterior): 64 terms" in text and "correlation (posterior): 2016 terms" in text
    assert "p_value" in text and "wrote" in text
    found = read_output_set(run, "check")  # every file checked against the manifest
    assert sorted(found.listed) == ["check.csv", "check.png"]
    assert found.record["num_samples"] == 20 and found.record["seed"] == 3
    assert found.record["epoch"] == 2 and found.record["split"] == "test"
    table = pd.read_csv(io.BytesIO(found.files["check.csv"]))
    assert set(table["source"]) == {"posterior", "prior"}
    assert set(table["statistic"]) == {"mean", "variance", "zero_fraction", "correlation"}
    assert len(table) == 2 * (3 * 64 + 64 * 63 // 2)
    undefined = table["p_value"].isna()  # pairs with a pixel that is blank in every test image
    assert set(table.loc[undefined, "statistic"]) == {"correlation"}
    assert table.loc[~undefined, "p_value"].between(0, 1).all()
    assert found.files["check.png"].startswith(b"\x89PNG") and found.files["check.png"].endswith(
        PNG_END
    )
    before = files_of(run / "check")
    rc, text, _ = server.call(["check", run, "-n", "20"], tmp_path / "b")
    assert rc == 2
    _one_line(text, "already holds check/", "--force", "--out")
    assert files_of(run / "check") == before  # nothing was touched
    rc, text, _ = server.call(["check", run, "-n", "10", "--force", "--prior"], tmp_path / "c")
    assert rc == 0, text
    assert "mean (prior)" in text
    assert read_output_set(run, "check").record["num_samples"] == 10


def test_check_out_folder_and_refusals(server, run, tmp_path):
    out = tmp_path / "elsewhere"
    rc, text, _ = server.call(["check", run, "-n", "5", "--out", out], tmp_path / "a")
    assert rc == 0, text
    assert (out / "check" / "check.csv").is_file()
    rc, text, _ = server.call(["check", tmp_path / "no-such-run"], tmp_path / "b")
    assert rc == 2
    _one_line(text, "no-such-run")
    assert not (tmp_path / "no-such-run").exists()
    rc, text, _ = server.call(["check", run, "-n", "1"], tmp_path / "c")
    assert rc == 2
    _one_line(text, "--num-samples", "2 draws")
    ae = tmp_path / "ae"
    argv = ["train", "--model", "ae", "--dataset", "two_moons", "--epochs", "1", "--no-progress"]
    assert server.call([*argv, "--out", ae], tmp_path / "d")[0] == 0
    rc, text, _ = server.call(["check", ae], tmp_path / "e")
    assert rc == 2
    _one_line(text, "Autoencoder", "no likelihood")
    assert not (ae / "check").exists()
