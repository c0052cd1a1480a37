"""The robustness audit: worst case, EOT, posterior mean, DLR, sanity checks that can fail."""
import contextlib

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from art.attacks.evasion import ProjectedGradientDescent

import d3_tf
from d3_tf import attacks, audit, data, models


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
  means = np.abs(np.concatenate([np.ravel(l.kernel_posterior.mean().numpy())
                                 for l in models.bayesian_layers(bnn.head)]))
  np.testing.assert_allclose(wide["weight_median"], np.median(means), rtol=1e-6)
  np.testing.assert_allclose(wide["sigma_over_weight"], np.median(np.log(2.0) / means),
                             rtol=1e-5)
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


def test_deterministic_model_worst_case_equals_expected(tiny_models):
  _, cnn, x, y = tiny_models
  report = audit.run_audit(cnn, x, y, 0.1, eot=(1, 4), steps=5, restarts=1, apgd_eot=4,
                           square_queries=10, sanity_n=8, passes=3, log=lambda s: None)
  assert not report["randomness"]["stochastic"]
  assert report["settings"]["eot"] == [1] and report["settings"]["apgd_eot"] == 1
  assert report["expected_robust_accuracy"] == report["audited_robust_accuracy"]
  assert report["expected"]["clean"]["accuracy"] == report["clean"]
  assert report["expected"]["robust"]["pass_std"] == 0.0
  broken = [b is not None for b in report["per_example_broken_by"]]
  assert broken == [not r for r in report["per_example_robust"]]


def coin_flip(x):
  """Logits of a model whose prediction is a fair coin flip between classes 0 and 1."""
  flip = tf.where(tf.random.uniform(tf.shape(x)[:1]) < 0.5, 1.0, -1.0)
  z = flip * (5.0 + 0.0 * tf.reduce_mean(x, axis=[1, 2, 3]))  # differentiable in x
  return tf.stack([z, -z] + [tf.zeros_like(z) - 10.0] * 8, axis=1)


def test_coin_flip_model_expected_half_and_warning():
  x = np.random.RandomState(0).rand(64, 4, 4, 1).astype(np.float32)
  y = np.zeros(64, np.int64)
  with pytest.warns(UserWarning, match="vary across forward passes"):
    report = audit.run_audit(coin_flip, x, y, 0.1, steps=3, square_queries=0, sanity_n=16,
                             protocol="standard", input_shape=(4, 4, 1), num_classes=10,
                             log=lambda s: None)
  assert report["randomness"]["stochastic"] and report["randomness"]["logits_vary_pct"] > 30
  assert abs(report["expected"]["clean"]["accuracy"] - 50.0) < 8.0
  assert abs(report["expected_robust_accuracy"] - 50.0) < 8.0  # the attacks cannot move it
  assert report["audited_robust_accuracy"] < 25.0  # the worst case counts the coin as attacks


def test_out_of_ball_transfer_set_refused_with_one_line(tiny_models):
  _, cnn, x, y = tiny_models
  far = np.clip(x + 0.2, 0.0, 1.0)
  far[3] = np.clip(x[3] + 0.5, 0, 1)
  with pytest.raises(d3_tf.settings.ConfigError) as info:
    audit.run_audit(cnn, x, y, 0.3, transfer_sets={"far": (far, y)}, log=lambda s: None)
  message = str(info.value)
  assert "example 3" in message and "beyond ε=0.3" in message and "\n" not in message
  for bad, what in (((x + 0.1), "outside [0, 1]"), ((x[:4], y[:4]), "shape"),
                    ((x, (y + 1) % 10), "labels not aligned")):
    with pytest.raises(d3_tf.settings.ConfigError, match=what.replace("[", r"\[")):
      audit.check_transfer_set("bad", x, y, *(bad if isinstance(bad, tuple) else (bad, y)),
                               0.3)
  audit.check_transfer_set("ok", x, y, np.clip(x + 0.3, 0, 1), y, 0.3)  # on the ball: accepted


def test_rand_protocol_end_to_end_and_not_attacked_marked(tiny_models):
  bnn, _, x, y = tiny_models
  report = audit.run_audit(bnn, x[:8], y[:8], 0.1, steps=3, sanity_n=4, passes=20,
                           protocol="rand", log=lambda s: None)
  assert list(report["attacks"]) == ["apgd_ce:R=20", "apgd_dlr:R=20"]
  assert report["randomness"]["stochastic"]
  assert 0 <= report["audited_robust_accuracy"] <= report["clean"]
  # the expected accuracy: the mean of the per-example hit rates, each a count over 20 passes
  per_example = np.array(report["per_example_expected"])
  np.testing.assert_allclose(per_example * 20, np.round(per_example * 20), atol=1e-3)
  np.testing.assert_allclose(report["expected_robust_accuracy"], 100 * per_example.mean(),
                             atol=1e-3)
  dlr = report["per_example_by_attack"]["apgd_dlr:R=20"]
  attacked = report["attacks"]["apgd_dlr:R=20"]["attacked"]
  assert sum(v is not None for v in dlr) == attacked  # unseen examples: None, not robust


def test_estimators_draw_independently_and_reproducibly(tiny_models):
  bnn, _, x, _ = tiny_models
  a, b = attacks.DrawAverage(bnn, seed=1), attacks.DrawAverage(bnn, seed=2)
  first_a, first_b = a(x).numpy(), b(x).numpy()
  assert not np.allclose(first_a, first_b)  # two estimators: two streams
  assert not np.allclose(first_a, a(x).numpy())  # one estimator: fresh draws per call
  again = attacks.DrawAverage(bnn, seed=1)
  np.testing.assert_allclose(again(x).numpy(), first_a, rtol=1e-5, atol=1e-5)  # reproducible
  target = audit.Target(bnn, seed=3)
  p, q = target.estimator(), target.estimator()
  assert not np.allclose(p.predict(x), q.predict(x))


def test_forward_pass_traced_once_for_ragged_batches(tiny_models):
  bnn, _, x, _ = tiny_models
  est = attacks.classifier(bnn, seed=0)
  est.predict(np.concatenate([x] * 9), batch_size=128)  # 144 images: batches of 128 and 16
  est.loss_gradient(x[:5], attacks.one_hot(np.zeros(5, np.int64)))
  assert est.model.tracing_count() == 1


def test_audit_binary_on_a_saved_keras_model_and_on_weights(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  keras_model = tf_keras.Sequential([tf_keras.Input((28, 28, 1)), tf_keras.layers.Flatten(),
                                     tf_keras.layers.Dense(10)])
  keras_model.save(tmp_path / "mlp.keras")
  d3_tf.build("mnist_cnn", bayesian=False, seed=3).save_weights(str(tmp_path / "cnn" / "w"))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop(data.ENV_VAR, None)  # the first test images of the embedded slice
  tiny = ["--dataset", "mnist", "--data_source", "embedded", "--n", "6", "--steps", "2",
          "--square_queries", "0", "--sanity_n", "4", "--passes", "3", "--protocol", "standard"]
  for name, extra in (("mlp", ["--model", "mlp.keras"]),
                      ("cnn", ["--model", "cnn/w.index", "--arch", "mnist_cnn"])):
    proc = subprocess.run([sys.executable, "-m", "experiments.audit", *extra, *tiny,
                           "--output_dir", name], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.load(open(tmp_path / name / "audit.json"))
    [row] = report["rows"].values()
    assert len(row["per_example"]) == 6 and {"robust", "broken_by", "expected"} <= set(
        row["per_example"][0])
    assert report["protocol"] == "standard" and row["settings"]["seed"] == 0
    assert row["audited_robust_accuracy"] == row["expected_robust_accuracy"]  # deterministic
  wrong = subprocess.run([sys.executable, "-m", "experiments.audit", "--model", "cnn/w.index",
                          "--arch", "vgg16", *tiny], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
  lines = [l for l in (wrong.stdout + wrong.stderr).splitlines() if l.strip()]
  assert wrong.returncode == 1 and lines[-1].startswith("error: --model cnn/w.index: not weights")
