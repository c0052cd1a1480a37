"""Robustness audit: adaptive attacks that separate real robustness from obfuscation.

Randomised defences are easy to over-credit (Athalye et al. 2018; Carlini et
al. 2019; Tramèr et al. 2020). The audit takes any classifier ``x -> logits`` (a
``D3Model``, deterministic or Bayesian, or any Keras model or callable, random or
not) and attacks it with one of two protocols:

- ``"full"`` (the default): transfer from the posterior-mean network (D3Models
  with a posterior) and from given transfer sets; EOT-PGD (each step's gradient
  the mean of R loss gradients, each through a fresh forward pass, R in a list;
  random restarts; step 2.5·ε/steps); APGD-CE and APGD-DLR with EOT (ART
  AutoProjectedGradientDescent through ART's AutoAttack); the gradient-free
  Square attack;
- ``"rand"``: AutoAttack's version for randomised defences (Croce & Hein 2020):
  APGD-CE then APGD-DLR, each gradient averaged over 20 forward passes (EOT),
  no restarts, 100 steps;
- ``"standard"``: the same two APGD attacks without EOT, then Square: for
  deterministic models (the audit warns when the model turns out random).

Attacks run as a cascade: each one only attacks the examples every earlier
attack failed on, and the per-example worst case is the *worst-case audited
accuracy*. Every forward pass of a random model is a fresh draw, so the worst
case also counts prediction noise as attack success. The *expected robust
accuracy* does not: each example's adversarial point (the one that broke it
first, else the one with the lowest margin) is re-scored over ``passes``
independent passes drawn after the attack, and the per-example accuracies are
averaged (the clean images likewise). It is an upper bound on what the model keeps
in expectation, loose when a weak point (a transfer example, tried first) claims an
example: the ``"rand"`` protocol attacks the expectation itself. Each estimator
of a D3Model draws its weights from its own random stream (``attacks.DrawAverage``'s
``seed``).
"""

import warnings

import numpy as np
import tensorflow as tf
import tf_keras
from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack

from d3_tf import attacks, audit_inputs, models, progress, training
from d3_tf.audit_inputs import AUDITS, AuditSettings, audit_settings  # noqa: F401
from d3_tf.audit_target import (DLRLoss, EOTClassifier, Forward, Target,  # noqa: F401
                                checked_inputs, eot_classifier, model_shapes)
from d3_tf.audit_checks import (check_transfer_set, direction_diversity,  # noqa: F401
                                expected_accuracy, prediction_disagreement, randomness,
                                sanity_checks, sanity_numbers)

PROTOCOLS = audit_inputs.PROTOCOLS
RAND_EOT = 20  # AutoAttack's rand version: EOT over 20 samples


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


def _margins(estimator, x, y, batch_size=256):
  """True-class logit minus the largest other logit, under one forward pass."""
  logits = estimator.predict(x, batch_size=batch_size)
  true = logits[np.arange(len(y)), y]
  other = np.where(np.eye(logits.shape[1], dtype=bool)[y], -np.inf, logits).max(axis=1)
  return true - other


class Cascade:
  """Per-example worst case over a sequence of attacks, and each example's chosen point.

  By default each attack only attacks the examples every earlier attack failed on
  (cheap). With ``every_example=True`` each attack sees all examples, so every
  attack's own accuracy is known too (used to check the worst case). An example's
  *chosen* point is the first adversarial point that broke it, else the one with
  the lowest margin seen (the clean image if nothing attacked it).
  """

  def __init__(self, estimator, x, y, log=print, every_example=False):
    self.estimator, self.x, self.y, self.log = estimator, x, y, log
    self.every_example = every_example
    margin = _margins(estimator, x, y)
    self.robust = margin > 0
    self.clean = 100.0 * float(self.robust.mean())
    self.chosen, self.margin = x.copy(), np.where(self.robust, margin, -np.inf)
    self.broken_by = [None if ok else "clean" for ok in self.robust]
    self.attacks = {}
    self.per_example = {}

  def _attack(self, name, adversarial):
    """``adversarial(idx) -> x_adv`` for the targeted examples; updates the worst case."""
    idx = np.arange(len(self.x)) if self.every_example else np.flatnonzero(self.robust)
    x_adv = adversarial(idx) if len(idx) else self.x[:0]
    margin = _margins(self.estimator, x_adv, self.y[idx]) if len(idx) else np.zeros(0)
    ok = margin > 0
    for j, i in enumerate(idx):
      if self.robust[i] and (not ok[j] or margin[j] < self.margin[i]):
        self.chosen[i], self.margin[i] = x_adv[j], margin[j]
        if not ok[j]:
          self.broken_by[i] = name
    self.robust[idx[~ok]] = False
    full = np.full(len(self.x), None, dtype=object)  # None: this attack did not see it
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
      alive[idx] = attacks.predict_labels(estimator, cand) == y[idx]
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


def _generator(attack, nb_classes):
  return lambda xs, ys: attack.generate(xs, y=attacks.one_hot(ys, nb_classes))


def _run_protocol(cascade, model, target, sets, eps, s, eot, apgd_eot, rand_eot):
  """The attacks of the protocol ``s.protocol`` (``settings`` ``s``), in order, on what the
  cascade has not broken yet: "full": the transfer sets, PGD on the posterior-mean network,
  EOT-PGD for each R of ``eot``, AutoAttack's APGD-CE/DLR with ``apgd_eot``; "rand" /
  "standard": APGD-CE then APGD-DLR (EOT ``rand_eot`` / 1); then Square (not "rand")."""
  nb, norm, steps, batch_size = target.num_classes, s.norm, s.steps, s.batch_size
  if s.protocol == "full":
    for name, x_adv in sets.items():
      cascade.fixed_set(f"transfer:{name}", x_adv)
    if target.has_posterior:
      mean = Target(posterior_mean_model(model)).estimator()
      cascade.run("transfer:posterior_mean", eot_pgd(mean, eps, steps, 1, norm, s.seed,
                                                     batch_size))
    for r in eot:
      cascade.run(f"eot_pgd:R={r}", eot_pgd(target.estimator(r), eps, steps, s.restarts, norm,
                                            s.seed, batch_size))
    ests = (target.estimator(apgd_eot), target.estimator(apgd_eot, loss="dlr"))
    cascade.run(f"autoattack(apgd_ce,apgd_dlr):R={apgd_eot}", _generator(
        autoattack(ests, eps, steps, s.restarts, norm, batch_size), nb))
  else:
    r = rand_eot if s.protocol == "rand" else 1
    for loss in ("ce", "dlr"):
      cascade.run(f"apgd_{loss}:R={r}", _generator(
          apgd(target.estimator(r, loss=loss), eps, steps, 1, norm, batch_size), nb))
  if s.square_queries and s.protocol != "rand":
    cascade.run(f"square:{s.square_queries}q", _generator(
        square(target.estimator(), eps, s.square_queries, norm, batch_size, s.seed), nb))


def run_audit(model, x, y, eps, settings=None, *, transfer_sets=None, whitebox=None,
              blackbox=None, draws_mode=None, every_example=False, input_shape=None,
              num_classes=None, log=print, verbose=True, **overrides):
  """The audit of one model on (x, y); returns a JSON-able dict.

  Args:
    model: a D3Model, a Keras model or a callable ``x -> logits`` (see :class:`Target`).
    eps: the budget (pixel units for L∞).
    settings: an :class:`AuditSettings` (protocol, norm, n, EOT counts, steps, restarts,
      Square queries, passes, seed; named presets in ``AUDITS``), default AuditSettings().
    **overrides: fields of ``settings`` to replace, e.g. ``protocol="rand", steps=50``.
    transfer_sets: {name: x_adv} or {name: (x_adv, y_adv)} aligned with x: checked (shape,
      labels, [0, 1], ε-ball) and refused with a ConfigError otherwise ("full").
    whitebox, blackbox: the paper-protocol PGD and black-box accuracies (for the
      obfuscation check); whitebox defaults to the sanity checks' PGD-40.
    draws_mode: "loop" or "vectorized" K draws of a Bayesian D3Model.
    input_shape, num_classes: for a callable that is not a Keras model.
    log, verbose: where the audit's own lines go; ``verbose=False`` also silences the
      per-attack progress lines of the sanity checks.

  ``x`` and ``y`` may be arrays, lists or tensors: float NHWC images in [0, 1] and integer
  class indices (the first ``settings.n`` are audited). Every argument and the model's first
  outputs (finite logits of ≥ 2 classes, not probabilities) are checked before any attack
  (``d3_tf.audit_inputs``).

  Raises:
    ConfigError (a ValueError): the first bad argument, in one line naming it, the value
      seen and what is expected.
  """
  settings = audit_settings(settings, **overrides)
  x, y, settings, target = checked_inputs(model, x, y, eps, settings, draws_mode, input_shape,
                                          num_classes)
  protocol, norm, seed, batch_size = (settings.protocol, settings.norm, settings.seed,
                                      settings.batch_size)
  eot, steps, restarts, apgd_eot = (settings.eot, settings.steps, settings.restarts,
                                    settings.apgd_eot)
  square_queries, sanity_n, passes = settings.square_queries, settings.sanity_n, settings.passes
  sets = {}
  for name, value in (transfer_sets or {}).items():
    x_adv, y_adv = value if isinstance(value, tuple) else (value, None)
    x_adv, y_adv = x_adv[:settings.n], None if y_adv is None else y_adv[:settings.n]
    check_transfer_set(name, x, y, x_adv, y_adv, eps, norm)
    sets[name] = x_adv
  est = target.estimator()
  rand = randomness(est, x[:min(sanity_n, len(x))])
  if rand["stochastic"] and protocol == "standard":
    message = (f"the model's logits vary across forward passes ({rand['logits_vary_pct']:.0f}% "
               "of inputs): the deterministic 'standard' protocol over-credits it; use 'rand'")
    warnings.warn(message)
    log(f"audit: warning: {message}")
  rand_eot = RAND_EOT
  if not rand["stochastic"]:
    # One draw: R samples would average R copies of one gradient (AutoAttack, too, runs its
    # standard version on a deterministic model).
    eot, apgd_eot, rand_eot = (1,), 1, 1
    if protocol == "rand":
      log("audit: the model is deterministic (two passes agree on every image): the rand "
          "protocol runs with EOT 1")
  cascade = Cascade(est, x, y, log=log, every_example=every_example)
  log(f"audit ({protocol}): clean accuracy {cascade.clean:.1f}% on {len(x)} images, "
      f"ε={eps} ({norm})")
  _run_protocol(cascade, model, target, sets, eps, settings, eot, apgd_eot, rand_eot)
  scorer = target.estimator()  # passes drawn after every attack, on a stream of their own
  expected = {"robust": expected_accuracy(scorer, cascade.chosen, y, passes),
              "clean": expected_accuracy(scorer, x, y, passes)}
  n = min(sanity_n, len(x))
  make_pgd = lambda e, step, iters: attacks.pgd(est, e, step, iters, norm, batch_size=batch_size)
  numbers = sanity_numbers(est, x[:n], y[:n], eps, make_pgd, norm, verbose)
  numbers["whitebox"] = whitebox if whitebox is not None else numbers["by_steps"][1][1]
  numbers["blackbox"] = blackbox
  log(f"audit: worst-case {cascade.audited:.1f}%, expected "
      f"{expected['robust']['accuracy']:.1f} ± {expected['robust']['stderr']:.1f}% "
      f"(clean {expected['clean']['accuracy']:.1f}%, {passes} passes)")
  return {"n": int(len(x)), "eps": float(eps), "norm": norm, "protocol": protocol,
          "clean": cascade.clean,
          "per_example_robust": cascade.robust.tolist(),
          "per_example_broken_by": cascade.broken_by,
          "per_example_expected": expected["robust"].pop("per_example"),
          "per_example_expected_clean": expected["clean"].pop("per_example"),
          "per_example_by_attack": {k: v.tolist() for k, v in cascade.per_example.items()},
          "audited_robust_accuracy": cascade.audited,
          "expected_robust_accuracy": expected["robust"]["accuracy"],
          "expected": expected, "attacks": cascade.attacks, "randomness": rand,
          "prediction_disagreement": rand["disagreement_pct"],
          "sanity_numbers": numbers, "sanity_checks": sanity_checks(numbers),
          "settings": {"eot": list(eot), "steps": steps, "restarts": restarts,
                       "apgd_eot": apgd_eot, "square_queries": square_queries,
                       "rand_eot": rand_eot if protocol == "rand" else None,
                       "seed": seed, "sanity_n": n, "passes": passes, "protocol": protocol}}
