"""MNIST-format (IDX) data: a checked reader, a checked download helper, and the loaders.

The loaders read the four original files (gzip, or already unpacked without ``.gz``) from
``data_dir`` or from the folder named by the environment variable ``PPL_VAE_DATA``; they
never download. :func:`download_mnist` is there for users with a network.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import struct
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, MissingFileError
from .checks import check_options, reject_unused
from .dataset import Dataset, build_dataset

logger = logging.getLogger(__name__)

ENV_VAR = "PPL_VAE_DATA"
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES: tuple[str, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

#: Published MD5 sums of the four ``.gz`` files.
MD5: dict[str, dict[str, str]] = {
    "mnist": {
        TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
        TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
        TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
        TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
        TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

#: Base URLs tried in order by :func:`download_mnist`.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
}

_MAGIC = {0x00000801: "labels", 0x00000803: "images"}


# --------------------------------------------------------------------------- reader


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an MNIST-format IDX file of unsigned bytes, gzip-compressed or plain.

    Checks the magic number (``0x00000803`` for images, ``0x00000801`` for labels; the
    third byte is the dtype, ``0x08`` = unsigned byte), the header and that the payload
    holds exactly the bytes the header promises.

    Returns:
        uint8 array: ``(n, rows, cols)`` for images, ``(n,)`` for labels.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and the fault: corrupt or truncated gzip data, bad magic
            number, truncated header or payload, trailing bytes.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(
                f"{path}: corrupt or truncated gzip data ({err}); delete the file and download "
                "it again (ppl_vae.data.download_mnist checks the MD5 sums)"
            ) from err
    if len(raw) < 4:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _MAGIC:
        detail = ""
        if raw[0] == 0 and raw[1] == 0 and raw[2] != 0x08:
            detail = f" (dtype byte 0x{raw[2]:02x}; only 0x08, unsigned byte, is supported)"
        raise DataError(
            f"{path}: bad magic number 0x{magic:08x}{detail}; expected 0x00000803 (images) or "
            "0x00000801 (labels): this is not an MNIST-format IDX file"
        )
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(
            f"{path}: truncated header: {len(raw)} bytes, the {ndim}-D IDX header needs {header_len}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = math.prod(dims)
    payload = len(raw) - header_len
    if payload < expected:
        raise DataError(
            f"{path}: truncated: the header says {_MAGIC[magic]} of shape {dims}, i.e. "
            f"{expected} bytes of data, but the file holds {payload}"
        )
    if payload > expected:
        raise DataError(
            f"{path}: size mismatch: the header says {_MAGIC[magic]} of shape {dims}, i.e. "
            f"{expected} bytes of data, but the file holds {payload} ({payload - expected} extra)"
        )
    return (
        np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header_len).reshape(dims).copy()
    )


# --------------------------------------------------------------------------- download


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _fetch_url(url: str) -> bytes:
    """GET ``url`` (http, https or file) and return the body."""
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def _atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download_mnist(
    dest_dir: str | os.PathLike[str],
    which: str = "mnist",
    *,
    mirrors: Sequence[str] | None = None,
    fetch: Callable[[str], bytes] | None = None,
    checksums: Mapping[str, str] | None = None,
) -> Path:
    """Download the four IDX ``.gz`` files of MNIST or Fashion-MNIST into ``dest_dir``.

    Each file is checked against its published MD5 before it is written (atomically:
    temporary file, then ``os.replace``), so a bad download never lands under the final
    name. Files already present with the right MD5 are skipped. Mirrors are tried in order.
    Afterwards: ``load_dataset(which, data_dir=dest_dir)``.

    Args:
        dest_dir: folder to write into (created if missing).
        which: ``"mnist"`` or ``"fashion_mnist"``.
        mirrors: base URLs to try instead of :data:`MIRRORS` (``file://`` URLs work).
        fetch: ``url -> bytes`` used instead of ``urllib`` (tests, proxies).
        checksums: file name -> MD5 to check instead of :data:`MD5` (tests only).

    Returns:
        ``dest_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: unknown ``which``, or no mirror gave a file with the expected MD5.
        OSError: no mirror could be reached.
    """
    if which not in MD5:
        raise DataError(f"which must be one of {sorted(MD5)}; got {which!r}")
    sums = dict(MD5[which] if checksums is None else checksums)
    missing = [f for f in FILES if f not in sums]
    if missing:
        raise DataError(f"checksums lacks entries for {missing}")
    bases = MIRRORS[which] if mirrors is None else tuple(mirrors)
    if not bases:
        raise DataError("mirrors is empty; give at least one base URL")
    fetch = _fetch_url if fetch is None else fetch
    dest = Path(dest_dir).expanduser()
    dest.mkdir(parents=True, exist_ok=True)

    for name in FILES:
        target = dest / name
        if target.is_file() and _md5(target.read_bytes()) == sums[name]:
            logger.info("%s: present with the right MD5, skipped", target)
            continue
        _fetch_one(name, target, sums[name], bases, fetch)
    return dest


def _fetch_one(
    name: str, target: Path, md5: str, bases: Sequence[str], fetch: Callable[[str], bytes]
) -> None:
    """``name`` from the first mirror that gives it with the published MD5, written atomically to
    ``target``; else a DataError (a wrong MD5 somewhere: nothing written) or an OSError (no mirror)."""
    errors: list[str] = []
    bad_md5 = False
    for base in bases:
        url = base.rstrip("/") + "/" + name
        try:
            data = fetch(url)
        except OSError as err:  # urllib.error.URLError is an OSError
            errors.append(f"{url}: {err}")
            continue
        got = _md5(data)
        if got != md5:
            bad_md5 = True
            errors.append(f"{url}: MD5 {got}, expected {md5} ({len(data)} bytes)")
            continue
        _atomic_write(target, data)
        logger.info("%s: downloaded from %s", target, url)
        return
    report = "\n  ".join(errors)
    if bad_md5:
        raise DataError(
            f"download_mnist: no mirror gave {name} with the published MD5; nothing was "
            f"written to {target}:\n  {report}"
        )
    raise OSError(f"download_mnist: could not fetch {name} from any mirror:\n  {report}")


# --------------------------------------------------------------------------- loaders


def _locate(folder: Path, name: str) -> Path | None:
    """``folder/name`` (gzip) or ``folder/name`` without ``.gz`` (unpacked), if present."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _idx_root(which: str, data_dir: str | os.PathLike[str] | None, how_to: str) -> Path:
    """``data_dir`` (a folder), else ``$PPL_VAE_DATA``; an error naming both when neither is there."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise MissingFileError(
                f"{which}: data_dir={str(data_dir)!r} is not a folder. Expected {list(FILES)} "
                f"there: {how_to}"
            )
        return root
    env = os.environ.get(ENV_VAR)
    if not env:
        raise MissingFileError(
            f"{which}: no data_dir given and {ENV_VAR} is not set, so there is nowhere to "
            f"look for {list(FILES)}: {how_to}"
        )
    return Path(env).expanduser()


def find_idx_files(which: str, data_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Paths of the four files of ``which``: in ``data_dir`` (or ``data_dir/which``),
    else ``$PPL_VAE_DATA/which`` or ``$PPL_VAE_DATA``.

    Raises:
        FileNotFoundError: listing the expected files and every folder looked in.
    """
    how_to = (
        f"download them with ppl_vae.data.download_mnist(DIR, which={which!r}) and pass "
        f"data_dir=DIR, or set {ENV_VAR}=ROOT with the files in ROOT/{which}"
    )
    root = _idx_root(which, data_dir, how_to)
    candidates = [root / which, root]
    best: tuple[Path, list[str]] | None = None
    for folder in candidates:
        found = {name: _locate(folder, name) for name in FILES}
        complete = {name: p for name, p in found.items() if p is not None}
        if len(complete) == len(FILES):
            return complete
        present = [name for name, p in found.items() if p is not None]
        if present and (best is None or len(present) > len(best[1])):
            best = (folder, present)
    looked = ", ".join(str(c) for c in candidates)
    if best is not None:
        folder, present = best
        absent = [name for name in FILES if name not in present]
        raise MissingFileError(
            f"{which}: {folder} lacks {absent} (has {present}); looked in {looked}: {how_to}"
        )
    raise MissingFileError(f"{which}: none of {list(FILES)} found; looked in {looked}: {how_to}")


def _check_not_other_dataset(which: str, labels_path: Path) -> None:
    """Refuse the other dataset's files (both use the same file names)."""
    if labels_path.suffix != ".gz":
        return
    got = _md5(labels_path.read_bytes())
    for other, sums in MD5.items():
        if other != which and got == sums[TRAIN_LABELS]:
            raise DataError(
                f"{which}: {labels_path} is the {other!r} train-label file (by its MD5), not "
                f"{which!r}: keep each dataset in its own folder, e.g. $PPL_VAE_DATA/{which}"
            )


def _load_idx_dataset(
    which: str,
    *,
    binarize: str | None,
    seed: int,
    data_dir: str | os.PathLike[str] | None,
    test_fraction: float,
    standardize: bool,
    n_samples: int | None,
    noise: float | None,
) -> Dataset:
    check_options(
        binarize=binarize,
        seed=seed,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
    )
    reject_unused(which, noise=noise)
    paths = find_idx_files(which, data_dir)
    _check_not_other_dataset(which, paths[TRAIN_LABELS])
    arrays = {name: read_idx(p) for name, p in paths.items()}
    for images, labels in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        x, y = arrays[images], arrays[labels]
        if x.ndim != 3 or y.ndim != 1:
            raise DataError(
                f"{which}: expected 3-D images in {paths[images]} and 1-D labels in "
                f"{paths[labels]}; got shapes {x.shape} and {y.shape}"
            )
        if len(x) != len(y):
            raise DataError(
                f"{which}: image and label counts disagree: {len(x)} images in {paths[images]} "
                f"but {len(y)} labels in {paths[labels]}"
            )
    x_train, y_train = arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS]
    x_test, y_test = arrays[TEST_IMAGES], arrays[TEST_LABELS]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{which}: train images are {x_train.shape[1:]} but test images {x_test.shape[1:]}"
        )
    if n_samples is not None:
        if n_samples > len(x_train):
            raise DataError(
                f"n_samples={n_samples} exceeds the {len(x_train)} training images of {which!r}"
            )
        x_train, y_train = x_train[:n_samples], y_train[:n_samples]

    def pixels(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).reshape(len(x), -1).to(torch.float32).div_(255.0)

    return build_dataset(
        name=which,
        kind="image",
        source=str(paths[TRAIN_IMAGES].parent.resolve()),
        x_train=pixels(x_train),
        x_test=pixels(x_test),
        y_train=y_train,
        y_test=y_test,
        image_shape=x_train.shape[1:],
        binarize=binarize,
        seed=seed,
        test_fraction=None,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
        index=(np.arange(len(y_train), dtype=np.int64), np.arange(len(y_test), dtype=np.int64)),
    )


def mnist(
    *,
    binarize: str | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
    standardize: bool = False,
    n_samples: int | None = None,
    noise: float | None = None,
) -> Dataset:
    """MNIST from its four IDX files: 60000 train / 10000 test rows of 784 pixels in [0, 1].

    The official split (``test_fraction`` is ignored; ``meta.test_fraction`` is None);
    ``n_samples`` keeps the first n train images. ``image_shape`` (28, 28), labels 0..9.
    Files: see :func:`find_idx_files`; get them with :func:`download_mnist`.
    """
    return _load_idx_dataset(
        "mnist",
        binarize=binarize,
        seed=seed,
        data_dir=data_dir,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
    )


def fashion_mnist(
    *,
    binarize: str | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
    standardize: bool = False,
    n_samples: int | None = None,
    noise: float | None = None,
) -> Dataset:
    """Fashion-MNIST from its four IDX files; as :func:`mnist` in every other respect."""
    return _load_idx_dataset(
        "fashion_mnist",
        binarize=binarize,
        seed=seed,
        data_dir=data_dir,
        test_fraction=test_fraction,
        standardize=standardize,
        n_samples=n_samples,
        noise=noise,
    )
