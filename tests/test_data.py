"""Tests of ``ppl_vae.data``: loaders, binarisation, metadata, the IDX reader, the download
helper (no network: local files and injected fetchers) and input validation."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ppl_vae.data import (
    DATASETS,
    Dataset,
    DatasetMeta,
    download_mnist,
    load_dataset,
    read_idx,
)
from ppl_vae.data.builtin import CLUSTER_CENTRES
from ppl_vae.data.idx import FILES, MD5

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
SMALL = ("three_clusters", "two_moons", "digits")


# --------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Raw IDX encoding of a uint8 array (magic from its ndim unless given)."""
    if magic is None:
        magic = 0x00000800 | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True, magic: int | None = None) -> Path:
    data = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_fake_mnist(
    folder: Path, n_train: int = 30, n_test: int = 10, shape: tuple[int, int] = (4, 5)
) -> dict[str, np.ndarray]:
    """The four IDX .gz files of a tiny MNIST-format dataset; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(123)
    arrays = {
        FILES[0]: rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        FILES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        FILES[2]: rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        FILES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def sorted_rows(x: np.ndarray) -> np.ndarray:
    return x[np.lexsort(x.T[::-1])]


# --------------------------------------------------------------------------- built-in data


@pytest.mark.parametrize(
    "name, n_train, n_test, dim, kind, image_shape, classes",
    [
        ("three_clusters", 1200, 300, 2, "points2d", None, 3),
        ("two_moons", 1200, 300, 2, "points2d", None, 2),
        ("digits", 1437, 360, 64, "image", (8, 8), 10),
    ],
)
def test_builtin_shapes_dtypes_meta(name, n_train, n_test, dim, kind, image_shape, classes):
    data = load_dataset(name)
    assert data.train.shape == (n_train, dim) and data.test.shape == (n_test, dim)
    assert data.train.dtype == data.test.dtype == torch.float32
    assert data.train_labels.dtype == data.test_labels.dtype == torch.int64
    assert data.train_labels.shape == (n_train,) and data.test_labels.shape == (n_test,)
    assert set(data.train_labels.tolist()) == set(range(classes))
    m = data.meta
    assert (m.name, m.kind, m.input_dim, m.image_shape) == (name, kind, dim, image_shape)
    assert (m.n_train, m.n_test, m.num_classes, m.test_fraction) == (n_train, n_test, classes, 0.2)
    assert m.value_range == (data.train.min().item(), data.train.max().item())
    assert m.binarize is None and not m.standardize and m.mean is None
    assert torch.equal(DATASETS[name]().train, data.train)  # the registry's loader, called directly


def test_three_clusters_geometry():
    data = load_dataset("three_clusters", n_samples=3000, noise=0.3)
    x = torch.cat([data.train, data.test]).double()
    y = torch.cat([data.train_labels, data.test_labels])
    assert len(x) == 3000
    for k, centre in enumerate(CLUSTER_CENTRES):
        pts = x[y == k]
        assert len(pts) == 1000
        assert torch.allclose(pts.mean(0), torch.tensor(centre), atol=0.05)
        assert torch.allclose(pts.std(0), torch.full((2,), 0.3, dtype=torch.float64), atol=0.03)


def test_two_moons_without_noise_lie_on_the_half_circles():
    data = load_dataset("two_moons", noise=0.0, n_samples=200)
    x, y = data.train.double(), data.train_labels
    upper, lower = x[y == 0], x[y == 1]
    assert torch.allclose(
        upper.pow(2).sum(1), torch.ones(len(upper), dtype=torch.float64), atol=1e-5
    )
    centre = torch.tensor([1.0, 0.5], dtype=torch.float64)
    lower_r2 = (lower - centre).pow(2).sum(1)
    assert torch.allclose(lower_r2, torch.ones(len(lower), dtype=torch.float64), atol=1e-5)
    noisy = load_dataset("two_moons", n_samples=200)  # default noise 0.1
    assert (noisy.train[noisy.train_labels == 0].double().pow(2).sum(1) - 1).abs().max() > 0.1


def test_digits_pixels_and_stratified_split():
    data = load_dataset("digits")
    for x in (data.train, data.test):
        assert x.min() == 0.0 and x.max() == 1.0
        assert torch.equal(x * 16, (x * 16).round())  # grey levels 0..16 / 16
    all_counts = torch.bincount(torch.cat([data.train_labels, data.test_labels]))
    test_counts = torch.bincount(data.test_labels)
    assert ((test_counts - 0.2 * all_counts).abs() <= 1).all()
    quick = load_dataset("digits", n_samples=100)
    assert quick.train.shape == (100, 64) and torch.equal(quick.test, data.test)
    assert torch.equal(quick.train, data.train[:100]) and quick.meta.n_samples == 100


@pytest.mark.parametrize("name", SMALL)
def test_same_seed_same_tensors_other_seed_other(name):
    a, b, c = load_dataset(name, seed=3), load_dataset(name, seed=3), load_dataset(name, seed=4)
    for field in ("train", "test", "train_labels", "test_labels"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.train, c.train)
    assert a.meta == b.meta and a.meta.seed == 3 and c.meta.seed == 4


# --------------------------------------------------------------------------- binarisation


def is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def test_no_binarisation_keeps_values_and_resample_is_identity():
    data = load_dataset("digits")
    assert data.train_probs is data.train
    assert data.resample_train(torch.Generator().manual_seed(0)) is data.train
    assert not is_binary(data.train)


def test_static_binarisation():
    grey = load_dataset("digits")
    data = load_dataset("digits", binarize="static", seed=0)
    assert is_binary(data.train) and is_binary(data.test)
    assert torch.equal(data.train_probs, grey.train)
    assert data.meta.binarize == "static" and data.meta.value_range == (0.0, 1.0)
    g = torch.Generator().manual_seed(1)
    assert data.resample_train(g) is data.train
    assert abs(data.train.mean().item() - grey.train.mean().item()) < 0.01
    # pixels with probability 0 or 1 are drawn as such
    assert torch.equal(data.train[grey.train == 0], torch.zeros_like(data.train[grey.train == 0]))
    assert torch.equal(data.train[grey.train == 1], torch.ones_like(data.train[grey.train == 1]))
    again, other = (
        load_dataset("digits", binarize="static"),
        load_dataset("digits", binarize="static", seed=1),
    )
    assert torch.equal(again.train, data.train) and torch.equal(again.test, data.test)
    assert not torch.equal(other.train, data.train)


def test_static_draw_comes_from_a_generator_seeded_with_seed():
    a = load_dataset("digits", binarize="static", seed=5)
    b = load_dataset("digits", binarize="static", seed=5)
    gen = torch.Generator().manual_seed(5)
    expected = (torch.rand(a.train.shape, generator=gen) < a.train_probs).float()
    assert torch.equal(a.train, expected) and torch.equal(a.train, b.train)


def test_dynamic_binarisation():
    static = load_dataset("digits", binarize="static", seed=0)
    data = load_dataset("digits", binarize="dynamic", seed=0)
    # .train/.test are one seeded draw (the static one), so test sets are comparable
    assert is_binary(data.train) and is_binary(data.test)
    assert torch.equal(data.test, static.test) and torch.equal(data.train, static.train)
    # (a generator seeded with the dataset's seed would replay .train as its first draw)
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([data.resample_train(g) for _ in range(100)])
    assert draws.shape == (100, *data.train.shape) and is_binary(draws)
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], data.train)
    mean = draws.mean(0)  # tracks the grey levels: entrywise and per pixel
    assert (mean - data.train_probs).abs().mean() < 0.02
    assert (mean.mean(0) - data.train_probs.mean(0)).abs().max() < 0.01
    # reproducible from the generator
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(data.resample_train(g1), data.resample_train(g2))
    assert torch.equal(data.train_probs, load_dataset("digits").train)


def test_resample_train_needs_a_generator():
    data = load_dataset("digits", binarize="dynamic")
    with pytest.raises(TypeError, match="torch.Generator"):
        data.resample_train(0)


def test_to_device_returns_a_copy():
    for data in (load_dataset("digits"), load_dataset("digits", binarize="dynamic")):
        moved = data.to("cpu")
        assert moved is not data and moved.train is not data.train
        assert torch.equal(moved.train, data.train) and torch.equal(moved.test, data.test)
        assert torch.equal(moved.train_labels, data.train_labels)
        assert torch.equal(moved.train_probs, data.train_probs)
        assert (moved.train_probs is moved.train) == (data.train_probs is data.train)
        assert moved.meta == data.meta and moved.train.device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dynamic_data_on_cuda_draw_the_same_as_on_cpu():
    data = load_dataset("digits", binarize="dynamic")
    gpu = data.to("cuda")
    assert gpu.train.is_cuda and gpu.train_probs.is_cuda and gpu.train_labels.is_cuda
    on_gpu = gpu.resample_train(torch.Generator().manual_seed(3))  # CPU generator
    assert on_gpu.is_cuda
    assert torch.equal(on_gpu.cpu(), data.resample_train(torch.Generator().manual_seed(3)))
    cuda_draw = gpu.resample_train(torch.Generator("cuda").manual_seed(3))
    assert cuda_draw.is_cuda and is_binary(cuda_draw)


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("digits", {"binarize": "static", "seed": 2}),
        ("three_clusters", {"standardize": True, "n_samples": 300, "noise": 0.2}),
        ("two_moons", {"binarize": None, "test_fraction": 0.3}),
    ],
)
def test_meta_json_round_trip_and_reload(name, kwargs):
    data = load_dataset(name, **kwargs)
    text = json.dumps(data.meta.to_dict())
    back = DatasetMeta.from_dict(json.loads(text))
    assert back == data.meta
    assert isinstance(back.value_range, tuple)
    again = load_dataset(**back.load_kwargs())
    assert torch.equal(again.train, data.train) and torch.equal(again.test, data.test)


def test_meta_rejects_unknown_keys_and_bad_kind():
    d = load_dataset("digits").meta.to_dict()
    with pytest.raises(ValueError, match="unknown keys.*'colour'"):
        DatasetMeta.from_dict({**d, "colour": "red"})
    with pytest.raises(ValueError, match="kind must be one of"):
        DatasetMeta.from_dict({**d, "kind": "video"})


# --------------------------------------------------------------------------- from_tensors


def test_from_tensors_split_labels_and_kind():
    x = torch.arange(200, dtype=torch.float64).reshape(100, 2)
    y = torch.arange(100) % 4
    data = Dataset.from_tensors(x, labels=y, seed=1, test_fraction=0.25)
    assert data.train.shape == (75, 2) and data.test.shape == (25, 2)
    assert data.train.dtype == torch.float32 and data.meta.kind == "points2d"
    # labels travel with their rows (row i is (2i, 2i+1), label i % 4)
    assert torch.equal((data.train[:, 0] / 2).long() % 4, data.train_labels)
    assert data.meta.num_classes == 4 and data.meta.source == "tensor"
    rows = torch.cat([data.train, data.test])
    assert torch.equal(rows[rows[:, 0].argsort()], x.float())
    x[0, 0] = 1e6  # a copy was taken
    assert data.train.max() < 1e6
    same = Dataset.from_tensors(x, labels=y, seed=1, test_fraction=0.25)
    assert torch.equal(same.test_labels, data.test_labels)


def test_from_tensors_with_test_set_and_image_shape():
    train, test = np.random.default_rng(0).random((10, 6)), np.zeros((4, 6))
    labels = (np.arange(10), np.arange(4))
    data = Dataset.from_tensors(train, test, labels=labels, name="mine", image_shape=(2, 3))
    assert data.meta.kind == "image" and data.meta.image_shape == (2, 3)
    assert data.meta.test_fraction is None and data.meta.name == "mine"
    assert torch.equal(data.train, torch.from_numpy(train).float())
    assert torch.equal(data.test_labels, torch.arange(4))
    assert Dataset.from_tensors(train).meta.kind == "tabular"


# --------------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (7, 3, 5), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    got_images = read_idx(write_idx(tmp_path / "img", images, gz=gz))
    got_labels = read_idx(write_idx(tmp_path / "lab", labels, gz=gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 3, 5)
    assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels)
    got_images[0, 0, 0] = 1  # a writable array of its own


def test_read_idx_header_is_big_endian(tmp_path):
    raw = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([9, 8, 7])
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(raw)
    assert read_idx(path).tolist() == [9, 8, 7]


def test_read_idx_truncated_payload(tmp_path):
    raw = idx_bytes(np.ones((4, 2, 2), dtype=np.uint8))
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(raw[:-3]))
    with pytest.raises(ValueError, match=r"cut\.gz: truncated.*16 bytes.*holds 13"):
        read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path):
    path = tmp_path / "stream.gz"
    blob = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"stream\.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_read_idx_bad_magic_dtype_and_trailing_bytes(tmp_path):
    with pytest.raises(ValueError, match=r"bad magic number 0x00000802.*0x00000803"):
        read_idx(write_idx(tmp_path / "a.gz", np.zeros((2, 2), np.uint8), magic=0x00000802))
    with pytest.raises(ValueError, match="dtype byte 0x0d"):
        read_idx(write_idx(tmp_path / "b.gz", np.zeros(3, np.uint8), magic=0x00000D01))
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(ValueError, match=r"c\.png: bad magic"):
        read_idx(tmp_path / "c.png")
    (tmp_path / "d").write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"xx")
    with pytest.raises(ValueError, match="size mismatch.*2 extra"):
        read_idx(tmp_path / "d")
    (tmp_path / "e").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="truncated header"):
        read_idx(tmp_path / "e")


# --------------------------------------------------------------------------- MNIST-format loader


def test_mnist_loader_on_fake_files(tmp_path):
    arrays = make_fake_mnist(tmp_path / "m")
    data = load_dataset("mnist", data_dir=tmp_path / "m")
    assert data.train.shape == (30, 20) and data.test.shape == (10, 20)
    assert data.meta.image_shape == (4, 5) and data.meta.kind == "image"
    assert data.meta.test_fraction is None and data.meta.source == str((tmp_path / "m").resolve())
    expected = torch.from_numpy(arrays[FILES[0]].reshape(30, -1)).float() / 255
    assert torch.equal(data.train, expected)
    assert torch.equal(data.test_labels, torch.from_numpy(arrays[FILES[3]]).long())
    quick = load_dataset("mnist", data_dir=tmp_path / "m", n_samples=8, binarize="static")
    assert quick.train.shape == (8, 20) and quick.test.shape == (10, 20) and is_binary(quick.train)
    assert torch.equal(quick.train_probs, expected[:8])


def test_mnist_loader_finds_files_via_env_and_subfolders(tmp_path, monkeypatch):
    make_fake_mnist(tmp_path / "root" / "fashion_mnist", n_train=12)
    make_fake_mnist(tmp_path / "root" / "mnist", n_train=9)
    monkeypatch.setenv("PPL_VAE_DATA", str(tmp_path / "root"))
    assert load_dataset("fashion_mnist").meta.n_train == 12
    assert load_dataset("mnist").meta.n_train == 9
    assert load_dataset("mnist", data_dir=tmp_path / "root").meta.n_train == 9  # data_dir/mnist
    # unpacked files (no .gz) are read as well
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in FILES:
        (flat / name.removesuffix(".gz")).write_bytes(
            gzip.decompress((tmp_path / "root" / "mnist" / name).read_bytes())
        )
    monkeypatch.setenv("PPL_VAE_DATA", str(flat))
    assert load_dataset("mnist").meta.n_train == 9


def test_mnist_missing_folder_and_files(tmp_path, monkeypatch):
    monkeypatch.delenv("PPL_VAE_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="PPL_VAE_DATA is not set.*download_mnist"):
        load_dataset("mnist")
    with pytest.raises(FileNotFoundError, match="is not a folder.*train-images-idx3-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")
    make_fake_mnist(tmp_path / "part")
    (tmp_path / "part" / FILES[3]).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"lacks \['t10k-labels-idx1-ubyte.gz'\].*looked in.*download_mnist"
    ):
        load_dataset("mnist", data_dir=tmp_path / "part")
    monkeypatch.setenv("PPL_VAE_DATA", str(tmp_path / "empty"))
    with pytest.raises(
        FileNotFoundError, match=r"none of .* found; looked in .*empty.mnist.*PPL_VAE_DATA"
    ):
        load_dataset("mnist")


def test_mnist_corrupt_and_inconsistent_files(tmp_path):
    make_fake_mnist(tmp_path / "a")
    (tmp_path / "a" / FILES[1]).write_bytes((tmp_path / "a" / FILES[1]).read_bytes()[:-10])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz: corrupt or truncated gzip"):
        load_dataset("mnist", data_dir=tmp_path / "a")
    make_fake_mnist(tmp_path / "b")
    write_idx(tmp_path / "b" / FILES[3], np.zeros(11, np.uint8))
    with pytest.raises(ValueError, match="counts disagree: 10 images.*11 labels"):
        load_dataset("mnist", data_dir=tmp_path / "b")
    make_fake_mnist(tmp_path / "c")
    with pytest.raises(ValueError, match="n_samples=31 exceeds the 30 training images"):
        load_dataset("mnist", data_dir=tmp_path / "c", n_samples=31)


@pytest.mark.skipif(
    not SHARED_MNIST.is_dir(), reason=f"real MNIST files not found at {SHARED_MNIST}"
)
def test_real_mnist(monkeypatch):
    data = load_dataset("mnist", data_dir=SHARED_MNIST)
    assert data.train.shape == (60000, 784) and data.test.shape == (10000, 784)
    assert data.train.dtype == torch.float32 and data.meta.image_shape == (28, 28)
    assert data.train.min() == 0.0 and data.train.max() == 1.0
    assert data.train_labels.min() == 0 and data.train_labels.max() == 9
    assert set(data.test_labels.unique().tolist()) == set(range(10))
    assert data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first labels
    assert data.test_labels[:3].tolist() == [7, 2, 1]
    assert data.meta.num_classes == 10
    # the same file names serve Fashion-MNIST: the MD5 of the labels tells them apart
    monkeypatch.setenv("PPL_VAE_DATA", str(SHARED_MNIST))
    with pytest.raises(ValueError, match="is the 'mnist' train-label file"):
        load_dataset("fashion_mnist")


# --------------------------------------------------------------------------- download helper


def test_download_from_file_mirror_with_checksums(tmp_path):
    mirror = tmp_path / "mirror"
    make_fake_mnist(mirror)
    sums = {name: md5(mirror / name) for name in FILES}
    dest = download_mnist(tmp_path / "dest", mirrors=[mirror.as_uri() + "/"], checksums=sums)
    assert dest == tmp_path / "dest"
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)  # no temporary files left
    assert all(md5(dest / name) == sums[name] for name in FILES)
    assert load_dataset("mnist", data_dir=dest).train.shape == (30, 20)

    calls: list[str] = []

    def counting_fetch(url: str) -> bytes:
        calls.append(url)
        return (mirror / url.rsplit("/", 1)[1]).read_bytes()

    (dest / FILES[2]).write_bytes(b"damaged")
    download_mnist(dest, mirrors=["https://example.invalid/"], fetch=counting_fetch, checksums=sums)
    assert calls == [f"https://example.invalid/{FILES[2]}"]  # only the damaged file again
    assert md5(dest / FILES[2]) == sums[FILES[2]]


def test_download_md5_mismatch_writes_nothing(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"(?s)published MD5.*MD5 [0-9a-f]{32}, expected f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ):
        download_mnist(tmp_path, fetch=lambda url: b"not mnist")
    assert list(tmp_path.iterdir()) == []


def test_download_falls_back_to_next_mirror_and_reports_failures(tmp_path):
    payload = {name: name.encode() for name in FILES}
    sums = {name: hashlib.md5(data).hexdigest() for name, data in payload.items()}

    def fetch(url: str) -> bytes:
        if url.startswith("https://down/"):
            raise urllib.error.URLError("connection refused")
        return payload[url.rsplit("/", 1)[1]]

    download_mnist(
        tmp_path / "ok",
        "fashion_mnist",
        mirrors=["https://down/", "https://up/"],
        fetch=fetch,
        checksums=sums,
    )
    assert (tmp_path / "ok" / FILES[0]).read_bytes() == payload[FILES[0]]
    with pytest.raises(
        OSError, match="(?s)could not fetch train-images.*https://down/.*connection refused"
    ):
        download_mnist(tmp_path / "no", mirrors=["https://down/"], fetch=fetch, checksums=sums)
    with pytest.raises(ValueError, match="which must be one of"):
        download_mnist(tmp_path, which="emnist")


@pytest.mark.skipif(
    not SHARED_MNIST.is_dir(), reason=f"real MNIST files not found at {SHARED_MNIST}"
)
def test_download_real_files_verify_against_published_md5(tmp_path):
    assert all(md5(SHARED_MNIST / name) == MD5["mnist"][name] for name in FILES)
    dest = download_mnist(tmp_path, "mnist", mirrors=[SHARED_MNIST.as_uri()])
    assert all(md5(dest / name) == MD5["mnist"][name] for name in FILES)


# --------------------------------------------------------------------------- csv / npy


def test_csv_round_trip_with_standardisation_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal([5.0, -3.0, 100.0], [2.0, 0.5, 10.0], size=(50, 3))
    df = pd.DataFrame(x, columns=["a", "b", "c"])
    df.insert(1, "label", np.arange(50) % 3)
    df.to_csv(tmp_path / "data.csv", index=False)
    data = load_dataset(f"csv:{tmp_path / 'data.csv'}", standardize=True, seed=1)
    m = data.meta
    assert data.train.shape == (40, 3) and m.kind == "tabular" and m.standardize
    assert torch.allclose(data.train.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(data.train.std(0, correction=0), torch.ones(3), atol=1e-5)
    mean, std = torch.tensor(m.mean), torch.tensor(m.std)
    rows = torch.cat([data.train, data.test]) * std + mean
    labels = torch.cat([data.train_labels, data.test_labels])
    assert np.allclose(sorted_rows(rows.double().numpy()), sorted_rows(x), rtol=1e-5)
    # each row keeps its label: rows were written with label i % 3 in order of row i
    order = np.argsort(rows[:, 0].numpy())
    assert np.array_equal(labels.numpy()[order], (np.arange(50) % 3)[np.argsort(x[:, 0])])
    assert m.num_classes == 3 and m.source == str((tmp_path / "data.csv").resolve())
    assert DatasetMeta.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    plain = load_dataset(str(tmp_path / "data.csv"), seed=1)  # a .csv path works as a name
    assert torch.allclose(plain.train, data.train * std + mean, atol=1e-4)


def test_csv_without_header(tmp_path):
    x = np.arange(20, dtype=float).reshape(10, 2)
    np.savetxt(tmp_path / "plain.csv", x, delimiter=",")
    data = load_dataset(f"csv:{tmp_path / 'plain.csv'}", test_fraction=0.3)
    assert data.train.shape == (7, 2) and data.meta.kind == "points2d"
    assert data.train_labels is None and data.meta.num_classes is None
    assert np.array_equal(sorted_rows(torch.cat([data.train, data.test]).numpy()), x)


def test_npy_round_trip(tmp_path):
    x = np.random.default_rng(1).random((30, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    data = load_dataset(f"npy:{tmp_path / 'x.npy'}", seed=2)
    assert data.train.shape == (24, 5) and data.test.shape == (6, 5)
    assert np.array_equal(sorted_rows(torch.cat([data.train, data.test]).numpy()), sorted_rows(x))
    assert torch.equal(load_dataset(str(tmp_path / "x.npy"), seed=2).train, data.train)
    binar = load_dataset(str(tmp_path / "x.npy"), binarize="static")  # values in [0, 1]
    assert is_binary(binar.train) and torch.equal(
        binar.train_probs, load_dataset(str(tmp_path / "x.npy")).train
    )
    std = load_dataset(f"npy:{tmp_path / 'x.npy'}", standardize=True, seed=2)
    assert np.allclose(std.meta.mean, data.train.mean(0).numpy(), atol=1e-6)
    assert np.allclose(std.meta.std, data.train.std(0, correction=0).numpy(), atol=1e-6)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        (
            "nope",
            {},
            r"unknown dataset 'nope'; valid names: digits, fashion_mnist, mnist, three_clusters, two_moons",
        ),
        ("digits", {"binarize": "yes"}, r"binarize must be None, 'static' or 'dynamic'; got 'yes'"),
        ("digits", {"binarize": True}, r"binarize must be .*; got True"),
        (
            "three_clusters",
            {"binarize": "static"},
            r"needs data in \[0, 1\].*'three_clusters' has values in \[-\d.*use a likelihood for real values",
        ),
        (
            "digits",
            {"binarize": "dynamic", "standardize": True},
            r"standardize=True and binarize='dynamic' cannot be combined",
        ),
        ("digits", {"test_fraction": 1.5}, r"test_fraction must be .* between 0 and 1; got 1.5"),
        ("digits", {"seed": -1}, r"seed must be an integer in \[0, 2\*\*32\); got -1"),
        ("digits", {"n_samples": 0}, r"n_samples must be None or a positive integer; got 0"),
        (
            "digits",
            {"n_samples": 5000},
            r"n_samples=5000 exceeds the 1437 training rows of 'digits'",
        ),
        ("digits", {"noise": 0.1}, r"noise=0.1 does not apply to dataset 'digits'"),
        ("digits", {"data_dir": "/tmp"}, r"data_dir='/tmp' does not apply to dataset 'digits'"),
        ("two_moons", {"noise": -1.0}, r"noise must be None or a finite number >= 0; got -1.0"),
        ("digits", {"standardize": "yes"}, r"standardize must be True or False; got 'yes'"),
    ],
)
def test_load_dataset_rejects_bad_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(name, **kwargs)


@pytest.mark.parametrize(
    "train, match",
    [
        (
            torch.tensor([[0.0, 1.0], [2.0, float("nan")], [1.0, 1.0], [float("inf"), 0.0]]),
            r"2 non-finite value\(s\) \(NaN or inf\) in 2 row\(s\); the first is row 1, column 1",
        ),
        (torch.empty(0, 3), r"is empty \(shape \(0, 3\)\)"),
        (torch.empty(4, 0), r"is empty \(shape \(4, 0\)\)"),
        (
            torch.zeros(10, 8, 8),
            r"needs a 2-D .*got shape \(10, 8, 8\): flatten it with x\.reshape\(len\(x\), -1\)",
        ),
        (torch.zeros(10), r"got shape \(10,\): flatten it with x\.reshape\(-1, 1\)"),
        (np.array([["a", "b"], ["c", "d"]]), r"needs numbers; got an array of dtype <U1"),
        (torch.zeros(3, 2, dtype=torch.complex64), r"needs real numbers"),
    ],
)
def test_from_tensors_rejects_bad_data(train, match):
    with pytest.raises(ValueError, match=match):
        Dataset.from_tensors(train)


def test_from_tensors_rejects_bad_test_and_labels():
    x = torch.rand(20, 3)
    with pytest.raises(ValueError, match=r"train has 3 columns but test has 4"):
        Dataset.from_tensors(x, torch.rand(5, 4))
    with pytest.raises(
        ValueError, match=r"labels: needs shape \(20,\), one label per row; got \(19,\)"
    ):
        Dataset.from_tensors(x, labels=torch.zeros(19))
    with pytest.raises(ValueError, match="labels must be integers"):
        Dataset.from_tensors(x, labels=torch.full((20,), 0.5))
    with pytest.raises(ValueError, match="labels must be a pair"):
        Dataset.from_tensors(x, torch.rand(5, 3), labels=torch.zeros(20))
    with pytest.raises(ValueError, match="leaves an empty train or test split"):
        Dataset.from_tensors(torch.rand(1, 3))
    with pytest.raises(ValueError, match="test: .*non-finite"):
        Dataset.from_tensors(x, torch.full((2, 3), float("nan")))


def test_files_with_bad_content(tmp_path):
    # issue 20: a string column is a categorical now, NaN a missing cell; inf stays an error
    pd.DataFrame({"a": [1.0, np.nan, 3.0, 4.0, np.inf]}).to_csv(tmp_path / "n.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'a' has infinite values at row 4"):
        load_dataset(f"csv:{tmp_path / 'n.csv'}")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(ValueError, match="the CSV file is empty"):
        load_dataset(f"csv:{tmp_path / 'e.csv'}")
    (tmp_path / "h.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="header but no data rows"):
        load_dataset(f"csv:{tmp_path / 'h.csv'}")
    np.save(tmp_path / "cube.npy", np.zeros((5, 2, 2)))
    with pytest.raises(ValueError, match=r"got shape \(5, 2, 2\).*reshape\(len\(x\), -1\)"):
        load_dataset(f"npy:{tmp_path / 'cube.npy'}")
    np.save(tmp_path / "big.npy", np.full((10, 2), 3.0))
    with pytest.raises(ValueError, match=r"values in \[3, 3\]"):
        load_dataset(str(tmp_path / "big.npy"), binarize="dynamic")
    with pytest.raises(FileNotFoundError, match="no file at"):
        load_dataset(f"csv:{tmp_path / 'missing.csv'}")
