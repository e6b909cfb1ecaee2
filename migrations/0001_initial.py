"""Initial schema: projects, devices, batches, dataset versions, file roots, images,
annotations, the sync outbox and rejected captures.

The models below are frozen copies of edgecatalog.models as of this migration: later changes
to the live models never change what this file creates.
"""

from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


def up(migrator, db):
    class BaseModel(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Project(BaseModel):
        name = CharField(unique=True)
        description = TextField(default="")
        created_at = BigIntegerField()
        updated_at = BigIntegerField()

    class Device(BaseModel):
        device_id = CharField(unique=True)
        name = CharField(default="")
        created_at = BigIntegerField()

    class Batch(BaseModel):
        name = CharField()
        device = ForeignKeyField(Device, backref="batches", index=False)
        project = ForeignKeyField(Project, null=True, backref="batches", index=False)
        stage = CharField(default="collecting")
        image_count = IntegerField(default=0)
        opened_at = BigIntegerField()
        closed_at = BigIntegerField(null=True)
        created_at = BigIntegerField()
        updated_at = BigIntegerField()

        class Meta:
            indexes = (
                (("device", "stage"), False),
                (("project", "stage"), False),
            )

    class DatasetVersion(BaseModel):
        project = ForeignKeyField(Project, null=True, backref="versions", index=False)
        version_name = CharField(unique=True)
        created_at = BigIntegerField()

    class FileRoot(BaseModel):
        """A folder image files live under: the data folder's images/ or a capture folder."""

        path = TextField(unique=True)

    class Image(BaseModel):
        filename = CharField()
        storage_key = CharField()
        width = IntegerField(default=0)
        height = IntegerField(default=0)
        device = ForeignKeyField(Device, index=False)
        batch = ForeignKeyField(Batch, backref="images", index=False)
        annotation_status = CharField(default="pending")
        split = CharField(default="none")
        split_locked = BooleanField(default=False)
        version = ForeignKeyField(DatasetVersion, null=True, index=False)
        created_at = BigIntegerField()
        updated_at = BigIntegerField()
        captured_at = BigIntegerField()
        # What the catalog needs for itself.
        sha256 = CharField(unique=True)
        byte_size = BigIntegerField()
        root = ForeignKeyField(FileRoot, index=False)
        path = TextField()  # relative to root; never taken from a client
        model_id = CharField(default="")
        model_version = CharField(default="")
        source = CharField(default="")
        # Store-and-forward state.
        sync_state = CharField(default="pending")
        synced_at = BigIntegerField(null=True)
        remote_id = CharField(default="")
        remote_batch_id = CharField(default="")
        remote_storage_key = CharField(default="")
        evicted_at = BigIntegerField(null=True)

        class Meta:
            indexes = (
                (("created_at",), False),
                (("updated_at",), False),
                (("filename",), False),
                (("batch", "created_at"), False),
                (("device", "created_at"), False),
                (("annotation_status", "created_at"), False),
                (("split", "created_at"), False),
                (("sync_state", "created_at"), False),
            )

    class Annotation(BaseModel):
        image = ForeignKeyField(Image, backref="annotations", on_delete="CASCADE")
        class_value = CharField()
        type = CharField(default="bbox")
        geometry = TextField(default="[]")  # JSON array of integer pixel coordinates
        x_center = FloatField()
        y_center = FloatField()
        width = FloatField()
        height = FloatField()
        confidence = FloatField(null=True)
        source = CharField(default="")
        z_order = IntegerField(default=0)
        created_at = BigIntegerField()
        updated_at = BigIntegerField()

        class Meta:
            indexes = ((("class_value", "image"), False),)

    class Outbox(BaseModel):
        """Work for the sync worker, written in the same transaction as the change it carries."""

        image = ForeignKeyField(Image, backref="outbox", on_delete="CASCADE", index=False)
        kind = CharField()  # upload | patch_image | create_annotation | ...
        idempotency_key = CharField(unique=True)
        payload = TextField(default="{}")
        state = CharField(default="pending")  # pending | quarantined | waiting_token
        attempts = IntegerField(default=0)
        next_attempt_at = BigIntegerField(default=0)
        last_status = IntegerField(null=True)
        last_error = TextField(default="")
        byte_size = BigIntegerField(default=0)
        created_at = BigIntegerField()
        updated_at = BigIntegerField()

        class Meta:
            indexes = (
                (("state", "next_attempt_at"), False),
                (("image",), False),
            )

    class RejectedFile(BaseModel):
        """A capture that could not be indexed, kept so the operator can see why."""

        path = TextField(unique=True)
        reason = TextField()
        byte_size = BigIntegerField(default=0)
        mtime_ns = BigIntegerField(default=0)
        created_at = BigIntegerField()

    db.create_tables(
        [Project, Device, Batch, DatasetVersion, FileRoot, Image, Annotation, Outbox, RejectedFile]
    )
