"""Shared test helpers: where the data are, random weights, the CI rule for missing data.

Theano compiles C code on first use; compiled predict functions are cached
per process by :mod:`srcnn_theano.network.inference`, so every test in the session
reuses them. Data from ``../shared/data`` (never part of the repository) is
required in CI: a test that needs it fails there when it is missing, and is
skipped elsewhere.
"""
import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
AUTHORS_MODELS = os.path.join(DATA, "SRCNN_v1", "model")


def require_data(*parts):
    """Path under ``../shared/data``; fail in CI (CI=true) or skip elsewhere if missing."""
    path = os.path.join(DATA, *parts)
    require(os.path.exists(path), f"test data not found: {path} (see docs/data.md)")
    return path


def authors_model(arch, scale):
    """Path of one of the authors' released ``.mat`` models, e.g. ``('9-1-5(91 images)', 3)``."""
    return require_data("SRCNN_v1", "model", arch, f"x{scale}.mat")


def require(ok, message):
    """Skip the test with ``message`` unless ``ok``; under CI (CI=true) fail instead."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def random_arrays(arch, seed=0, std=0.3, fan_in=False):
    """Random SRCNN weights for ``arch`` (dict with f1, f2, f3, n1, n2, channels).

    float32 arrays keyed like :meth:`srcnn_theano.network.model.SRCNN.get_weights`,
    drawn from N(0, std) with ``numpy.random.RandomState(seed)`` (kernels
    divided by sqrt(fan-in) when ``fan_in``, to keep activations O(1)).
    """
    rng = np.random.RandomState(seed)
    f1, f2, f3, n1, n2, c = (arch[k] for k in ("f1", "f2", "f3", "n1", "n2", "channels"))
    shapes = {"conv1.W": (n1, c, f1, f1), "conv1.b": (n1,), "conv2.W": (n2, n1, f2, f2),
              "conv2.b": (n2,), "conv3.W": (c, n2, f3, f3), "conv3.b": (c,)}
    out = {}
    for key, shape in shapes.items():
        a = rng.normal(0, std, shape)
        if fan_in and len(shape) > 1:
            a = a / np.sqrt(np.prod(shape[1:]))
        out[key] = a.astype("float32")
    return out


#: The paper's 9-1-5 with 64/32 filters on one channel (Y).
ARCH_915 = dict(f1=9, f2=1, f3=5, n1=64, n2=32, channels=1)


# Hypothesis profiles for tests/test_fuzz.py: a bounded number of examples in the normal runs,
# many more with HYPOTHESIS_PROFILE=long (see README, "Developing").
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("default", max_examples=60, derandomize=True)
_hypothesis_settings.register_profile("long", max_examples=5000)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
