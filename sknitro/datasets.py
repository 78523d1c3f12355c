"""Loaders for IDX-format image datasets such as MNIST and Fashion-MNIST.

The IDX format (used by MNIST and Fashion-MNIST) stores one array per file:
two zero bytes, a type code byte, a byte giving the number of dimensions,
one big-endian uint32 size per dimension, then the data in big-endian order.
Files may be gzip-compressed, as distributed.

Fashion-MNIST is read from a local directory only; nothing is ever
downloaded. The directory is, in order of preference, the ``data_home``
argument, the ``SKNITRO_FASHION_MNIST`` environment variable, or
``/usr/share/datasets/fashion-mnist``, where the Debian/Ubuntu package
``dataset-fashion-mnist`` installs the four ``.gz`` files.
"""

from __future__ import annotations

import gzip
import math
import numbers
import os
import pathlib
import struct
import zlib

import numpy as np

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV",
    "fashion_mnist_available",
    "fashion_mnist_dir",
    "load_fashion_mnist",
    "load_idx_dataset",
    "read_idx",
]

FASHION_MNIST_ENV = "SKNITRO_FASHION_MNIST"
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# IDX type code -> big-endian numpy dtype of the stored data.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"

Arrays4 = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, plain or gzip-compressed.

    Parameters
    ----------
    path : str or os.PathLike
        File to read. Gzip compression is detected from the file's first
        two bytes (``1f 8b``), whatever its name.

    Returns
    -------
    numpy.ndarray
        A writable, native-byte-order array with the shape and element type
        declared in the header (type codes 0x08 uint8, 0x09 int8,
        0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64).

    Raises
    ------
    ValueError
        If the magic bytes are not zero, the type code is unknown, or the
        data length does not match the header (truncated or too long).
        Also raised for corrupt or truncated gzip data. The message names
        the file.
    OSError
        If the file cannot be read (e.g. FileNotFoundError).

    Examples
    --------
    >>> images = read_idx("train-images-idx3-ubyte.gz")  # doctest: +SKIP
    >>> images.shape, images.dtype  # doctest: +SKIP
    ((60000, 28, 28), dtype('uint8'))
    """
    path = pathlib.Path(path)
    with open(path, "rb") as raw_file:
        compressed = raw_file.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as stream:
            return _read_idx_stream(stream, path)
    except (OSError, EOFError, zlib.error) as exc:  # e.g. a cut-off download
        if not compressed or isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc


_READ_CHUNK = 2**24
IDX_MAX_DIMENSIONS = 16  # images, labels and tensors need 1-4; the header's byte allows 255


def _read_idx_stream(stream, path: pathlib.Path) -> np.ndarray:
    """The header first, then exactly the bytes it declares: a small file that decompresses
    to gigabytes is refused after reading what its header allows, never loaded whole."""
    header = stream.read(4)
    if len(header) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(header)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", header)
    if zero != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic {header[:2].hex()}, expected 0000)")
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X}")
    if not 1 <= ndim <= IDX_MAX_DIMENSIONS:
        raise ValueError(f"{path}: {ndim} dimensions declared; IDX files here have 1 to {IDX_MAX_DIMENSIONS}")
    dtype = _IDX_DTYPES[code]
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", dims)
    count = math.prod(shape)  # Python ints: no overflow
    expected = count * dtype.itemsize
    data = bytearray()  # grows with what the file holds, never past what the header declares
    while len(data) < expected:
        chunk = stream.read(min(expected - len(data), _READ_CHUNK))
        if not chunk:
            break
        data += chunk
    read = len(data)
    if read < expected:
        raise ValueError(f"{path}: IDX data truncated: header {shape} of {dtype.name} needs "
                         f"{expected} bytes, file has {read}")
    if stream.read(1):
        raise ValueError(f"{path}: IDX data too long: header {shape} of {dtype.name} needs "
                         f"{expected} bytes, the file has more")
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(shape)
    return array if dtype.byteorder in ("=", "|") else array.astype(dtype.newbyteorder("="))


def _file_names(train_prefix: str, test_prefix: str) -> list[str]:
    return [
        f"{train_prefix}-images-idx3-ubyte",
        f"{train_prefix}-labels-idx1-ubyte",
        f"{test_prefix}-images-idx3-ubyte",
        f"{test_prefix}-labels-idx1-ubyte",
    ]


def _find(directory: pathlib.Path, name: str) -> pathlib.Path | None:
    """Return the plain or ``.gz`` file for ``name``, plain first (no unzip)."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_message(directory: pathlib.Path, missing: list[str]) -> str:
    return (
        f"IDX dataset files not found in {directory}: {', '.join(missing)} "
        "(plain or .gz). To get Fashion-MNIST: on Debian/Ubuntu run "
        "'apt-get install dataset-fashion-mnist' (installs to "
        f"{DEFAULT_FASHION_MNIST_DIR}), or put the four IDX files from the "
        "Fashion-MNIST project (github.com/zalandoresearch/fashion-mnist) in "
        f"a directory and pass data_home=... or set {FASHION_MNIST_ENV}. "
        "Nothing is downloaded automatically."
    )


def load_idx_dataset(
    directory: str | os.PathLike,
    *,
    train_prefix: str = "train",
    test_prefix: str = "t10k",
) -> Arrays4:
    """Load the four standard MNIST-style IDX files from a directory.

    Parameters
    ----------
    directory : str or os.PathLike
        Directory holding ``{train_prefix}-images-idx3-ubyte``,
        ``{train_prefix}-labels-idx1-ubyte``,
        ``{test_prefix}-images-idx3-ubyte`` and
        ``{test_prefix}-labels-idx1-ubyte``, each plain or with a ``.gz``
        suffix (the plain file is used when both exist).
    train_prefix : str, default "train"
        File name prefix of the training split.
    test_prefix : str, default "t10k"
        File name prefix of the test split.

    Returns
    -------
    X_train : numpy.ndarray of uint8
        Training images, shape as in the file, e.g. ``(60000, 28, 28)``.
    y_train : numpy.ndarray of uint8, shape (n_train,)
        Training labels.
    X_test : numpy.ndarray of uint8
        Test images, e.g. ``(10000, 28, 28)``.
    y_test : numpy.ndarray of uint8, shape (n_test,)
        Test labels.

    Raises
    ------
    FileNotFoundError
        If any of the four files is missing; the message lists the missing
        names, the directory, and how to get the data.
    ValueError
        If a file is malformed (see :func:`read_idx`), images or labels are
        not uint8, labels are not 1-D, or image and label counts differ.

    Examples
    --------
    >>> X_train, y_train, X_test, y_test = load_idx_dataset(
    ...     "/usr/share/datasets/fashion-mnist")  # doctest: +SKIP
    >>> X_train.shape, y_test.shape  # doctest: +SKIP
    ((60000, 28, 28), (10000,))
    """
    directory = pathlib.Path(directory)
    names = _file_names(train_prefix, test_prefix)
    paths = {name: _find(directory, name) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise FileNotFoundError(_missing_message(directory, missing))

    arrays = [read_idx(paths[name]) for name in names]
    for name, array in zip(names, arrays):
        if array.dtype != np.uint8:
            raise ValueError(
                f"{paths[name]}: expected uint8 data, got {array.dtype}"
            )
    X_train, y_train, X_test, y_test = arrays
    for images, labels, img_name, lab_name in (
        (X_train, y_train, names[0], names[1]),
        (X_test, y_test, names[2], names[3]),
    ):
        if labels.ndim != 1:
            raise ValueError(
                f"{paths[lab_name]}: labels must be 1-D, got shape {labels.shape}"
            )
        n_images = images.shape[0] if images.ndim else 0
        if n_images != labels.shape[0]:
            raise ValueError(
                f"{paths[img_name]} has {n_images} images but "
                f"{paths[lab_name]} has {labels.shape[0]} labels"
            )
    return X_train, y_train, X_test, y_test


def fashion_mnist_dir(data_home: str | os.PathLike | None = None) -> pathlib.Path:
    """Return the directory Fashion-MNIST is read from.

    Parameters
    ----------
    data_home : str or os.PathLike, optional
        Explicit directory. Takes precedence over everything else.

    Returns
    -------
    pathlib.Path
        ``data_home`` if given, else the ``SKNITRO_FASHION_MNIST``
        environment variable if set and non-empty, else
        ``/usr/share/datasets/fashion-mnist``. Existence is not checked.

    Raises
    ------
    TypeError
        If ``data_home`` is not a path-like object.

    Examples
    --------
    >>> str(fashion_mnist_dir("/data/fmnist"))
    '/data/fmnist'
    """
    if data_home is not None:
        return pathlib.Path(data_home).expanduser()
    env = os.environ.get(FASHION_MNIST_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path(DEFAULT_FASHION_MNIST_DIR)


def fashion_mnist_available(data_home: str | os.PathLike | None = None) -> bool:
    """Tell whether all four Fashion-MNIST files are present.

    Parameters
    ----------
    data_home : str or os.PathLike, optional
        Directory to check; see :func:`fashion_mnist_dir`.

    Returns
    -------
    bool
        True if the four IDX files exist (plain or ``.gz``). Their contents
        are not checked.

    Raises
    ------
    TypeError
        If ``data_home`` is not a path-like object.

    Examples
    --------
    >>> fashion_mnist_available("/nonexistent")
    False
    """
    directory = fashion_mnist_dir(data_home)
    names = _file_names("train", "t10k")
    return all(_find(directory, name) is not None for name in names)


def _check_count(name: str, value: object) -> None:
    # bool is an Integral but n_train=True is surely a mistake.
    if value is None:
        return
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def load_fashion_mnist(
    data_home: str | os.PathLike | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
) -> Arrays4:
    """Load Fashion-MNIST from a local directory (never downloads).

    Parameters
    ----------
    data_home : str or os.PathLike, optional
        Directory holding the four IDX files; see :func:`fashion_mnist_dir`
        for the default.
    n_train : int, optional
        Keep only the first ``n_train`` training samples.
    n_test : int, optional
        Keep only the first ``n_test`` test samples.

    Returns
    -------
    X_train : numpy.ndarray of uint8, shape (n_train, 28, 28)
        Training images (60000 in the full set), pixel values 0..255.
    y_train : numpy.ndarray of uint8, shape (n_train,)
        Training labels 0..9, indexing :data:`FASHION_MNIST_CLASSES`.
    X_test : numpy.ndarray of uint8, shape (n_test, 28, 28)
        Test images (10000 in the full set).
    y_test : numpy.ndarray of uint8, shape (n_test,)
        Test labels 0..9.

    Raises
    ------
    ValueError
        If ``n_train`` or ``n_test`` is not a positive int, exceeds the
        number of samples available, or a file is malformed.
    FileNotFoundError
        If files are missing. The message names the directory searched and
        explains how to get the data: ``apt-get install
        dataset-fashion-mnist`` on Debian/Ubuntu, or the IDX files from the
        Fashion-MNIST project passed via ``data_home`` or
        ``SKNITRO_FASHION_MNIST``.

    Examples
    --------
    >>> X_train, y_train, X_test, y_test = load_fashion_mnist(
    ...     n_train=1000, n_test=200)  # doctest: +SKIP
    >>> X_train.shape, FASHION_MNIST_CLASSES[y_train[0]]  # doctest: +SKIP
    ((1000, 28, 28), 'Ankle boot')
    """
    _check_count("n_train", n_train)
    _check_count("n_test", n_test)
    X_train, y_train, X_test, y_test = load_idx_dataset(fashion_mnist_dir(data_home))
    for name, n, available in (
        ("n_train", n_train, len(y_train)),
        ("n_test", n_test, len(y_test)),
    ):
        if n is not None and n > available:
            raise ValueError(f"{name}={n} but only {available} samples are available")
    if n_train is not None:
        # Copy so the full arrays can be freed.
        X_train, y_train = X_train[:n_train].copy(), y_train[:n_train].copy()
    if n_test is not None:
        X_test, y_test = X_test[:n_test].copy(), y_test[:n_test].copy()
    return X_train, y_train, X_test, y_test
