"""The critical path: every money-moving transition of a trade passes through this package.

A trade goes, in this order (one file per step; a file imports only the ones above it):

    submit.py     PENDING        the owner's inputs checked and frozen, once per idempotency key;
                                 the owner's cancel before SIGNING
    simulate.py   SIMULATING     quote, calldata, eth_call and eth_estimateGas at a pinned block
    validate.py   VALIDATING     scope, price, balances, allowance, fees; nonces allocated and every
                                 transaction parameter frozen by one holder per wallet; the signer asked
    signed.py     SIGNING        the signer's answer persisted (raw bytes before any broadcast), or
                                 its refusal recorded
    broadcast.py  CONFIRMING     after signing: persist (signed.py), then one broadcaster per wallet
                                 sends the same bytes in nonce order; a confirm is asked for
    confirm.py    SETTLED        receipts, depth and the settlement gate; stuck transactions replaced
    verdicts.py                  the watcher's verdicts: receipts orphaned by a reorg, finality
                                 violated
    recovery.py                  the owner's cancel and retry requests (the web only records them);
                                 the beat tick: one confirm pass, and the safety net that re-enqueues
                                 a step nobody ran (a dead worker, a flushed broker)

Beneath them: transition.py (the one checked transition primitive: a SERIALIZABLE transaction's
version- and audit-head-checked UPDATE, the hash-chained audit event and the next step enqueued on
commit; the terminal endings) and payloads.py (pure builders of calldata, gas limits, replacements
and fee bumps). Chain reads happen outside any transaction; each step is idempotent and takes ids,
so a crash anywhere leaves a trade whose step can be run again. docs/critical-path.md maps every
step, its transaction boundary, queue, external calls and recovery.
"""

from .broadcast import trade_after_signing, trade_broadcast
from .confirm import trade_confirm
from .recovery import confirm_all, owner_requests_handle, recover_stalled_trades
from .simulate import trade_simulate
from .submit import IdempotencyConflict, Submitted, TradeInputError, trade_cancel, trade_submit
from .transition import StaleTrade
from .validate import trade_validate
from .verdicts import trade_finality_violate, trade_receipts_orphaned

__all__ = [
    "IdempotencyConflict",
    "StaleTrade",
    "Submitted",
    "TradeInputError",
    "confirm_all",
    "owner_requests_handle",
    "recover_stalled_trades",
    "trade_after_signing",
    "trade_broadcast",
    "trade_cancel",
    "trade_confirm",
    "trade_finality_violate",
    "trade_receipts_orphaned",
    "trade_simulate",
    "trade_submit",
    "trade_validate",
]
