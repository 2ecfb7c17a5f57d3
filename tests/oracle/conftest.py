"""Fixtures of the oracle tests: the target mixture and its held-out data (checks.py)."""
import pytest

from tests.oracle.checks import reference
from tests.oracle.exact import default_mixture


@pytest.fixture(scope="session")
def mixture():
    return default_mixture()


@pytest.fixture(scope="session")
def ref(mixture):
    return reference(mixture)
