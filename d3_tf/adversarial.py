"""PGD adversarial training (Madry et al. 2018) as a mode of ``D3Model.train_step``.

Each training step replaces the clean batch by L∞ PGD examples made inside the step, against
the model as it is at that step: a uniform random start in the ε-ball, ``steps`` signed-gradient
steps of ``step_fraction · ε / steps`` on the cross-entropy of the K-draw logit average (the
model's inference rule), each projected to the ε-ball and to [0, 1]. The model is then trained
on the examples with its own loss:

- a conventional model (one draw): PGD adversarial training, the Adv-CNN row;
- a Bayesian head with the plain ELBO: Adv-BNN (Liu et al., ICLR 2019), the examples made online
  against the K-draw model.

With ``clean_weight`` w > 0 the step trains on both: loss = w · L(clean) + (1 − w) · L(PGD),
each term the model's own loss on its half (Goodfellow et al. 2015's mixed objective; w = 0.5 is
their α). It keeps clean accuracy where pure PGD training of a small net gives it up.

ε ramps linearly from 0 to its final value over the first ``warmup_steps`` optimizer steps
(from-scratch PGD training at MNIST ε = 0.3 often stalls near chance without it). The ramp is
read from the optimizer's step counter, so a resumed run continues it where it stopped.
"""

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class PGDTraining:
  """The adversary inside each training step.

  Attributes:
    eps: final L∞ budget (pixel units).
    steps: PGD iterations per training step.
    warmup_steps: optimizer steps over which ε ramps from 0 to ``eps`` (0 = no ramp).
    step_fraction: PGD step = step_fraction · ε / steps (2.5: can cross the ball).
    clean_weight: weight of the clean batch's loss, in [0, 1) (0 = PGD examples only).
  """
  eps: float
  steps: int = 10
  warmup_steps: int = 0
  step_fraction: float = 2.5
  clean_weight: float = 0.0

  def __post_init__(self):
    if not 0.0 < self.eps <= 1.0:
      raise ValueError(f"adversarial training eps must be in (0, 1], got {self.eps}")
    if self.steps < 1 or self.warmup_steps < 0:
      raise ValueError(f"need steps >= 1 and warmup_steps >= 0, got {self.steps}, "
                       f"{self.warmup_steps}")
    if not 0.0 <= self.clean_weight < 1.0:
      raise ValueError(f"clean_weight must be in [0, 1), got {self.clean_weight}")

  def epsilon(self, step):
    """ε at optimizer step ``step`` (0-based): ``eps · min(1, (step + 1) / warmup_steps)``."""
    if not self.warmup_steps:
      return tf.constant(self.eps, tf.float32)
    ramp = tf.cast(step + 1, tf.float32) / float(self.warmup_steps)
    return self.eps * tf.minimum(1.0, ramp)

  def examples(self, model, x, y):
    """The batch a training step of ``model`` trains on, and its ε: PGD examples of the model
    as it is now (its inference rule, the K-draw logit average), at this step's ε."""
    eps = self.epsilon(model.optimizer.iterations)
    return pgd_linf(lambda z: model(z, training=False), x, y, eps, self.steps,
                    self.step_fraction), eps

  def loss(self, adversarial_loss, clean_loss):
    """The step's loss from the model's loss on the PGD examples: that loss alone (Madry et
    al.), or w · L(clean) + (1 − w) · L(PGD) with ``clean_weight`` w > 0 (``clean_loss``: a
    callable, evaluated only then)."""
    if not self.clean_weight:
      return adversarial_loss
    w = self.clean_weight
    return w * clean_loss() + (1.0 - w) * adversarial_loss


def pgd_linf(logits_fn, x, y, eps, steps, step_fraction=2.5, random_start=True):
  """L∞ PGD examples (Eq. 4) for a batch, in TensorFlow (inside a traced train step).

  Args:
    logits_fn: ``x -> logits`` (for a Bayesian model: a fresh K-draw average per call).
    x, y: images in [0, 1] and int labels.
    eps: budget (scalar tensor or float); steps of ``step_fraction · eps / steps``.
    random_start: start uniformly in the ε-ball (Madry et al.), else at x.

  Returns:
    the examples, without gradient to the weights.
  """
  x = tf.convert_to_tensor(x)
  y = tf.cast(y, tf.int32)
  eps = tf.cast(eps, x.dtype)
  step = step_fraction * eps / float(steps)
  lo, hi = tf.maximum(x - eps, 0.0), tf.minimum(x + eps, 1.0)
  x_adv = x
  if random_start:
    x_adv = tf.clip_by_value(x + tf.random.uniform(tf.shape(x), -1.0, 1.0) * eps, lo, hi)
  for _ in range(steps):
    with tf.GradientTape() as tape:
      tape.watch(x_adv)
      loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=y, logits=logits_fn(x_adv)))
    grad = tape.gradient(loss, x_adv)
    x_adv = tf.clip_by_value(x_adv + step * tf.sign(grad), lo, hi)
  return tf.stop_gradient(x_adv)
