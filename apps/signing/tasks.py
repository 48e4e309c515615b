"""Signer tasks: the only code on the signer queue. Arguments are ids; nothing else is trusted."""

from django.conf import settings

from apps.signing import services
from project.db import SerializationRetriesExhausted
from project.queues import Queue, TaskName, custos_task

# Contention with a concurrent signing for the same wallet heals, and so does a sealed or unreachable
# Vault: try again with a capped backoff.
RETRY = {
    "autoretry_for": (SerializationRetriesExhausted, *services.TRANSIENT_KEY_ERRORS),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 50,
}


@custos_task(name=TaskName.SIGNING_SIGN, queue=Queue.SIGNER, **RETRY)
def sign(self, trade_id: int, attempt: int) -> dict:
    request = (int(trade_id), int(attempt))
    # Under load, other trades already waiting in SIGNING join this one's transaction (one query
    # per fact for all of them, one message to the engine): see services.trade_sign_batch.
    outcomes = services.trade_sign_batch([request], companions=settings.SIGNER_BATCH_SIZE - 1)
    outcome = outcomes[request]
    # Only ids and a reason leave the signer: never raw bytes, never key material.
    return {"signed": outcome.signed, "records": list(outcome.records), "refusal": outcome.refusal}


@custos_task(name=TaskName.SIGNING_CREATE_KEY, queue=Queue.SIGNER)
def create_key(self, wallet_id: int) -> None:
    services.wallet_key_create(wallet_id=int(wallet_id))
