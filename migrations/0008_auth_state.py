"""Credentials a running service must see change without a restart: device keys bound to a
device id (``edgecatalog device-key add/revoke``) and bearer-token revocations
(``edgecatalog token revoke``), plus ``auth_epoch``, one counter bumped by triggers on both.

Every request checks its credential against an in-memory copy of these tables; the service
polls ``auth_epoch`` (one row, one page) at most once a second per process and reloads the
copy only when the counter moved. Triggers rather than the CLI bumping it, so a change made any
other way (an operator with the sqlite3 shell) is seen too. Only digests of keys are stored.

The models below are frozen copies of edgecatalog.models as of this migration.
"""

from peewee import BigIntegerField, CharField, Model

from edgecatalog.engines import engine_of

STATEMENTS = (
    """CREATE TABLE IF NOT EXISTS auth_epoch (
        id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)""",
    "INSERT OR IGNORE INTO auth_epoch VALUES (1, 0)",
)

_BUMP = "BEGIN UPDATE auth_epoch SET n = n + 1; END"
TRIGGERS = {
    f"{table}_{suffix}": f"AFTER {event} ON {table} {_BUMP}"
    for table in ("device_key", "token_revocation")
    for suffix, event in (("epoch_ai", "INSERT"), ("epoch_au", "UPDATE"), ("epoch_ad", "DELETE"))
}


# PostgreSQL: the same table and counter, the triggers as PL/pgSQL.
POSTGRES = (
    (
        "CREATE TABLE IF NOT EXISTS auth_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "n BIGINT NOT NULL)"
    ),
    "INSERT INTO auth_epoch VALUES (1, 0) ON CONFLICT DO NOTHING",
    (
        "CREATE OR REPLACE FUNCTION auth_epoch_bump() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN UPDATE auth_epoch SET n = n + 1; RETURN NULL; END $$"
    ),
    *(
        f"CREATE TRIGGER {table}_epoch AFTER INSERT OR UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION auth_epoch_bump()"
        for table in ("device_key", "token_revocation")
    ),
)


def up(migrator, db):
    class BaseModel(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class DeviceKey(BaseModel):
        device_id = CharField()
        digest = CharField(unique=True)  # SHA-256 hex of the key; the key itself is never kept
        label = CharField(default="")
        created_at = BigIntegerField()
        revoked_at = BigIntegerField(null=True)

        class Meta:
            indexes = ((("device_id",), False),)

    class TokenRevocation(BaseModel):
        kind = CharField()  # jti | subject | all
        value = CharField(default="")
        created_at = BigIntegerField()

    db.create_tables([DeviceKey, TokenRevocation])
    if engine_of(db).name == "postgres":
        for sql in POSTGRES:
            db.execute_sql(sql)
        return
    for sql in STATEMENTS:
        db.execute_sql(sql)
    for name, body in TRIGGERS.items():
        db.execute_sql(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")
