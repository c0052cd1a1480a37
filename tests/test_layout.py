"""The code stays small enough to read: no module over 400 lines, no class over about 150."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("d3_tf", "experiments")
MAX_FILE_LINES = 400
MAX_CLASS_LINES = 160


def _modules():
  for package in PACKAGES:
    for name in sorted(os.listdir(os.path.join(ROOT, package))):
      if name.endswith(".py"):
        yield os.path.join(package, name)


def _classes(path):
  tree = ast.parse(open(os.path.join(ROOT, path)).read())
  for node in ast.walk(tree):
    if isinstance(node, ast.ClassDef):
      yield node.name, node.end_lineno - node.lineno + 1


def test_the_packages_have_modules_to_measure():
  modules = list(_modules())
  assert "d3_tf/training.py" in modules and "experiments/study.py" in modules
  assert dict(_classes("d3_tf/training.py"))["D3Model"] > 50


@pytest.mark.parametrize("path", list(_modules()))
def test_module_and_class_sizes(path):
  lines = len(open(os.path.join(ROOT, path)).read().splitlines())
  assert lines <= MAX_FILE_LINES, f"{path}: {lines} lines"
  for name, length in _classes(path):
    assert length <= MAX_CLASS_LINES, f"{path}: class {name} is {length} lines"
