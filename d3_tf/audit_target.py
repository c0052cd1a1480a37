"""The model under audit: its ART estimators (EOT gradients, CE or DLR loss) and its inputs.

:class:`Target` wraps a ``D3Model``, a Keras model or any callable ``x -> logits`` and makes
ART classifiers over fresh forward passes, each on its own random stream;
:func:`checked_inputs` checks ``run_audit``'s arguments (``d3_tf.audit_inputs``) and the
model's first outputs before any attack.
"""
import itertools

import numpy as np
import tensorflow as tf
import tf_keras
from art.estimators.classification import TensorFlowV2Classifier

from d3_tf import attacks, audit_inputs, training


class EOTClassifier(TensorFlowV2Classifier):
  """A TensorFlowV2Classifier whose loss gradient averages R independent forward passes."""

  def __init__(self, *args, eot_samples=1, **kwargs):
    super().__init__(*args, **kwargs)
    self.eot_samples = int(eot_samples)

  def loss_gradient(self, x, y, training_mode=False, **kwargs):
    grads = [super(EOTClassifier, self).loss_gradient(x, y, training_mode, **kwargs)
             for _ in range(self.eot_samples)]
    if isinstance(grads[0], tf.Tensor):
      return tf.add_n(grads) / float(len(grads))
    return np.mean(grads, axis=0)


class DLRLoss(tf_keras.losses.Loss):
  """Difference of logits ratio (Croce & Hein 2020) on one-hot labels, for APGD-DLR + EOT."""

  def call(self, y_true, y_pred):
    z_sorted = tf.sort(y_pred, axis=-1, direction="DESCENDING")
    z_y = tf.reduce_sum(y_true * y_pred, axis=-1)
    z_other = tf.reduce_max(y_pred - 1e9 * y_true, axis=-1)
    return -(z_y - z_other) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)


class Forward:
  """``x -> logits`` of any Keras model or callable, traced once for every batch size."""

  def __init__(self, fn, input_shape):
    self.fn = fn
    spec = tf.TensorSpec((None,) + tuple(input_shape), tf.float32)
    self._call = tf.function(lambda x: fn(x, training=False) if isinstance(
        fn, tf_keras.Model) else fn(x), input_signature=[spec])

  def __call__(self, x, training=False):
    del training  # attacks run the model in inference mode
    return self._call(tf.cast(x, tf.float32))

  @property
  def trainable_variables(self):
    return getattr(self.fn, "trainable_variables", [])


class Target:
  """The model under audit and a factory of ART estimators over it.

  Args:
    model: a ``D3Model``, a Keras model or any callable ``x -> logits`` (float32 images).
    input_shape, num_classes: needed only when they cannot be read off a Keras model.
    draws_mode: K draws of a Bayesian D3Model ("loop" / "vectorized"; default: the model's).
    seed: base seed of the estimators' random streams: every estimator of a Bayesian
      D3Model draws its weights from its own stream, and the same seed reproduces a run.
  """

  def __init__(self, model, input_shape=None, num_classes=None, draws_mode=None, seed=0):
    self.model = model
    self.d3 = isinstance(model, training.D3Model)
    input_shape, num_classes = model_shapes(model, input_shape, num_classes)
    if input_shape is None or num_classes is None:
      raise ValueError("give input_shape and num_classes for a model that is not a Keras model")
    self.input_shape, self.num_classes = tuple(input_shape), int(num_classes)
    self.draws_mode, self.seed = draws_mode, int(seed)
    self._streams = itertools.count()

  def probe(self, x):
    """Logits of one forward pass on ``x``, outside the estimators' streams (input checks)."""
    fn = attacks.DrawAverage(self.model, draws_mode=self.draws_mode) if self.d3 else \
        Forward(self.model, self.input_shape)
    try:
      return np.asarray(fn(x))
    except Exception as e:  # a model that cannot take the images.  pylint: disable=broad-except
      first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
      raise audit_inputs.cfg.ConfigError(f"model: fails on the first images ({first})") from None

  @property
  def has_posterior(self):
    return self.d3 and self.model.bayesian

  def forward(self):
    """A fresh ``x -> logits`` (for a Bayesian D3Model: the K-draw average, own stream)."""
    if self.d3:
      seed = self.seed * 1000 + next(self._streams) if self.model.bayesian else None
      return attacks.DrawAverage(self.model, draws_mode=self.draws_mode, seed=seed)
    return Forward(self.model, self.input_shape)

  def estimator(self, eot_samples=1, loss="ce"):
    """An ART classifier over a fresh forward pass whose loss gradient averages R passes."""
    return _eot_estimator(self.forward(), self.num_classes, self.input_shape, eot_samples, loss)


def model_shapes(model, input_shape=None, num_classes=None):
  """(input shape, classes) of a D3Model or Keras model; the given ones for a callable."""
  if isinstance(model, training.D3Model):
    return model.trunk.input_shape[1:], model.head.output_shape[-1]
  if isinstance(model, tf_keras.Model):
    return input_shape or model.input_shape[1:], num_classes or model.output_shape[-1]
  return input_shape, num_classes


def _eot_estimator(forward, num_classes, input_shape, eot_samples, loss):
  """EOTClassifier over ``forward`` with a SUM-reduced CE or DLR loss (per-example gradients)."""
  loss_object = (DLRLoss(reduction=tf_keras.losses.Reduction.SUM) if loss == "dlr" else
                 tf_keras.losses.CategoricalCrossentropy(
                     from_logits=True, reduction=tf_keras.losses.Reduction.SUM))
  return attacks.untraced(EOTClassifier(
      model=forward, nb_classes=num_classes, input_shape=tuple(input_shape),
      loss_object=loss_object, clip_values=(0.0, 1.0), eot_samples=eot_samples))


def eot_classifier(model, eot_samples, num_draws=None, loss="ce", draws_mode=None, seed=None):
  """An ART classifier over a D3Model's K-draw logit average with EOT-averaged gradients."""
  return _eot_estimator(attacks.DrawAverage(model, num_draws, draws_mode=draws_mode, seed=seed),
                        int(model.head.output_shape[-1]), model.trunk.input_shape[1:],
                        eot_samples, loss)


def checked_inputs(model, x, y, eps, settings, draws_mode, input_shape, num_classes):
  """(x, y, settings, Target) once every argument of :func:`run_audit` passed
  ``d3_tf.audit_inputs``'s rules (x, y cut to ``settings.n``); raises a ConfigError (a
  ValueError) naming the first bad one, before any attack."""
  settings = settings.checked(eps)
  input_shape, num_classes = model_shapes(model, input_shape, num_classes)
  x = audit_inputs.as_images(x, input_shape)
  y = audit_inputs.as_labels(y, len(x))
  x, y = x[:settings.n], y[:settings.n]
  target = Target(model, x.shape[1:], num_classes or 0, draws_mode, settings.seed)
  logits = target.probe(x[:8])
  audit_inputs.check_logits(logits, y)
  if not num_classes:  # a callable: its classes are its outputs'
    target.num_classes = int(logits.shape[1])
  elif logits.shape[1] != num_classes:
    raise audit_inputs.cfg.ConfigError(f"model: returns {logits.shape[1]} outputs per image "
                                       f"where it declares {num_classes} classes")
  return x, y, settings, target
