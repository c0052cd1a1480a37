"""draws_mode="vectorized" against the reference K-loop, with the same weight samples."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import d3_tf
from d3_tf import attacks, vectorized

CASES = {  # arch -> (arch_kwargs, input shape)
    "mnist_cnn": (None, (28, 28, 1)),
    "vgg16": ({"width": 1 / 32}, (32, 32, 3)),  # Bayesian conv block + dense layers, BN trunk
}


def _pair(arch, **kwargs):
  """The same weights in both draws modes (reparameterization: samples can be injected)."""
  arch_kwargs = CASES[arch][0]
  models = {mode: d3_tf.build(arch, seed=1, estimator="reparameterization",
                              arch_kwargs=arch_kwargs, draws_mode=mode, **kwargs)
            for mode in ("loop", "vectorized")}
  models["vectorized"].set_weights(models["loop"].get_weights())
  for layer in vectorized.bayesian_in_order(models["loop"].head):
    # posterior σ ≈ 0.05 instead of 0.007, so that the draws differ visibly
    layer.kernel_posterior.distribution.scale.pretransformed_input.assign(
        tf.fill(layer.kernel_posterior.event_shape, -3.0))
  models["vectorized"].set_weights(models["loop"].get_weights())
  return models["loop"], models["vectorized"]


def _flat(grads):
  return tf.concat([tf.reshape(g, [-1]) for g in grads], 0)


def _inputs(arch, n=6):
  x = tf.random.stateless_uniform((n,) + CASES[arch][1], seed=[1, 2])
  return x, tf.constant(np.arange(n) % 10)


@pytest.mark.parametrize("arch,y_mode", [("mnist_cnn", "loss"), ("mnist_cnn", "all_logits"),
                                         ("vgg16", "loss")])
def test_vectorized_step_equals_loop(arch, y_mode):
  loop, vec = _pair(arch, num_draws=4, lambda_m=20.0, lambda_v=40.0, lambda_s=40.0,
                    y_mode=y_mode, n_train=100)
  x, y = _inputs(arch)
  noise = vectorized.kernel_noise(loop.head, 4, seed=7)
  out = {}
  spec = [tf.TensorSpec([None] + x.shape.as_list()[1:]), tf.TensorSpec([None], y.dtype)]
  for name, model, draws in (("loop", loop, noise), ("vec", vec, noise),
                             ("other draws", vec, vectorized.kernel_noise(loop.head, 4, seed=8))):
    # graph mode with an unknown batch size: vectorized_map inside double backprop
    @tf.function(input_signature=spec)
    def step(x, y, model=model, draws=draws):
      with tf.GradientTape() as tape:
        terms = model.compute_terms(x, y, training=True, noise=draws)
      return terms, tape.gradient(terms["loss"], model.trainable_variables)
    out[name] = step(x, y)
  (ta, ga), (tb, gb) = out["loop"], out["vec"]
  for key in ("loss", "ce", "kl", "omega_m", "omega_v", "omega_s", "logits"):
    np.testing.assert_allclose(ta[key], tb[key], rtol=1e-5, atol=1e-5, err_msg=key)
  ga, gb, g_other = _flat(ga), _flat(gb), _flat(out["other draws"][1])
  assert float(tf.norm(ga)) > 0
  # Relative to the whole gradient: conv biases in front of batch norm have a true gradient
  # of exactly 0, so their own relative error is rounding noise. The bound is float32
  # rounding of double backprop, whose summation order oneDNN picks per CPU (1.1e-5 was
  # measured on an AVX-512 Xeon, below 1e-5 elsewhere); other draws move it by O(1).
  relative = lambda g: float(tf.reduce_max(tf.abs(ga - g)) / tf.reduce_max(tf.abs(ga)))
  assert relative(gb) <= 5e-5
  assert relative(g_other) > 1e-2
  # the draws really differ (else the test could not tell draws apart)
  logits = loop.draw_logits(x, noise=noise)
  assert float(tf.reduce_max(tf.abs(logits[0] - logits[1]))) > 1e-3


@pytest.mark.parametrize("arch", sorted(CASES))
def test_bnn_logits_shared_first_layer(arch):
  """Without penalties the first Bayesian layer runs as ONE op over the K draws."""
  loop, vec = _pair(arch, num_draws=3)
  x, _ = _inputs(arch, n=4)
  noise = vectorized.kernel_noise(loop.head, 3, seed=3)
  np.testing.assert_allclose(tf.stack(loop.draw_logits(x, noise=noise)),
                             tf.stack(vec.draw_logits(x, noise=noise)), rtol=1e-5, atol=1e-5)
  h = vec.trunk(x)
  np.testing.assert_allclose(
      vectorized.apply_head(vec.head, h, noise),
      vectorized.apply_head(vec.head, tf.broadcast_to(h[None], [3] + h.shape.as_list()), noise,
                            per_draw_input=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", sorted(CASES))
def test_trunk_once_attack_gradient_equals_full_passes(arch):
  """∇_x CE(mean_k logits): trunk once (vectorized) == K full passes of the loop model."""
  loop, vec = _pair(arch, num_draws=3)
  x, y = _inputs(arch, n=4)
  noise = vectorized.kernel_noise(loop.head, 3, seed=5)

  def ce(logits):
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(y, tf.int32), logits=tf.add_n(logits) / 3.0))

  with tf.GradientTape() as tape:
    tape.watch(x)
    once = ce(vec.draw_logits(x, noise=noise))
  g_once = tape.gradient(once, x)
  with tf.GradientTape() as tape:
    tape.watch(x)
    full = ce([loop.draw_logits(x, noise=[e[k:k + 1] for e in noise])[0] for k in range(3)])
  g_full = tape.gradient(full, x)
  np.testing.assert_allclose(once, full, rtol=1e-5)
  np.testing.assert_allclose(g_once, g_full, rtol=1e-4, atol=1e-6 * float(tf.reduce_max(
      tf.abs(g_full))))


def test_vectorized_samples_follow_the_posterior():
  model = d3_tf.build("mnist_cnn", num_draws=2, draws_mode="vectorized")  # Flipout layers
  layer = vectorized.bayesian_in_order(model.head)[-1]
  # Seeded noise has one [K, *kernel] block per Bayesian layer, reproducibly; the 4,000 samples
  # are drawn for the last (smallest) layer only: for every layer they would be 3.9 GB (fc1
  # alone 1600 x 128 x 4000 floats), the test suite's former memory peak.
  few = vectorized.kernel_noise(model.head, 3, seed=0)
  assert [e.shape[0] for e in few] == [3] * len(vectorized.bayesian_in_order(model.head))
  np.testing.assert_array_equal(few[-1], vectorized.kernel_noise(model.head, 3, seed=0)[-1])
  eps = tf.random.stateless_normal([4000] + layer.kernel_posterior.event_shape.as_list(),
                                   seed=[0, 1])
  samples = vectorized.kernel_samples(layer, eps)
  post = layer.kernel_posterior
  np.testing.assert_allclose(tf.reduce_mean(samples, 0), post.mean(), atol=5 * 0.007 / 60)
  np.testing.assert_allclose(tf.math.reduce_std(samples, 0), post.stddev(), rtol=0.1)
  # fresh, distinct draws on every call
  x = tf.random.stateless_uniform((2, 28, 28, 1), seed=[0, 0])
  a, b = model.draw_logits(x), model.draw_logits(x)
  assert float(tf.reduce_max(tf.abs(a[0] - a[1]))) > 0 and \
      float(tf.reduce_max(tf.abs(a[0] - b[0]))) > 0


def test_vectorized_trains_and_attacks(mnist_small):
  x, y = mnist_small[0][:128], mnist_small[1][:128]
  model = d3_tf.build("mnist_cnn", num_draws=3, lambda_m=1.0, lambda_s=1.0, draws_mode="vectorized",
                      n_train=128)
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
  hist = model.fit(x, y, batch_size=32, epochs=2, verbose=0).history
  assert all(np.isfinite(v).all() for v in hist.values())
  assert hist["ce"][-1] < hist["ce"][0]
  est = attacks.classifier(model)
  grad = est.loss_gradient(x[:4], np.eye(10, dtype=np.float32)[y[:4]])
  assert grad.shape == x[:4].shape and np.isfinite(grad).all() and np.abs(grad).max() > 0


def test_vectorized_trains_with_subsampled_penalties_under_fit(mnist_small):
  """The long runs' step (reparam_conv, penalties on 16 examples, vectorized draws) under
  Keras fit, whose batch size is unknown: the per-draw head convolutions differentiate twice."""
  x, y = mnist_small[0][:128], mnist_small[1][:128]
  model = d3_tf.build("mnist_cnn", num_draws=3, lambda_m=10.0, estimator="reparam_conv",
                      draws_mode="vectorized", penalty_examples=16, n_train=128)
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
  hist = model.fit(x, y, batch_size=64, epochs=2, verbose=0).history
  assert all(np.isfinite(v).all() for v in hist.values())
  assert hist["omega_m"][-1] > 0


def test_unsupported_head_layer_is_refused():
  trunk, head = d3_tf.models.mnist_cnn()
  head = tf_keras.Sequential([tf_keras.Input(head.input_shape[1:]),
                              tf_keras.layers.BatchNormalization()] + head.layers)
  with pytest.raises(NotImplementedError, match="BatchNormalization"):
    d3_tf.D3Model(trunk, head, draws_mode="vectorized")
  with pytest.raises(ValueError, match="draws_mode"):
    d3_tf.D3Model(*d3_tf.models.mnist_cnn(), draws_mode="batched")


def test_attack_wrapper_vectorized_draws_of_a_loop_model():
  """A loop-trained Flipout model attacked with vectorized draws: same posterior mean."""
  model = d3_tf.build("mnist_cnn", num_draws=4)
  for layer in vectorized.bayesian_in_order(model.head):  # σ -> ~0: every draw is the mean
    layer.kernel_posterior.distribution.scale.pretransformed_input.assign(
        tf.fill(layer.kernel_posterior.event_shape, -30.0))
  x = tf.random.stateless_uniform((3, 28, 28, 1), seed=[4, 4]).numpy()
  y = np.eye(10, dtype=np.float32)[[1, 2, 3]]
  loop, vec = attacks.classifier(model), attacks.classifier(model, draws_mode="vectorized")
  np.testing.assert_allclose(loop.predict(x), vec.predict(x), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(loop.loss_gradient(x, y), vec.loss_gradient(x, y), rtol=1e-3,
                             atol=1e-6)
