"""Saved models, loaded without unpickling anything.

Three forms: a ``.keras`` file (Keras' safe mode: no arbitrary code), a SavedModel folder, or
weights of one of the project's architectures (a ``save_weights`` checkpoint prefix, its
``.index`` file, an ``.h5`` file, or a Keras ``BackupAndRestore`` epoch checkpoint, which holds
the model under ``"model"``). Weights must restore every variable of the architecture.
"""
import os

import tensorflow as tf
import tf_keras

from d3_tf import training
from d3_tf.settings import ConfigError

ARCHS = ("mnist_cnn", "vgg16", "madry_mnist")


def load(path, arch=None, bayesian=False, estimator="flipout", num_draws=10, width=1.0):
  """The model saved at ``path``; weights need ``arch`` (and the Bayesian head's settings).

  Raises ConfigError (one line) when the file is not what it should be.
  """
  if arch:
    return _load_weights(path, arch, bayesian, estimator, num_draws, width)
  if not (path.endswith(".keras") or os.path.isdir(path)):
    raise ConfigError(f"--model {path}: a weights file needs --arch ({', '.join(ARCHS)}); "
                      "whole models are .keras files or SavedModel folders")
  try:
    if path.endswith(".keras"):
      return tf_keras.models.load_model(path, compile=False, safe_mode=True)
    return tf_keras.models.load_model(path, compile=False)
  except (ValueError, OSError, TypeError) as e:
    raise ConfigError(f"--model {path}: cannot be loaded ({str(e).splitlines()[0][:200]})"
                      ) from None


def _load_weights(path, arch, bayesian, estimator, num_draws, width):
  bayesian = bayesian and arch != "madry_mnist"
  model = training.build(arch, bayesian=bayesian, estimator=estimator,
                         arch_kwargs={"width": width} if arch == "vgg16" else None,
                         num_draws=num_draws)
  prefix = path[:-len(".index")] if path.endswith(".index") else path
  if prefix.endswith(".h5"):
    model.load_weights(prefix)
    return model
  error = None
  for restore in (model.load_weights, tf.train.Checkpoint(model=model).restore):
    try:
      # Every variable of the model must be restored; values the model lacks (an optimizer's
      # slots in a training checkpoint) are expected and not warned about.
      restore(prefix).assert_existing_objects_matched().expect_partial()
      return model
    except (AssertionError, ValueError, OSError, KeyError, tf.errors.OpError) as e:
      error = e
  raise ConfigError(f"--model {path}: not weights of --arch {arch}"
                    + (" with --bayesian" if bayesian else "")
                    + f" ({str(error).splitlines()[0][:200]})")
