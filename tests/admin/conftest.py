"""Admin console fixtures: a staff login and a trade with a timeline and transaction attempts."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.gateway.conftest import Owner, registry, submitted_trade  # noqa: F401 - fixtures

STAFF_PASSWORD = "staff-password-for-tests"


@pytest.fixture
def staff(db):
    from tests.factories import UserFactory

    user = UserFactory(username="operator", is_staff=True, is_superuser=True)
    user.set_password(STAFF_PASSWORD)
    user.save()
    return user


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    assert client.login(username=staff.username, password=STAFF_PASSWORD)
    return client


@pytest.fixture
def owner(db, redis_client, keystore):  # noqa: F811 - the imported fixture
    return Owner("alice")


@pytest.fixture
def pending_trade(owner, registry):  # noqa: F811
    return submitted_trade(owner, registry, owner.active_wallet())
