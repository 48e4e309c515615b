"""What no role may do to a strategy, whoever writes (row triggers, as wallets 0005 does for scopes):

- change what the strategy trades or how it decides: its owner, wallet, chain, DEX, path, kind,
  parameters, one-cancels-other group, idempotency key, schedule anchor or creation time;
- raise a cap: total_amount_in, max_per_run, max_slippage_bps or max_runs going up, or expires_at
  moving later or being removed (the owner may only lower them);
- bring an ended strategy (COMPLETED, CANCELLED, FAILED) back.

And strategy events are append-only (as trade events are: trades 0007). Only someone who can alter
the tables (their owner, a superuser) can get past it, by disabling or dropping the triggers."""

from django.db import migrations

CREATE = """
CREATE FUNCTION custos_strategy_no_widening() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text;
BEGIN
    SELECT string_agg(n.key, ', ' ORDER BY n.key) INTO changed
      FROM jsonb_each(to_jsonb(NEW)) AS n
     WHERE n.key IN ('owner_id', 'wallet_id', 'chain_id', 'dex_id', 'path', 'kind', 'params', 'oco_group',
                     'idempotency_key', 'anchor_at', 'created_at')
       AND n.value IS DISTINCT FROM to_jsonb(OLD) -> n.key;
    IF changed IS NOT NULL THEN
        RAISE EXCEPTION 'strategy %: % cannot change once the strategy exists', OLD.id, changed
            USING ERRCODE = 'restrict_violation', HINT = 'cancel it and create another';
    END IF;
    IF NEW.total_amount_in > OLD.total_amount_in OR NEW.max_per_run > OLD.max_per_run
       OR NEW.max_slippage_bps > OLD.max_slippage_bps OR NEW.max_runs > OLD.max_runs
       OR (OLD.expires_at IS NOT NULL AND (NEW.expires_at IS NULL OR NEW.expires_at > OLD.expires_at)) THEN
        RAISE EXCEPTION 'strategy %: caps can only be lowered', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.state IN ('COMPLETED', 'CANCELLED', 'FAILED') AND NEW.state IS DISTINCT FROM OLD.state THEN
        RAISE EXCEPTION 'strategy %: a % strategy stays %', OLD.id, OLD.state, OLD.state
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER strategies_strategy_no_widening
    BEFORE UPDATE ON strategies_strategy
    FOR EACH ROW EXECUTE FUNCTION custos_strategy_no_widening();

CREATE FUNCTION custos_strategyevent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'strategies_strategyevent is append-only: % of event % refused', TG_OP, OLD.id
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER strategies_strategyevent_append_only
    BEFORE UPDATE OR DELETE ON strategies_strategyevent
    FOR EACH ROW EXECUTE FUNCTION custos_strategyevent_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS strategies_strategyevent_append_only ON strategies_strategyevent;
DROP FUNCTION IF EXISTS custos_strategyevent_append_only();
DROP TRIGGER IF EXISTS strategies_strategy_no_widening ON strategies_strategy;
DROP FUNCTION IF EXISTS custos_strategy_no_widening();
"""


class Migration(migrations.Migration):
    dependencies = [("strategies", "0001_initial")]

    operations = [migrations.RunSQL(CREATE, DROP)]
