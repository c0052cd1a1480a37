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
import dataclasses
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


@dataclasses.dataclass(frozen=True)
class AuditSettings:
  """Every setting of an audit (``audit.run_audit``), one record; named presets in AUDITS."""
  protocol: str = "full"     # "full", "rand" or "standard" (d3_tf.audit)
  norm: str = "inf"
  n: int = None              # the first n of the images given (None: all of them)
  eot: tuple = (1, 10)       # EOT sample counts R of EOT-PGD, one attack each ("full")
  steps: int = 100           # iterations of EOT-PGD and APGD
  restarts: int = 5          # random restarts of EOT-PGD and APGD ("full")
  apgd_eot: int = 10         # R of APGD-CE / APGD-DLR ("full")
  square_queries: int = 1000  # Square attack queries (0 = skip; "full", "standard")
  passes: int = 20           # independent forward passes of the expected accuracy
  sanity_n: int = 100        # images of the sanity checks
  seed: int = 0
  batch_size: int = 128

  def checked(self, eps):
    """This record once it and the budget ``eps`` pass the rules (a single R of ``eot`` may
    be an integer: returned as a tuple); else the first bad value's ConfigError."""
    check_budget(eps, self.norm)
    if self.protocol not in PROTOCOLS:
      raise _error("protocol", f"{self.protocol!r} is unknown; choose from "
                   + ", ".join(PROTOCOLS))
    eot = (self.eot,) if isinstance(self.eot, (int, np.integer)) else self.eot
    if not isinstance(eot, (tuple, list)) or not eot:
      raise _error("eot", f"{eot!r} is invalid: must be a non-empty list of integers ≥ 1")
    for r in eot:
      check_count("eot", r)
    check_count("square_queries", self.square_queries, lo=0)
    check_count("seed", self.seed, lo=0)
    for name in ("steps", "restarts", "apgd_eot", "passes", "batch_size", "sanity_n"):
      check_count(name, getattr(self, name))
    if self.n is not None:
      check_count("n", self.n)
    return dataclasses.replace(self, eot=tuple(int(r) for r in eot))

  def record(self):
    """The JSON form (a results file's ``audit`` entry)."""
    return dict(dataclasses.asdict(self), eot=list(self.eot))


# The audits of the pipelines: tables at the paper's and the verdict preset's budget ("full"),
# at the cpu budget, the study's rows (no Square), the smoke tests', and the rand protocol.
AUDITS = {
    "full": AuditSettings(n=200),
    "cpu": AuditSettings(n=100, eot=(1, 4), steps=50, restarts=1, apgd_eot=4,
                         square_queries=500),
    "study": AuditSettings(n=200, eot=(1, 4), steps=50, restarts=1, apgd_eot=4,
                           square_queries=0),
    "smoke": AuditSettings(n=16, eot=(1, 2), steps=5, restarts=1, apgd_eot=2, square_queries=0,
                           sanity_n=8),
    # AutoAttack's version for randomised defences (APGD-CE and APGD-DLR, EOT 20, 100 steps):
    # the study's second audit of rows whose white-box gain might be randomness.
    "rand": AuditSettings(protocol="rand", n=200, square_queries=0),
    "rand_smoke": AuditSettings(protocol="rand", n=16, steps=5, square_queries=0, passes=4,
                                sanity_n=8),
}


def audit_settings(settings=None, **overrides):
  """``settings`` (default: AuditSettings()) with ``overrides``; a ConfigError names an
  argument the audit does not have."""
  settings = settings or AuditSettings()
  known = {f.name for f in dataclasses.fields(AuditSettings)}
  unknown = sorted(set(overrides) - known)
  if unknown:
    raise _error(unknown[0], "is not a setting of the audit; it has " + ", ".join(sorted(known)))
  return dataclasses.replace(settings, **overrides)


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
