"""d3_tf: Defense Through Diverse Directions (Bender et al., ICML 2020) in TFP.

tfp.layers need Keras 2, so d3_tf uses ``tf_keras`` and makes ``tf.keras``
resolve to it (TF_USE_LEGACY_KERAS=1) before TensorFlow is first imported;
ART then sees the same Keras objects as the models.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from d3_tf import data  # noqa: E402
from d3_tf.penalties import omega_mean, omega_sparse, omega_var, unit_gradients, unit_vectors  # noqa: E402,F401
from d3_tf.training import D3Model, build  # noqa: E402,F401

__version__ = "0.1.0"
