"""The admin console: staff only; trades read-only with their timeline inline; cancel and retry ask
for confirmation and record a request the engine carries out, audited; audit events verify; scopes
are granted through the service and revoked after a confirmation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.trades import tasks
from apps.trades.models import OwnerRequest, Trade, TradeEvent
from apps.wallets.models import PermissionScope, Wallet
from tests.factories import UserFactory, grant_scope, signing_trade, tampering

pytestmark = pytest.mark.django_db(transaction=True)

TRADES = "/admin/trades/trade/"


def test_the_admin_is_staff_only(db, owner):
    client = Client()
    owner.user.set_password("not-staff-pw")
    owner.user.save()
    assert client.login(username="alice", password="not-staff-pw")
    response = client.get(TRADES)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_trade_list_filters_by_state_chain_and_wallet(staff_client, owner, pending_trade):
    link = f"/admin/trades/trade/{pending_trade.pk}/change/"
    other_wallet = owner.active_wallet("other")

    def listed(query: str) -> bool:
        response = staff_client.get(TRADES + query)
        assert response.status_code == 200, query  # an unknown filter would redirect with ?e=1
        return link in response.content.decode()

    assert listed("")
    assert listed("?state__exact=PENDING")
    assert not listed("?state__exact=CANCELLED")
    assert listed(f"?chain__id__exact={pending_trade.chain_id}")
    assert listed(f"?wallet__id__exact={pending_trade.wallet_id}")
    assert not listed(f"?wallet__id__exact={other_wallet.pk}")


def test_trade_page_is_read_only_with_the_timeline_inline(staff_client, pending_trade):
    url = f"{TRADES}{pending_trade.pk}/change/"
    html = staff_client.get(url).content.decode()
    assert "timeline" in html.lower()
    assert "submitted" in html
    assert 'name="_save"' not in html  # nothing to save
    assert 'name="state"' not in html
    before = Trade.objects.get(pk=pending_trade.pk).updated_at
    response = staff_client.post(url, {"state": "SETTLED"})
    assert response.status_code == 403
    trade = Trade.objects.get(pk=pending_trade.pk)
    assert trade.state == "PENDING"
    assert trade.updated_at == before


def test_trade_page_never_shows_raw_signed_bytes(staff_client, owner, registry):
    trade = signing_trade(owner.active_wallet("signing"), state="SIGNING")
    html = staff_client.get(f"{TRADES}{trade.pk}/change/").content.decode()
    assert "transaction attempts" in html.lower()
    assert "raw_signed" not in html


def test_cancel_asks_for_confirmation_then_cancels_through_the_engine_audited(staff_client, pending_trade):
    data = {"action": "cancel_trades", "_selected_action": [pending_trade.pk]}
    ask = staff_client.post(TRADES, data)
    assert ask.status_code == 200
    assert "Are you sure" in ask.content.decode()
    assert Trade.objects.get(pk=pending_trade.pk).state == "PENDING"
    done = staff_client.post(TRADES, {**data, "confirmed": "yes"})
    assert done.status_code == 302
    # The web records the request; the execution worker carries it out (trades.owner_requests).
    request = OwnerRequest.objects.get(trade=pending_trade)
    assert (request.kind, request.requested_by.username, request.handled_at) == ("cancel", "operator", None)
    assert Trade.objects.get(pk=pending_trade.pk).state == "PENDING"
    tasks.owner_requests.apply(args=[[request.pk]], throw=True)
    assert Trade.objects.get(pk=pending_trade.pk).state == "CANCELLED"
    event = TradeEvent.objects.filter(trade=pending_trade).order_by("-id").first()
    assert event.kind == "cancel"
    assert event.data["reason"] == "cancelled by staff operator in the admin console"


def test_retry_re_enqueues_only_stalled_trades_and_records_who_asked(
    staff_client, pending_trade, settings, redis_client
):
    settings.TRADE_STALL_SECONDS = 60
    fresh = {"action": "retry_stalled_trades", "_selected_action": [pending_trade.pk], "confirmed": "yes"}
    staff_client.post(TRADES, fresh)
    assert not OwnerRequest.objects.exists()
    Trade.objects.filter(pk=pending_trade.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    redis_client.flushdb()
    staff_client.post(TRADES, fresh)
    request = OwnerRequest.objects.get(trade=pending_trade, kind="retry")
    tasks.owner_requests.apply(args=[[request.pk]], throw=True)  # as the execution worker would
    assert OwnerRequest.objects.get(pk=request.pk).outcome == "retried"
    event = TradeEvent.objects.get(trade=pending_trade, kind="retry_requested")
    assert event.data == {"by": "operator", "state": "PENDING"}
    queued = b"".join(redis_client.lrange("execution", 0, -1))
    assert b"trades.simulate" in queued


def test_audit_events_are_read_only_and_verify(staff_client, pending_trade):
    events = "/admin/trades/tradeevent/"
    assert staff_client.get(events).status_code == 200
    event = TradeEvent.objects.get(trade=pending_trade)
    assert staff_client.post(f"{events}{event.pk}/change/", {"kind": "x"}).status_code == 403
    assert staff_client.get(f"{events}{event.pk}/delete/").status_code == 403
    ok = staff_client.post(events, {"action": "verify_chain", "_selected_action": [event.pk]}, follow=True)
    assert "audit chain intact: 1 event(s)" in ok.content.decode().lower()
    _tamper(event, kind="tampered")
    bad = staff_client.post(events, {"action": "verify_chain", "_selected_action": [event.pk]}, follow=True)
    assert "audit chain broken at event" in bad.content.decode().lower()


def _tamper(event: TradeEvent, **changes) -> None:
    """Edit an audit event as only someone who can alter the table could: no role can update one
    (privileges, and the append-only trigger even for the table's owner), so the trigger is disabled
    for this one statement."""
    with tampering("trades_tradeevent"):
        TradeEvent.objects.filter(pk=event.pk).update(**changes)


def test_scope_revoke_asks_for_confirmation(staff_client, owner, registry):
    scope = grant_scope(owner.active_wallet())
    url = "/admin/wallets/permissionscope/"
    data = {"action": "revoke", "_selected_action": [scope.pk]}
    assert "Are you sure" in staff_client.post(url, data).content.decode()
    assert PermissionScope.objects.get(pk=scope.pk).active
    staff_client.post(url, {**data, "confirmed": "yes"})
    assert not PermissionScope.objects.get(pk=scope.pk).active


def test_scope_grant_goes_through_the_service(staff_client, owner, registry):
    wallet = owner.active_wallet()
    now = timezone.now()
    form = {
        "wallet": wallet.pk,
        "dex": registry["dex"].pk,
        "token_in": registry["usdc"].pk,
        "token_out": registry["usdc"].pk,  # the service refuses the same token
        "allowed_selectors": "0x38ed1739",
        "max_amount_in": "1000",
        "max_slippage_bps": "100",
        "max_fee_per_gas": str(100 * 10**9),
        "max_priority_fee_per_gas": str(2 * 10**9),
        "valid_from_0": now.strftime("%Y-%m-%d"),
        "valid_from_1": now.strftime("%H:%M:%S"),
        "valid_until_0": (now + timedelta(days=2)).strftime("%Y-%m-%d"),
        "valid_until_1": now.strftime("%H:%M:%S"),
    }
    refused = staff_client.post("/admin/wallets/permissionscope/add/", form)
    assert refused.status_code == 200
    assert "must differ from token_in" in refused.content.decode()
    assert PermissionScope.objects.count() == 0
    granted = staff_client.post(
        "/admin/wallets/permissionscope/add/", {**form, "token_out": registry["dai"].pk}
    )
    assert granted.status_code == 302, granted.content.decode()[:3000]
    scope = PermissionScope.objects.get()
    assert scope.router == registry["dex"].router  # frozen by the service
    assert scope.chain == registry["chain"]


def test_a_wallet_added_in_the_admin_is_provisioned_by_the_signer(staff_client, redis_client):
    user = UserFactory(username="bob")
    response = staff_client.post(
        "/admin/wallets/wallet/add/",
        {
            "owner": user.pk,
            "label": "cold",
            "key_backend": "keystore",
            "active": "on",
            "scopes-TOTAL_FORMS": 0,
            "scopes-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    wallet = Wallet.objects.get(label="cold")
    assert wallet.status == "provisioning"
    assert b"signing.create_key" in b"".join(redis_client.lrange("signer", 0, -1))


@pytest.mark.parametrize(
    "page",
    [
        "/admin/chain/chain/",
        "/admin/chain/rpcendpoint/",
        "/admin/watcher/blockheader/",
        "/admin/django_celery_beat/periodictask/",
        "/admin/wallets/wallet/",
        "/admin/wallets/permissionscope/",
        "/admin/signing/signingrecord/",
        "/admin/signing/signingrefusal/",
        "/admin/gateway/apitoken/",
        "/admin/trades/tradeevent/",
    ],
)
def test_the_console_pages_open_for_staff_only(staff_client, page):
    assert staff_client.get(page).status_code == 200
    assert Client().get(page).status_code == 302  # to the login page


def test_an_api_token_issued_in_the_admin_is_shown_once_and_works(staff_client, owner):
    from rest_framework.test import APIClient

    from apps.gateway.models import ApiToken

    response = staff_client.post(
        "/admin/gateway/apitoken/add/",
        {"user": owner.user.pk, "name": "tablet", "level": "trade"},
        follow=True,
    )
    html = response.content.decode()
    assert "Copy this token now" in html
    raw = html.split("it is not shown again: ")[1].split("<")[0].strip()
    token = ApiToken.objects.get(name="tablet")
    assert raw.startswith(token.prefix)
    assert raw not in token.key_hash
    assert token.level == "trade"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/ping").status_code == 200
    # The level it was issued with, and no more.
    refused = client.post("/api/v1/wallets", {"label": "x", "key_backend": "keystore"}, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_level"
    change_page = staff_client.get(f"/admin/gateway/apitoken/{token.pk}/change/").content.decode()
    assert raw not in change_page
    assert "trade (submit and cancel trades)" in change_page
    assert "trade (submit and cancel trades)" in staff_client.get("/admin/gateway/apitoken/").content.decode()


def test_the_admin_issues_read_tokens_unless_told_otherwise_and_never_changes_a_level(staff_client, owner):
    from apps.gateway.models import ApiToken

    add_page = staff_client.get("/admin/gateway/apitoken/add/").content.decode()
    assert '<option value="read" selected>' in add_page
    token = ApiToken.objects.get(user=owner.user)
    assert token.level == "manage"  # the fixture's token
    staff_client.post(
        f"/admin/gateway/apitoken/{token.pk}/change/",
        {"user": owner.user.pk, "name": "phone", "level": "read"},
    )
    token.refresh_from_db()
    assert token.level == "manage"


def test_a_duplicate_live_token_name_is_a_form_error_not_a_crash(staff_client, owner):
    from apps.gateway.models import ApiToken

    response = staff_client.post(
        "/admin/gateway/apitoken/add/", {"user": owner.user.pk, "name": "phone", "level": "read"}
    )
    assert response.status_code == 200
    assert "already has a live token with this name" in response.content.decode()
    assert ApiToken.objects.filter(user=owner.user).count() == 1


def test_static_files_of_the_admin_and_schema_ui_are_served_without_debug(settings):
    """gunicorn has no separate static server: the admin's CSS and the self-hosted Swagger UI must
    come from the application itself."""
    assert settings.DEBUG is False
    client = Client()
    for path in (
        "/static/admin/css/base.css",
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
    ):
        response = client.get(path)
        assert response.status_code == 200, path


def test_signing_records_are_shown_without_their_raw_bytes(staff_client, owner, registry):
    from apps.signing import services as signer
    from apps.signing.models import SigningRecord

    wallet = owner.active_wallet()
    grant_scope(wallet)
    trade = signing_trade(wallet, state="SIGNING")
    assert signer.trade_sign(trade_id=trade.pk, attempt=1).signed
    record = SigningRecord.objects.filter(trade=trade).first()
    raw_hex = bytes(record.raw_signed).hex()
    html = staff_client.get(f"/admin/signing/signingrecord/{record.pk}/change/").content.decode()
    assert record.tx_hash in html
    assert raw_hex[:64] not in html
    assert "raw_signed" not in html
    assert staff_client.post(f"/admin/signing/signingrecord/{record.pk}/change/", {}).status_code == 403
