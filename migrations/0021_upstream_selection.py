"""What the upstream selection rules decide, and what they have sent (both engines):

* ``outbox.priority``: the rule's priority for an upload (1 goes first; a change to an image
  already upstream takes the rules' last priority), -1 while not yet decided (what every row
  written before this migration, or by a writer that does not decide, starts as).
* ``outbox.rule``: the name of the rule that decided an upload ('' until decided).
* ``outbox_state_priority``: the next rows to send, highest priority then oldest, in one seek
  however long the queue.
* ``sync_usage``: images and bytes sent per rule per minute (``period``: the minute's start in
  microseconds; 0 holds the totals since the catalog began), what quotas, throughput and the
  per-rule metrics read.
* ``sync_selection``: one row, the digest of the rules the queue was last decided by, so a
  start-up with changed rules decides again what is not yet sent.

Plain columns with defaults: no row is rewritten on either engine.
"""

from peewee import BigIntegerField, CompositeKey, IntegerField, Model, TextField


def up(migrator, db):
    class BaseModel(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class SyncUsage(BaseModel):
        rule = TextField()
        period = BigIntegerField()
        images = IntegerField(default=0)
        bytes = BigIntegerField(default=0)

        class Meta:
            primary_key = CompositeKey("rule", "period")

    db.execute_sql("ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT -1")
    db.execute_sql("ALTER TABLE outbox ADD COLUMN rule TEXT NOT NULL DEFAULT ''")
    db.execute_sql(
        "CREATE INDEX IF NOT EXISTS outbox_state_priority_id ON outbox (state, priority, id)"
    )

    class SyncSelection(BaseModel):
        fingerprint = TextField(default="")
        updated_at = BigIntegerField(default=0)

    db.create_tables([SyncUsage, SyncSelection])
