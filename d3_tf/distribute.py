"""tf.distribute strategies for the table binaries (TensorFlow's own engine).

- "none": the default strategy (one device).
- "mirrored": ``MirroredStrategy`` over all local GPUs (or the CPU when none).
- "multi_worker": ``MultiWorkerMirroredStrategy`` configured by the standard
  ``TF_CONFIG`` environment variable (one process per worker).

``D3Model.train_step`` divides the loss by the number of replicas before the
gradients are summed across replicas, so every term (CE, penalties, KL) is
scaled by the GLOBAL batch and results do not depend on the replica count.
Keras ``fit`` distributes the ``tf.data`` pipelines itself. Only the chief
writes results and final weights (other workers write to a scratch folder).
"""

import json
import os
import tempfile

STRATEGIES = ("none", "mirrored", "multi_worker")


def make_strategy(name="none"):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (this module starts no TF)
  if name == "none":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--distribute multi_worker needs the TF_CONFIG environment variable "
                       "(cluster and task of this worker)")
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")


def is_chief():
  """True unless TF_CONFIG names this process a non-chief worker."""
  config = json.loads(os.environ.get("TF_CONFIG", "{}"))
  task = config.get("task", {})
  kind, index = task.get("type"), task.get("index", 0)
  if kind in (None, "chief"):
    return True
  return kind == "worker" and index == 0 and "chief" not in config.get("cluster", {})


def writable(path):
  """``path`` on the chief; a throw-away folder on other workers (they must still save)."""
  return path if is_chief() else os.path.join(tempfile.mkdtemp(prefix="d3_worker_"),
                                              os.path.basename(path))
