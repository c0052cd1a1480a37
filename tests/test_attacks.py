"""ART attacks on a tiny trained conventional model; the K-draw wrapper; saved sets."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import d3_tf
from d3_tf import advsets, attacks, data


@pytest.fixture(scope="module")
def trained_cnn():
  (x, y), (xt, yt) = data.load_mnist(source="embedded", n_train=1024, n_test=64)
  tf_keras.utils.set_random_seed(0)
  model = d3_tf.build("mnist_cnn", bayesian=False, seed=0)
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
  model.fit(data.make_dataset(x, y, 64, seed=0), epochs=2, verbose=0)
  return model, xt, yt


def test_attack_ordering_and_balls(trained_cnn):
  model, x, y = trained_cnn
  est = attacks.classifier(model)
  clean = attacks.robust_accuracy(est, x, y, None)
  assert clean["clean"] == clean["adversarial"] > 70.0
  assert attacks.robust_accuracy(model, x, y, None)["clean"] == clean["clean"]  # model wrapped
  fg = attacks.robust_accuracy(est, x, y, attacks.fgsm(est, 0.3), return_adv=True)
  pg = attacks.robust_accuracy(est, x, y, attacks.pgd(est, 0.3, 0.01, 40), return_adv=True)
  assert pg["adversarial"] <= fg["adversarial"] <= clean["clean"]
  assert attacks.white_box(est, x, y, 0.3, 0.01, 40) == {  # deterministic model: same numbers
      "clean": clean["clean"], "fgsm": fg["adversarial"], "pgd": pg["adversarial"]}
  for res in (fg, pg):
    assert np.abs(res["x_adv"] - x).max() <= 0.3 + 1e-6
    assert res["x_adv"].min() >= 0.0 and res["x_adv"].max() <= 1.0
    assert np.abs(res["x_adv"] - x).max() > 0.29  # the attack did move


def test_l2_attack_stays_in_ball(trained_cnn):
  model, x, y = trained_cnn
  est = attacks.classifier(model)
  res = attacks.robust_accuracy(est, x, y, attacks.pgd(est, 1.5, 0.1, 20, norm="l2"),
                                return_adv=True)
  norms = np.linalg.norm((res["x_adv"] - x).reshape(len(x), -1), axis=1)
  assert norms.max() <= 1.5 + 1e-4 and norms.max() > 1.0
  assert res["adversarial"] <= res["clean"]


def test_eps_one_breaks_everything(trained_cnn):
  model, x, y = trained_cnn
  est = attacks.classifier(model)
  res = attacks.robust_accuracy(est, x[:32], y[:32], attacks.pgd(est, 1.0, 0.1, 20))
  assert res["adversarial"] == 0.0


def test_budget_sweep(trained_cnn):
  model, x, y = trained_cnn
  est = attacks.classifier(model)
  rows = attacks.budget_sweep(est, x[:32], y[:32], [0.0, 0.1, 0.3], max_iter=10)
  accs = [r["accuracy"] for r in rows]
  assert accs[0] == attacks.robust_accuracy(est, x[:32], y[:32])["clean"]
  assert accs[0] >= accs[1] >= accs[2]


class _StubDraws:
  """K fixed linear 'draws': a known function whose K-draw average we can differentiate."""
  bayesian = True
  num_draws = 3

  def __init__(self):
    rng = np.random.default_rng(0)
    self.ws = [tf.constant(rng.normal(size=(16, 4)), tf.float32) for _ in range(3)]
    self.trunk = tf_keras.Sequential([tf_keras.Input((4, 4, 1))])
    self.head = tf_keras.Sequential([tf_keras.Input((4, 4, 1)), tf_keras.layers.Flatten(),
                                     tf_keras.layers.Dense(4)])
    self.trainable_variables = []

  def draw_logits(self, x, training=False, num_draws=None):
    flat = tf.reshape(x, [-1, 16])
    return [tf.tanh(flat @ w) * 3.0 for w in self.ws[:num_draws or 3]]


def test_wrapper_gradient_is_gradient_of_mean_logit():
  stub = _StubDraws()
  est = attacks.classifier(stub)
  assert est.nb_classes == 4 and est.input_shape == (4, 4, 1)
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(5, 4, 4, 1)).astype(np.float32)
  y = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]
  art_grad = est.loss_gradient(x, y)
  # Finite differences of the CE of the averaged logits, in float64.
  def loss(xv):
    flat = xv.reshape(len(xv), 16).astype(np.float64)
    logits = np.mean([np.tanh(flat @ w.numpy().astype(np.float64)) * 3 for w in stub.ws], 0)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -(y * logp).sum(1)
  fd = np.zeros_like(x, dtype=np.float64)
  h = 1e-5
  for i in range(16):
    e = np.zeros((16,))
    e[i] = h
    e = e.reshape(1, 4, 4, 1)
    fd.reshape(5, 16)[:, i] = (loss(x + e) - loss(x - e)) / (2 * h)
  np.testing.assert_allclose(art_grad, fd, atol=1e-4)
  # and the predictions are the averaged logits
  pred = est.predict(x)
  np.testing.assert_allclose(pred, np.mean([d.numpy() for d in stub.draw_logits(x)], 0),
                             atol=1e-5)


def test_wrapper_uses_k_draws_of_a_bayesian_model(mnist_small):
  model = d3_tf.build("mnist_cnn", num_draws=4)
  assert attacks.DrawAverage(model).num_draws == 4
  assert attacks.DrawAverage(model, num_draws=2).num_draws == 2
  est = attacks.classifier(model, num_draws=50)
  x = mnist_small[2][:8]
  # averaging 50 draws is much less noisy than one draw
  single = attacks.classifier(model, num_draws=1)
  one = np.stack([single.predict(x) for _ in range(4)])
  assert one.std(0).mean() > 0  # successive calls draw fresh weights
  many = np.stack([est.predict(x) for _ in range(4)])
  assert many.std(0).mean() < one.std(0).mean()


def test_saved_set_round_trip_and_cache(trained_cnn, tmp_path):
  model, x, y = trained_cnn
  path = str(tmp_path / "bb" / "set.npz")
  xa, ya, meta = advsets.generate_or_load(path, model, x[:16], y[:16], 0.3, 0.05, 5,
                                          source_name="cnn", seed=3)
  assert meta["eps"] == 0.3 and meta["max_iter"] == 5 and meta["source"] == "cnn"
  assert meta["seed"] == 3 and "source_adversarial_accuracy" in meta
  x2, y2, meta2 = advsets.load(path)
  np.testing.assert_array_equal(x2, xa)
  np.testing.assert_array_equal(y2, y[:16])
  assert meta2 == meta
  mtime = os.path.getmtime(path)
  advsets.generate_or_load(path, model, x[:16], y[:16], 0.3, 0.05, 5, source_name="cnn", seed=3)
  assert os.path.getmtime(path) == mtime  # reused
  old = model.weights[0].numpy()
  model.weights[0].assign(old + 0.01)
  try:
    _, _, meta3 = advsets.generate_or_load(path, model, x[:16], y[:16], 0.3, 0.05, 5,
                                           source_name="cnn", seed=3)
  finally:
    model.weights[0].assign(old)
  assert meta3["source_fingerprint"] != meta["source_fingerprint"]  # regenerated
  xx, yy = advsets.append(x[:16], y[:16], xa, ya)
  assert xx.shape[0] == 32 and yy.shape == (32,)


def test_saved_set_resumes_a_killed_run_at_its_next_chunk(trained_cnn, tmp_path, monkeypatch):
  model, x, y = trained_cnn
  args = (model, x[:40], y[:40], 0.3, 0.05, 5)
  whole, _, meta = advsets.generate_or_load(str(tmp_path / "whole.npz"), *args, batch_size=8,
                                            chunk=100)
  path = str(tmp_path / "chunked.npz")
  real, calls = attacks.robust_accuracy, []

  def killed_after_two_chunks(*a, **k):
    calls.append(len(a[1]))
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real(*a, **k)

  monkeypatch.setattr(attacks, "robust_accuracy", killed_after_two_chunks)
  with pytest.raises(KeyboardInterrupt):
    advsets.generate_or_load(path, *args, batch_size=8, chunk=2)
  assert not os.path.exists(path) and advsets.load(path + ".partial.npz")[0].shape[0] == 32
  calls.clear()
  monkeypatch.setattr(attacks, "robust_accuracy", lambda *a, **k: calls.append(len(a[1])) or
                      real(*a, **k))
  xa, ya, meta2 = advsets.generate_or_load(path, *args, batch_size=8, chunk=2)
  assert calls == [8]  # only the images not done yet
  np.testing.assert_array_equal(xa, whole)  # the same batches: the same examples
  np.testing.assert_array_equal(ya, y[:40])
  assert meta2 == meta and not os.path.exists(path + ".partial.npz")
  # a partial set made with other settings is not resumed
  advsets.save(path + ".partial.npz", whole[:16], y[:16], dict(meta, eps=0.1, clean_hits=0,
                                                                 adversarial_hits=0))
  os.remove(path)
  calls.clear()
  advsets.generate_or_load(path, *args, batch_size=8, chunk=2)
  assert calls == [16, 16, 8]


def test_trunk_once_equals_full_passes(mnist_small):
  model = d3_tf.build("mnist_cnn", num_draws=3)
  x = tf.constant(mnist_small[2][:4])
  y = np.eye(10, dtype=np.float32)[mnist_small[3][:4]]
  grads = {}
  for trunk_once in (True, False):
    est = attacks.classifier(model, trunk_once=trunk_once)
    tf.random.set_seed(11)
    grads[trunk_once] = (est.predict(x.numpy()), est.loss_gradient(x.numpy(), y))
  np.testing.assert_allclose(grads[True][0], grads[False][0], atol=1e-5)
  np.testing.assert_allclose(grads[True][1], grads[False][1], atol=1e-5)
