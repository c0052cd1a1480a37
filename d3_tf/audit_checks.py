"""What the audit measures besides attacks: expected accuracy, randomness, input checks, sanity.

- :func:`expected_accuracy`: a randomised model's accuracy on fixed inputs, averaged over many
  independent K-draw passes made after the attack (the worst case counts an example broken
  when ANY pass misclassifies it, so prediction noise alone lowers it);
- :func:`randomness`: do a model's logits vary across passes? (a deterministic protocol on a
  randomised model over-credits it);
- :func:`check_transfer_set`: an externally supplied adversarial set must be aligned with the
  clean images and lie in [0, 1] and in the ε-ball;
- :func:`direction_diversity`: the mechanism itself (ΩM, ΩV, ΩS of K test-time draws);
- :func:`sanity_numbers` / :func:`sanity_checks`: pass/fail checks that can catch a broken attack.
"""

import numpy as np
import tensorflow as tf

from d3_tf import attacks, models, penalties
from d3_tf.settings import ConfigError

SLACK = 1e-6  # relative slack of the ε-ball and [0, 1] checks (float32 rounding)


def expected_accuracy(estimator, x, y, passes=20, batch_size=256):
  """Accuracy of ``estimator`` on fixed inputs over ``passes`` independent forward passes.

  Returns:
    {"accuracy": mean over examples of the per-example accuracy (%), "stderr": its standard
     error over examples (points), "pass_std": the standard deviation of the passes' own
     accuracies (points), "passes", "per_example": per-example accuracy in [0, 1]}.
  """
  hits = np.zeros(len(x))
  per_pass = []
  for _ in range(passes):
    ok = attacks.predict_labels(estimator, x, batch_size) == y
    hits += ok
    per_pass.append(100.0 * float(ok.mean()) if len(x) else 0.0)
  p = hits / passes
  n = max(len(x), 1)
  return {"accuracy": 100.0 * float(p.mean()) if len(x) else 0.0,
          "stderr": 100.0 * float(p.std(ddof=1) / np.sqrt(n)) if len(x) > 1 else 0.0,
          "pass_std": float(np.std(per_pass)), "passes": int(passes),
          "per_example": [round(float(v), 4) for v in p]}


def randomness(estimator, x, batch_size=256, atol=1e-5):
  """How random a model's predictions are: two forward passes over the same inputs.

  Returns:
    {"stochastic": whether any logit differs by more than ``atol`` (relative to the logits'
     scale), "logits_vary_pct": % of inputs whose logits differ, "disagreement_pct": % of
     inputs whose predicted labels differ}.
  """
  a = estimator.predict(x, batch_size=batch_size)
  b = estimator.predict(x, batch_size=batch_size)
  scale = max(1.0, float(np.abs(a).max())) if a.size else 1.0
  varies = np.abs(a - b).reshape(len(x), -1).max(axis=1) > atol * scale
  return {"stochastic": bool(varies.any()), "logits_vary_pct": 100.0 * float(varies.mean()),
          "disagreement_pct": 100.0 * float(np.mean(a.argmax(1) != b.argmax(1)))}


def prediction_disagreement(estimator, x, batch_size=256):
  """% of clean inputs on which two K-draw forward passes predict different labels."""
  return randomness(estimator, x, batch_size)["disagreement_pct"]


def check_transfer_set(name, x, y, x_adv, y_adv, eps, norm="inf"):
  """Refuses (ConfigError, one line) an adversarial set that does not belong to (x, y) at ε.

  Checks the shape, the labels' alignment, the [0, 1] range and the ε-ball (L∞ or L2, with a
  relative slack of 1e-6) of every example.
  """
  x_adv = np.asarray(x_adv)
  if x_adv.shape != np.shape(x):
    raise ConfigError(f"transfer set {name}: shape {x_adv.shape}, the audited images are "
                      f"{np.shape(x)}")
  if y_adv is not None and not np.array_equal(np.asarray(y_adv), np.asarray(y)):
    bad = int(np.flatnonzero(np.asarray(y_adv) != np.asarray(y))[0])
    raise ConfigError(f"transfer set {name}: labels not aligned with the audited images "
                      f"(first mismatch at example {bad})")
  if not np.all(np.isfinite(x_adv)) or x_adv.min() < -SLACK or x_adv.max() > 1.0 + SLACK:
    raise ConfigError(f"transfer set {name}: values outside [0, 1] (min {x_adv.min():.4g}, "
                      f"max {x_adv.max():.4g})")
  delta = (x_adv - x).reshape(len(x), -1)
  dist = np.abs(delta).max(axis=1) if attacks.norm_value(norm) == np.inf else \
      np.linalg.norm(delta, axis=1)
  if len(dist) and dist.max() > eps * (1.0 + SLACK):
    i = int(dist.argmax())
    raise ConfigError(f"transfer set {name}: example {i} is {dist[i]:.4g} from its clean "
                      f"image ({norm} norm), beyond ε={eps}")


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
     "sigma_median", "sigma_max", "weight_median" (median |posterior mean| of the same
     kernels), "sigma_over_weight" (σ / |mean| per weight, median: how wide the posterior is
     next to the weights it perturbs), "num_draws", "n"}.
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
  layers = models.bayesian_layers(model.head)
  sigma = np.concatenate([np.ravel(layer.kernel_posterior.stddev().numpy()) for layer in layers])
  mean = np.abs(np.concatenate([np.ravel(layer.kernel_posterior.mean().numpy())
                                for layer in layers]))
  result = {f"omega_{name}": total / len(x) for name, total in totals.items()}
  result.update({"omega_m_independent": 1.0 / model.num_draws,
                 "sigma_median": float(np.median(sigma)), "sigma_max": float(sigma.max()),
                 "weight_median": float(np.median(mean)),
                 "sigma_over_weight": float(np.median(sigma / np.maximum(mean, 1e-12))),
                 "num_draws": model.num_draws, "n": int(len(x))})
  return result


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
  checks = []
  if numbers.get("eps_one") is not None:
    checks.append({"check": "accuracy at L∞ ε=1 is 0%", "passed": numbers["eps_one"] == 0.0,
                   "detail": f"{numbers['eps_one']:.1f}%"})
  checks += [
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


def sanity_numbers(estimator, x, y, eps, make_pgd, norm="inf", verbose=True):
  """The numbers behind :func:`sanity_checks` (except white/black-box), on (x, y).

  ``make_pgd(eps, eps_step, max_iter)`` builds the PGD attack to check, so a
  broken attack can be fed in and caught.
  """
  acc = lambda attack: attacks.robust_accuracy(estimator, x, y, attack, desc="sanity",
                                               verbose=verbose)["adversarial"]
  by_eps = [(0.0, acc(None))] + [(e, acc(make_pgd(e, 2.5 * e / 40, 40)))
                                 for e in (eps / 4, eps / 2, eps)]
  by_steps = [(s, acc(make_pgd(eps, 2.5 * eps / s, s))) for s in (10, 40, 100)]
  eps_one = acc(make_pgd(1.0, 0.1, 20)) if attacks.norm_value(norm) == np.inf else None
  return {"eps_one": eps_one, "by_eps": by_eps, "by_steps": by_steps}


def gradient_stats(estimator, x, y, batch_size=200):
  """Share (%) of inputs whose input gradient is exactly zero, and the median logit margin.

  The gradient is that of the cross-entropy of the K-draw logit average (what PGD
  follows); the margin is the true-class logit minus the largest other logit of that
  average (negative when misclassified).
  """
  zero, margins = 0, []
  for start in range(0, len(x), batch_size):
    xb = tf.constant(x[start:start + batch_size])
    yb = tf.constant(y[start:start + batch_size], tf.int32)
    with tf.GradientTape() as tape:
      tape.watch(xb)
      logits = estimator.model(xb)
      loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
    grads = tape.gradient(loss, xb).numpy().reshape(len(xb), -1)
    zero += int(np.sum(np.all(grads == 0.0, axis=1)))
    true = np.take_along_axis(logits.numpy(), yb.numpy()[:, None], axis=1)[:, 0]
    other = np.where(np.eye(logits.shape[-1], dtype=bool)[yb.numpy()], -np.inf, logits.numpy())
    margins.append(true - other.max(axis=1))
  return {"zero_gradient_pct": 100.0 * zero / len(x),
          "median_logit_margin": float(np.median(np.concatenate(margins)))}
