"""Starts TensorFlow, tfp and ART without their start-up noise (library and binaries).

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
- Library use: ``import d3_tf`` does not import TensorFlow (flag checks stay fast), but
  :func:`install` (called by ``d3_tf/__init__``) puts an import hook in front of
  ``sys.meta_path`` that runs the FIRST import of ``tensorflow`` (by d3_tf, tfp, tf_keras, ART
  or the user's own code, whichever comes first) with fd 2 pointed at /dev/null, then removes
  itself; the same two Python warnings are filtered by message. Nothing else is hidden: a
  user's own warnings and TensorFlow's messages after the import reach stderr as usual.
- When stdout or stderr is not a terminal, TQDM_DISABLE=1 turns off the progress
  bars that ART draws itself on stderr (tqdm reads it when first imported), so a log
  file gets lines, not carriage-return frames (see ``d3_tf.progress``).
"""

import contextlib
import importlib.abc
import importlib.util
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


class _QuietLoader(importlib.abc.Loader):
  """Runs another loader's ``exec_module`` with fd 2 at /dev/null."""

  def __init__(self, loader):
    self.loader = loader

  def create_module(self, spec):
    return self.loader.create_module(spec)

  def exec_module(self, module):
    with _stderr_to_devnull():
      self.loader.exec_module(module)
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      tf.config.list_physical_devices()  # device initialisation (cuInit) happens here


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
  """Finds ``tensorflow`` once, with a loader that imports it quietly."""

  def find_spec(self, name, path=None, target=None):
    if name != "tensorflow":
      return None
    uninstall()
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


def install():
  """Makes the first import of TensorFlow in this process quiet (no-op once it is imported)."""
  filter_warnings()
  if "tensorflow" not in sys.modules and not any(
      isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlowImport())


def uninstall():
  sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowImport)]


def start():
  """Imports tensorflow, tensorflow_probability, tf_keras and ART quietly (once)."""
  global _STARTED
  if _STARTED:
    return
  import d3_tf  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (Keras 2 first)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if not (sys.stdout.isatty() and sys.stderr.isatty()):  # ART draws its bars on stderr
    os.environ.setdefault("TQDM_DISABLE", "1")
  filter_warnings()
  with _stderr_to_devnull():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_probability  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    import art.estimators.classification  # noqa: F401  pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()  # device initialisation (cuInit) happens here
  tf.get_logger().setLevel("ERROR")
  _STARTED = True
