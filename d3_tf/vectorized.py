"""K Bayesian draws in one batched computation (the fast path of ``D3Model``).

The faithful reference calls the Bayesian head K times (``draws_mode="loop"``),
each call drawing fresh weights. Here the K weight samples of every Bayesian
layer are drawn at once, θ_k = μ + σ ⊙ ε_k with ε_k ~ N(0, I) (K DISTINCT
samples per layer, never one sample shared by tiled inputs), and applied
together:

- a Bayesian dense layer is one batched matmul over the draw axis; when its
  input is still shared by the draws it is ONE matmul with K·O output units;
- a Bayesian conv layer with a shared input is one convolution, the K kernels
  concatenated along the output channels; with per-draw inputs it is K
  convolutions, one per draw (TF's CPU kernels cannot differentiate a grouped
  convolution under an unknown batch size);
- pooling, flattening and activations run on the K·N rows at once.

Every sample is shared by the whole batch, as in the reparameterization
estimator: a Flipout layer's per-example sign flips (a variance-reduction
device, Sec. 5.2.1) are not reproduced; each draw is an exact sample of the
same posterior. Per-draw input gradients (Eq. 9) take ONE backward pass through
the batched head and ONE batched vector-Jacobian product of the K·N
cotangents through the trunk (``tf.vectorized_map`` over the trunk's
``output_gradients``); both support double backprop.
"""

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

tfpl = tfp.layers
tfd = tfp.distributions
_CONV = (tfpl.Convolution2DFlipout, tfpl.Convolution2DReparameterization)
_DENSE = (tfpl.DenseFlipout, tfpl.DenseReparameterization)
_PER_ROW = (tf_keras.layers.MaxPooling2D, tf_keras.layers.AveragePooling2D,
            tf_keras.layers.Flatten, tf_keras.layers.ReLU, tf_keras.layers.Activation)


def head_layers(head):
  """The head's layers in call order; raises for layers the batched path cannot run."""
  layers = [l for l in head.layers if not isinstance(l, tf_keras.layers.InputLayer)]
  for layer in layers:
    if not isinstance(layer, _CONV + _DENSE + _PER_ROW):
      raise NotImplementedError(
          f"draws_mode='vectorized' does not support layer {layer.name} "
          f"({type(layer).__name__}) in the head; use draws_mode='loop'")
  return layers


def bayesian_in_order(head):
  """The Bayesian layers of ``head`` in call order (the order of ``kernel_noise``)."""
  return [l for l in head_layers(head) if isinstance(l, _CONV + _DENSE)]


def kernel_noise(head, num_draws, seed=None):
  """ε for every Bayesian layer of ``head``: a list of [K, *kernel_shape] N(0, 1) tensors."""
  noise = []
  for i, layer in enumerate(bayesian_in_order(head)):
    shape = [num_draws] + layer.kernel_posterior.event_shape.as_list()
    noise.append(tf.random.normal(shape) if seed is None else
                 tf.random.stateless_normal(shape, seed=[seed, i]))
  return noise


def kernel_samples(layer, eps):
  """θ_k = μ + σ ⊙ ε_k for one layer: [K, *kernel_shape], differentiable in μ and σ."""
  posterior = layer.kernel_posterior
  return posterior.mean()[None] + posterior.stddev()[None] * eps


def bias_samples(layer, num_draws):
  """The bias of each draw, [K, units] (a deterministic bias posterior repeats its loc)."""
  if getattr(layer, "bias_posterior", None) is None:
    return None
  posterior = layer.bias_posterior
  dist = getattr(posterior, "distribution", posterior)
  if isinstance(dist, tfd.Deterministic):
    return tf.broadcast_to(posterior.mean()[None], [num_draws] + posterior.mean().shape.as_list())
  return posterior.sample(num_draws)


def _conv(layer, h, kernels, shared):
  """One Bayesian conv layer for K kernels [K, kh, kw, C, O] -> [K, N, H', W', O]."""
  num_draws, kh, kw, c, o = kernels.shape
  conv = lambda inputs, kernel: tf.nn.conv2d(inputs, kernel, strides=layer.strides,
                                             padding=layer.padding.upper(),
                                             dilations=layer.dilation_rate)
  if not shared:  # [K, N, H, W, C]: one convolution per draw, stacked on the draw axis
    # (TF's CPU kernels have no gradient for the grouped convolution that would do it in one
    # op once the batch size is unknown, as under Keras fit).
    return tf.stack([conv(h[k], kernels[k]) for k in range(num_draws)])
  stacked = tf.reshape(tf.transpose(kernels, [1, 2, 3, 0, 4]), [kh, kw, c, num_draws * o])
  out = conv(h, stacked)
  shape = tf.shape(out)
  return tf.transpose(tf.reshape(out, [shape[0], shape[1], shape[2], num_draws, o]),
                      [3, 0, 1, 2, 4])


def _dense(h, kernels, shared):
  """One Bayesian dense layer for K kernels [K, I, O] -> [K, N, O]."""
  num_draws, i, o = kernels.shape
  if shared:  # one matmul with K*O output units
    out = tf.matmul(h, tf.reshape(tf.transpose(kernels, [1, 0, 2]), [i, num_draws * o]))
    return tf.transpose(tf.reshape(out, [-1, num_draws, o]), [1, 0, 2])
  return tf.matmul(h, kernels)


def _per_row(layer, h, num_draws):
  """A layer without weights on [K, N, ...] (runs on the K*N rows at once)."""
  shape = tf.shape(h)
  out = layer(tf.reshape(h, tf.concat([[num_draws * shape[1]], shape[2:]], 0)))
  return tf.reshape(out, tf.concat([[num_draws, shape[1]], tf.shape(out)[1:]], 0))


def apply_head(head, h, noise, per_draw_input=False):
  """Logits of all K draws of ``head`` in one batched computation.

  Args:
    head: a tf_keras Sequential head (Bayesian conv/dense, pooling, flatten,
      activations).
    h: trunk output, [N, ...] shared by the draws, or [K, N, ...] per draw
      when ``per_draw_input`` (needed to separate the K input gradients).
    noise: ε per Bayesian layer from :func:`kernel_noise` (fixes the K samples).
    per_draw_input: see ``h``.

  Returns:
    [K, N, M] logits.
  """
  num_draws = noise[0].shape[0]
  shared = not per_draw_input
  eps = iter(noise)
  for layer in head_layers(head):
    if isinstance(layer, _CONV + _DENSE):
      kernels = kernel_samples(layer, next(eps))
      h = _conv(layer, h, kernels, shared) if isinstance(layer, _CONV) else \
          _dense(h, kernels, shared)
      bias = bias_samples(layer, num_draws)
      if bias is not None:
        h += tf.reshape(bias, [num_draws, 1] + [1] * (len(h.shape) - 3) + [bias.shape[-1]])
      if layer.activation is not None:
        h = layer.activation(h)
      shared = False
    elif shared:
      h = layer(h)
    else:
      h = _per_row(layer, h, num_draws)
  if shared:  # a head without Bayesian layers: the same logits for every draw
    h = tf.broadcast_to(h[None], tf.concat([[num_draws], tf.shape(h)], 0))
  return h


def trunk_vjp(tape, h, x, cotangents):
  """Per-draw input gradients J_trunk(x)ᵀ g_k for K cotangents [K, N, ...] at once.

  ``tape`` must be persistent and have recorded ``h = trunk(x)`` with ``x``
  watched. One vectorised backward pass of K·N rows instead of K passes.
  """
  return tf.vectorized_map(lambda g: tape.gradient(h, x, output_gradients=g), cotangents)
