"""Capture bookkeeping: one row per file the capture folder (or ``scan``) has taken.

``capture_file`` remembers where an image or sidecar was found (root + relative path), its
size and mtime when it was taken, and the image it belongs to. It lets the reconciliation
scan skip what it has seen without hashing again, lets a sidecar that arrives after its image
find that image even after the image was moved into the data folder, and tells a changed
sidecar from one already applied.

Frozen models: only the columns this migration needs of the tables it references.
"""

from peewee import BigIntegerField, CharField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class BaseModel(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class FileRoot(BaseModel):
        path = TextField(unique=True)

    class Image(BaseModel):
        pass

    class CaptureFile(BaseModel):
        root = ForeignKeyField(FileRoot, index=False)
        path = TextField()
        kind = CharField()
        stem = TextField()
        image = ForeignKeyField(Image, null=True, on_delete="CASCADE")
        byte_size = BigIntegerField(default=0)
        mtime_ns = BigIntegerField(default=0)
        updated_at = BigIntegerField()

        class Meta:
            indexes = (
                (("root", "path"), True),
                (("root", "stem"), False),
            )

    db.create_tables([CaptureFile], safe=False)
