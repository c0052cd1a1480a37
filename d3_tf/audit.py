"""Robustness audit: adaptive attacks that separate real robustness from obfuscation.

Randomised defences are easy to over-credit (Athalye et al. 2018; Carlini et
al. 2019; Tramèr et al. 2020). The audit attacks a trained model with:

- EOT-PGD: each step's gradient is the mean of R loss gradients, each through
  a fresh K-draw forward pass (Expectation over Transformation), R in a list;
  random restarts; step size 2.5·ε/steps (Madry et al.'s schedule: constant
  step, long enough to cross the ball twice);
- APGD-CE and APGD-DLR (ART AutoProjectedGradientDescent, its own step-size
  schedule) with the same EOT gradients, combined through ART's AutoAttack;
- Square attack (ART SquareAttack: gradient-free, query budget);
- transfer from the posterior-mean network (the same weights, Bayesian layers
  at their means) and from the black-box surrogates' saved sets.

Attacks run as a cascade: each one only attacks the examples that every
earlier attack failed on, so the result is the per-example worst case, the
"audited robust accuracy", at a fraction of the cost. Every individual
attack's accuracy on the examples it saw is reported too.
"""

import numpy as np
import tensorflow as tf
import tf_keras
from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack
from art.estimators.classification import TensorFlowV2Classifier

from d3_tf import attacks, models, penalties, progress, training


class EOTClassifier(TensorFlowV2Classifier):
  """A TensorFlowV2Classifier whose loss gradient averages R independent K-draw passes."""

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


def eot_classifier(model, eot_samples, num_draws=None, loss="ce", draws_mode=None):
  """An ART classifier over the K-draw logit average with EOT-averaged loss gradients."""
  loss_object = (DLRLoss(reduction=tf_keras.losses.Reduction.SUM) if loss == "dlr" else
                 tf_keras.losses.CategoricalCrossentropy(
                     from_logits=True, reduction=tf_keras.losses.Reduction.SUM))
  return attacks.untraced(EOTClassifier(
      model=attacks.DrawAverage(model, num_draws, draws_mode=draws_mode),
      nb_classes=int(model.head.output_shape[-1]), input_shape=tuple(model.trunk.input_shape[1:]),
      loss_object=loss_object, clip_values=(0.0, 1.0), eot_samples=eot_samples))


def posterior_mean_model(model):
  """A deterministic copy of a D3Model with every Bayesian weight at its posterior mean."""
  if not model.bayesian:
    return model
  head = tf_keras.models.clone_model(model.head, clone_function=_mean_layer)
  head.build(model.head.input_shape)
  for src, dst in zip(model.head.layers, head.layers):
    if isinstance(src, tuple(models.VARIATIONAL_LAYERS)):
      dst.set_weights([src.kernel_posterior.mean().numpy(), src.bias_posterior.mean().numpy()])
    else:
      dst.set_weights(src.get_weights())
  mean = training.D3Model(model.trunk, head, num_draws=1, n_train=model.n_train)
  mean(tf.zeros((1,) + tuple(model.trunk.input_shape[1:])))
  return mean


def _mean_layer(layer):
  cfg = layer.get_config()
  if isinstance(layer, tuple(models.VARIATIONAL_LAYERS)):
    common = {"activation": cfg["activation"], "name": f"{layer.name}_mean"}
    if "filters" in cfg:
      return tf_keras.layers.Conv2D(cfg["filters"], cfg["kernel_size"], strides=cfg["strides"],
                                    padding=cfg["padding"], **common)
    return tf_keras.layers.Dense(cfg["units"], **common)
  return layer.__class__.from_config(cfg)


def direction_diversity(model, x, y, batch_size=100):
  """How diverse a trained model's K input-gradient directions are: the mechanism itself.

  ΩM, ΩV and ΩS (Eq. 14, 17 or the model's variant, and 18, as printed: sums over
  the D input dims) of the unit directions u_k (Eq. 9) of K fresh draws at test
  time, averaged over (x, y), whatever λ the model was trained with; and the
  posterior scales σ of its Bayesian kernels. ΩM is 1 when the K directions are
  identical and 1/K in expectation when they are independent and isotropic, so a
  defence that works by diversity should sit well below 1.

  Returns:
    {"omega_m", "omega_v", "omega_s", "omega_m_independent" (= 1/K),
     "sigma_median", "sigma_max", "num_draws", "n"}.
  """
  if not model.bayesian:
    raise ValueError("direction diversity needs a Bayesian head (statistics over draws)")
  totals = {"m": 0.0, "v": 0.0, "s": 0.0}
  for start in range(0, len(x), batch_size):
    u = model.input_directions(x[start:start + batch_size], y[start:start + batch_size])
    for u_j in u:  # one [K, N, D] block per scalar output, averaged over outputs
      for name, per_example in penalties.penalty_terms(
          u_j, model.variance_variant, model.alpha).items():
        totals[name] += float(tf.reduce_sum(per_example)) / float(u.shape[0])
  sigma = np.concatenate([np.ravel(layer.kernel_posterior.stddev().numpy())
                          for layer in models.bayesian_layers(model.head)])
  result = {f"omega_{name}": total / len(x) for name, total in totals.items()}
  result.update({"omega_m_independent": 1.0 / model.num_draws,
                 "sigma_median": float(np.median(sigma)), "sigma_max": float(sigma.max()),
                 "num_draws": model.num_draws, "n": int(len(x))})
  return result


def correct(estimator, x, y, batch_size=256):
  """Per-example correctness (bool [N]) under one stochastic K-draw prediction."""
  return attacks.predict_labels(estimator, x, batch_size) == y


class Cascade:
  """Per-example worst case over a sequence of attacks.

  By default each attack only attacks the examples every earlier attack failed
  on (cheap). With ``every_example=True`` each attack sees all examples, so
  every attack's own accuracy is known too (used to check the worst case).
  """

  def __init__(self, estimator, x, y, log=print, every_example=False):
    self.estimator, self.x, self.y, self.log = estimator, x, y, log
    self.every_example = every_example
    self.robust = correct(estimator, x, y)
    self.clean = 100.0 * float(self.robust.mean())
    self.attacks = {}
    self.per_example = {}

  def _attack(self, name, adversarial):
    """``adversarial(idx) -> x_adv`` for the targeted examples; updates the worst case."""
    idx = np.arange(len(self.x)) if self.every_example else np.flatnonzero(self.robust)
    ok = correct(self.estimator, adversarial(idx), self.y[idx]) if len(idx) else \
        np.zeros(0, bool)
    self.robust[idx[~ok]] = False
    full = np.ones(len(self.x), bool)
    full[idx] = ok
    self.per_example[name] = full
    self.attacks[name] = {"attacked": int(len(idx)),
                          "accuracy_on_attacked": 100.0 * float(ok.mean()) if len(idx) else None,
                          "audited_after": 100.0 * float(self.robust.mean())}
    self.log(f"  {name}: {int(ok.sum())}/{len(idx)} survive, audited accuracy "
             f"{self.attacks[name]['audited_after']:.1f}%")

  def run(self, name, generate):
    """An attack ``generate(x, y) -> x_adv``, run on the targeted examples only."""
    self._attack(name, lambda idx: generate(self.x[idx], self.y[idx]))

  def fixed_set(self, name, x_adv):
    """A transfer attack with precomputed examples aligned with ``self.x``."""
    self._attack(name, lambda idx: x_adv[idx])

  @property
  def audited(self):
    return 100.0 * float(self.robust.mean())


def eot_pgd(estimator, eps, steps, restarts, norm="inf", seed=0, batch_size=128):
  """EOT-PGD generator with restarts; each restart attacks only what is still correct."""
  def generate(x, y):
    x_adv = x.copy()
    alive = np.ones(len(x), bool)
    for r in range(restarts):
      if not alive.any():
        break
      pgd = attacks.pgd(estimator, eps, 2.5 * eps / steps, steps, norm,
                        random_start=restarts > 1, batch_size=batch_size, seed=seed + r,
                        verbose=progress.interactive())
      idx = np.flatnonzero(alive)
      cand = pgd.generate(x[idx], y=attacks.one_hot(y[idx], estimator.nb_classes))
      x_adv[idx] = cand
      alive[idx] = correct(estimator, cand, y[idx])
    return x_adv
  return generate


def apgd(estimator, eps, steps, restarts, norm="inf", batch_size=128):
  """ART APGD with the estimator's (EOT) loss."""
  return AutoProjectedGradientDescent(estimator, norm=attacks.norm_value(norm), eps=eps,
                                      eps_step=2 * eps, max_iter=steps, nb_random_init=restarts,
                                      batch_size=batch_size, loss_type=None,
                                      verbose=progress.interactive())


def autoattack(estimators, eps, steps, restarts, norm="inf", batch_size=128):
  """ART AutoAttack over APGD-CE and APGD-DLR, both with EOT gradients."""
  ce, dlr = estimators
  return AutoAttack(ce, norm=attacks.norm_value(norm), eps=eps, eps_step=2 * eps,
                    attacks=[apgd(ce, eps, steps, restarts, norm, batch_size),
                             apgd(dlr, eps, steps, restarts, norm, batch_size)],
                    batch_size=batch_size)


def square(estimator, eps, queries, norm="inf", batch_size=128, seed=0):
  np.random.seed(seed)
  return SquareAttack(estimator, norm=attacks.norm_value(norm), eps=eps, max_iter=queries,
                      nb_restarts=1, batch_size=batch_size, verbose=progress.interactive())


def prediction_disagreement(estimator, x, batch_size=256):
  """% of clean inputs on which two K-draw forward passes predict different labels."""
  a = attacks.predict_labels(estimator, x, batch_size)
  b = attacks.predict_labels(estimator, x, batch_size)
  return 100.0 * float(np.mean(a != b))


def sanity_checks(numbers, tolerance=1.0):
  """Pass/fail checks on audit numbers (accuracies in %).

  Args:
    numbers: dict with "eps_one" (accuracy at L∞ ε=1), "by_eps" ([(ε, acc)]
      increasing ε), "by_steps" ([(steps, acc)] increasing), "whitebox" and
      "blackbox" accuracies.
    tolerance: slack in percentage points for the monotonicity checks (the
      model's predictions are random).

  Returns:
    list of {"check", "passed", "detail"}.
  """
  def monotone(pairs):
    return all(b[1] <= a[1] + tolerance for a, b in zip(pairs, pairs[1:]))
  checks = [
      {"check": "accuracy at L∞ ε=1 is 0%", "passed": numbers["eps_one"] == 0.0,
       "detail": f"{numbers['eps_one']:.1f}%"},
      {"check": "accuracy non-increasing in ε", "passed": monotone(numbers["by_eps"]),
       "detail": ", ".join(f"ε={e}: {a:.1f}%" for e, a in numbers["by_eps"])},
      {"check": "accuracy non-increasing in attack steps", "passed": monotone(numbers["by_steps"]),
       "detail": ", ".join(f"{s} steps: {a:.1f}%" for s, a in numbers["by_steps"])},
  ]
  if numbers.get("blackbox") is not None:
    checks.append({"check": "white-box ≤ black-box (else: obfuscation signal)",
                   "passed": numbers["whitebox"] <= numbers["blackbox"] + tolerance,
                   "detail": f"white-box {numbers['whitebox']:.1f}%, "
                             f"black-box {numbers['blackbox']:.1f}%"})
  return checks


def sanity_numbers(estimator, x, y, eps, make_pgd, norm="inf"):
  """The numbers behind :func:`sanity_checks` (except white/black-box), on (x, y).

  ``make_pgd(eps, eps_step, max_iter)`` builds the PGD attack to check, so a
  broken attack can be fed in and caught.
  """
  acc = lambda attack: attacks.robust_accuracy(estimator, x, y, attack, desc="sanity")[
      "adversarial"]
  by_eps = [(0.0, acc(None))] + [(e, acc(make_pgd(e, 2.5 * e / 40, 40)))
                                 for e in (eps / 4, eps / 2, eps)]
  by_steps = [(s, acc(make_pgd(eps, 2.5 * eps / s, s))) for s in (10, 40, 100)]
  eps_one = acc(make_pgd(1.0, 0.1, 20)) if norm == "inf" else None
  return {"eps_one": eps_one, "by_eps": by_eps, "by_steps": by_steps}


def run_audit(model, x, y, eps, eot=(1, 10), steps=100, restarts=5, apgd_eot=10,
              square_queries=1000, transfer_sets=None, norm="inf", seed=0, batch_size=128,
              sanity_n=100, whitebox=None, blackbox=None, every_example=False, log=print,
              draws_mode=None):
  """The full audit of one model on (x, y); returns a JSON-able dict.

  Args:
    model: a trained D3Model.
    eot: EOT sample counts R for EOT-PGD, one attack each.
    steps, restarts: iterations and random restarts of EOT-PGD and APGD.
    apgd_eot: R for APGD-CE / APGD-DLR.
    square_queries: query budget of the Square attack (0 = skip).
    transfer_sets: {name: x_adv aligned with x} precomputed transfer examples.
    whitebox, blackbox: the paper-protocol PGD and black-box accuracies (for the
      obfuscation check); whitebox defaults to the cascade's plain PGD numbers.
    draws_mode: "loop" or "vectorized" K draws in every attack (default: the model's).
  """
  if not model.bayesian:  # one draw: R samples would average R copies of the same gradient
    eot, apgd_eot = (1,), 1
  est = attacks.classifier(model, draws_mode=draws_mode)
  cascade = Cascade(est, x, y, log=log, every_example=every_example)
  log(f"audit: clean accuracy {cascade.clean:.1f}% on {len(x)} images, ε={eps} ({norm})")
  for name, x_adv in (transfer_sets or {}).items():
    cascade.fixed_set(f"transfer:{name}", x_adv)
  if model.bayesian:
    mean_est = attacks.classifier(posterior_mean_model(model))
    cascade.run("transfer:posterior_mean", lambda xs, ys: eot_pgd(
        mean_est, eps, steps, 1, norm, seed, batch_size)(xs, ys))
  for r in eot:
    cascade.run(f"eot_pgd:R={r}", eot_pgd(eot_classifier(model, r, draws_mode=draws_mode), eps,
                                          steps, restarts, norm, seed, batch_size))
  ests = (eot_classifier(model, apgd_eot, draws_mode=draws_mode),
          eot_classifier(model, apgd_eot, loss="dlr", draws_mode=draws_mode))
  cascade.run(f"autoattack(apgd_ce,apgd_dlr):R={apgd_eot}", lambda xs, ys: autoattack(
      ests, eps, steps, restarts, norm, batch_size).generate(xs, y=attacks.one_hot(ys, est.nb_classes)))
  if square_queries:
    cascade.run(f"square:{square_queries}q", lambda xs, ys: square(
        est, eps, square_queries, norm, batch_size, seed).generate(
            xs, y=attacks.one_hot(ys, est.nb_classes)))
  n = min(sanity_n, len(x))
  make_pgd = lambda e, step, iters: attacks.pgd(est, e, step, iters, norm, batch_size=batch_size)
  numbers = sanity_numbers(est, x[:n], y[:n], eps, make_pgd, norm)
  numbers["whitebox"] = whitebox if whitebox is not None else numbers["by_steps"][1][1]
  numbers["blackbox"] = blackbox
  return {"n": int(len(x)), "eps": float(eps), "norm": norm, "clean": cascade.clean,
          "per_example_robust": cascade.robust.tolist(),
          "per_example_by_attack": {k: v.tolist() for k, v in cascade.per_example.items()},
          "audited_robust_accuracy": cascade.audited, "attacks": cascade.attacks,
          "prediction_disagreement": prediction_disagreement(est, x[:n]),
          "sanity_numbers": numbers, "sanity_checks": sanity_checks(numbers),
          "settings": {"eot": list(eot), "steps": steps, "restarts": restarts,
                       "apgd_eot": apgd_eot, "square_queries": square_queries,
                       "seed": seed, "sanity_n": n}}
