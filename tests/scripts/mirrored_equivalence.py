"""One fit epoch on 1 device vs MirroredStrategy over 2 logical CPUs; prints JSON.

Run as a script: the logical devices must be configured before TensorFlow starts.
Posterior scales are set to ~0 so that every weight draw is the posterior mean: both runs
then see the same draws, and any difference comes from how the loss is scaled and reduced.
A small SGD step keeps float rounding (cross-replica vs in-batch sums) from being amplified
by the large ΩS gradients over the 4 steps.
"""
import json
import sys

import d3_tf  # first: selects Keras 2
import numpy as np
import tensorflow as tf
import tf_keras

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

(x, y), _ = d3_tf.data.load_mnist(source="embedded", n_train=256)


def run(strategy):
  tf_keras.utils.set_random_seed(0)
  with strategy.scope():
    model = d3_tf.build("mnist_cnn", num_draws=3, lambda_m=1.0, lambda_s=1.0, n_train=256)
    for v in model.head.weights:
      if "untransformed_scale" in v.name:
        v.assign(tf.fill(v.shape, -40.0))
    model.compile(optimizer=tf_keras.optimizers.SGD(0.01))
  history = model.fit(d3_tf.data.make_dataset(x, y, 64, shuffle=False), epochs=1, verbose=0)
  return history.history["loss"][-1], [w.numpy() for w in model.trainable_weights]


loss_1, weights_1 = run(tf.distribute.get_strategy())
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
loss_2, weights_2 = run(strategy)
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights_1, weights_2))
scale = max(float(np.max(np.abs(a))) for a in weights_1)
print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync, "loss_1": loss_1,
                              "loss_2": loss_2, "max_weight_diff": diff, "max_weight": scale}))
sys.exit(0)
