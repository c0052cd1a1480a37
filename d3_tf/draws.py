"""The K draws of a D3Model's Bayesian head: their logits and input directions (Eq. 9).

Two engines with one signature, ``engine(model, x, y, training, noise, directions)`` →
``(logits [K, N, M], u [J, K, N, D] or None)``; the directions u are computed when
``directions`` is True. ``noise`` (optional, ``vectorized.kernel_noise``) fixes the K weight
samples, so that both engines can be compared on the same draws.

- ``loop``: the head called K times on one trunk output, each call drawing fresh weights; K
  backward passes through head and trunk for the input gradients (the paper's K passes; the
  reference).
- ``batched``: the K weight samples of every Bayesian layer drawn at once and run as one batched
  computation, with one (vectorised) trunk backward pass for the K input gradients
  (``d3_tf.vectorized``). Same distribution of draws; faster where batching pays
  (benchmarks/train_step.py).
"""

import tensorflow as tf

from d3_tf import penalties, vectorized


def loop(model, x, y, training, noise, directions):
  """K head calls on one trunk output; K backward passes for the input gradients."""
  with tf.GradientTape(persistent=True) as input_tape:
    input_tape.watch(x)
    logits = model.draw_logits(x, training=training, noise=noise, draws_mode="loop")
    sums = [penalties.summed_outputs(l, y, model.y_mode) for l in logits] \
        if directions else None
  u = penalties.unit_gradients(input_tape, sums, x, model.norm_floor) if directions else None
  del input_tape
  return tf.stack(logits), u


def batched(model, x, y, training, noise, directions):
  """The K draws batched; one head and one (vectorised) trunk backward pass."""
  k = model.num_draws
  noise = noise if noise is not None else vectorized.kernel_noise(model.head, k)
  if not directions:
    return vectorized.apply_head(model.head, model.trunk(x, training=training), noise), None
  with tf.GradientTape(persistent=True) as input_tape:
    input_tape.watch(x)
    h = model.trunk(x, training=training)
    # A per-draw copy of h separates the K cotangents in one head backward pass.
    h_k = tf.broadcast_to(h[None], tf.concat([[k], tf.shape(h)], 0))
    logits = vectorized.apply_head(model.head, h_k, noise, per_draw_input=True)
    outputs = penalties.scalar_outputs(
        tf.reshape(logits, [-1, logits.shape[-1]]), tf.tile(y, [k]), model.y_mode)
    sums = [tf.reduce_sum(outputs[:, j]) for j in range(outputs.shape[-1])]
  u = []
  for total in sums:
    grads = vectorized.trunk_vjp(input_tape, h, x, input_tape.gradient(total, h_k))
    u.append(tf.reshape(penalties.unit_vectors(tf.reshape(grads, [-1] + x.shape.as_list()[1:]),
                                               model.norm_floor),
                        [k, -1, grads.shape[2:].num_elements()]))
  del input_tape
  return logits, tf.stack(u)


# By the settings' draws mode (settings.DRAWS_MODES).
ENGINES = {"loop": loop, "vectorized": batched}
