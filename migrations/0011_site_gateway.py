"""What the site gateway remembers for its devices (both engines, the same tables):

* ``idempotency_record``: the answer given to each ``Idempotency-Key`` a device sent, so a
  retry after a lost answer, or after a gateway restart, gets the same answer again instead of
  doing the work twice. Scoped by the caller (the device id a device key is bound to).
* ``outbox_kind_state``: an index that finds a queued change (not an upload) in one seek, so the
  sync worker asks upstream whether it is a gateway only when a change waits.
* ``field_edit``: when each field of an image was last changed, and where (``origin``: this
  catalog's own API, or a device mirroring its edit), for the rule that the later edit of a
  field wins (``edgecatalog.edit_clock``). ``annotations`` counts as one field: an image's
  annotation set.

The models below are frozen copies of edgecatalog.models as of this migration. Text columns
are ``TextField`` so that PostgreSQL gives them the type SQLite does (see 0009).
"""

from peewee import BigIntegerField, CompositeKey, ForeignKeyField, IntegerField, Model, TextField


def up(migrator, db):
    class BaseModel(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Image(BaseModel):  # only referenced: the table exists
        class Meta:
            table_name = "image"

    class IdempotencyRecord(BaseModel):
        scope = TextField()  # who sent the key: "device:<device_id>"
        key = TextField()
        request = TextField()  # the method and path the key was first used with
        status = IntegerField()
        body = TextField()
        created_at = BigIntegerField()

        class Meta:
            indexes = ((("scope", "key"), True), (("created_at",), False))

    class FieldEdit(BaseModel):
        image = ForeignKeyField(Image, on_delete="CASCADE", index=False)
        field = TextField()
        edited_at = BigIntegerField()
        origin = TextField()  # "local" or "device:<device_id>"

        class Meta:
            primary_key = CompositeKey("image", "field")

    db.create_tables([IdempotencyRecord, FieldEdit])
    db.execute_sql("CREATE INDEX IF NOT EXISTS outbox_kind_state ON outbox (kind, state)")
