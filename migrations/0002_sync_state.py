"""The sync worker's shared state: one row that the serve worker, a separate
``edgecatalog sync`` process and GET /sync/status all read and write.

The model below is a frozen copy of edgecatalog.models.SyncStatus as of this migration.
"""

from peewee import BigIntegerField, CharField, IntegerField, Model, TextField


def up(migrator, db):
    class SyncStatus(Model):
        state = CharField(default="idle")
        consecutive_failures = IntegerField(default=0)
        next_attempt_at = BigIntegerField(null=True)
        last_success_at = BigIntegerField(null=True)
        last_error_at = BigIntegerField(null=True)
        last_error_status = IntegerField(null=True)
        last_error_message = TextField(default="")
        auth_fingerprint = CharField(default="")
        updated_at = BigIntegerField(default=0)

        class Meta:
            database = db
            legacy_table_names = False

    db.create_tables([SyncStatus])
