"""The end-to-end stack (real workers) for the security tests."""

from tests.e2e.conftest import stack  # noqa: F401 - the fixture
