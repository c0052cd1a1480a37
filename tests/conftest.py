"""Shared test fixtures: real data via D3_DATA_DIR, else the embedded MNIST slice."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from d3_tf import data  # noqa: E402

DATA_DIR = os.environ.get(data.ENV_VAR)
needs_data_dir = pytest.mark.skipif(
    not DATA_DIR, reason=f"{data.ENV_VAR} is not set: the full official files are not available")


@pytest.fixture(scope="session")
def mnist_small():
  """A few hundred real MNIST images (embedded slice: works offline)."""
  (x, y), (xt, yt) = data.load_mnist(source="embedded", n_train=512, n_test=256)
  return x, y, xt, yt


@pytest.fixture(autouse=True, scope="module")
def _release_memory():
  """After each test module: drop Keras' global state and the graphs its models traced, so
  that models and tf.function traces do not pile up over the suite (peak memory)."""
  yield
  import gc  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  tf_keras.backend.clear_session()
  gc.collect()


@pytest.fixture(autouse=True)
def _seed():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(0)
  np.random.seed(0)
