"""Flags and helpers shared by the experiment binaries (absl FLAGS live only here)."""
import sys

from absl import app
from absl import flags

from d3_tf import data

DATA_DIR = flags.DEFINE_string(
    "data_dir", None,
    f"Folder with the official files (mnist/*-ubyte.gz, cifar10/{data.CIFAR_ARCHIVE}); "
    f"defaults to ${data.ENV_VAR}. Without either, tensorflow_datasets is used, except "
    "that MNIST at --preset smoke uses the slice embedded in the package.")
DATA_SOURCE = flags.DEFINE_enum(
    "data_source", None, ["auto", "local", "tfds", "embedded"],
    "Where data comes from (default: embedded for MNIST smoke runs when no data dir is set, "
    "else auto = data dir if given, else tfds).")


def load_data(dataset, n_train=None, n_test=None, embedded_default=False):
  """Loads a dataset honouring --data_dir/--data_source; prints where it came from."""
  source = DATA_SOURCE.value
  if source is None:
    has_dir = bool(DATA_DIR.value or data.resolve_data_dir())
    source = "embedded" if (embedded_default and dataset == "mnist" and not has_dir) else "auto"
  if source == "embedded":
    print(f"data: the real MNIST slice embedded in the package ({data.EMBEDDED_SIZES['train']} "
          f"train / {data.EMBEDDED_SIZES['test']} test images of the official files); "
          f"set --data_dir or ${data.ENV_VAR} for the full set")
  else:
    folder = data.resolve_data_dir(DATA_DIR.value) if source != "tfds" else None
    print(f"data: {dataset} from {folder or 'tensorflow_datasets'}")
  return data.load(dataset, data_dir=DATA_DIR.value, n_train=n_train, n_test=n_test,
                   source=source)


def run(main):
  """app.run that turns a DataError or ValueError from bad input into one line, exit 1."""
  def wrapped(argv):
    try:
      return main(argv)
    except (data.DataError, ValueError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)
  app.run(wrapped)
