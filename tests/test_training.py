"""Models and the K-draw train_step on tiny inputs and a few hundred real MNIST images."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import d3_tf
from d3_tf import data, models, training, vectorized


def _vgg_tiny(**kwargs):
  return d3_tf.build("vgg16", arch_kwargs={"width": 1 / 32}, **kwargs)


def test_head_draws_are_independent(mnist_small):
  x = mnist_small[0][:4]
  model = d3_tf.build("mnist_cnn", num_draws=5)
  draws = np.stack([l.numpy() for l in model.draw_logits(x)])
  for i in range(5):
    for j in range(i + 1, 5):
      assert np.abs(draws[i] - draws[j]).max() > 1e-4
  # the deterministic trunk does not vary
  np.testing.assert_array_equal(model.trunk(x).numpy(), model.trunk(x).numpy())


def test_conventional_model_is_deterministic(mnist_small):
  x = mnist_small[0][:4]
  model = d3_tf.build("mnist_cnn", bayesian=False, num_draws=10)
  assert model.num_draws == 1 and not model.bayesian
  np.testing.assert_allclose(model(x).numpy(), model(x).numpy())
  assert not model.head.losses or float(model.kl()) == 0.0
  with pytest.raises(ValueError, match="Bayesian head"):
    d3_tf.build("mnist_cnn", bayesian=False, lambda_m=1.0)


def test_same_shaped_bayesian_layers_differ():
  model = _vgg_tiny(seed=3)
  a, b = model.head.get_layer("conv5_2"), model.head.get_layer("conv5_3")
  assert a.kernel_posterior.mean().shape == b.kernel_posterior.mean().shape
  assert not np.allclose(a.kernel_posterior.mean(), b.kernel_posterior.mean())
  assert not np.allclose(a.kernel_posterior.stddev(), b.kernel_posterior.stddev())
  # same seed -> same initial weights (reproducible)
  again = _vgg_tiny(seed=3)
  np.testing.assert_array_equal(a.kernel_posterior.mean(),
                                again.head.get_layer("conv5_2").kernel_posterior.mean())


def test_call_averages_logits_of_draws(mnist_small):
  x = tf.constant(mnist_small[0][:8])
  model = d3_tf.build("mnist_cnn", num_draws=4)
  tf.random.set_seed(7)
  draws = model.draw_logits(x)
  tf.random.set_seed(7)
  np.testing.assert_allclose(model(x).numpy(), np.mean([d.numpy() for d in draws], 0), atol=1e-5)


def test_kl_scaled_by_n_train(mnist_small):
  model = d3_tf.build("mnist_cnn", n_train=1000)
  model.head(model.trunk(mnist_small[0][:2]))  # a top-level call: losses of that call only
  assert len(model.head.losses) == 3  # one KL per Bayesian layer
  total = float(tf.add_n(model.head.losses))
  assert total > 0
  np.testing.assert_allclose(float(model.kl()), total / 1000, rtol=1e-5)
  model(mnist_small[0][:2])  # K draws inside one call: losses pile up, kl() does not
  np.testing.assert_allclose(float(model.kl()), total / 1000, rtol=1e-5)


def test_penalty_gradient_reaches_trunk(mnist_small):
  x, y = tf.constant(mnist_small[0][:16]), tf.constant(mnist_small[1][:16])
  model = d3_tf.build("mnist_cnn", num_draws=3, lambda_m=1.0, lambda_v=1.0, lambda_s=1.0)
  with tf.GradientTape() as tape:
    terms = model.compute_terms(x, y)
  grads = tape.gradient(terms["omega_m"], model.trunk.trainable_variables)
  assert all(g is not None for g in grads)
  assert all(np.all(np.isfinite(g.numpy())) for g in grads)
  assert max(float(tf.reduce_max(tf.abs(g))) for g in grads) > 0
  for name in ("omega_m", "omega_v", "omega_s"):
    assert np.isfinite(float(terms[name]))
  # ΩM of unit vectors lies in [0, 1]; ΩS in [-sqrt(D), -1].
  assert 0.0 <= float(terms["omega_m"]) <= 1.0 + 1e-5
  assert -np.sqrt(784) - 1e-3 <= float(terms["omega_s"]) <= -1.0 + 1e-5


def test_all_logits_mode_averages_outputs(mnist_small):
  x, y = tf.constant(mnist_small[0][:4]), tf.constant(mnist_small[1][:4])
  model = d3_tf.build("mnist_cnn", num_draws=2, lambda_m=1.0, y_mode="all_logits")
  terms = model.compute_terms(x, y)
  assert np.isfinite(float(terms["omega_m"]))


def test_lambda_zero_skips_penalties():
  model = d3_tf.build("mnist_cnn", num_draws=2, lambda_m=0.0, lambda_s=2.0)
  assert model.active == ("s",)
  assert {m.name for m in model.metrics} == {"loss", "ce", "kl", "omega_s", "accuracy"}


def test_one_epoch_lowers_loss(mnist_small):
  x, y = mnist_small[0][:256], mnist_small[1][:256]
  model = d3_tf.build("mnist_cnn", num_draws=4, lambda_m=20, lambda_v=40, lambda_s=40,
                      n_train=60000)
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
  xb, yb = tf.constant(x[:64]), tf.constant(y[:64])
  tf.random.set_seed(1)
  before = float(model.compute_terms(xb, yb)["loss"])
  history = model.fit(data.make_dataset(x, y, 32, seed=0), epochs=1, verbose=0)
  tf.random.set_seed(1)
  after = float(model.compute_terms(xb, yb)["loss"])
  assert after < before
  for key in ("loss", "ce", "kl", "omega_m", "omega_v", "omega_s", "accuracy"):
    assert np.isfinite(history.history[key][-1]), key
  results = model.evaluate(x[:64], y[:64], verbose=0, return_dict=True)
  # At ρ₀ = −5 (σ ≈ 0.007) two K-draw averages agree on nearly every image: evaluate's accuracy
  # is that of the averaged logits' argmax, up to an image or two.
  predicted = np.argmax(model.predict(x[:64], verbose=0), axis=1)
  assert abs(results["accuracy"] - np.mean(predicted == y[:64])) <= 2 / 64


def test_tiny_vgg_trains_with_penalties():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(8, 32, 32, 3)).astype(np.float32)
  y = rng.integers(0, 10, size=8)
  model = _vgg_tiny(num_draws=2, lambda_m=10, lambda_s=20, n_train=8)
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
  history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
  assert np.isfinite(history.history["loss"][-1])


def test_bad_arguments():
  with pytest.raises(ValueError, match="unknown architecture"):
    d3_tf.build("resnet")
  with pytest.raises(ValueError, match="y_mode"):
    d3_tf.build("mnist_cnn", y_mode="logits")
  with pytest.raises(ValueError, match="estimator"):
    models.mnist_cnn(estimator="mc")


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_penalty_reduction_weights_omegas(mnist_small, reduction):
  x, y = tf.constant(mnist_small[0][:8]), tf.constant(mnist_small[1][:8])
  model = d3_tf.build("mnist_cnn", num_draws=3, lambda_m=20.0, lambda_v=40.0, lambda_s=40.0,
                      penalty_reduction=reduction, n_train=100)
  # graph mode with an unknown batch size, as under Keras fit
  spec = [tf.TensorSpec([None, 28, 28, 1]), tf.TensorSpec([None], y.dtype)]
  terms = tf.function(model.compute_terms, input_signature=spec)(x, y)
  scale = 1.0 if reduction == "sum" else 1.0 / 784
  expected = float(terms["ce"]) + float(terms["kl"]) + scale * (
      20 * float(terms["omega_m"]) + 40 * float(terms["omega_v"]) +
      40 * float(terms["omega_s"]))
  np.testing.assert_allclose(float(terms["loss"]), expected, rtol=1e-5)
  # the logged ΩS is the printed one: -E||u||_1 lies in [-sqrt(D), -1]
  assert -28.0 - 1e-3 <= float(terms["omega_s"]) <= -1.0 + 1e-5
  with pytest.raises(ValueError, match="penalty_reduction"):
    d3_tf.build("mnist_cnn", num_draws=2, lambda_m=1.0, penalty_reduction="max")


@pytest.mark.parametrize("arch,kwargs", [("mnist_cnn", {}), ("vgg16", {"width": 1 / 32})])
def test_posterior_init_reaches_every_bayesian_kernel(arch, kwargs):
  for init in (-5.0, -3.0):
    model = d3_tf.build(arch, arch_kwargs=dict(kwargs, posterior_init=init))
    for layer in models.bayesian_layers(model.head):
      sigma = layer.kernel_posterior.stddev().numpy()
      # softplus⁻¹σ ~ N(init, 0.1): the median σ is softplus(init)
      np.testing.assert_allclose(np.median(sigma), np.log1p(np.exp(init)), rtol=0.05)


def test_reparam_conv_estimator_layer_pair():
  """reparam_conv: Convolution2DReparameterization for conv layers, DenseFlipout for dense."""
  model = _vgg_tiny(estimator="reparam_conv")
  kinds = {type(l).__name__ for l in models.bayesian_layers(model.head)}
  assert kinds == {"Conv2DReparameterization", "DenseFlipout"}
  conv = model.head.get_layer("conv5_1")
  h = model.trunk(tf.random.uniform((4, 32, 32, 3)))
  # one kernel sample per call, shared by the batch: identical inputs give identical outputs
  out = conv(tf.concat([h[:1], h[:1]], 0)).numpy()
  np.testing.assert_allclose(out[0], out[1], atol=1e-5)
  dense = model.head.get_layer("fc1")
  flat = tf.ones((2, dense.kernel_posterior.event_shape[0]))
  out = dense(flat).numpy()  # Flipout: per-example sign flips, identical inputs differ
  assert np.abs(out[0] - out[1]).max() > 1e-4


def test_norm_floor_of_eq9():
  g = tf.constant([[3e-7, 4e-7], [3.0, 4.0], [0.0, 0.0]])
  strict = d3_tf.unit_vectors(g).numpy()            # floor 1e-24 on ||g||²
  np.testing.assert_allclose(np.linalg.norm(strict, axis=1), [1, 1, 0], rtol=1e-5)
  loose = d3_tf.unit_vectors(g, eps=1e-12).numpy()  # tf.math.l2_normalize's floor
  np.testing.assert_allclose(loose, tf.math.l2_normalize(g, axis=1).numpy(), rtol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(loose[0]), 5e-7 / 1e-6, rtol=1e-5)
  model = d3_tf.build("mnist_cnn", num_draws=2, lambda_m=1.0, norm_floor=1e-12)
  assert model.get_config()["norm_floor"] == 1e-12


def _fixed_draws_model(penalty_examples=0):
  tf_keras.utils.set_random_seed(1)
  return d3_tf.build("mnist_cnn", estimator="reparameterization", num_draws=3, lambda_m=20.0,
                     lambda_v=40.0, lambda_s=40.0, n_train=100,
                     penalty_examples=penalty_examples)


def _terms_and_grads(model, x, y, noise, fn=None, **kwargs):
  with tf.GradientTape() as tape:
    terms = (fn or model.compute_terms)(x, y, training=False, noise=noise, **kwargs)
  return terms, tape.gradient(terms["loss"], model.trainable_variables)


def test_penalty_examples_all_is_the_full_batch(mnist_small):
  x, y = tf.constant(mnist_small[0][:6]), tf.constant(mnist_small[1][:6])
  full, sub = _fixed_draws_model(0), _fixed_draws_model(6)
  noise = vectorized.kernel_noise(full.head, 3, seed=5)
  t_full, g_full = _terms_and_grads(full, x, y, noise)
  t_sub, g_sub = _terms_and_grads(sub, x, y, noise)
  for key in ("loss", "omega_m", "omega_v", "omega_s"):
    np.testing.assert_array_equal(t_full[key].numpy(), t_sub[key].numpy())
  for a, b in zip(g_full, g_sub):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  # with an unknown batch size (Keras fit) n = N takes every example in a shuffled order
  spec = [tf.TensorSpec([None, 28, 28, 1]), tf.TensorSpec([None], y.dtype)]
  graph = tf.function(lambda a, b, training, noise: sub.compute_terms(a, b, training, noise),
                      input_signature=spec + [tf.TensorSpec([], tf.bool),
                                              [tf.TensorSpec(n.shape) for n in noise]])
  t_graph = graph(x, y, tf.constant(False), noise)
  for key in ("loss", "omega_m", "omega_v", "omega_s"):
    np.testing.assert_allclose(t_full[key].numpy(), t_graph[key].numpy(), rtol=1e-5)


def test_penalty_subsample_is_unbiased_over_all_subsets(mnist_small):
  """The mean over all n-subsets of the subsampled penalty equals the full-batch penalty."""
  import itertools  # pylint: disable=g-import-not-at-top
  x, y = tf.constant(mnist_small[0][:5]), tf.constant(mnist_small[1][:5])
  model = _fixed_draws_model(2)
  noise = vectorized.kernel_noise(model.head, 3, seed=9)
  full, g_full = _terms_and_grads(model, x, y, noise, penalty_index=tf.range(5))
  subsets = list(itertools.combinations(range(5), 2))
  runs = [_terms_and_grads(model, x, y, noise, penalty_index=tf.constant(s)) for s in subsets]
  for key in ("loss", "ce", "omega_m", "omega_v", "omega_s"):
    mean = np.mean([terms[key].numpy() for terms, _ in runs])
    np.testing.assert_allclose(mean, full[key].numpy(), rtol=1e-5)
  for i, g in enumerate(g_full):  # the gradient too (the loss is linear in the penalties)
    mean = np.mean([grads[i].numpy() for _, grads in runs], axis=0)
    np.testing.assert_allclose(mean, g.numpy(), rtol=1e-4, atol=1e-6 * np.abs(g).max())
  # a single subset is a different, noisy value
  assert not np.isclose(runs[0][0]["omega_s"].numpy(), full["omega_s"].numpy())


def test_warm_start_makes_the_posterior_mean_the_conventional_net():
  from d3_tf import audit  # pylint: disable=g-import-not-at-top
  source = _vgg_tiny(bayesian=False, seed=3)
  model = _vgg_tiny(seed=0, estimator="reparam_conv")
  layers = models.bayesian_layers(model.head)
  sigma = [l.kernel_posterior.stddev().numpy() for l in layers]
  training.warm_start(model, source)
  x = np.random.RandomState(0).rand(4, 32, 32, 3).astype("float32")
  np.testing.assert_allclose(audit.posterior_mean_model(model)(x).numpy(), source(x).numpy(),
                             rtol=1e-5, atol=1e-5)
  for layer, before in zip(layers, sigma):  # σ keeps its own initial value
    np.testing.assert_array_equal(layer.kernel_posterior.stddev().numpy(), before)
  np.testing.assert_array_equal(model.trunk(x).numpy(), source.trunk(x).numpy())
  assert not np.allclose(model(x).numpy(), source(x).numpy(), atol=1e-6)  # draws still vary
