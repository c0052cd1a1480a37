"""The audit's positive control: on a model whose robust accuracy is known exactly, the audit
reports that accuracy: no less (it does not break what cannot be broken, even through
prediction noise) and no more (its attacks reach every example that can be broken)."""
import numpy as np
import pytest
import tensorflow as tf

from d3_tf import audit

D, CLASSES, EPS, NOISE = 64, 3, 0.05, 0.02  # 8 × 8 images (ART's Square needs > 4 × 4)


def exact_worst_margins(w, b, x, y, eps):
  """The least margin z_y − z_j over j ≠ y that any x' in the ε-box ∩ [0, 1] reaches, for a
  linear model z = x·w + b: the minimum is separable, each input at one end of its interval."""
  lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
  worst = np.full(len(x), np.inf)
  for j in range(w.shape[1]):
    diff = w[:, y].T - w[:, j]  # (n, D): the margin's weights for each example's label
    margin = np.where(diff > 0, diff * lo, diff * hi).sum(1) + b[y] - b[j]
    worst = np.where(y == j, worst, np.minimum(worst, margin))
  return worst


@pytest.fixture(scope="module")
def known_model():
  """A linear model with bounded logit noise, and images far from every decision boundary:
  each one either robust with room to spare or breakable with room to spare (both > 2 × noise)."""
  rng = np.random.RandomState(0)
  w = rng.randn(D, CLASSES).astype(np.float32)
  b = np.zeros(CLASSES, np.float32)
  x = rng.rand(4000, D).astype(np.float32)
  y = (x @ w + b).argmax(1)
  worst = exact_worst_margins(w, b, x, y, EPS)
  clean_margin = np.sort(x @ w + b, axis=1)
  keep = (np.abs(worst) > 4 * NOISE) & (clean_margin[:, -1] - clean_margin[:, -2] > 4 * NOISE)
  robust_idx, broken_idx = np.flatnonzero(keep & (worst > 0)), np.flatnonzero(keep & (worst < 0))
  idx = np.concatenate([robust_idx[:24], broken_idx[:24]])
  return w, b, x[idx].reshape(-1, 8, 8, 1), y[idx], worst[idx] > 0


def make_model(w, b, noise):
  wt, bt = tf.constant(w), tf.constant(b)

  def logits(x):
    z = tf.reshape(x, (-1, D)) @ wt + bt
    return z + tf.random.uniform(tf.shape(z), -noise, noise) if noise else z
  return logits


@pytest.mark.parametrize("noise", [0.0, NOISE])
def test_audit_reports_the_known_robust_accuracy(known_model, noise):
  w, b, x, y, robust = known_model
  assert 0 < robust.mean() < 1
  report = audit.run_audit(make_model(w, b, noise), x, y, EPS, eot=(1, 2), steps=20,
                           restarts=1, apgd_eot=2, square_queries=50, sanity_n=16, passes=5,
                           input_shape=(8, 8, 1), num_classes=CLASSES, log=lambda s: None)
  assert report["randomness"]["stochastic"] == bool(noise)
  assert report["clean"] == 100.0
  exact = 100.0 * robust.mean()
  found = np.array(report["per_example_robust"])
  # No less than the truth: an image no attack can break is never counted broken ...
  assert found[robust].all(), "the audit broke a certified-robust image"
  # ... and no more: the attacks reach every image that can be broken.
  assert not found[~robust].any(), "an attack missed a breakable image"
  assert report["audited_robust_accuracy"] == pytest.approx(exact)
  assert report["expected_robust_accuracy"] == pytest.approx(exact)
