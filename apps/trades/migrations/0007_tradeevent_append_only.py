"""The audit trail is append-only for every role: a row trigger refuses any UPDATE or DELETE of an
event. Privileges already keep every process role to INSERT (project/db_roles.py); the trigger also
holds against the table owner's own connections (a process started without DB_ROLE, a mistaken
script). Only someone who can alter the table (its owner, a superuser) can get past it, by disabling
or dropping the trigger: that is exactly what audit_verify's hash chain is there to catch.

TRUNCATE fires no row trigger (the test framework's flush empties the table with it); no process role
is granted TRUNCATE."""

from django.db import migrations

CREATE = """
CREATE FUNCTION custos_tradeevent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trades_tradeevent is append-only: % of audit event % refused', TG_OP, OLD.id
        USING ERRCODE = 'restrict_violation',
              HINT = 'the audit trail is only ever appended to (docs/operations.md, Database roles)';
END
$$;
CREATE TRIGGER trades_tradeevent_append_only
    BEFORE UPDATE OR DELETE ON trades_tradeevent
    FOR EACH ROW EXECUTE FUNCTION custos_tradeevent_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS trades_tradeevent_append_only ON trades_tradeevent;
DROP FUNCTION IF EXISTS custos_tradeevent_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("trades", "0006_ownerrequest")]

    operations = [migrations.RunSQL(CREATE, DROP)]
