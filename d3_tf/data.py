"""MNIST and CIFAR-10 loaders: tensorflow_datasets first, official files offline.

Every loader returns ``(x_train, y_train), (x_test, y_test)`` with images as
float32 NHWC arrays in [0, 1] and labels as int64 class indices.

Where the data comes from, in order:

1. ``data_dir`` argument or the ``D3_DATA_DIR`` environment variable: the
   official files are read from that directory and every uncompressed file is
   checked against the md5 constants below:
     - ``<dir>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``
     - ``<dir>/cifar10/cifar-10-binary.tar.gz`` or the extracted
       ``<dir>/cifar10/cifar-10-batches-bin/*.bin``
2. Otherwise ``tensorflow_datasets`` (downloads on first use when online).
3. ``source="embedded"`` reads the small real MNIST slice shipped inside the
   package (first 3,000 training and 1,000 test images of the official files,
   written by ``scripts/make_mnist_slice.py``): it needs no network and no data
   directory, and is what the ``smoke`` preset uses.

Problems with the input raise :class:`DataError` with a one-line message naming
the file and how to fix it. When a ``DataError`` is not caught, the message is
printed as one line instead of a traceback.
"""

import gzip
import hashlib
import io
import os
import socket
import struct
import sys
import tarfile
import zlib

import numpy as np

ENV_VAR = "D3_DATA_DIR"
EMBEDDED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "mnist_slice")

# md5 of the UNCOMPRESSED official files (MNIST: published values; CIFAR-10:
# the binary batches' content, see the data directory's README).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# md5 of the uncompressed files of the embedded slice (see scripts/make_mnist_slice.py).
EMBEDDED_MD5 = {
    "train-images-idx3-ubyte": "ede699d4e887e6b3f29efa2f620bc2cb",
    "train-labels-idx1-ubyte": "24fe9f0728f65039c17c4fff0ba1ff58",
    "t10k-images-idx3-ubyte": "bac4371a484d0b5651e81d99305acb5a",
    "t10k-labels-idx1-ubyte": "556860b2f10365a8f7444c1e79c7e9af",
}
EMBEDDED_SIZES = {"train": 3000, "test": 1000}
CIFAR_MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
TFDS_HOST = "storage.googleapis.com"  # where tfds downloads MNIST/CIFAR-10 from
CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-bin"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")
_HOWTO = (f"set {ENV_VAR} (or --data_dir) to a directory holding mnist/*-ubyte.gz "
          f"and cifar10/{CIFAR_ARCHIVE}, the official files")


class DataError(Exception):
  """A data file is missing, damaged or has the wrong content (one-line message)."""


def _excepthook(exc_type, exc, tb, _previous=sys.excepthook):
  if issubclass(exc_type, DataError):
    print(f"d3_tf data error: {exc}", file=sys.stderr)
  else:
    _previous(exc_type, exc, tb)


sys.excepthook = _excepthook


def md5_hex(data):
  return hashlib.md5(data).hexdigest()


def _check_md5(data, expected, name):
  got = md5_hex(data)
  if got != expected:
    raise DataError(f"wrong md5 for {name}: got {got}, expected {expected}; "
                    "the file is damaged or not the official one, replace it")


def read_idx_gz(path, expected_md5):
  """Reads one gzip-compressed IDX file, verifying the uncompressed md5.

  Returns:
    A uint8 array shaped as the IDX header says (e.g. [N, 28, 28] or [N]).
  """
  if not os.path.isfile(path):
    raise DataError(f"missing file {path}; {_HOWTO}")
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (EOFError, OSError, zlib.error) as e:
    raise DataError(f"cannot decompress {path} (truncated or not gzip: {e}); "
                    "replace it with the official file") from None
  _check_md5(raw, expected_md5, path)
  ndim = raw[3]
  dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
  return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _slice(x, y, n):
  if n is None:
    return x, y
  if not 0 < n <= len(x):
    raise DataError(f"slice size {n} outside 1..{len(x)}")
  return x[:n], y[:n]


def _finish(train, test, n_train, n_test):
  (xtr, ytr), (xte, yte) = train, test
  xtr, ytr = _slice(xtr, ytr, n_train)
  xte, yte = _slice(xte, yte, n_test)
  return ((_to_float(xtr), ytr.astype(np.int64)),
          (_to_float(xte), yte.astype(np.int64)))


def _to_float(x):
  """uint8 pixels as float32 in [0, 1], divided in place (one float copy of the images)."""
  out = x.astype(np.float32)
  out /= 255.0
  return out


def _mnist_from_dir(folder, md5s):
  def split(prefix):
    x = read_idx_gz(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"),
                    md5s[f"{prefix}-images-idx3-ubyte"])
    y = read_idx_gz(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"),
                    md5s[f"{prefix}-labels-idx1-ubyte"])
    return x[..., None], y
  return split("train"), split("t10k")


def _cifar_records(raw):
  records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, records[:, 0]


def _cifar_from_dir(folder):
  """Reads the CIFAR-10 binary batches from the archive or the extracted folder."""
  extracted = os.path.join(folder, CIFAR_FOLDER)
  archive = os.path.join(folder, CIFAR_ARCHIVE)
  raws = {}
  if os.path.isdir(extracted):
    for name in CIFAR_MD5:
      path = os.path.join(extracted, name)
      if not os.path.isfile(path):
        raise DataError(f"missing file {path}; {_HOWTO}")
      with open(path, "rb") as f:
        raws[name] = f.read()
  elif os.path.isfile(archive):
    try:
      with tarfile.open(archive, "r:gz") as tar:
        for name in CIFAR_MD5:
          try:
            member = tar.extractfile(f"{CIFAR_FOLDER}/{name}")
          except KeyError:
            member = None
          if member is None:
            raise DataError(f"{archive} has no member {CIFAR_FOLDER}/{name}; "
                            "replace it with the official binary archive")
          raws[name] = member.read()
    except (EOFError, tarfile.TarError, OSError, zlib.error) as e:
      raise DataError(f"cannot read {archive} (truncated or damaged: {e}); "
                      "replace it with the official binary archive") from None
  else:
    raise DataError(f"missing file {archive} (or folder {extracted}); {_HOWTO}")
  for name, raw in raws.items():
    _check_md5(raw, CIFAR_MD5[name], name)
  parts = [_cifar_records(raws[f"data_batch_{i}.bin"]) for i in range(1, 6)]
  train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
  return train, _cifar_records(raws["test_batch.bin"])


def _howto_offline(name, data_dir=None):
  """What to do when tfds cannot help: the data folder (which source="tfds" does not read)
  and, for MNIST, the embedded slice."""
  if data_dir or os.environ.get(ENV_VAR):
    text = (f"a data directory is set ({data_dir or os.environ.get(ENV_VAR)}) but "
            "source='tfds' does not read it: use source='auto' or 'local'")
  else:
    text = f"on an offline machine {_HOWTO}"
  if name == "mnist":
    text += ("; or use the MNIST slice embedded in the package (source='embedded', "
             "--data_source embedded)")
  return text


def _from_tfds(name, data_dir=None):
  """Loads a whole dataset through tensorflow_datasets, or raises DataError."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(name)
    if not builder.is_prepared():
      # tfds retries a failed download for minutes: check the host once first.
      try:
        socket.create_connection((TFDS_HOST, 443), timeout=5).close()
      except OSError as e:
        raise DataError(f"tensorflow_datasets cannot download {name} "
                        f"(no connection to {TFDS_HOST}: {e}); "
                        f"{_howto_offline(name, data_dir)}") from None
    train, test = tfds.load(name, split=["train", "test"], batch_size=-1,
                            as_supervised=True, download=True)
    train, test = tfds.as_numpy(train), tfds.as_numpy(test)
  except DataError:
    raise
  except Exception as e:  # tfds raises many kinds when offline.  pylint: disable=broad-except
    first_line = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    raise DataError(f"tensorflow_datasets could not provide {name} ({first_line}); "
                    f"{_howto_offline(name, data_dir)}") from None
  return tuple(train), tuple(test)


def resolve_data_dir(data_dir=None):
  """The local data directory to use: the argument, else $D3_DATA_DIR, else None."""
  data_dir = data_dir or os.environ.get(ENV_VAR) or None
  if data_dir is not None and not os.path.isdir(data_dir):
    raise DataError(f"data directory {data_dir} does not exist; {_HOWTO}")
  return data_dir


def load_mnist(data_dir=None, n_train=None, n_test=None, source="auto"):
  """MNIST as float32 [N, 28, 28, 1] in [0, 1] and int64 labels.

  Args:
    data_dir: folder holding ``mnist/*-ubyte.gz``; defaults to $D3_DATA_DIR.
    n_train, n_test: keep only the first n images (deterministic slices).
    source: "auto" (local files when a data dir is given, else tfds),
      "local", "tfds", or "embedded" (the slice shipped in the package).

  Returns:
    ``(x_train, y_train), (x_test, y_test)``.

  Raises:
    DataError: missing, damaged or wrong files, or tfds unavailable.
  """
  if source not in MNIST_SOURCES:
    raise DataError(f"unknown MNIST source {source!r}: use {', '.join(MNIST_SOURCES)}")
  if source == "embedded":
    return _finish(*_mnist_from_dir(EMBEDDED_DIR, EMBEDDED_MD5), n_train, n_test)
  folder = resolve_data_dir(data_dir) if source in ("auto", "local") else None
  if folder is not None:
    return _finish(*_mnist_from_dir(os.path.join(folder, "mnist"), MNIST_MD5), n_train, n_test)
  if source == "local":
    raise DataError(f"no data directory given; {_HOWTO}")
  return _finish(*_from_tfds("mnist", data_dir), n_train, n_test)


def load_cifar10(data_dir=None, n_train=None, n_test=None, source="auto"):
  """CIFAR-10 as float32 [N, 32, 32, 3] in [0, 1] and int64 labels.

  Args and Raises as :func:`load_mnist` (no embedded slice for CIFAR-10).
  """
  if source not in ("auto", "local", "tfds"):
    raise DataError(f"unknown CIFAR-10 source {source!r}: use auto, local or tfds")
  folder = resolve_data_dir(data_dir) if source != "tfds" else None
  if folder is not None:
    return _finish(*_cifar_from_dir(os.path.join(folder, "cifar10")), n_train, n_test)
  if source == "local":
    raise DataError(f"no data directory given; {_HOWTO}")
  return _finish(*_from_tfds("cifar10", data_dir), n_train, n_test)


LOADERS = {"mnist": load_mnist, "cifar10": load_cifar10}
MNIST_SOURCES = ("auto", "local", "tfds", "embedded")


def load(name, **kwargs):
  """``load("mnist", ...)`` or ``load("cifar10", ...)``."""
  if name not in LOADERS:
    raise DataError(f"unknown dataset {name!r}; choose from {sorted(LOADERS)}")
  return LOADERS[name](**kwargs)


def make_dataset(x, y, batch_size, shuffle=True, seed=0):
  """A batched ``tf.data`` pipeline: seeded reshuffle each epoch, then prefetch."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ds = tf.data.Dataset.from_tensor_slices((x, y))
  if shuffle:
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def write_idx_gz(path, array):
  """Writes a uint8 array as a gzip IDX file (no name/timestamp: reproducible bytes)."""
  array = np.ascontiguousarray(array, dtype=np.uint8)
  header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
  raw = header + array.tobytes()
  buf = io.BytesIO()
  with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
    f.write(raw)
  with open(path, "wb") as f:
    f.write(buf.getvalue())
  return md5_hex(raw)
