"""D3Model: the K-draw training step of Eq. (19) as a Keras ``Model``.

One training step (Sec. 4.5, 5.2, 5.2.1):
  1. the deterministic trunk runs once on the batch x;
  2. the Bayesian head runs K times, each call drawing independent weights θ_k;
  3. the cross-entropy is computed per draw and averaged over draws;
  4. for the penalties, the input gradient ∇_x y(x_n; θ_k) of each draw is
     taken through head AND trunk (nested tapes), normalised (Eq. 9) and
     turned into ΩM, ΩV, ΩS (Eq. 14-18), averaged over the batch;
  5. loss = CE + λM ΩM + λV ΩV + λS ΩS + KL / N_train (ELBO, Eq. 1 and 19).

Inference (``call``/``test_step``) averages the LOGITS over K draws. The K draws run in one
of the engines of ``d3_tf.draws``; the loss of one batch is ``loss_terms``; ``train_step`` is
one Keras step over it (on PGD examples made inside the step for the Adv rows:
``d3_tf.adversarial``).
"""

import contextlib
import dataclasses

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from d3_tf import draws, penalties, vectorized
from d3_tf.models import VARIATIONAL_LAYERS, bayesian_layers, is_bayesian
from d3_tf.settings import DRAWS_MODES, PENALTY_REDUCTIONS

tfd = tfp.distributions
PENALTIES = ("m", "v", "s")


def _check_arguments(active, bayesian, y_mode, num_draws, penalty_reduction, draws_mode,
                     penalty_examples):
  """D3Model's arguments: a ValueError naming the first bad one."""
  if active and not bayesian:
    raise ValueError("the D3 penalties need a Bayesian head (statistics over weight draws); "
                     f"got penalties {active} with a deterministic head")
  if y_mode not in penalties.Y_MODES:
    raise ValueError(f"unknown y_mode {y_mode!r}; choose from {penalties.Y_MODES}")
  if num_draws < 1:
    raise ValueError(f"num_draws must be >= 1, got {num_draws}")
  if penalty_reduction not in PENALTY_REDUCTIONS:
    raise ValueError(f"unknown penalty_reduction {penalty_reduction!r}; "
                     f"choose from {PENALTY_REDUCTIONS}")
  if draws_mode not in DRAWS_MODES:
    raise ValueError(f"unknown draws_mode {draws_mode!r}; choose from {DRAWS_MODES}")
  if penalty_examples < 0:
    raise ValueError(f"penalty_examples must be >= 0, got {penalty_examples}")


def posterior_kl(head):
  """Σ KL(q || p) over the kernels and biases of the head's Bayesian layers (0 if none)."""
  kls = [tf.reduce_sum(tfd.kl_divergence(layer.kernel_posterior, layer.kernel_prior))
         for layer in bayesian_layers(head)]
  kls += [tf.reduce_sum(tfd.kl_divergence(layer.bias_posterior, layer.bias_prior))
          for layer in bayesian_layers(head) if getattr(layer, "bias_prior", None)]
  return tf.add_n(kls) if kls else tf.constant(0.0)


class D3Model(tf_keras.Model):
  """A trunk/head classifier trained with the D3 penalties.

  Args:
    trunk: deterministic tf_keras model run once per batch.
    head: tf_keras model run ``num_draws`` times (Bayesian: fresh weights each call).
    num_draws: K, the number of head draws for training and inference. A
      deterministic head always uses one draw.
    lambda_m, lambda_v, lambda_s: penalty weights λM, λV, λS; 0 skips the work.
    variance_variant: "v1", "v2" or "v3" (Eq. 15-17); the paper uses "v3".
    alpha: softmin temperature of "v2".
    y_mode: which scalar y is differentiated (see ``penalties.scalar_outputs``).
    penalty_reduction: "sum" uses Eq. (14)-(18) as printed (sums over the D
      input dimensions); "mean" divides each Ω by D before weighting it by λ
      (a mean over input dimensions; see docs/reproduction.md, "Known gap").
    draws_mode: "loop" calls the head K times, each call drawing fresh weights
      (the paper's K passes; the reference). "vectorized" draws the K weight
      samples of every Bayesian layer at once and runs them as one batched
      computation, with one batched trunk backward pass for the K input
      gradients (``d3_tf.vectorized``). Same distribution of draws; faster
      where batching pays (see benchmarks/train_step.py).
    penalty_examples: 0 computes the penalties on every example of the batch (the
      paper). n > 0 computes them on a uniformly random subset of n examples of
      each batch (fresh weight draws), an unbiased estimate of their batch mean
      in Eq. (19) at about n/N of the double-backprop cost; the cross-entropy and
      the KL stay on the whole batch. Not the paper's estimator (docs/performance.md).
    n_train: training-set size N; the KL is divided by it once per step.
    kl_weight: extra factor on the KL (1.0 = the ELBO).
    norm_floor: floor on ||∇y||² in Eq. (9) (``penalties.unit_vectors``);
      1e-12 is ``tf.math.l2_normalize``'s.
    adversarial: an ``adversarial.PGDTraining``: each training step trains on PGD
      examples made inside the step against the K-draw model (Adv-CNN, Adv-BNN);
      None trains on the clean batch.
  """

  engines = draws.ENGINES  # the draw engines by draws mode (d3_tf.draws)

  def __init__(self, trunk, head, num_draws=10, lambda_m=0.0, lambda_v=0.0, lambda_s=0.0,
               variance_variant="v3", alpha=1.0, y_mode="loss", n_train=60000,
               kl_weight=1.0, penalty_reduction="sum", draws_mode="loop",
               norm_floor=penalties.NORM_EPS, penalty_examples=0, adversarial=None, **kwargs):
    super().__init__(**kwargs)
    self.trunk = trunk
    self.head = head
    self.bayesian = is_bayesian(head)
    self.lambdas = {"m": float(lambda_m), "v": float(lambda_v), "s": float(lambda_s)}
    self.active = tuple(p for p in PENALTIES if self.lambdas[p] != 0.0)
    _check_arguments(self.active, self.bayesian, y_mode, num_draws, penalty_reduction,
                     draws_mode, penalty_examples)
    self.penalty_reduction = penalty_reduction
    self.draws_mode = draws_mode if is_bayesian(head) else "loop"
    if self.draws_mode == "vectorized":
      vectorized.head_layers(head)  # fails early for unsupported heads
    self.num_draws = int(num_draws) if self.bayesian else 1
    self.variance_variant = variance_variant
    self.alpha = float(alpha)
    self.y_mode = y_mode
    self.n_train = int(n_train)
    self.kl_weight = float(kl_weight)
    self.norm_floor = float(norm_floor)
    self.penalty_examples = int(penalty_examples)
    self.adversarial = adversarial
    names = ["loss", "ce", "kl"] + [f"omega_{p}" for p in self.active]
    names += ["adv_eps"] if adversarial is not None else []
    self.trackers = {n: tf_keras.metrics.Mean(name=n) for n in names}
    self.accuracy = tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")

  @property
  def metrics(self):
    return list(self.trackers.values()) + [self.accuracy]

  def get_config(self):
    return {"num_draws": self.num_draws, "lambda_m": self.lambdas["m"],
            "lambda_v": self.lambdas["v"], "lambda_s": self.lambdas["s"],
            "variance_variant": self.variance_variant, "alpha": self.alpha,
            "y_mode": self.y_mode, "n_train": self.n_train, "kl_weight": self.kl_weight,
            "penalty_reduction": self.penalty_reduction, "draws_mode": self.draws_mode,
            "norm_floor": self.norm_floor, "penalty_examples": self.penalty_examples,
            "adversarial": dataclasses.asdict(self.adversarial) if self.adversarial else None}

  def draw_logits(self, x, training=False, num_draws=None, noise=None, draws_mode=None):
    """Logits of each draw: list of K tensors [N, M] (trunk run once).

    ``noise`` fixes the K weight samples as in :meth:`compute_terms`;
    ``draws_mode`` overrides the model's for this call.
    """
    h = self.trunk(x, training=training)
    num_draws = noise[0].shape[0] if noise is not None else (num_draws or self.num_draws)
    if (draws_mode or self.draws_mode) == "vectorized" and self.bayesian:
      if noise is None:
        noise = vectorized.kernel_noise(self.head, num_draws)
      return tf.unstack(vectorized.apply_head(self.head, h, noise))
    logits = []
    for k in range(num_draws):
      with _injected(self.head, noise, k):
        logits.append(self.head(h, training=training))
    return logits

  def call(self, x, training=False):
    """Logits averaged over K draws (the paper's inference rule, Sec. 5.2)."""
    return tf.add_n(self.draw_logits(x, training)) / float(self.num_draws)

  def kl(self):
    """KL(q || p) of the head's posterior over all Bayesian layers, / N_train.

    Computed from the layers' posteriors and priors, not from ``head.losses``
    (which accumulate over the K calls inside one outer call): added once.
    """
    return self.kl_weight * posterior_kl(self.head) / float(self.n_train)

  def compute_terms(self, x, y, training=True, noise=None, penalty_index=None):
    """All loss terms of Eq. (19) for one batch (``loss_terms``)."""
    return loss_terms(self, x, y, training, noise, penalty_index)

  def input_directions(self, x, y, training=False):
    """Eq. (9) for K fresh draws, whatever the λ: u [J, K, N, D] (for diagnostics)."""
    return draws.loop(self, tf.convert_to_tensor(x), y, training, None, directions=True)[1]

  def train_step(self, data):
    """One step of Eq. (19) (Keras' custom train_step): on PGD examples made now for the
    Adv rows (``adversarial.PGDTraining``), else on the batch."""
    x, y = data
    adv = self.adversarial
    x_train, eps = adv.examples(self, x, y) if adv else (x, None)
    with tf.GradientTape() as tape:
      terms = self.compute_terms(x_train, y, training=True)
      if adv:
        terms["loss"] = adv.loss(terms["loss"], lambda: self.compute_terms(x, y)["loss"])
      # Gradients are summed over replicas: divide so the update uses the GLOBAL batch mean.
      scaled = terms["loss"] / float(tf.distribute.get_strategy().num_replicas_in_sync)
    grads = tape.gradient(scaled, self.trainable_variables)
    self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
    if adv:
      terms["adv_eps"] = eps
    return self._update_metrics(terms, y)

  def test_step(self, data):
    x, y = data
    logits = self(x, training=False)
    ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(y, tf.int32), logits=logits))
    self.trackers["loss"].update_state(ce)
    self.trackers["ce"].update_state(ce)
    self.accuracy.update_state(y, logits)
    return {"loss": self.trackers["loss"].result(), "accuracy": self.accuracy.result()}

  def _update_metrics(self, terms, y):
    for name, tracker in self.trackers.items():
      tracker.update_state(terms[name])
    self.accuracy.update_state(y, terms["logits"])
    return {m.name: m.result() for m in self.metrics}


def loss_terms(model, x, y, training=True, noise=None, penalty_index=None):
  """All loss terms of Eq. (19) for one batch of ``model`` (a D3Model), differentiable
  w.r.t. its weights: the cross-entropy averaged over the K draws, λ·Ω of each active
  penalty (Eq. 14-18, batch means) and KL / N.

  Args:
    x, y: a batch.
    training: passed to the trunk (batch norm).
    noise: optional ε per Bayesian layer, [K, *kernel_shape] each
      (``vectorized.kernel_noise``): fixes the K weight samples
      θ_k = μ + σ ε_k, so that both draws modes see the same draws. With
      ``draws_mode="loop"`` this needs reparameterization layers.
    penalty_index: optional indices of the examples the penalties are
      computed on (default: all, or a random ``penalty_examples`` subset).

  Returns:
    dict with "loss", "ce", "kl", "logits" (averaged) and "omega_<p>" for
    each active penalty p (batch means).
  """
  x = tf.convert_to_tensor(x)
  engine = model.engines[model.draws_mode]
  subset = _penalty_subset(model.penalty_examples, x) if penalty_index is None else penalty_index
  if subset is None or not model.active:
    logits, u = engine(model, x, y, training, noise, bool(model.active))  # [K,N,M], [J,K,N,D]
  else:  # CE on the whole batch; the input gradients only for the subset
    logits, _ = engine(model, x, y, training, noise, False)
    _, u = engine(model, tf.gather(x, subset), tf.gather(y, subset), training, noise, True)
  labels = tf.tile(tf.cast(y, tf.int32), [logits.shape[0]])
  ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=tf.reshape(logits, [-1, logits.shape[-1]])))
  terms = {"ce": ce, "kl": model.kl(), "logits": tf.reduce_mean(logits, axis=0)}
  loss = ce + terms["kl"]
  if model.active:
    # Per output j: per-example penalties [N]; averaged over outputs and the batch.
    per_output = [penalties.penalty_terms(u[j], model.variance_variant, model.alpha, model.active)
                  for j in range(u.shape[0])]
    # D from the input's shape (u's last dim is not static when the batch size is not)
    scale = 1.0 if model.penalty_reduction == "sum" else 1.0 / float(x.shape[1:].num_elements())
    for name in model.active:
      omega = tf.reduce_mean(tf.stack([p[name] for p in per_output]))
      terms[f"omega_{name}"] = omega  # logged as printed (Eq. 14-18)
      loss += model.lambdas[name] * scale * omega
  terms["loss"] = loss
  return terms


def _penalty_subset(n, x):
  """Random indices of ``n`` examples of the batch, or None for all (n = 0 or ≥ the batch)."""
  if not n or (x.shape[0] is not None and x.shape[0] <= n):
    return None
  return tf.random.shuffle(tf.range(tf.shape(x)[0]))[:n]


@contextlib.contextmanager
def _injected(head, noise, k):
  """Makes each Bayesian layer of ``head`` use θ = μ + σ ε_k (draw k of ``noise``)."""
  if noise is None:
    yield
    return
  layers = vectorized.bayesian_in_order(head)
  if any(isinstance(layer, (tfp.layers.DenseFlipout, tfp.layers.Convolution2DFlipout))
         for layer in layers):
    raise ValueError("injecting weight samples in draws_mode='loop' needs reparameterization "
                     "layers (Flipout perturbs each example separately)")
  saved = [layer.kernel_posterior_tensor_fn for layer in layers]
  for layer, eps in zip(layers, noise):
    layer.kernel_posterior_tensor_fn = lambda d, e=eps[k]: d.mean() + d.stddev() * e
  try:
    yield
  finally:
    for layer, fn in zip(layers, saved):
      layer.kernel_posterior_tensor_fn = fn


def warm_start(model, source):
  """Starts a Bayesian ``model`` from a trained conventional ``source`` of the same shapes.

  The trunk's weights (batch-norm statistics included) are copied; each Bayesian layer of
  the head takes the source layer's kernel and bias as its posterior means, keeping its own
  initial σ. Returns ``model``.
  """
  model.trunk.set_weights(source.trunk.get_weights())
  targets = [l for l in model.head.layers if l.weights]
  sources = [l for l in source.head.layers if l.weights]
  if len(targets) != len(sources):
    raise ValueError(f"heads differ: {len(targets)} layers with weights vs {len(sources)}")
  for target, layer in zip(targets, sources):
    if isinstance(target, VARIATIONAL_LAYERS):
      kernel, bias = layer.get_weights()
      target.kernel_posterior.distribution.loc.assign(kernel)
      target.bias_posterior.distribution.loc.assign(bias)
    else:
      target.set_weights(layer.get_weights())
  return model


def build(arch="mnist_cnn", bayesian=True, seed=0, estimator="flipout", arch_kwargs=None,
          **d3_kwargs):
  """A D3Model of one of ``models.ARCHITECTURES`` (or "madry_mnist")."""
  from d3_tf import models  # pylint: disable=g-import-not-at-top
  if arch == "madry_mnist":
    trunk, head = models.madry_mnist(seed=seed, **(arch_kwargs or {}))
  elif arch in models.ARCHITECTURES:
    trunk, head = models.ARCHITECTURES[arch](bayesian=bayesian, seed=seed, estimator=estimator,
                                             **(arch_kwargs or {}))
  else:
    raise ValueError(f"unknown architecture {arch!r}; choose from "
                     f"{sorted(models.ARCHITECTURES) + ['madry_mnist']}")
  model = D3Model(trunk, head, **d3_kwargs)
  model(tf.zeros((1,) + tuple(trunk.input_shape[1:])))  # create the variables
  return model
