"""d3_tf: Defense Through Diverse Directions (Bender et al., ICML 2020) in TensorFlow Probability."""
import os

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))


def _requirements():
  with open(os.path.join(HERE, "requirements.txt")) as f:
    lines = [l.split("#")[0].strip() for l in f]
  return [l for l in lines if l and not l.startswith(("pytest", "execnet"))]


setuptools.setup(
    name="d3_tf",
    version="0.1.0",
    description="Defense Through Diverse Directions: diversity penalties for Bayesian "
                "neural networks, with ART attacks and a robustness audit.",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["d3_tf", "d3_tf.*", "experiments", "benchmarks"]),
    package_data={"d3_tf": ["assets/mnist_slice/*.gz"]},
    python_requires=">=3.9",
    install_requires=_requirements(),
    extras_require={"test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "execnet==2.1.2"]},
    license="Apache-2.0",
)
