"""Data loading: real official files (D3_DATA_DIR), the embedded slice, errors."""
import gzip
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from d3_tf import data
from tests.conftest import DATA_DIR, needs_data_dir


def _check_arrays(split, shape, n):
  x, y = split
  assert x.shape == (n,) + shape and x.dtype == np.float32
  assert y.shape == (n,) and y.dtype == np.int64
  assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.99
  assert set(np.unique(y)) == set(range(10))


@needs_data_dir
def test_mnist_official_files():
  train, test = data.load_mnist()
  _check_arrays(train, (28, 28, 1), 60000)
  _check_arrays(test, (28, 28, 1), 10000)
  assert train[1][0] == 5
  assert np.sum(train[1] == 1) == 6742
  # The official test set has 1135 ones and 980 zeros.
  assert np.sum(test[1] == 1) == 1135 and np.sum(test[1] == 0) == 980


@needs_data_dir
def test_cifar10_official_files():
  train, test = data.load_cifar10()
  _check_arrays(train, (32, 32, 3), 50000)
  _check_arrays(test, (32, 32, 3), 10000)
  assert np.all(np.bincount(train[1]) == 5000)
  assert np.all(np.bincount(test[1]) == 1000)
  assert test[1][0] == 3  # cat
  assert list(train[1][:10]) == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
  np.testing.assert_allclose(train[0][0, 0, 0] * 255, [59, 62, 63], atol=1e-4)
  np.testing.assert_allclose(test[0][0, 0, 0] * 255, [158, 112, 49], atol=1e-4)
  means = train[0].reshape(-1, 3).mean(0, dtype=np.float64) * 255  # no float64 copy
  np.testing.assert_allclose(means, [125.306918046875, 122.950394140625, 113.86538318359375],
                             rtol=1e-6)


@needs_data_dir
def test_cifar10_extracted_folder_and_slices(tmp_path):
  import tarfile  # pylint: disable=g-import-not-at-top
  with tarfile.open(os.path.join(DATA_DIR, "cifar10", data.CIFAR_ARCHIVE)) as tar:
    tar.extractall(tmp_path / "cifar10", filter="data")
  (x, y), (xt, yt) = data.load_cifar10(data_dir=str(tmp_path), n_train=100, n_test=10)
  assert x.shape == (100, 32, 32, 3) and xt.shape == (10, 32, 32, 3)
  assert yt[0] == 3


@needs_data_dir
def test_embedded_slice_is_the_head_of_the_official_files():
  (x, y), (xt, yt) = data.load_mnist(n_train=3000, n_test=1000)
  (ex, ey), (ext, eyt) = data.load_mnist(source="embedded")
  np.testing.assert_array_equal(ex, x)
  np.testing.assert_array_equal(ey, y)
  np.testing.assert_array_equal(ext, xt)
  np.testing.assert_array_equal(eyt, yt)


def test_embedded_slice_offline():
  (x, y), (xt, yt) = data.load_mnist(source="embedded", n_train=200, n_test=50)
  assert x.shape == (200, 28, 28, 1) and xt.shape == (50, 28, 28, 1)
  assert y[0] == 5 and y.dtype == np.int64
  assert 0 <= x.min() and x.max() <= 1


def test_slices_are_deterministic_prefixes():
  (a, _), _ = data.load_mnist(source="embedded", n_train=100)
  (b, _), _ = data.load_mnist(source="embedded", n_train=300)
  np.testing.assert_array_equal(a, b[:100])
  with pytest.raises(data.DataError, match="slice size"):
    data.load_mnist(source="embedded", n_train=10**6)


def _copy_mnist(tmp_path):
  dst = tmp_path / "mnist"
  shutil.copytree(data.EMBEDDED_DIR, dst)
  return dst


def test_missing_file_names_the_file(tmp_path):
  dst = _copy_mnist(tmp_path)
  os.remove(dst / "train-images-idx3-ubyte.gz")
  with pytest.raises(data.DataError, match="missing file .*train-images-idx3-ubyte.gz.*D3_DATA_DIR"):
    data.load_mnist(data_dir=str(tmp_path))


def test_missing_directory(tmp_path):
  with pytest.raises(data.DataError, match="does not exist"):
    data.load_mnist(data_dir=str(tmp_path / "nope"))
  with pytest.raises(data.DataError, match="missing file .*cifar-10-binary.tar.gz"):
    data.load_cifar10(data_dir=str(tmp_path))


def test_wrong_md5_names_the_file(tmp_path):
  # The embedded slice is real MNIST but not the full official file: md5 must fail.
  _copy_mnist(tmp_path)
  with pytest.raises(data.DataError, match="wrong md5 for .*train-images-idx3-ubyte.gz"):
    data.load_mnist(data_dir=str(tmp_path))


def test_corrupted_byte_detected(tmp_path):
  dst = _copy_mnist(tmp_path)
  path = dst / "train-labels-idx1-ubyte.gz"
  raw = bytearray(gzip.decompress(path.read_bytes()))
  raw[100] = (raw[100] + 1) % 10
  path.write_bytes(gzip.compress(bytes(raw)))
  with pytest.raises(data.DataError, match="wrong md5"):
    data._mnist_from_dir(str(dst), data.EMBEDDED_MD5)  # pylint: disable=protected-access


def test_truncated_archive(tmp_path):
  dst = _copy_mnist(tmp_path)
  path = dst / "train-images-idx3-ubyte.gz"
  path.write_bytes(path.read_bytes()[:5000])
  with pytest.raises(data.DataError, match="cannot decompress .*truncated"):
    data._mnist_from_dir(str(dst), data.EMBEDDED_MD5)  # pylint: disable=protected-access


def test_truncated_cifar_archive(tmp_path):
  (tmp_path / "cifar10").mkdir()
  (tmp_path / "cifar10" / data.CIFAR_ARCHIVE).write_bytes(gzip.compress(b"x" * 10000)[:200])
  with pytest.raises(data.DataError, match="cannot read .*cifar-10-binary.tar.gz"):
    data.load_cifar10(data_dir=str(tmp_path))


def test_uncaught_data_error_is_one_line(tmp_path):
  env = dict(os.environ, D3_DATA_DIR=str(tmp_path))
  proc = subprocess.run([sys.executable, "-c", "from d3_tf import data; data.load_mnist()"],
                        capture_output=True, text=True, env=env, timeout=120)
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.splitlines() if "d3_tf data error" in l or "Traceback" in l]
  assert len(lines) == 1 and "Traceback" not in lines[0]
  assert "train-images-idx3-ubyte.gz" in lines[0]


def test_idx_round_trip(tmp_path):
  arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  md5 = data.write_idx_gz(str(tmp_path / "a.gz"), arr)
  np.testing.assert_array_equal(data.read_idx_gz(str(tmp_path / "a.gz"), md5), arr)


def test_make_dataset_shuffles_with_seed(mnist_small):
  x, y, _, _ = mnist_small
  first = lambda seed: next(iter(data.make_dataset(x, y, 32, seed=seed)))[1].numpy()
  np.testing.assert_array_equal(first(1), first(1))
  assert not np.array_equal(first(1), first(2))
  batch = next(iter(data.make_dataset(x, y, 32, shuffle=False)))
  np.testing.assert_array_equal(batch[1].numpy(), y[:32])
