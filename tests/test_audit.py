"""The robustness audit: worst case, EOT, posterior mean, DLR, sanity checks that can fail."""
import contextlib

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from art.attacks.evasion import ProjectedGradientDescent

import d3_tf
from d3_tf import attacks, audit, data


@pytest.fixture(scope="module")
def tiny_models():
  (x, y), (xt, yt) = data.load_mnist(source="embedded", n_train=512, n_test=16)
  tf_keras.utils.set_random_seed(0)
  bnn = d3_tf.build("mnist_cnn", num_draws=2, n_train=512, seed=1)
  cnn = d3_tf.build("mnist_cnn", bayesian=False, seed=2)
  for m in (bnn, cnn):
    m.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    m.fit(data.make_dataset(x, y, 64), epochs=2, verbose=0)
  return bnn, cnn, xt, yt


def test_worst_case_below_every_attack(tiny_models):
  bnn, _, x, y = tiny_models
  report = audit.run_audit(bnn, x, y, 0.1, eot=(1, 2), steps=5, restarts=2, apgd_eot=2,
                           square_queries=20, sanity_n=8, every_example=True, log=print)
  robust = np.array(report["per_example_robust"])
  assert set(report["per_example_by_attack"]) == {
      "transfer:posterior_mean", "eot_pgd:R=1", "eot_pgd:R=2",
      "autoattack(apgd_ce,apgd_dlr):R=2", "square:20q"}
  for name, ok in report["per_example_by_attack"].items():
    ok = np.array(ok)
    assert np.all(robust <= ok), name  # robust under the worst case => robust under each
    assert report["audited_robust_accuracy"] <= report["attacks"][name]["accuracy_on_attacked"]
    assert report["attacks"][name]["attacked"] == len(x)
  assert report["audited_robust_accuracy"] <= report["clean"]
  assert 0 <= report["prediction_disagreement"] <= 100


def test_eot_one_sample_equals_plain_pgd(tiny_models):
  _, cnn, x, y = tiny_models
  kwargs = dict(norm=np.inf, eps=0.2, eps_step=0.02, max_iter=10, num_random_init=1,
                verbose=False)
  np.random.seed(5)
  plain = ProjectedGradientDescent(attacks.classifier(cnn), **kwargs).generate(
      x, y=attacks.one_hot(y))
  np.random.seed(5)
  eot = ProjectedGradientDescent(audit.eot_classifier(cnn, 1), **kwargs).generate(
      x, y=attacks.one_hot(y))
  np.testing.assert_allclose(eot, plain, atol=1e-6)


def test_eot_averages_fresh_draws(tiny_models):
  bnn, _, x, y = tiny_models
  one, many = audit.eot_classifier(bnn, 1), audit.eot_classifier(bnn, 8)
  g1 = np.stack([one.loss_gradient(x[:4], attacks.one_hot(y[:4])) for _ in range(4)])
  g8 = np.stack([many.loss_gradient(x[:4], attacks.one_hot(y[:4])) for _ in range(4)])
  assert g8.std(0).mean() < g1.std(0).mean()


@contextlib.contextmanager
def posterior_scale(model, rho):
  """Sets every softplus-inverse posterior scale of ``model``'s head to ``rho``, then restores."""
  variables = [v for v in model.head.weights if "untransformed_scale" in v.name]
  assert variables
  saved = [v.numpy() for v in variables]
  try:
    for v in variables:
      v.assign(tf.fill(v.shape, rho))
    yield
  finally:
    for v, value in zip(variables, saved):
      v.assign(value)


def test_posterior_mean_model_matches_zero_variance_draws(tiny_models):
  bnn, _, x, _ = tiny_models
  with posterior_scale(bnn, -40.0):  # σ = softplus(-40) ≈ 0: every draw is the mean
    mean = audit.posterior_mean_model(bnn)
    assert not mean.bayesian
    np.testing.assert_allclose(mean(x).numpy(), bnn(x).numpy(), atol=1e-4)


def test_direction_diversity(tiny_models):
  bnn, _, x, y = tiny_models
  with posterior_scale(bnn, -40.0):  # identical draws: ΩM = 1, Var = 0, ΩS = -||u||_1
    same = audit.direction_diversity(bnn, x, y, batch_size=6)
    # numpy reference: the posterior-mean network's normalised cross-entropy gradients
    xt = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
      tape.watch(xt)
      ce = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=tf.cast(y, tf.int32), logits=audit.posterior_mean_model(bnn)(xt)))
    g = tape.gradient(ce, xt).numpy().reshape(len(x), -1)
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
  d = u.shape[1]
  np.testing.assert_allclose(same["omega_m"], 1.0, atol=1e-4)
  np.testing.assert_allclose(same["omega_v"], d * (1.0 / d) ** 2, rtol=1e-3)  # V3 at Var = 0
  np.testing.assert_allclose(same["omega_s"], -np.abs(u).sum(1).mean(), rtol=1e-3)
  assert same["sigma_max"] < 1e-5 and same["n"] == len(x)
  with posterior_scale(bnn, 0.0):  # σ ≈ 0.69: the draws' directions spread
    wide = audit.direction_diversity(bnn, x, y)
  assert wide["omega_m"] < 0.9 and wide["omega_m_independent"] == 0.5
  np.testing.assert_allclose(wide["sigma_median"], np.log(2.0), rtol=1e-6)
  with pytest.raises(ValueError, match="Bayesian"):
    audit.direction_diversity(audit.posterior_mean_model(bnn), x, y)


def test_dlr_loss_reference():
  logits = np.array([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 1.0, 0.5]], np.float32)
  labels = np.eye(4, dtype=np.float32)[[0, 0]]
  got = audit.DLRLoss(reduction=tf_keras.losses.Reduction.NONE)(labels, logits).numpy()
  # example 0: true class on top -> -(3 - 1) / (3 - 0.5); example 1: -(0 - 2) / (2 - 0.5)
  np.testing.assert_allclose(got, [-(3 - 1) / 2.5, 2 / 1.5], rtol=1e-6)


def test_sanity_checks_catch_a_broken_attack(tiny_models):
  _, cnn, x, y = tiny_models
  est = attacks.classifier(cnn)
  good = audit.sanity_numbers(est, x, y, 0.3, lambda e, s, n: attacks.pgd(est, e, s, n))
  # ART refuses a zero step; 1e-9 per step is as broken (it never leaves the clean input)
  broken = audit.sanity_numbers(est, x, y, 0.3, lambda e, s, n: attacks.pgd(est, e, 1e-9, n))
  for numbers in (good, broken):
    numbers.update(whitebox=0.0, blackbox=50.0)
  assert all(c["passed"] for c in audit.sanity_checks(good))
  failed = [c["check"] for c in audit.sanity_checks(broken) if not c["passed"]]
  assert "accuracy at L∞ ε=1 is 0%" in failed
  obfuscated = dict(good, whitebox=90.0, blackbox=50.0)
  assert not audit.sanity_checks(obfuscated)[-1]["passed"]
  non_monotone = dict(good, by_eps=[(0.0, 90.0), (0.1, 40.0), (0.3, 60.0)])
  assert not audit.sanity_checks(non_monotone)[1]["passed"]
