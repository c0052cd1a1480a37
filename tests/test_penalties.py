"""Each penalty against an independent numpy implementation and known values."""
import numpy as np
import pytest
import tensorflow as tf

from d3_tf import penalties


def np_unit(g):
  g = g.reshape(g.shape[0], -1).astype(np.float64)
  n = np.linalg.norm(g, axis=1, keepdims=True)
  return np.where(n > 0, g / np.where(n > 0, n, 1), 0)


def np_omegas(u, alpha=1.0):
  """Loops over examples and dims, straight from Eq. (14)-(18)."""
  k, n, d = u.shape
  out = {key: np.zeros(n) for key in ("m", "v1", "v2", "v3", "s")}
  for i in range(n):
    mean = [sum(u[j, i, dd] for j in range(k)) / k for dd in range(d)]
    var = [sum((u[j, i, dd] - mean[dd]) ** 2 for j in range(k)) / k for dd in range(d)]
    out["m"][i] = sum(m * m for m in mean)
    out["v1"][i] = -min(var)
    w = np.exp(-alpha * np.array(var) - np.max(-alpha * np.array(var)))
    w /= w.sum()
    out["v2"][i] = -sum(wd * vd for wd, vd in zip(w, var))
    out["v3"][i] = sum((vd - 1.0 / d) ** 2 for vd in var)
    out["s"][i] = -sum(np.abs(u[j, i]).sum() for j in range(k)) / k
  return out


@pytest.fixture
def random_u():
  rng = np.random.default_rng(0)
  return np_unit(rng.normal(size=(6 * 5, 17))).reshape(6, 5, 17).astype(np.float32)


@pytest.mark.parametrize("alpha", [0.5, 30.0])
def test_against_numpy_reference(random_u, alpha):
  ref = np_omegas(random_u.astype(np.float64), alpha)
  np.testing.assert_allclose(penalties.omega_mean(random_u), ref["m"], rtol=1e-5)
  np.testing.assert_allclose(penalties.omega_sparse(random_u), ref["s"], rtol=1e-5)
  for v in ("v1", "v2", "v3"):
    np.testing.assert_allclose(penalties.omega_var(random_u, v, alpha), ref[v], rtol=1e-4,
                               atol=1e-7)


def test_identical_draws():
  # All K draws equal -> Var = 0 everywhere: ΩM = ||u||² = 1, V1 = V2 = 0, V3 = D·(1/D)² = 1/D.
  rng = np.random.default_rng(1)
  one = np_unit(rng.normal(size=(3, 10)))
  u = np.repeat(one[None], 4, axis=0).astype(np.float32)
  np.testing.assert_allclose(penalties.omega_mean(u), np.ones(3), rtol=1e-6)
  np.testing.assert_allclose(penalties.omega_var(u, "v1"), np.zeros(3), atol=1e-7)
  np.testing.assert_allclose(penalties.omega_var(u, "v2"), np.zeros(3), atol=1e-7)
  np.testing.assert_allclose(penalties.omega_var(u, "v3"), np.full(3, 0.1), rtol=1e-5)
  np.testing.assert_allclose(penalties.omega_sparse(u), -np.abs(one).sum(1), rtol=1e-5)


def test_orthogonal_draws():
  # K = D orthonormal basis vectors: E[u] = 1/D per dim -> ΩM = 1/D; Var = 1/D - 1/D² per dim.
  d = 8
  u = np.eye(d, dtype=np.float32)[:, None, :]
  np.testing.assert_allclose(penalties.omega_mean(u), [1.0 / d], rtol=1e-6)
  var = 1.0 / d - 1.0 / d ** 2
  np.testing.assert_allclose(penalties.omega_var(u, "v1"), [-var], rtol=1e-5)
  np.testing.assert_allclose(penalties.omega_var(u, "v3"), [d * (var - 1.0 / d) ** 2], rtol=1e-4)
  np.testing.assert_allclose(penalties.omega_sparse(u), [-1.0], rtol=1e-6)
  # Eq. (12)-(13): total variance = 1 - ΩM for unit vectors.
  np.testing.assert_allclose(d * var, 1 - 1.0 / d, rtol=1e-6)


def test_antipodal_draws_zero_mean():
  u = np.stack([np.eye(4, dtype=np.float32)[:1], -np.eye(4, dtype=np.float32)[:1]])
  np.testing.assert_allclose(penalties.omega_mean(u), [0.0], atol=1e-7)


def test_v2_tends_to_v1(random_u):
  np.testing.assert_allclose(penalties.omega_var(random_u, "v2", alpha=1e6),
                             penalties.omega_var(random_u, "v1"), rtol=1e-3)


def test_bad_variant():
  with pytest.raises(ValueError, match="v4"):
    penalties.omega_var(np.zeros((2, 1, 3), np.float32), "v4")


def test_unit_vectors_norm_and_zero():
  g = np.random.default_rng(2).normal(size=(4, 3, 3, 1)).astype(np.float32)
  g[2] = 0.0
  g[3] *= 1e-9  # tiny but nonzero: still normalised
  u = penalties.unit_vectors(g).numpy()
  assert u.shape == (4, 9)
  np.testing.assert_allclose(np.linalg.norm(u, axis=1), [1, 1, 0, 1], rtol=1e-5)
  np.testing.assert_allclose(u[:2], np_unit(g[:2]), rtol=1e-5)


def test_unit_vectors_zero_gradient_has_finite_second_derivative():
  g = tf.Variable(tf.zeros((2, 5)))
  with tf.GradientTape() as tape:
    out = tf.reduce_sum(penalties.unit_vectors(g))
  grad = tape.gradient(out, g)
  assert np.all(np.isfinite(grad.numpy()))


def _tiny_model_outputs(x, w, labels, mode):
  logits = tf.tanh(tf.reshape(x, [x.shape[0], -1]) @ w)
  return penalties.scalar_outputs(logits, labels, mode)


@pytest.mark.parametrize("mode", penalties.Y_MODES)
def test_unit_gradients_match_finite_differences(mode):
  rng = np.random.default_rng(3)
  x = tf.constant(rng.normal(size=(3, 2, 2, 1)), tf.float64)
  labels = tf.constant([0, 2, 1])
  ws = [tf.constant(rng.normal(size=(4, 3)), tf.float64) for _ in range(2)]  # K = 2 "draws"
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    sums = [penalties.summed_outputs(tf.tanh(tf.reshape(x, [3, -1]) @ w), labels, mode)
            for w in ws]
  u = penalties.unit_gradients(tape, sums, x).numpy()
  num_out = 3 if mode == "all_logits" else 1
  assert u.shape == (num_out, 2, 3, 4)
  h = 1e-6
  for j in range(num_out):
    for k, w in enumerate(ws):
      fd = np.zeros((3, 4))
      for d in range(4):
        e = np.zeros((3, 4))
        e[:, d] = h
        e = tf.constant(e.reshape(3, 2, 2, 1))
        plus = _tiny_model_outputs(x + e, w, labels, mode)[:, j]
        minus = _tiny_model_outputs(x - e, w, labels, mode)[:, j]
        fd[:, d] = (plus - minus).numpy() / (2 * h)
      np.testing.assert_allclose(u[j, k], np_unit(fd), atol=1e-6)


def test_scalar_outputs_modes():
  logits = tf.constant([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
  labels = tf.constant([2, 0])
  np.testing.assert_allclose(penalties.scalar_outputs(logits, labels, "true_logit")[:, 0], [3, .5])
  lse = np.log(np.exp(logits.numpy()).sum(1))
  np.testing.assert_allclose(penalties.scalar_outputs(logits, labels, "loss")[:, 0],
                             lse - [3.0, 0.5], rtol=1e-6)
  with pytest.raises(ValueError, match="unknown y_mode"):
    penalties.scalar_outputs(logits, labels, "logit")


def test_penalty_terms_selects(random_u):
  terms = penalties.penalty_terms(random_u, "v1", which=("m", "v"))
  assert set(terms) == {"m", "v"}
  np.testing.assert_allclose(terms["v"], penalties.omega_var(random_u, "v1"))
  np.testing.assert_allclose(terms["m"], penalties.omega_mean(random_u))
