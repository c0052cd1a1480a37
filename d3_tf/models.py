"""Model zoo: deterministic trunks and Bayesian heads (Sec. 5.2.1, 5.3, 5.4).

Every network is split in two tf_keras models: a deterministic ``trunk`` run
once per batch and a ``head`` run K times, each call drawing fresh weights
from the variational posterior when the head is Bayesian. ``D3Model`` (in
``training.py``) glues the two together.

Choices where the paper is silent (also in docs/reproduction.md):

- MNIST CNN (Sec. 5.3, "three convolutional layers followed by two fully
  connected layers"): conv 32 3x3 ReLU -> conv 64 3x3 ReLU -> max-pool 2
  [trunk] | conv 64 3x3 ReLU -> max-pool 2 -> flatten -> dense 128 ReLU ->
  dense 10 [head]. 'valid' padding, no dropout, no batch norm.
- VGG16 for CIFAR-10 (Sec. 5.4): the 13 conv layers of configuration D
  (64,64,M,128,128,M,256x3,M,512x3,M,512x3,M) then dense 512 ReLU -> dense 10
  (the usual CIFAR variant of the classifier). The first four blocks are the
  trunk, with batch norm after each conv (VGG16 does not train well from
  scratch without it). The last conv block and the dense layers are the head,
  Bayesian, without batch norm (per-draw weights and batch statistics do not
  mix well) and without dropout (the weight noise regularises). In training
  mode, batch norm couples the examples of a batch: input gradients carry an
  O(1/N) cross-example term, which we accept.
- Bayesian layers (``estimator``): "flipout" (``Convolution2DFlipout``,
  ``DenseFlipout``; the library default), "reparameterization" (both layers
  ``*Reparameterization``), or "reparam_conv": ``DenseFlipout`` for dense and
  ``Convolution2DReparameterization`` for conv layers, the pair the project
  was specified with (one conv kernel sample per draw shared by the batch, as
  Sec. 5.2.1 describes). Posterior: mean-field normal with loc initialised
  He-normal and the softplus-inverse scale N(``posterior_init``, 0.1)
  (default -5: σ ≈ 0.007), each layer with its OWN seeded initialisers: tfp's defaults share
  one unseeded initializer, so same-shaped layers would start identical. Prior
  N(0, 1) (tfp's default). The KL of each layer lands in ``head.losses``;
  ``D3Model`` scales it by 1/N_train.
- Conventional counterparts use tf_keras Conv2D/Dense with the same shapes.
"""

import tensorflow_probability as tfp
import tf_keras

from d3_tf.settings import ESTIMATORS, POSTERIOR_INIT

tfpl = tfp.layers

_BAYES_LAYERS = {
    ("flipout", "conv"): tfpl.Convolution2DFlipout,
    ("flipout", "dense"): tfpl.DenseFlipout,
    ("reparameterization", "conv"): tfpl.Convolution2DReparameterization,
    ("reparameterization", "dense"): tfpl.DenseReparameterization,
    ("reparam_conv", "conv"): tfpl.Convolution2DReparameterization,
    ("reparam_conv", "dense"): tfpl.DenseFlipout,
}
_FLIPOUT = (tfpl.Convolution2DFlipout, tfpl.DenseFlipout)
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
INIT_UNTRANSFORMED_SCALE = POSTERIOR_INIT


class LayerFactory:
  """Makes conv/dense layers, Bayesian or not, each with its own seeds."""

  def __init__(self, bayesian, seed=0, estimator="flipout",
               posterior_init=INIT_UNTRANSFORMED_SCALE):
    if estimator not in ESTIMATORS:
      raise ValueError(f"unknown estimator {estimator!r}; choose from {ESTIMATORS}")
    self.bayesian = bayesian
    self.estimator = estimator
    self.posterior_init = float(posterior_init)
    self._seed = seed * 1000

  def _next_seed(self):
    self._seed += 1
    return self._seed

  def _posterior(self):
    return tfpl.default_mean_field_normal_fn(
        loc_initializer=tf_keras.initializers.HeNormal(seed=self._next_seed()),
        untransformed_scale_initializer=tf_keras.initializers.RandomNormal(
            mean=self.posterior_init, stddev=0.1, seed=self._next_seed()))

  def _bayes_layer(self, kind, *args, **kwargs):
    cls = _BAYES_LAYERS[(self.estimator, kind)]
    kwargs.update(kernel_posterior_fn=self._posterior(),
                  bias_posterior_fn=tfpl.default_mean_field_normal_fn(
                      is_singular=True, loc_initializer=tf_keras.initializers.Zeros()))
    if issubclass(cls, _FLIPOUT):
      kwargs["seed"] = self._next_seed()
    return cls(*args, **kwargs)

  def conv(self, filters, kernel_size, padding="valid", activation="relu", name=None):
    if self.bayesian:
      return self._bayes_layer("conv", filters, kernel_size, padding=padding,
                               activation=activation, name=name)
    return tf_keras.layers.Conv2D(
        filters, kernel_size, padding=padding, activation=activation, name=name,
        kernel_initializer=tf_keras.initializers.HeNormal(seed=self._next_seed()))

  def dense(self, units, activation=None, name=None):
    if self.bayesian:
      return self._bayes_layer("dense", units, activation=activation, name=name)
    return tf_keras.layers.Dense(
        units, activation=activation, name=name,
        kernel_initializer=tf_keras.initializers.HeNormal(seed=self._next_seed()))


VARIATIONAL_LAYERS = (tfpl.DenseFlipout, tfpl.DenseReparameterization,
                      tfpl.DenseLocalReparameterization, tfpl.Convolution2DFlipout,
                      tfpl.Convolution2DReparameterization)


def bayesian_layers(model):
  """The tfp variational layers inside ``model``, in order."""
  return [layer for layer in model.submodules if isinstance(layer, VARIATIONAL_LAYERS)]


def is_bayesian(model):
  """True when any layer of ``model`` is a tfp variational layer."""
  return bool(bayesian_layers(model))


def mnist_cnn(bayesian=True, seed=0, estimator="flipout", num_classes=10,
              input_shape=(28, 28, 1), posterior_init=INIT_UNTRANSFORMED_SCALE):
  """The paper's MNIST network: 3 conv + 2 dense, conv3 and both dense Bayesian.

  Args:
    bayesian: False gives the conventional CNN with the same shapes.
    seed: seeds every initializer (and Flipout's sign flips).
    estimator: one of ``ESTIMATORS``.
    posterior_init: mean of the initial softplus⁻¹σ of the Bayesian kernels.

  Returns:
    (trunk, head): two tf_keras models; head(trunk(x)) are the logits.
  """
  det = LayerFactory(False, seed)
  trunk = tf_keras.Sequential([
      tf_keras.Input(input_shape),
      det.conv(32, 3, name="conv1"),
      det.conv(64, 3, name="conv2"),
      tf_keras.layers.MaxPooling2D(2),
  ], name="mnist_trunk")
  bay = LayerFactory(bayesian, seed + 1, estimator, posterior_init)
  head = tf_keras.Sequential([
      tf_keras.Input(trunk.output_shape[1:]),
      bay.conv(64, 3, name="conv3"),
      tf_keras.layers.MaxPooling2D(2),
      tf_keras.layers.Flatten(),
      bay.dense(128, activation="relu", name="fc1"),
      bay.dense(num_classes, name="fc2"),
  ], name="mnist_head")
  return trunk, head


def madry_mnist(seed=0, num_classes=10, input_shape=(28, 28, 1)):
  """MadryLab mnist_challenge architecture (black-box surrogate, conventional).

  conv 32 5x5 same ReLU -> max-pool 2 -> conv 64 5x5 same ReLU -> max-pool 2 ->
  dense 1024 ReLU -> dense 10. Returned as (trunk, head) with an identity trunk.
  """
  det = LayerFactory(False, seed)
  trunk = tf_keras.Sequential([tf_keras.Input(input_shape)], name="identity")
  head = tf_keras.Sequential([
      tf_keras.Input(input_shape),
      det.conv(32, 5, padding="same"),
      tf_keras.layers.MaxPooling2D(2),
      det.conv(64, 5, padding="same"),
      tf_keras.layers.MaxPooling2D(2),
      tf_keras.layers.Flatten(),
      det.dense(1024, activation="relu"),
      det.dense(num_classes),
  ], name="madry_mnist")
  return trunk, head


def vgg16(bayesian=True, seed=0, estimator="flipout", num_classes=10,
          input_shape=(32, 32, 3), width=1.0, blocks=VGG16_BLOCKS,
          posterior_init=INIT_UNTRANSFORMED_SCALE):
  """VGG16 for CIFAR-10: blocks 1-4 deterministic trunk, block 5 + FC Bayesian.

  Args:
    width: multiplies every channel count (1.0 = VGG16; small values give the
      tiny VGG-style models used in tests).
    blocks: conv widths per block; the last block goes to the head.
    posterior_init: mean of the initial softplus⁻¹σ of the Bayesian kernels.

  Returns:
    (trunk, head) tf_keras models.
  """
  ch = lambda c: max(1, int(round(c * width)))
  det = LayerFactory(False, seed)
  layers = [tf_keras.Input(input_shape)]
  for b, block in enumerate(blocks[:-1]):
    for i, c in enumerate(block):
      layers += [det.conv(ch(c), 3, padding="same", activation=None, name=f"conv{b + 1}_{i + 1}"),
                 tf_keras.layers.BatchNormalization(), tf_keras.layers.ReLU()]
    layers.append(tf_keras.layers.MaxPooling2D(2))
  trunk = tf_keras.Sequential(layers, name="vgg16_trunk")
  bay = LayerFactory(bayesian, seed + 1, estimator, posterior_init)
  layers = [tf_keras.Input(trunk.output_shape[1:])]
  for i, c in enumerate(blocks[-1]):
    layers.append(bay.conv(ch(c), 3, padding="same", name=f"conv{len(blocks)}_{i + 1}"))
  layers += [tf_keras.layers.MaxPooling2D(2), tf_keras.layers.Flatten(),
             bay.dense(ch(512), activation="relu", name="fc1"),
             bay.dense(num_classes, name="fc2")]
  head = tf_keras.Sequential(layers, name="vgg16_head")
  return trunk, head


ARCHITECTURES = {"mnist_cnn": mnist_cnn, "vgg16": vgg16}

