"""The diversity penalties of Bender et al. (2020), Sections 3-4.

Notation: K Bayesian draws θ_k, N examples x_n, D input dimensions (784 for
MNIST, 3072 for CIFAR-10). ``u`` always has shape [K, N, D]: for draw k and
example n, the unit vector u_{k,n} = ∇_x y(x_n; θ_k) / ||∇_x y(x_n; θ_k)||_2
over the flattened INPUT (Eq. 9). Expectations E[.] and variances Var[.] are
taken over the K draws, per example and per input dimension d; variances are
population variances (divide by K), as in Eq. (12)-(13). Every penalty returns
one value per example, shape [N]; the loss averages them over the batch
(Eq. 19).
"""

import tensorflow as tf

from d3_tf.settings import NORM_FLOOR, Y_MODES  # noqa: F401  (re-exported: the y choices of Eq. 9)

# Floor on the squared gradient norm in Eq. (9): a zero gradient maps to the
# zero vector (no NaN, finite second derivatives) while gradients with norm
# down to 1e-12 are still normalised exactly. ``tf.math.l2_normalize`` computes
# the same expression with a floor of 1e-12 (norms below 1e-6 are not
# normalised to 1); D3Model's ``norm_floor`` selects either.
NORM_EPS = NORM_FLOOR



def unit_vectors(grads, eps=NORM_EPS):
  """Eq. (9): u = ∇y / ||∇y||_2, each example's gradient flattened to length D.

  Args:
    grads: [N, *input_shape] gradients of one draw w.r.t. the input.
    eps: floor on the squared norm (zero gradient -> zero vector, not NaN).

  Returns:
    [N, D] unit vectors.
  """
  grads = tf.convert_to_tensor(grads)
  flat = tf.reshape(grads, [tf.shape(grads)[0], -1])
  sq = tf.reduce_sum(tf.square(flat), axis=-1, keepdims=True)
  return flat * tf.math.rsqrt(tf.maximum(sq, eps))


def unit_gradients(tape, summed_outputs, x, eps=NORM_EPS):
  """Eq. (9) for every draw and every scalar output: u[j, k, n, :].

  Args:
    tape: a persistent ``tf.GradientTape`` that watched ``x`` and recorded the
      K draws' forward passes AND the batch sums in ``summed_outputs`` (ops
      outside the tape are invisible to it). Run this inside an outer tape to
      differentiate the penalties w.r.t. the parameters (double backprop).
    summed_outputs: K lists of J scalars, Σ_n y_j(x_n; θ_k) from
      :func:`summed_outputs`. Since example n's output depends only on x_n,
      the gradient of the sum w.r.t. x holds every per-example gradient.
    x: [N, *input_shape] the network input.
    eps: floor on the squared norm (see :func:`unit_vectors`).

  Returns:
    [J, K, N, D] unit gradient directions: one [K, N, D] block per output.
  """
  num_outputs = len(summed_outputs[0])
  return tf.stack([tf.stack([unit_vectors(tape.gradient(sums[j], x), eps)
                             for sums in summed_outputs])
                   for j in range(num_outputs)])


def summed_outputs(logits, labels, y_mode):
  """Σ_n y_j(x_n) for each scalar output j of one draw: a list of J scalars.

  Call inside the tape given to :func:`unit_gradients`.
  """
  y = scalar_outputs(logits, labels, y_mode)
  return [tf.reduce_sum(y[:, j]) for j in range(y.shape[-1])]


def scalar_outputs(logits, labels, y_mode):
  """The scalar output(s) y whose input gradient is normalised in Eq. (9).

  The paper assumes "only one output y" (Sec. 3) without saying which for a
  classifier. Three readings:
    - "loss": the draw's per-example cross-entropy, the direction that FGSM
      and PGD follow (default);
    - "true_logit": the logit of the true class;
    - "all_logits": every one of the M logits; penalties are computed per
      output and averaged over the M outputs (M times more backward passes).

  Args:
    logits: [N, M] logits of one draw.
    labels: [N] int class indices.
    y_mode: one of Y_MODES.

  Returns:
    [N, J] outputs, J = 1 except for "all_logits" where J = M.
  """
  labels = tf.cast(labels, tf.int32)
  if y_mode == "loss":
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return ce[:, None]
  if y_mode == "true_logit":
    return tf.gather(logits, labels, batch_dims=1)[:, None]
  if y_mode == "all_logits":
    return logits
  raise ValueError(f"unknown y_mode {y_mode!r}; choose from {Y_MODES}")


def _moments(u):
  u = tf.convert_to_tensor(u, dtype_hint=tf.float32)
  mean = tf.reduce_mean(u, axis=0)                       # E_k[u_{k,n,d}], [N, D]
  var = tf.reduce_mean(tf.square(u - mean), axis=0)      # population Var_k, [N, D]
  return u, mean, var


def omega_mean(u):
  """Eq. (14): ΩM(x) = Σ_d E[u_d]², the mean penalty.

  By Eq. (12)-(13), Σ_d Var[u_d] = 1 − ΩM for unit vectors, so minimising ΩM
  maximises the total variance of the gradient direction over draws.

  Args:
    u: [K, N, D] unit gradient directions.

  Returns:
    [N] penalty per example.
  """
  _, mean, _ = _moments(u)
  return tf.reduce_sum(tf.square(mean), axis=-1)


def omega_var(u, variant="v3", alpha=1.0):
  """Eq. (15)-(17): the variance penalties ΩV.

  - "v1", Eq. (15): ΩV,1 = −min_d Var[u_d].
  - "v2", Eq. (16): ΩV,2 = −Σ_d softmin_d(α·Var[u_d]) · Var[u_d]. The paper
    writes the softmin argument as α·u_{y,d}; since u_{y,d} varies over draws
    while the softmin must weight dimensions, we read it as the softmin over d
    of α times the per-dimension variance. This makes Eq. (16) the smooth form
    of Eq. (15) (ΩV,2 → ΩV,1 as α → ∞; uniform weights as α → 0).
  - "v3", Eq. (17): ΩV,3 = Σ_d (Var[u_d] − 1/D)², the squared distance to the
    variance of a uniform direction on the sphere; the paper's choice.

  Args:
    u: [K, N, D] unit gradient directions.
    variant: "v1", "v2" or "v3".
    alpha: softmin temperature for "v2".

  Returns:
    [N] penalty per example.
  """
  _, _, var = _moments(u)
  if variant == "v1":
    return -tf.reduce_min(var, axis=-1)
  if variant == "v2":
    weights = tf.nn.softmax(-alpha * var, axis=-1)
    return -tf.reduce_sum(weights * var, axis=-1)
  if variant == "v3":
    d = tf.cast(tf.shape(var)[-1], var.dtype)
    return tf.reduce_sum(tf.square(var - 1.0 / d), axis=-1)
  raise ValueError(f"unknown variance variant {variant!r}; choose v1, v2 or v3")


def omega_sparse(u):
  """Eq. (18): ΩS(x) = −E[||u||_1], the non-sparse penalty.

  Args:
    u: [K, N, D] unit gradient directions.

  Returns:
    [N] penalty per example.
  """
  u = tf.convert_to_tensor(u, dtype_hint=tf.float32)
  return -tf.reduce_mean(tf.reduce_sum(tf.abs(u), axis=-1), axis=0)


def penalty_terms(u, variant="v3", alpha=1.0, which=("m", "v", "s")):
  """The per-example penalties named in ``which``: {"m": Eq. 14, "v": Eq. 15-17, "s": Eq. 18}.

  Args:
    u: [K, N, D] unit gradient directions.
    variant, alpha: see :func:`omega_var`.
    which: penalty names to compute (the others cost nothing).

  Returns:
    dict name -> [N] tensor.
  """
  fns = {"m": omega_mean,
         "v": lambda v: omega_var(v, variant, alpha),
         "s": omega_sparse}
  return {name: fns[name](u) for name in which}
