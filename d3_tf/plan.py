"""A row's training plan: how long, at which rate, from where, against which adversary; its model.

Decisions only (no files): ``d3_tf.rows`` stores the rows, ``d3_tf.experiment.Runner`` trains
and evaluates them.
"""

import zlib

import tensorflow as tf
import tf_keras

from d3_tf import adversarial, training
from d3_tf.settings import row_epochs


class Plan:
  """The training of each row under one Settings (``s``)."""

  def __init__(self, settings, strategy=None):
    self.s = settings
    self.strategy = strategy or tf.distribute.get_strategy()

  def optimizer(self, learning_rate, epochs, n):
    """Adam at ``learning_rate``; with ``lr_schedule=cosine`` decaying to 0 over the row."""
    if self.s.lr_schedule == "cosine":
      steps = epochs * -(-n // self.s.batch_size)
      learning_rate = tf_keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    return tf_keras.optimizers.Adam(learning_rate)

  def epochs(self, method):
    """Training epochs of a row (``settings.row_epochs``)."""
    return row_epochs(self.s, method)

  def warm_started(self, method):
    """Whether a row starts from a trained row: Bayesian rows from the conventional one (the
    Adv-BNN from the Adv-CNN) with ``warm_start_lr``; the Adv-CNN from the conventional row
    with ``adv_warm_start_lr``."""
    if method.bayesian:
      return bool(self.s.warm_start_lr)
    return method.adversarial and bool(self.s.adv_warm_start_lr)

  def learning_rate(self, method):
    if not self.warm_started(method):
      return self.s.learning_rate
    return self.s.warm_start_lr if method.bayesian else self.s.adv_warm_start_lr

  def adversary(self, method, n_train, epochs=None):
    """The PGD training of an Adv row (None for the others): ε ramped up over
    ``adv_warmup_epochs`` for a row trained from scratch, over ``adv_warm_start_warmup``
    for an Adv-CNN started from the (natural) conventional row, and not at all for the
    Adv-BNN started from the (robust) Adv-CNN."""
    if not method.adversarial:
      return None
    if not self.warm_started(method):
      warmup = self.warmup_steps(n_train)
    elif method.bayesian:
      warmup = 0
    else:
      warmup = self.warmup_steps(n_train, self.s.adv_warm_start_warmup)
    return adversarial.PGDTraining(self.s.eps, self.s.adv_iters, warmup,
                                   clean_weight=self.s.adv_clean_weight)

  def warmup_steps(self, n_train, epochs=None):
    """Optimizer steps of ``epochs`` (default ``adv_warmup_epochs``) on ``n_train`` images."""
    epochs = self.s.adv_warmup_epochs if epochs is None else epochs
    return int(round(epochs * -(-n_train // self.s.batch_size)))

  def build(self, method, n_train):
    s = self.s
    lam = {p: getattr(s, f"lambda_{p}") if p in method.penalties else 0.0 for p in "mvs"}
    arch_kwargs = {"posterior_init": s.posterior_init}
    if s.arch == "vgg16":
      arch_kwargs["width"] = s.width
    tf_keras.utils.set_random_seed(s.seed + zlib.crc32(method.name.encode()) % 10000)
    with self.strategy.scope():
      model = training.build(
          s.arch, bayesian=method.bayesian, seed=s.seed, estimator=s.estimator,
          arch_kwargs=arch_kwargs, num_draws=s.num_draws, lambda_m=lam["m"], lambda_v=lam["v"],
          lambda_s=lam["s"], variance_variant=s.variance_variant, y_mode=s.y_mode,
          n_train=n_train, kl_weight=s.kl_weight, penalty_reduction=s.penalty_reduction,
          draws_mode=s.draws_mode, norm_floor=s.norm_floor,
          penalty_examples=s.penalty_examples, adversarial=self.adversary(method, n_train))
      model.compile(optimizer=self.optimizer(self.learning_rate(method), self.epochs(method),
                                             n_train))
    return model

  def surrogate(self, index, arch, adv, n_train):
    """A black-box surrogate (conventional net; PGD-trained with the ε ramp when ``adv`` and
    ``surrogate_adv_mode=warmup``), compiled; and its training epochs."""
    s = self.s
    warmup = adv and s.surrogate_adv_mode == "warmup"  # d3_tf.adversarial, ε ramped up
    epochs = s.surrogate_adv_epochs or s.surrogate_epochs if warmup else s.surrogate_epochs
    tf_keras.utils.set_random_seed(s.seed + 1000 + index)
    with self.strategy.scope():
      adversary = adversarial.PGDTraining(s.eps, s.adv_iters, self.warmup_steps(
          n_train)) if warmup else None
      model = training.build(arch, bayesian=False, seed=s.seed + 1000 + index,
                             arch_kwargs={"width": s.width} if arch == "vgg16" else None,
                             adversarial=adversary)
      model.compile(optimizer=self.optimizer(s.learning_rate, epochs, n_train))
    return model, epochs
