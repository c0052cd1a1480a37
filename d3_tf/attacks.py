"""Attacks through the Adversarial Robustness Toolbox (Sec. 2.2, 5.2.2).

All attacks are ART's own (FastGradientMethod, ProjectedGradientDescent,
AdversarialTrainerMadryPGD); this module only wraps a d3_tf model so that one
forward pass averages the LOGITS of K weight draws (the paper's inference
rule) and gradients flow through that average. ε is in input units: pixels in
[0, 1].

PGD defaults: 40 iterations (Sec. 5.3-5.4); MNIST ε = 0.3 with step 0.01 (the
paper gives no MNIST step size; 0.01 is MadryLab's mnist_challenge value, so
40 steps can travel 0.4 > ε); CIFAR-10 ε = 0.03 with step 0.001 (Sec. 5.4).
No random start unless asked (ART's default, as in the paper).
"""

import functools

import numpy as np
import tensorflow as tf
import tf_keras
from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
from art.estimators.classification import TensorFlowV2Classifier

from d3_tf import models, progress, vectorized

_FLIPOUT = (models.tfpl.DenseFlipout, models.tfpl.Convolution2DFlipout)

NORMS = {"inf": np.inf, "linf": np.inf, "2": 2, "l2": 2}


class DrawAverage:
  """Callable ``x -> mean_k logits(x; θ_k)``: one forward pass = K head draws.

  The deterministic trunk runs once and only the head K times, so the
  gradient of the average also needs one trunk backward pass (autodiff sums
  the K head cotangents at the trunk output before going through the trunk).

  Args:
    model: a ``D3Model``.
    num_draws: K for attacks and inference; defaults to the model's training K.
    trunk_once: False runs the whole network per draw (same values, K trunk
      passes: only for benchmarks).
    draws_mode: "loop" or "vectorized" head draws (default: the model's); a
      loop-trained Flipout model can be attacked with vectorized draws, exact
      samples of the same posterior (docs/performance.md).
    seed: None draws the weights with the layers' own random ops, whose op-level
      seeds repeat across traces: two estimators over one model then replay the
      same sequence of draws. An integer gives this forward pass its OWN stream, a
      ``tf.random.Generator`` seeded with it: every call draws fresh ε for
      θ_k = μ + σ ε_k, independent of every other estimator's, and the same seed
      reproduces the same sequence. The draws are then plain posterior samples
      (vectorized when the head allows it; Flipout's sign flips are not used).
  """

  def __init__(self, model, num_draws=None, trunk_once=True, draws_mode=None, seed=None):
    self.model = model
    self.num_draws = int(num_draws or model.num_draws) if model.bayesian else 1
    self.trunk_once = trunk_once
    self.draws_mode = draws_mode
    self.generator = None
    if seed is not None and model.bayesian:
      self.generator = tf.random.Generator.from_seed(int(seed))
      self.draws_mode = _explicit_noise_mode(model.head, draws_mode)
    # One trace for every batch size (ART's last batch is ragged): a fixed input signature
    # with an open batch dimension, in inference mode; training mode gets its own function.
    spec = tf.TensorSpec((None,) + tuple(model.trunk.input_shape[1:]), tf.float32)
    self._fns = {training: tf.function(functools.partial(self._average, training=training),
                                       input_signature=[spec]) for training in (False, True)}

  def _average(self, x, training=False):
    if self.generator is not None:
      noise = [self.generator.normal([self.num_draws] + l.kernel_posterior.event_shape.as_list())
               for l in vectorized.bayesian_in_order(self.model.head)]
      logits = self.model.draw_logits(x, training=training, noise=noise,
                                      draws_mode=self.draws_mode)
      return tf.add_n(logits) / float(len(logits))
    override = {"draws_mode": self.draws_mode} if self.draws_mode else {}
    draw = lambda k: self.model.draw_logits(x, training=training, num_draws=k, **override)
    if self.trunk_once:
      logits = draw(self.num_draws)
    else:
      logits = [draw(1)[0] for _ in range(self.num_draws)]
    return tf.add_n(logits) / float(len(logits))

  def __call__(self, x, training=False):
    return self._fns[bool(training)](tf.cast(x, tf.float32))

  def tracing_count(self):
    """How many times the forward pass was traced (1 after any number of batch sizes)."""
    return sum(fn.experimental_get_tracing_count() for fn in self._fns.values())

  @property
  def trainable_variables(self):
    return self.model.trainable_variables


def _explicit_noise_mode(head, draws_mode):
  """The draws mode in which ``head`` takes explicit weight noise: vectorized when its layers
  allow it (or when asked), else loop (reparameterization layers only)."""
  try:
    vectorized.head_layers(head)
    supported = True
  except NotImplementedError:
    supported = False
  if supported and draws_mode != "loop":
    return "vectorized"
  if any(isinstance(l, _FLIPOUT) for l in models.bayesian_layers(head)):
    if supported:
      return "vectorized"
    raise ValueError("an own random stream needs draws_mode='vectorized' or reparameterization "
                     "layers: this head has Flipout layers and layers the batched path lacks")
  return "loop"


def classifier(model, num_draws=None, optimizer=None, trunk_once=True, draws_mode=None,
               seed=None):
  """An ART ``TensorFlowV2Classifier`` over the K-draw logit average of ``model``.

  Args:
    model: a ``D3Model`` (conventional or Bayesian).
    num_draws: K used by every forward pass (default: the model's K).
    optimizer: only needed when ART trains the model (adversarial training).
    trunk_once, draws_mode, seed: see :class:`DrawAverage` (``seed``: an own stream of
      weight draws for this estimator).
  """
  input_shape = tuple(model.trunk.input_shape[1:])
  nb_classes = int(model.head.output_shape[-1])
  return untraced(TensorFlowV2Classifier(
      model=DrawAverage(model, num_draws, trunk_once, draws_mode, seed), nb_classes=nb_classes,
      input_shape=input_shape,
      # SUM: ART's loss_gradient then returns each example's own loss gradient.
      loss_object=tf_keras.losses.CategoricalCrossentropy(
          from_logits=True, reduction=tf_keras.losses.Reduction.SUM),
      optimizer=optimizer, clip_values=(0.0, 1.0)))


def untraced(estimator):
  """Replaces ART's own ``tf.function`` forward pass (which takes the model as an argument and
  retraces for every new estimator and batch shape) by a plain call of the model, which is
  a traced :class:`DrawAverage` already. Returns ``estimator``."""
  estimator._forward_pass = lambda model, x, training: model(x, training=training)  # pylint: disable=protected-access
  return estimator


def norm_value(norm):
  """"inf"/"linf" -> np.inf, "2"/"l2" -> 2 (ART's norm argument)."""
  key = str(norm).lower()
  if key not in NORMS:
    raise ValueError(f"unknown norm {norm!r}; choose from {sorted(NORMS)}")
  return NORMS[key]


def fgsm(estimator, eps, norm="inf", batch_size=128):
  """ART FGSM (Eq. 3): one step of size ε along the sign (L∞) or the L2 direction."""
  return FastGradientMethod(estimator, norm=norm_value(norm), eps=eps, batch_size=batch_size)


def pgd(estimator, eps, eps_step, max_iter=40, norm="inf", random_start=False,
        batch_size=128, seed=None, verbose=False):
  """ART PGD (Eq. 4): ``max_iter`` steps of ``eps_step``, projected to the ε-ball."""
  if seed is not None:
    np.random.seed(seed)  # ART draws its random start from numpy's global generator
  return ProjectedGradientDescent(
      estimator, norm=norm_value(norm), eps=eps, eps_step=eps_step, max_iter=max_iter,
      num_random_init=1 if random_start else 0, batch_size=batch_size, verbose=verbose)


def make_attack(estimator, name, eps, norm="inf", eps_step=None, max_iter=40,
                random_start=False, batch_size=128):
  """``name`` is "fgsm" or "pgd"; ``eps`` = 0 gives no attack (None)."""
  if eps == 0:
    return None
  if name == "fgsm":
    return fgsm(estimator, eps, norm, batch_size)
  if name == "pgd":
    return pgd(estimator, eps, eps_step, max_iter, norm, random_start, batch_size)
  raise ValueError(f"unknown attack {name!r}; choose fgsm or pgd")


def one_hot(y, num_classes=10):
  """Int labels -> float32 one-hot rows, as ART's attacks and trainers take them."""
  return np.eye(num_classes, dtype=np.float32)[y]


def predict_labels(estimator, x, batch_size=256):
  return np.argmax(estimator.predict(x, batch_size=batch_size), axis=1)


def robust_accuracy(estimator, x, y, attack=None, batch_size=128, return_adv=False,
                    desc="attack", verbose=True):
  """Clean and adversarial accuracy (%) of ``estimator`` on (x, y).

  Args:
    estimator: an ART classifier (see :func:`classifier`), or a D3Model, which
      is wrapped with its own K.
    x, y: images in [0, 1] and int labels.
    attack: an ART evasion attack, or None (clean only: adversarial = clean).
    batch_size: images per attack call (progress bar steps).
    return_adv: also return the adversarial images.
    verbose: print a progress bar and one line when done.

  Returns:
    dict with "clean" and "adversarial" accuracy in percent, "n", and "x_adv"
    when asked.
  """
  if not isinstance(estimator, TensorFlowV2Classifier):
    estimator = classifier(estimator)
  clean_hits, adv_hits, advs = 0, 0, []
  timer = progress.Timer()
  batches = range(0, len(x), batch_size)
  for start in progress.bar(batches, desc) if verbose else batches:
    xb, yb = x[start:start + batch_size], y[start:start + batch_size]
    clean_pred = predict_labels(estimator, xb, batch_size)
    clean_hits += int(np.sum(clean_pred == yb))
    if attack is None:
      xa, adv_pred = xb, clean_pred
    else:
      xa = attack.generate(xb, y=one_hot(yb, estimator.nb_classes))
      adv_pred = predict_labels(estimator, xa, batch_size)
    adv_hits += int(np.sum(adv_pred == yb))
    if return_adv:
      advs.append(xa)
  out = {"clean": 100.0 * clean_hits / len(x), "adversarial": 100.0 * adv_hits / len(x),
         "n": int(len(x))}
  if verbose:
    timer.done(f"{desc}: {len(x)} images, clean {out['clean']:.1f}%" + (
        f", adversarial {out['adversarial']:.1f}%" if attack is not None else ""))
  if return_adv:
    out["x_adv"] = np.concatenate(advs)
  return out


def white_box(estimator, x, y, eps, eps_step, max_iter=40):
  """The paper's white-box columns: {"clean", "fgsm", "pgd"} accuracy (%) at L∞ ``eps``."""
  fg = robust_accuracy(estimator, x, y, fgsm(estimator, eps), desc="FGSM")
  pg = robust_accuracy(estimator, x, y, pgd(estimator, eps, eps_step, max_iter), desc="PGD")
  return {"clean": fg["clean"], "fgsm": fg["adversarial"], "pgd": pg["adversarial"]}


def accuracy_on(estimator, x, y, batch_size=256):
  """Accuracy (%) on fixed inputs, e.g. a saved black-box adversarial set."""
  return 100.0 * float(np.mean(predict_labels(estimator, x, batch_size) == y))


def budget_sweep(estimator, x, y, budgets, norm="inf", max_iter=40, step_fraction=None,
                 eps_step=None, batch_size=128):
  """PGD accuracy over a list of budgets (Fig. 2-3, Table 3).

  The step is ``eps_step`` when given, else ``step_fraction * ε`` (default
  2.5 ε / max_iter, so the steps can cross the ball); ε = 0 is clean accuracy.

  Returns:
    list of {"eps", "norm", "accuracy"} dicts, in the order of ``budgets``.
  """
  rows = []
  for eps in budgets:
    step = eps_step if eps_step is not None else (step_fraction or 2.5 / max_iter) * eps
    attack = make_attack(estimator, "pgd", eps, norm, step, max_iter, batch_size=batch_size)
    res = robust_accuracy(estimator, x, y, attack, batch_size, desc=f"PGD {norm} eps={eps}")
    rows.append({"eps": float(eps), "norm": str(norm), "accuracy": res["adversarial"]})
  return rows
