"""Starts TensorFlow, tfp and ART without their start-up noise (used by the binaries).

What the noise is, and how it is kept out of what the user sees:

- TF 2.18's pip wheel registers its CUDA plugins when ``tensorflow`` is imported and
  logs "Unable to register cuDNN/cuFFT/cuBLAS factory" plus absl's "All log
  messages before absl::InitializeLog()" line from C++, whatever
  TF_CPP_MIN_LOG_LEVEL says; on a machine without a GPU the first device query
  logs "failed call to cuInit". These are written straight to file descriptor 2,
  so :func:`start` points fd 2 at /dev/null while it imports TensorFlow and
  initialises the devices, then restores it. A Python exception raised by an
  import is not lost: it propagates after fd 2 is back.
- ART warns "PyTorch not found" when imported (Python ``warnings``); tfp's
  layers warn that ``add_variable`` is deprecated each time a layer is built.
  Both are filtered by message, so other warnings still show. TensorFlow's
  Python logger is set to ERROR: ART's per-batch ``fit`` (adversarial
  training) retraces a tf.function each call and TF warns about it every time.
- When stdout is not a terminal, TQDM_DISABLE=1 turns off the progress bars
  that ART draws itself (tqdm reads it when first imported), so a log file gets
  lines, not carriage-return frames (see ``d3_tf.progress``).
"""

import contextlib
import os
import sys
import warnings

_STARTED = False


@contextlib.contextmanager
def _stderr_to_devnull():
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def filter_warnings():
  """Drops the known, harmless Python warnings of ART's and tfp's imports and layers."""
  warnings.filterwarnings("ignore", message="PyTorch not found")
  warnings.filterwarnings("ignore", message=".*add_variable.* is deprecated")


def start():
  """Imports tensorflow, tensorflow_probability, tf_keras and ART quietly (once)."""
  global _STARTED
  if _STARTED:
    return
  import d3_tf  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (Keras 2 first)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if not sys.stdout.isatty():
    os.environ.setdefault("TQDM_DISABLE", "1")
  filter_warnings()
  with _stderr_to_devnull():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_probability  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    import art.estimators.classification  # noqa: F401  pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()  # device initialisation (cuInit) happens here
  tf.get_logger().setLevel("ERROR")
  _STARTED = True
