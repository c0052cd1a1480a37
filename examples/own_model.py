"""The D3 penalties on your own Keras model: train on the MNIST slice inside the package, attack.

    python examples/own_model.py        # about 5 minutes on 2 CPU cores; prints 3 lines

λ's: the paper's MNIST values (λM = 20, λV = 40, λS = 40) with each penalty divided by the
D = 784 input dims (penalty_reduction="mean", docs/reproduction.md): summed as printed, λS·ΩS
swamps the cross-entropy and the classifier collapses (docs/verdict.md). Posterior
softplus⁻¹σ starts from N(−3, 0.1), tfp's default width.
"""
import d3_tf                      # import first: it selects Keras 2 (tf_keras) for tfp
import tensorflow_probability as tfp
import tf_keras
from d3_tf import attacks


def bayes_dense(units, seed, activation=None):
  """DenseFlipout with its OWN seeded posterior initialisers (tfp's defaults are shared)."""
  normal = tfp.layers.default_mean_field_normal_fn
  kernel = normal(loc_initializer=tf_keras.initializers.HeNormal(seed=seed),
                  untransformed_scale_initializer=tf_keras.initializers.RandomNormal(
                      -3.0, 0.1, seed=seed))
  bias = normal(is_singular=True, loc_initializer=tf_keras.initializers.Zeros())
  return tfp.layers.DenseFlipout(units, activation=activation, kernel_posterior_fn=kernel,
                                 bias_posterior_fn=bias, seed=seed)


def main(n_train=3000, n_test=1000, n_attack=100, epochs=8, num_draws=10):
  tf_keras.utils.set_random_seed(0)
  trunk = tf_keras.Sequential([tf_keras.Input((28, 28, 1)),          # deterministic: runs once
                               tf_keras.layers.Conv2D(32, 3, activation="relu"),
                               tf_keras.layers.MaxPooling2D(2),
                               tf_keras.layers.Conv2D(64, 3, activation="relu"),
                               tf_keras.layers.MaxPooling2D(2), tf_keras.layers.Flatten(),
                               tf_keras.layers.Dense(128, activation="relu")])
  head = tf_keras.Sequential([tf_keras.Input(trunk.output_shape[1:]),  # Bayesian: K draws
                              bayes_dense(64, seed=1, activation="relu"), bayes_dense(10, seed=2)])
  model = d3_tf.D3Model(trunk, head, num_draws=num_draws, lambda_m=20, lambda_v=40, lambda_s=40,
                        penalty_reduction="mean",  # each Ω divided by the D = 784 input dims
                        n_train=n_train)           # the ELBO's KL / N, added once per step
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
  (x, y), (xt, yt) = d3_tf.data.load_mnist(source="embedded", n_train=n_train, n_test=n_test)
  history = model.fit(d3_tf.data.make_dataset(x, y, 64, seed=0), epochs=epochs, verbose=0)
  last = {k: v[-1] for k, v in history.history.items()}  # loss = ce + kl + λM ΩM + λS ΩS
  print(f"trained {epochs} epochs on {n_train} images: cross-entropy {last['ce']:.3f}, "
        f"KL/N {last['kl']:.2f}, ΩM {last['omega_m']:.3f}, ΩV {last['omega_v']:.2g}, "
        f"ΩS {last['omega_s']:.1f}")
  est = attacks.classifier(model)                 # ART on the average of the K draws' logits
  print(f"clean accuracy on {n_test} test images: {attacks.accuracy_on(est, xt, yt):.1f}%")
  pgd = attacks.pgd(est, eps=0.3, eps_step=0.01, max_iter=40)
  result = attacks.robust_accuracy(est, xt[:n_attack], yt[:n_attack], pgd, desc="PGD-40")
  return result


if __name__ == "__main__":
  main()
