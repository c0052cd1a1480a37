"""The audit on your own random Keras model (MC dropout) with AutoAttack's "rand" protocol."""
import d3_tf                      # import first: Keras 2 (tf_keras), quiet TensorFlow start-up
import tf_keras
from d3_tf import audit


class MCDropout(tf_keras.layers.Dropout):  # dropout at test time too: a randomised defence
  def call(self, inputs, training=None):
    return super().call(inputs, training=True)


def main(n_train=3000, n_audit=100, epochs=3, **audit_settings):  # e.g. steps=50
  tf_keras.utils.set_random_seed(0)
  model = tf_keras.Sequential([tf_keras.Input((28, 28, 1)), tf_keras.layers.Flatten(),
                               tf_keras.layers.Dense(256, activation="relu"), MCDropout(0.5),
                               tf_keras.layers.Dense(10)])  # any x -> logits model will do
  model.compile(tf_keras.optimizers.Adam(1e-3),
                tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  (x, y), (xt, yt) = d3_tf.data.load_mnist(source="embedded", n_train=n_train)
  model.fit(x, y, epochs=epochs, verbose=0)
  report = audit.run_audit(model, xt[:n_audit], yt[:n_audit], eps=0.1, protocol="rand",
                           log=lambda line: None, verbose=False,  # quiet: report only
                           **audit_settings)
  print(f"clean {report['clean']:.1f}%, worst-case audited {report['audited_robust_accuracy']:.1f}%"
        f", expected {report['expected_robust_accuracy']:.1f}%, logits random: "
        f"{report['randomness']['stochastic']}")
  return report


if __name__ == "__main__":
  main()
