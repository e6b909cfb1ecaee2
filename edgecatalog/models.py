"""Peewee models of the catalog (the schema the migrations build; a test checks they agree).
The list's count tables are not models: ``listing.counts`` declares them. No Flask.

Timestamps are integer microseconds (see ``timeutil``). Indexes follow the list filters:
each filter column leads a composite index ending in the default sort column, so a filtered,
sorted page is an index walk rather than a sort of every match.
"""

from __future__ import annotations

from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    DatabaseProxy,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    PostgresqlDatabase,
    TextField,
)


class CatalogDatabase(DatabaseProxy):
    """The catalog's database, bound by ``db.open_for`` (or ``db.init_database``) to a SQLite
    file or a PostgreSQL database before the first query; models and hand-written SQL go
    through it alike."""

    # Contexts of the database bound when they are made: peewee's proxy would look the
    # database up again when one ends, and a thread still inside one when another catalog is
    # bound (a test's leftover worker) must end it on the database it began on.
    def connection_context(self):
        return self.obj.connection_context()

    def atomic(self, *args, **kwargs):
        return self.obj.atomic(*args, **kwargs)

    def transaction(self, *args, **kwargs):
        return self.obj.transaction(*args, **kwargs)

    def savepoint(self):
        return self.obj.savepoint()

    def manual_commit(self):
        return self.obj.manual_commit()

    def is_closed(self) -> bool:
        """True also before any database is bound (nothing is open)."""
        return self.obj is None or self.obj.is_closed()

    @property
    def location(self) -> str | None:
        """Which catalog is open: the SQLite file's path, or ``postgresql://host:port/dbname``
        (never a password); None before one is bound."""
        obj = self.obj
        if obj is None:
            return None
        if isinstance(obj, PostgresqlDatabase):
            params = obj.connect_params
            return (
                f"postgresql://{params.get('host', '')}:{params.get('port', 5432)}/{obj.database}"
            )
        return str(obj.database)


database = CatalogDatabase()

STAGES = ("collecting", "complete", "unassigned", "annotating")
ANNOTATION_STATUSES = ("pending", "in_progress", "completed")
SPLITS = ("train", "val", "test", "none")
ANNOTATION_TYPES = ("bbox", "polygon")
SYNC_STATES = ("pending", "synced", "quarantined", "local_only", "skipped", "deferred")


class BaseModel(Model):
    class Meta:
        database = database
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
    # Where its bytes are, relative to ``root`` ('/'-separated; never taken from a client),
    # and the contract's ``storage_key``: one column, since the two are always the same
    # (migration 0024 dropped the copy that was ``path``).
    storage_key = CharField()
    width = IntegerField(default=0)
    height = IntegerField(default=0)
    device = ForeignKeyField(Device, index=False)
    batch = ForeignKeyField(Batch, backref="images", index=False)
    annotation_status = CharField(default="pending")
    split = CharField(default="none")
    split_locked = BooleanField(default=False)
    pinned = BooleanField(default=False)  # kept by retention; see migration 0017
    version = ForeignKeyField(DatasetVersion, null=True, index=False)
    created_at = BigIntegerField()
    updated_at = BigIntegerField()
    captured_at = BigIntegerField()
    # What the catalog needs for itself.
    sha256 = CharField(unique=True)
    byte_size = BigIntegerField()
    # The bytes' CRC-32 (migration 0022), counted beside the SHA-256 as they are read in: an
    # export writes it in the ZIP headers without reading the file twice. NULL for an image
    # indexed before it: the export counts it from the bytes.
    crc32 = BigIntegerField(null=True)
    root = ForeignKeyField(FileRoot, index=False)
    model_id = CharField(default="")
    model_version = CharField(default="")
    source = CharField(default="")
    # Store-and-forward state.
    sync_state = CharField(default="pending")
    synced_at = BigIntegerField(null=True)
    remote_id = CharField(default="")
    remote_batch_id = CharField(default="")
    evicted_at = BigIntegerField(null=True)
    # The image's distinct annotation classes as one id (``class_sets``; 0: none), kept by
    # triggers on annotation (migration 0013), set by the bulk writer for new images.
    class_set_id = IntegerField(default=0)
    # Which buckets of 0.05 (``confidence_bits``) its annotations' confidences fall in, one
    # bit each, kept by triggers on annotation (migration 0020), set by the bulk writer.
    confidence_bits = BigIntegerField(default=0)

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
            (("pinned", "created_at"), False),  # the pinned queue (migration 0020)
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
        indexes = (
            (("class_value", "image"), False),
            # The review queues' confidence range gives its images from the index alone.
            (("confidence", "image"), False),
        )


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
    # The selection rules' decision (migration 0021; ``sync/selection.py``): the upload's
    # priority (1 goes first; -1: not yet decided) and its rule's name.
    priority = IntegerField(default=-1)
    rule = TextField(default="")

    class Meta:
        indexes = (
            (("state", "next_attempt_at"), False),
            (("image",), False),
            (("kind", "state"), False),
            (("state", "priority", "id"), False),
        )


class RejectedFile(BaseModel):
    """A capture that could not be indexed, kept so the operator can see why."""

    path = TextField(unique=True)
    reason = TextField()
    byte_size = BigIntegerField(default=0)
    mtime_ns = BigIntegerField(default=0)
    created_at = BigIntegerField()


class SyncStatus(BaseModel):
    """The sync worker's shared state (one row, id 1), read by GET /sync/status and by a
    separate ``edgecatalog sync`` process, so both see the same backoff and auth state."""

    state = CharField(default="idle")  # idle | syncing | offline | backoff | auth_failed
    consecutive_failures = IntegerField(default=0)
    next_attempt_at = BigIntegerField(null=True)
    last_success_at = BigIntegerField(null=True)
    last_error_at = BigIntegerField(null=True)
    last_error_status = IntegerField(null=True)
    last_error_message = TextField(default="")
    auth_fingerprint = CharField(default="")  # digest of the rejected credentials, never them
    updated_at = BigIntegerField(default=0)


class SyncSelection(BaseModel):
    """The digest of the selection rules the queue was last decided by (one row, id 1)."""

    fingerprint = TextField(default="")
    updated_at = BigIntegerField(default=0)


class SyncUsage(BaseModel):
    """Images and bytes sent per selection rule per minute (``period``: the minute's start,
    microseconds; 0: totals since the catalog began): quotas, throughput and metrics."""

    rule = TextField()
    period = BigIntegerField()
    images = IntegerField(default=0)
    bytes = BigIntegerField(default=0)

    class Meta:
        primary_key = CompositeKey("rule", "period")


class CaptureFile(BaseModel):
    """A file the capture folder or ``scan`` took: where it was found, its size and mtime then,
    and its image. Lets the reconciliation scan skip what it has seen without hashing again, and
    a late sidecar find its image even after the image was moved into the data folder."""

    root = ForeignKeyField(FileRoot, index=False)
    path = TextField()  # relative to root, '/'-separated
    kind = CharField()  # image | sidecar
    image = ForeignKeyField(Image, null=True, on_delete="CASCADE")
    byte_size = BigIntegerField(default=0)
    mtime_ns = BigIntegerField(default=0)
    updated_at = BigIntegerField()

    class Meta:
        indexes = (
            # Also how a late sidecar finds its image: its stem with each spelling of each
            # image suffix, looked up here (``indexer.image_for_stem``).
            (("root", "path"), True),
        )


class ImageNameEpoch(BaseModel):
    """One row counting the writes that can take a filename away (delete, rename), kept by
    triggers on ``image`` (migration 0007): search totals are carried forward while it holds."""

    id = IntegerField(primary_key=True)  # always 1 (a CHECK in the migration)
    n = IntegerField()


class DeviceKey(BaseModel):
    """A device key made by ``edgecatalog device-key add``: bound to one device id, stored as
    the SHA-256 digest of the key (the key is shown once and never kept). Revoked keys keep
    their row (``revoked_at`` set) so ``device-key list`` can show what was revoked when."""

    device_id = CharField()
    digest = CharField(unique=True)
    label = CharField(default="")
    created_at = BigIntegerField()
    revoked_at = BigIntegerField(null=True)

    class Meta:
        indexes = ((("device_id",), False),)


class TokenRevocation(BaseModel):
    """A bearer-token revocation (``edgecatalog token revoke``): ``kind`` jti (that token),
    subject (the subject's tokens issued before ``created_at``) or all (every token issued
    before ``created_at``). Signed file URLs are not tokens and are not affected."""

    kind = CharField()
    value = CharField(default="")
    created_at = BigIntegerField()


class AuthEpoch(BaseModel):
    """One row counting changes to ``device_key`` and ``token_revocation``, kept by triggers
    (migration 0008): a running service reloads its copy of both only when it moves."""

    id = IntegerField(primary_key=True)  # always 1 (a CHECK in the migration)
    n = IntegerField()


class IdempotencyRecord(BaseModel):
    """The answer a site gateway gave to one ``Idempotency-Key`` of one caller (migration
    0011), replayed to a retry, also after a restart. ``request`` is the method and path the
    key was first used with: the same key on another route is refused, not replayed."""

    scope = TextField()
    key = TextField()
    request = TextField()
    status = IntegerField()
    body = TextField()
    created_at = BigIntegerField()

    class Meta:
        indexes = ((("scope", "key"), True), (("created_at",), False))


class FieldEdit(BaseModel):
    """When a field of an image last changed and where (``edit_clock``): ``field`` is one of
    ``catalog.PATCHABLE`` or ``annotations`` (the image's annotation set as one field)."""

    image = ForeignKeyField(Image, on_delete="CASCADE", index=False)
    field = TextField()
    edited_at = BigIntegerField()
    origin = TextField()  # "local" (this catalog's API) or "device:<device_id>" (a mirror)

    class Meta:
        primary_key = CompositeKey("image", "field")


class DatasetExport(BaseModel):
    """A dataset export this catalog planned (``GET /data/exports/<format>``, a whole archive):
    when its snapshot was taken, the format and the filters. The page's "changed since the
    last export" queue lists the images updated after the newest one (migration 0020)."""

    format = TextField()
    filters = TextField(default="{}")  # the list filters it selected with, as JSON
    planned_at = BigIntegerField()

    class Meta:
        indexes = ((("planned_at",), False),)


class ClassSet(BaseModel):
    """A set of annotation classes some image has (``class_sets``): ``classes`` sorted and
    joined by U+001F. Never deleted: a set no image has any more counts zero."""

    classes = TextField(unique=True)


class ClassSetMember(BaseModel):
    """Which sets hold a class: a total over several classes sums the sets found here."""

    class_value = TextField()
    set_id = IntegerField()

    class Meta:
        primary_key = CompositeKey("class_value", "set_id")


# Columns the engine computes from others (generated columns): in the tables, never in a
# model, so no insert or update names them. image.captured_hour: migration 0019.
GENERATED_COLUMNS = (("image", "captured_hour"),)

MODELS = (
    Project,
    Device,
    Batch,
    DatasetVersion,
    FileRoot,
    Image,
    Annotation,
    Outbox,
    RejectedFile,
    SyncStatus,
    SyncUsage,
    SyncSelection,
    CaptureFile,
    ImageNameEpoch,
    DeviceKey,
    TokenRevocation,
    AuthEpoch,
    IdempotencyRecord,
    FieldEdit,
    ClassSet,
    ClassSetMember,
    DatasetExport,
)
