"""Tests for sknitro.datasets (IDX reading and Fashion-MNIST loading)."""

import gzip
import pathlib
import resource
import struct

import numpy as np
import pytest

from sknitro.datasets import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ENV,
    fashion_mnist_available,
    fashion_mnist_dir,
    load_fashion_mnist,
    load_idx_dataset,
    read_idx,
)

# IDX type code -> big-endian dtype used to write test files.
CODES = {
    0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"
}


def idx_bytes(array, code, *, magic=0, shape=None):
    """Serialise ``array`` as an IDX file (header sizes from ``shape`` if given)."""
    array = np.asarray(array)
    shape = array.shape if shape is None else shape
    header = struct.pack(">HBB", magic, code, len(shape))
    header += b"".join(struct.pack(">I", n) for n in shape)
    return header + array.astype(CODES.get(code, ">u1")).tobytes()


def write_idx(path, array, code=0x08, *, gz=False, **kwargs):
    data = idx_bytes(array, code, **kwargs)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "array, code",
    [
        (np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10, 0x08),
        (np.array([0, 1, 9, 255], dtype=np.uint8), 0x08),
        (np.array([[-2, 300], [-32768, 32767]], dtype=np.int16), 0x0B),
        (np.array([1.5, -0.25, 3e38], dtype=np.float32), 0x0D),
        (np.array([-128, 127], dtype=np.int8), 0x09),
        (np.array([-70000, 2**31 - 1], dtype=np.int32), 0x0C),
        (np.array([[np.pi, -1e300]]), 0x0E),
    ],
)
def test_read_idx_round_trip(tmp_path, array, code, gz):
    path = write_idx(tmp_path / "a-idx", array, code, gz=gz)
    out = read_idx(path)
    assert out.shape == array.shape
    assert out.dtype == array.dtype  # native order, same kind and size
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    out[...] = 0  # returned array is writable


def test_read_idx_decodes_big_endian(tmp_path):
    # -2 and 300 as big-endian int16 are ff fe and 01 2c.
    path = tmp_path / "raw"
    path.write_bytes(struct.pack(">HBBI", 0, 0x0B, 1, 2) + b"\xff\xfe\x01\x2c")
    np.testing.assert_array_equal(read_idx(path), np.array([-2, 300], np.int16))


def test_read_idx_detects_gzip_by_magic_not_extension(tmp_path):
    array = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    gz_no_suffix = write_idx(tmp_path / "images", array, gz=True)
    plain_with_suffix = write_idx(tmp_path / "labels.gz", array, gz=False)
    np.testing.assert_array_equal(read_idx(gz_no_suffix), array)
    np.testing.assert_array_equal(read_idx(str(plain_with_suffix)), array)


def test_read_idx_bad_magic(tmp_path):
    path = write_idx(tmp_path / "badmagic-idx", np.zeros(3, np.uint8), magic=0x0102)
    with pytest.raises(ValueError, match="badmagic-idx.*magic"):
        read_idx(path)


def test_read_idx_unknown_type_code(tmp_path):
    path = write_idx(tmp_path / "badcode-idx", np.zeros(3, np.uint8), code=0x0A)
    with pytest.raises(ValueError, match="badcode-idx.*0x0A"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated(tmp_path, gz):
    path = write_idx(
        tmp_path / "short-idx", np.zeros(5, np.uint8), shape=(6,), gz=gz
    )
    with pytest.raises(ValueError, match="short-idx.*truncated"):
        read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path):
    path = tmp_path / "cut-idx.gz"
    data = gzip.compress(idx_bytes(np.arange(1000) % 256, 0x08))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut-idx.gz.*gzip"):
        read_idx(path)


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "hdr-idx"
    path.write_bytes(struct.pack(">HBB", 0, 0x08, 3) + b"\x00\x00\x00\x02")
    with pytest.raises(ValueError, match="hdr-idx"):
        read_idx(path)


def test_read_idx_extra_data(tmp_path):
    array = np.zeros((2, 4), np.int16)
    path = write_idx(tmp_path / "long-idx", array, 0x0B, shape=(2, 3))
    with pytest.raises(ValueError, match="long-idx.*too long"):
        read_idx(path)


# -------------------------------------------------------- load_idx_dataset

TRAIN_X = np.arange(5 * 28 * 28, dtype=np.int64).reshape(5, 28, 28).astype(np.uint8)
TRAIN_Y = np.array([3, 0, 9, 1, 7], dtype=np.uint8)
TEST_X = (255 - np.arange(3 * 28 * 28) % 256).astype(np.uint8).reshape(3, 28, 28)
TEST_Y = np.array([2, 8, 5], dtype=np.uint8)


@pytest.fixture
def fake_dir(tmp_path):
    """A directory with a tiny Fashion-MNIST lookalike, mixing .gz and plain."""
    d = tmp_path / "fmnist"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte.gz", TRAIN_X, gz=True)
    write_idx(d / "train-labels-idx1-ubyte", TRAIN_Y)
    write_idx(d / "t10k-images-idx3-ubyte", TEST_X)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", TEST_Y, gz=True)
    return d


def test_load_idx_dataset(fake_dir):
    X_train, y_train, X_test, y_test = load_idx_dataset(fake_dir)
    for out, expected in [
        (X_train, TRAIN_X),
        (y_train, TRAIN_Y),
        (X_test, TEST_X),
        (y_test, TEST_Y),
    ]:
        assert out.dtype == np.uint8
        assert out.shape == expected.shape
        np.testing.assert_array_equal(out, expected)
    assert X_train.shape == (5, 28, 28) and X_test.shape == (3, 28, 28)


def test_load_idx_dataset_prefixes_and_plain_preferred(tmp_path):
    write_idx(tmp_path / "a-images-idx3-ubyte", TRAIN_X)
    # A different .gz alongside the plain file must be ignored.
    write_idx(tmp_path / "a-images-idx3-ubyte.gz", TRAIN_X[:1], gz=True)
    write_idx(tmp_path / "a-labels-idx1-ubyte", TRAIN_Y)
    write_idx(tmp_path / "b-images-idx3-ubyte", TEST_X)
    write_idx(tmp_path / "b-labels-idx1-ubyte", TEST_Y)
    X_train, _, X_test, _ = load_idx_dataset(
        str(tmp_path), train_prefix="a", test_prefix="b"
    )
    np.testing.assert_array_equal(X_train, TRAIN_X)
    np.testing.assert_array_equal(X_test, TEST_X)


def test_load_idx_dataset_count_mismatch(fake_dir):
    # The plain file takes precedence over the existing .gz one.
    write_idx(fake_dir / "t10k-labels-idx1-ubyte", TEST_Y[:2])
    with pytest.raises(ValueError, match="t10k-images.*3 images.*2 labels"):
        load_idx_dataset(fake_dir)


def test_load_idx_dataset_rejects_non_uint8(fake_dir):
    write_idx(fake_dir / "train-labels-idx1-ubyte", TRAIN_Y, 0x0B)
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.*uint8"):
        load_idx_dataset(fake_dir)


def test_load_idx_dataset_missing_file(fake_dir):
    (fake_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_idx_dataset(fake_dir)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message
    assert "train-images-idx3-ubyte" not in message  # only missing ones listed
    assert "dataset-fashion-mnist" in message
    assert str(fake_dir) in message


# ------------------------------------------------------ Fashion-MNIST helpers


def test_constants():
    assert FASHION_MNIST_ENV == "SKNITRO_FASHION_MNIST"
    assert DEFAULT_FASHION_MNIST_DIR == "/usr/share/datasets/fashion-mnist"
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert FASHION_MNIST_CLASSES[9] == "Ankle boot"


def test_fashion_mnist_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    assert fashion_mnist_dir() == pathlib.Path(DEFAULT_FASHION_MNIST_DIR)

    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "env"))
    assert fashion_mnist_dir() == tmp_path / "env"

    assert fashion_mnist_dir(tmp_path / "arg") == tmp_path / "arg"
    assert fashion_mnist_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_fashion_mnist_available(fake_dir, tmp_path, monkeypatch):
    assert fashion_mnist_available(fake_dir)
    assert not fashion_mnist_available(tmp_path / "nowhere")
    monkeypatch.setenv(FASHION_MNIST_ENV, str(fake_dir))
    assert fashion_mnist_available()
    (fake_dir / "train-labels-idx1-ubyte").unlink()
    assert not fashion_mnist_available()


def test_load_fashion_mnist_subset(fake_dir):
    X_train, y_train, X_test, y_test = load_fashion_mnist(
        fake_dir, n_train=2, n_test=1
    )
    assert X_train.shape == (2, 28, 28) and y_train.shape == (2,)
    assert X_test.shape == (1, 28, 28) and y_test.shape == (1,)
    np.testing.assert_array_equal(X_train, TRAIN_X[:2])
    np.testing.assert_array_equal(y_train, TRAIN_Y[:2])
    np.testing.assert_array_equal(X_test, TEST_X[:1])
    np.testing.assert_array_equal(y_test, TEST_Y[:1])


def test_load_fashion_mnist_uses_env(fake_dir, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(fake_dir))
    X_train, y_train, X_test, y_test = load_fashion_mnist()
    assert len(X_train) == len(y_train) == 5
    assert len(X_test) == len(y_test) == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, 6])
def test_load_fashion_mnist_bad_n_train(fake_dir, bad):
    with pytest.raises(ValueError, match="n_train"):
        load_fashion_mnist(fake_dir, n_train=bad)


@pytest.mark.parametrize("bad", [0, 2.0, 4])
def test_load_fashion_mnist_bad_n_test(fake_dir, bad):
    with pytest.raises(ValueError, match="n_test"):
        load_fashion_mnist(fake_dir, n_test=bad)


def test_load_fashion_mnist_missing(tmp_path):
    where = tmp_path / "empty"
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(where)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(where) in message
    assert "data_home" in message and FASHION_MNIST_ENV in message
    assert "train-images-idx3-ubyte" in message


@pytest.mark.skipif(
    not fashion_mnist_available(),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist",
)
def test_real_fashion_mnist():
    X_train, y_train, X_test, y_test = load_fashion_mnist()
    assert X_train.shape == (60000, 28, 28) and X_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    for a in (X_train, y_train, X_test, y_test):
        assert a.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [1000] * 10)
    assert X_train.max() == 255 and X_train.min() == 0


def test_a_small_gzip_bomb_is_refused_without_decompressing_it(tmp_path):
    path = tmp_path / "bomb-idx1-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(struct.pack(">HBBI", 0, 0x08, 1, 10))  # declares 10 bytes
        zeros = bytes(2**24)
        for _ in range(32):  # then 512 MiB of zeros: a file of about 0.5 MiB
            out.write(zeros)
    assert path.stat().st_size < 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="too long"):
        read_idx(path)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024  # far below the 512 MiB it would decompress to


def test_too_many_dimensions_name_the_file(tmp_path):
    path = tmp_path / "many-dims"
    path.write_bytes(struct.pack(">HBB", 0, 0x08, 65) + b"\x00\x00\x00\x01" * 65 + b"\x07")
    with pytest.raises(ValueError, match="many-dims.*65 dimensions"):
        read_idx(path)


def test_a_header_declaring_gigabytes_reads_only_what_is_there(tmp_path):
    path = tmp_path / "huge-header"
    path.write_bytes(struct.pack(">HBBIII", 0, 0x08, 3, 60000, 1000, 1000) + bytes(1000))  # declares 60 GB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024
