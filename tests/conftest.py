"""Shared test fixtures.

Theano compiles C code on first use; compiled predict functions are cached
per process by :mod:`srcnn_theano.network.inference`, so every test in the session
reuses them. Data from ``../shared/data`` (never part of the repository) is
required in CI: a test that needs it fails there when it is missing, and is
skipped elsewhere.
"""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
AUTHORS_MODELS = os.path.join(DATA, "SRCNN_v1", "model")


def require_data(*parts):
    """Path under ``../shared/data``; fail in CI (CI=true) or skip elsewhere if missing."""
    path = os.path.join(DATA, *parts)
    if not os.path.exists(path):
        message = f"test data not found: {path} (see README, 'Data')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def authors_model(arch, scale):
    """Path of one of the authors' released ``.mat`` models, e.g. ``('9-1-5(91 images)', 3)``."""
    return require_data("SRCNN_v1", "model", arch, f"x{scale}.mat")
