"""d3_tf: Defense Through Diverse Directions (Bender et al., ICML 2020) in TFP.

tfp.layers need Keras 2, so d3_tf uses ``tf_keras`` and makes ``tf.keras``
resolve to it (TF_USE_LEGACY_KERAS=1) unless tf_keras was already imported;
ART then sees the same Keras objects as the models. Import d3_tf before
tf_keras (importing tensorflow first is fine, but then its start-up lines are printed:
``d3_tf.quiet`` silences the first import of TensorFlow only when it comes after d3_tf's).
"""
import os
import sys
import warnings

if "tf_keras" not in sys.modules:
  os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
elif os.environ.get("TF_USE_LEGACY_KERAS") != "1":
  # Setting it after tf_keras was imported breaks tensorflow_probability's import.
  warnings.warn("tf_keras was imported before d3_tf without TF_USE_LEGACY_KERAS=1: tf.keras "
                "stays Keras 3, which ART's TensorFlowV2Classifier partly relies on. Import "
                "d3_tf first or set TF_USE_LEGACY_KERAS=1 in the environment.")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from d3_tf import quiet as _quiet  # noqa: E402  (standard library only)

_quiet.install()  # TensorFlow's first import, whoever makes it, without its C++ start-up lines

_EXPORTS = {"omega_mean": "penalties", "omega_sparse": "penalties", "omega_var": "penalties",
            "unit_gradients": "penalties", "unit_vectors": "penalties",
            "D3Model": "training", "build": "training"}
__version__ = "0.1.0"
__all__ = ["data"] + sorted(_EXPORTS)


def __getattr__(name):
  """Lazy exports: ``from d3_tf import data`` does not start TensorFlow."""
  import importlib  # pylint: disable=g-import-not-at-top
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"d3_tf.{_EXPORTS[name]}"), name)
  if name == "data":
    return importlib.import_module("d3_tf.data")
  raise AttributeError(f"module 'd3_tf' has no attribute {name!r}")
