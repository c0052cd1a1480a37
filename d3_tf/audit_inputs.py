"""The audit's inputs, checked before any attack runs: one clear ``ConfigError`` each.

``run_audit`` takes images, labels, a budget, counts and a model from people's own code, and a
wrong input there does not fail: images in [0, 255] are attacked at ε = 0.3 / 255, label −1
is read as class 9, a model that returns probabilities is attacked as if they were logits.
Every rule here raises a ``ConfigError`` (a ``ValueError``) that names the argument, the
value seen and what is expected. The scalar rules are the binaries' too (``experiments.audit``
checks its flags with the same functions, spelling the argument as ``--flag``).

numpy and the TensorFlow-free settings only; :func:`check_logits` takes the model's outputs as
an array.
"""
import math

import numpy as np

from d3_tf import settings as cfg

NORMS = ("inf", "l2")
PROTOCOLS = ("full", "rand", "standard")


def _error(name, what, prefix=""):
  return cfg.ConfigError(f"{prefix}{name}: {what}")


def check_budget(eps, norm, prefix=""):
  """ε in (0, 1] for L∞ (pixel units), finite and > 0 for L2."""
  if norm not in NORMS:
    raise _error("norm", f"{norm!r} is not a norm the audit knows; use one of "
                 + ", ".join(NORMS), prefix)
  number = isinstance(eps, (int, float, np.floating, np.integer)) and not isinstance(eps, bool)
  if norm == "inf":
    ok = number and 0.0 < float(eps) <= 1.0
    what = "in (0, 1] for L∞ (pixel units of images in [0, 1])"
  else:
    ok = number and math.isfinite(float(eps)) and float(eps) > 0.0
    what = "a finite number > 0 for L2"
  if not ok:
    raise _error("eps", f"{eps!r} is invalid: must be {what}", prefix)


def check_count(name, value, lo=1, prefix=""):
  """An integer ≥ ``lo`` (the counts of attacks, passes and batches)."""
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= lo
  if not ok:
    raise _error(name, f"{value!r} is invalid: must be an integer ≥ {lo}", prefix)


def check_settings(eps, norm, protocol, eot, square_queries, seed, **counts):
  """Every scalar argument of ``run_audit``: the budget, the protocol and the counts; returns
  ``eot`` as a tuple (a single R may be given as an integer)."""
  check_budget(eps, norm)
  if protocol not in PROTOCOLS:
    raise _error("protocol", f"{protocol!r} is unknown; choose from {', '.join(PROTOCOLS)}")
  eot = (eot,) if isinstance(eot, (int, np.integer)) else eot
  if not isinstance(eot, (tuple, list)) or not eot:
    raise _error("eot", f"{eot!r} is invalid: must be a non-empty list of integers ≥ 1")
  for r in eot:
    check_count("eot", r)
  check_count("square_queries", square_queries, lo=0)
  check_count("seed", seed, lo=0)
  for name, value in counts.items():
    check_count(name, value)
  return tuple(int(r) for r in eot)


def _array(value, name):
  """A numpy array from an array, a tf.Tensor or a (nested) list; refuses anything else."""
  if hasattr(value, "numpy") and callable(value.numpy):  # tf.Tensor, eager
    value = value.numpy()
  try:
    array = np.asarray(value)
  except (ValueError, TypeError) as e:
    raise _error(name, f"cannot be read as an array ({e})") from None
  if array.dtype == object or not (np.issubdtype(array.dtype, np.number)
                                   or array.dtype == bool):
    raise _error(name, f"must be numeric, got dtype {array.dtype}")
  return array


def as_images(x, input_shape=None):
  """``x`` as float32 NHWC images in [0, 1] of ``input_shape`` (H, W, C) when known."""
  x = _array(x, "x")
  if x.dtype == bool:
    raise _error("x", "must be float images in [0, 1], got dtype bool")
  if x.ndim != 4:
    expected = f"(n, {', '.join(map(str, input_shape))})" if input_shape else "(n, H, W, C)"
    hint = " (add the channel axis: x[..., None])" if x.ndim == 3 else ""
    raise _error("x", f"must be NHWC images of shape {expected}, got shape {x.shape}{hint}")
  if len(x) == 0:
    raise _error("x", "holds no images (n = 0); give at least 1")
  if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
    nchw = tuple(x.shape[2:]) + (x.shape[1],) == tuple(input_shape)
    raise _error("x", f"images of shape {tuple(x.shape[1:])}, but the model takes "
                 f"{tuple(input_shape)}" + (" (NCHW? transpose to NHWC: "
                                            "x.transpose(0, 2, 3, 1))" if nchw else ""))
  if x.dtype == np.uint8:
    raise _error("x", "uint8 images (0..255); the audit takes float images in [0, 1]: "
                 "divide by 255")
  bad = int(np.sum(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
  if bad:
    raise _error("x", f"{bad} of {len(x)} images hold NaN or inf values")
  lo, hi = float(x.min()), float(x.max())
  if lo < 0.0 or hi > 1.0:
    hint = "; divide by 255" if lo >= 0.0 and hi <= 255.0 else ""
    raise _error("x", f"values in [{lo:g}, {hi:g}]; images must be in [0, 1]{hint}")
  return x.astype(np.float32)


def as_labels(y, n, num_classes=None):
  """``y`` as int64 class indices in [0, num_classes), one per image."""
  y = _array(y, "y")
  if y.ndim == 2 and y.shape[0] == n and y.shape[1] > 1:
    raise _error("y", f"one-hot labels of shape {y.shape}; give class indices, e.g. "
                 "y.argmax(axis=1)")
  if y.ndim != 1:
    raise _error("y", f"must be a 1-D array of class indices, got shape {y.shape}")
  if len(y) != n:
    raise _error("y", f"{len(y)} labels for {n} images")
  if not np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
    raise _error("y", f"must be integer class indices, got dtype {y.dtype}"
                 + (" (y.astype(int) if they are whole numbers)"
                    if np.issubdtype(y.dtype, np.floating) else ""))
  lo, hi = int(y.min()), int(y.max())
  if lo < 0 or (num_classes is not None and hi >= num_classes):
    valid = f"in [0, {num_classes})" if num_classes is not None else "≥ 0"
    raise _error("y", f"labels in [{lo}, {hi}]; class indices must be {valid}")
  return y.astype(np.int64)


def check_logits(logits, y):
  """The model's outputs on the first images: finite logits of C ≥ 2 classes covering ``y``.

  Outputs that look like probabilities (every row in [0, 1] and summing to 1) are refused:
  the attacks' losses take logits, and a softmax output attacked as logits is a different loss.
  """
  logits = np.asarray(logits)
  if logits.ndim != 2:
    raise _error("model", f"returns outputs of shape {logits.shape}; the audit needs "
                 "(batch, classes) logits")
  classes = logits.shape[1]
  if classes < 2:
    raise _error("model", f"returns {classes} output per image; the audit needs logits of "
                 "at least 2 classes")
  if not np.isfinite(logits).all():
    raise _error("model", "returns NaN or inf logits on the first images")
  if int(np.max(y)) >= classes:
    raise _error("y", f"labels up to {int(np.max(y))}, but the model has {classes} classes "
                 f"(indices 0..{classes - 1})")
  if logits.min() >= 0.0 and logits.max() <= 1.0 and np.allclose(logits.sum(axis=1), 1.0,
                                                                    atol=1e-3):
    raise _error("model", "returns probabilities (each row in [0, 1], summing to 1); the "
                 "attacks need logits: drop the final softmax, or wrap the model to return "
                 "log-probabilities")
