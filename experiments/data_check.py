"""Checks that MNIST/CIFAR-10 load (md5-verified) and prints a summary.

  python -m experiments.data_check                      # embedded MNIST slice
  python -m experiments.data_check --dataset cifar10 --data_dir DIR
"""
import numpy as np
from absl import flags

from d3_tf.benchmark import BENCHMARKS
from experiments import common

_DATASET = flags.DEFINE_enum("dataset", "mnist", list(BENCHMARKS), "Dataset to check.")


def main(argv):
  del argv
  (x, y), (xt, yt) = common.load_data(_DATASET.value)
  for name, (a, b) in (("train", (x, y)), ("test", (xt, yt))):
    print(f"{name}: images {a.shape} {a.dtype} in [{a.min():.1f}, {a.max():.1f}], "
          f"labels per class {np.bincount(b, minlength=10).tolist()}")


if __name__ == "__main__":
  common.run(main, tensorflow=False)
