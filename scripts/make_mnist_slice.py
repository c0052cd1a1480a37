"""Writes the MNIST slice embedded in the package (d3_tf/assets/mnist_slice/).

The slice is the first 3,000 training and first 1,000 test records of the
official MNIST files, in the official IDX format, gzip-compressed with fixed
headers so the output is byte-for-byte reproducible. The source files are read
and md5-verified by d3_tf.data. Prints the md5 of each uncompressed slice file,
which must equal d3_tf.data.EMBEDDED_MD5.

Usage: python scripts/make_mnist_slice.py --data_dir DIR   (DIR/mnist/*-ubyte.gz)
"""
import os

from absl import app
from absl import flags

from d3_tf import data

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder holding mnist/*-ubyte.gz (official files).")
_OUT = flags.DEFINE_string("out", data.EMBEDDED_DIR, "Output folder.")


def main(argv):
  del argv
  src = os.path.join(data.resolve_data_dir(_DATA_DIR.value) or "", "mnist")
  os.makedirs(_OUT.value, exist_ok=True)
  sizes = {"train": data.EMBEDDED_SIZES["train"], "t10k": data.EMBEDDED_SIZES["test"]}
  for prefix, n in sizes.items():
    for kind in ("images-idx3", "labels-idx1"):
      name = f"{prefix}-{kind}-ubyte"
      array = data.read_idx_gz(os.path.join(src, name + ".gz"), data.MNIST_MD5[name])[:n]
      md5 = data.write_idx_gz(os.path.join(_OUT.value, name + ".gz"), array)
      status = "ok" if data.EMBEDDED_MD5.get(name) == md5 else "differs from EMBEDDED_MD5"
      print(f"{md5}  {name}  ({array.shape[0]} records, {status})")


if __name__ == "__main__":
  app.run(main)
