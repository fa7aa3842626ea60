"""Fixtures the service tests share."""

import pytest

from service.access import AccessKeys


@pytest.fixture
def keys(tmp_path):
    """API keys in a fresh folder: none exists yet, so access control is off until a test adds one."""
    store = AccessKeys(tmp_path / "access")
    yield store
    store.close()
