"""Flags of the binaries that take one saved model (``--model``) and its test set (audit,
blackbox): any Keras model, SavedModel or weights file, loaded without unpickling.
"""
import os

from absl import flags

from d3_tf import settings as cfg
from d3_tf.benchmark import BENCHMARKS
from experiments import common

FLAGS = flags.FLAGS


def define(what):
  """Flags of the binaries that take one saved model (--model) and its test set."""
  flags.DEFINE_string("model", None, f"{what}: a .keras file, a SavedModel folder, or weights "
                      "(checkpoint prefix, .index or .h5) with --arch. Never unpickled.")
  flags.register_validator("model", lambda v: v is None or os.path.exists(v) or os.path.exists(
      v + ".index"), message="must be an existing file or folder")
  flags.DEFINE_enum("dataset", "mnist", list(BENCHMARKS),
                    "Test set of --model (its first --n images).")
  flags.DEFINE_string("name", None, "Name of --model in the report (default: its file or "
                      "folder name).")
  flags.DEFINE_enum("arch", None, ["mnist_cnn", "vgg16", "madry_mnist"],
                    "Architecture of a --model weights file.")
  flags.DEFINE_bool("bayesian", False, "The --arch has a Bayesian head.")
  flags.DEFINE_integer("num_draws", 10, "K draws of a Bayesian --arch.")
  flags.DEFINE_float("width", 1.0, "Channel multiplier of --arch vgg16.")
  flags.DEFINE_enum("estimator", "flipout", list(cfg.ENUMS["estimator"]),
                    "Bayesian layers of a Bayesian --arch.")
  common.validate("num_draws", cfg.POSITIVE_INT)
  common.validate("width", cfg.RULES["width"])


def load(n, n_flag="n"):
  """(model, x, y): the model of --model (d3_tf.saved: nothing is unpickled) and the first
  ``n`` test images of --dataset; ConfigError if it does not load or does not take them, or
  if the test set has fewer than ``n`` images (``n_flag`` names the flag)."""
  from d3_tf import saved  # pylint: disable=g-import-not-at-top
  _, (xt, yt) = common.load_data(FLAGS.dataset, n_train=1)
  if n > len(xt):
    raise cfg.ConfigError(f"--{n_flag}={n}: the {FLAGS.dataset} test set here has {len(xt)} "
                          "images")
  model = saved.load(FLAGS.model, FLAGS.arch, FLAGS.bayesian, FLAGS.estimator,
                     FLAGS.num_draws, FLAGS.width)
  x, y = xt[:n], yt[:n]
  shape = tuple(getattr(model, "input_shape", (None,) + x.shape[1:])[1:])
  if shape != x.shape[1:]:
    raise cfg.ConfigError(f"--model {FLAGS.model} takes inputs of shape {shape}; "
                          f"{FLAGS.dataset} images are {x.shape[1:]}")
  return model, x, y


def name():
  return FLAGS.name or os.path.basename(os.path.normpath(FLAGS.model))
