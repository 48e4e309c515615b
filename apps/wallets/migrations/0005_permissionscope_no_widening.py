"""A permission scope can only narrow once written, whoever writes it: a row trigger refuses

- any change to a column the owner signs or that ties the row to its wallet, chain and tokens (every
  column except the five below): a different scope is a new proposal the owner signs;
- `revoked_at` going from set back to NULL, and `active` going from false back to true (un-revoking);
- `signature`, `signed_by` or `signed_at` changing once set (only '' / NULL -> a value: attaching).

The signer re-verifies the owner's signature over the row on every request, so an edited row signs
nothing anyway; this stops the silent ones (un-revoking needs no signature) at the database, for the
web role that attaches signatures and revokes, and for every other role. Only someone who can alter
the table (its owner, a superuser) can get past it, by disabling or dropping the trigger."""

from django.db import migrations

CREATE = """
CREATE FUNCTION custos_permissionscope_no_widening() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text;
BEGIN
    SELECT string_agg(n.key, ', ' ORDER BY n.key) INTO changed
      FROM jsonb_each(to_jsonb(NEW)) AS n
     WHERE n.key NOT IN ('signature', 'signed_by', 'signed_at', 'active', 'revoked_at')
       AND n.value IS DISTINCT FROM to_jsonb(OLD) -> n.key;
    IF changed IS NOT NULL THEN
        RAISE EXCEPTION 'permission scope %: % cannot change once the scope is proposed', OLD.id, changed
            USING ERRCODE = 'restrict_violation',
                  HINT = 'revoke it and propose a new scope for the owner to sign';
    END IF;
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NULL THEN
        RAISE EXCEPTION 'permission scope %: a revoked scope cannot be un-revoked (revoked_at)', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NOT OLD.active AND NEW.active THEN
        RAISE EXCEPTION 'permission scope %: a revoked scope cannot be made active again', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF (OLD.signature <> '' AND NEW.signature IS DISTINCT FROM OLD.signature)
       OR (OLD.signed_by <> '' AND NEW.signed_by IS DISTINCT FROM OLD.signed_by)
       OR (OLD.signed_at IS NOT NULL AND NEW.signed_at IS DISTINCT FROM OLD.signed_at) THEN
        RAISE EXCEPTION 'permission scope %: its owner''s signature, once attached, cannot change', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER wallets_permissionscope_no_widening
    BEFORE UPDATE ON wallets_permissionscope
    FOR EACH ROW EXECUTE FUNCTION custos_permissionscope_no_widening();
"""

DROP = """
DROP TRIGGER IF EXISTS wallets_permissionscope_no_widening ON wallets_permissionscope;
DROP FUNCTION IF EXISTS custos_permissionscope_no_widening();
"""


class Migration(migrations.Migration):
    dependencies = [("wallets", "0004_owner_authority")]

    operations = [migrations.RunSQL(CREATE, DROP)]
