"""The trigger-kept count tables against a recount from the rows themselves: one definition
for every test that writes through a counted path (triggers, or a bulk chunk's grouped
statements)."""

from __future__ import annotations

from edgecatalog.engines import current as engine
from edgecatalog.listing import zones
from edgecatalog.listing.counts import COUNT_TABLES
from edgecatalog.models import GENERATED_COLUMNS, database

# table: (what the table holds, the same computed from image/annotation rows)
RECOUNTS = {
    "image_facet_count": (
        (
            "SELECT batch_id, device_id, annotation_status, split, sync_state, n "
            "FROM image_facet_count WHERE n > 0 ORDER BY 1, 2, 3, 4, 5"
        ),
        (
            "SELECT batch_id, device_id, annotation_status, split, sync_state, count(*) "
            "FROM image GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
        ),
    ),
    "image_total_count": (
        (
            "SELECT device_id, annotation_status, split, sync_state, n FROM image_total_count "
            "WHERE n > 0 ORDER BY 1, 2, 3, 4"
        ),
        (
            "SELECT device_id, annotation_status, split, sync_state, count(*) FROM image "
            "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        ),
    ),
    # Per class: the images and the annotations (a row left with no image must hold no
    # annotation either).
    "image_class_count": (
        (
            "SELECT class_value, n, annotations FROM image_class_count "
            "WHERE n > 0 OR annotations <> 0 ORDER BY 1"
        ),
        (
            "SELECT class_value, count(DISTINCT image_id), count(*) FROM annotation "
            "GROUP BY 1 ORDER BY 1"
        ),
    ),
    "image_class_total": (
        (
            "SELECT class_value, device_id, annotation_status, split, sync_state, source, "
            "model_version, n, annotations FROM image_class_total "
            "WHERE n > 0 OR annotations <> 0 ORDER BY 1, 2, 3, 4, 5, 6, 7"
        ),
        (
            "SELECT a.class_value, i.device_id, i.annotation_status, i.split, i.sync_state, "
            "i.source, i.model_version, count(DISTINCT i.id), count(*) FROM annotation a "
            "JOIN image i ON i.id = a.image_id GROUP BY 1, 2, 3, 4, 5, 6, 7 "
            "ORDER BY 1, 2, 3, 4, 5, 6, 7"
        ),
    ),
    "image_class_batch": (
        (
            "SELECT class_value, batch_id, n, annotations FROM image_class_batch "
            "WHERE n > 0 OR annotations <> 0 ORDER BY 1, 2"
        ),
        (
            "SELECT a.class_value, i.batch_id, count(DISTINCT i.id), count(*) FROM annotation a "
            "JOIN image i ON i.id = a.image_id GROUP BY 1, 2 ORDER BY 1, 2"
        ),
    ),
    "image_class_facet": (
        (
            "SELECT class_value, batch_id, device_id, annotation_status, split, sync_state, n, "
            "annotations FROM image_class_facet WHERE n > 0 OR annotations <> 0 "
            "ORDER BY 1, 2, 3, 4, 5, 6"
        ),
        (
            "SELECT a.class_value, i.batch_id, i.device_id, i.annotation_status, i.split, "
            "i.sync_state, count(DISTINCT i.id), count(*) FROM annotation a "
            "JOIN image i ON i.id = a.image_id GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"
        ),
    ),
    "image_set_total": (
        "SELECT class_set_id, n FROM image_set_total WHERE n > 0 ORDER BY 1",
        "SELECT class_set_id, count(*) FROM image GROUP BY 1 ORDER BY 1",
    ),
    "image_set_status": (
        (
            "SELECT annotation_status, split, sync_state, class_set_id, n "
            "FROM image_set_status WHERE n > 0 ORDER BY 1, 2, 3, 4"
        ),
        (
            "SELECT annotation_status, split, sync_state, class_set_id, count(*) "
            "FROM image GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        ),
    ),
    "image_set_count": (
        (
            "SELECT device_id, class_set_id, annotation_status, split, sync_state, n "
            "FROM image_set_count WHERE n > 0 ORDER BY 1, 2, 3, 4, 5"
        ),
        (
            "SELECT device_id, class_set_id, annotation_status, split, sync_state, count(*) "
            "FROM image GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
        ),
    ),
    "image_set_facet": (
        (
            "SELECT batch_id, class_set_id, device_id, annotation_status, split, sync_state, n "
            "FROM image_set_facet WHERE n > 0 ORDER BY 1, 2, 3, 4, 5, 6"
        ),
        (
            "SELECT batch_id, class_set_id, device_id, annotation_status, split, sync_state, "
            "count(*) FROM image GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"
        ),
    ),
    "image_origin_count": (
        (
            "SELECT device_id, annotation_status, split, sync_state, source, model_version, n "
            "FROM image_origin_count WHERE n > 0 ORDER BY 1, 2, 3, 4, 5, 6"
        ),
        (
            "SELECT device_id, annotation_status, split, sync_state, source, model_version, "
            "count(*) FROM image GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"
        ),
    ),
    "image_confidence_count": (
        "SELECT confidence_bits, n FROM image_confidence_count WHERE n > 0 ORDER BY 1",
        "SELECT confidence_bits, count(*) FROM image GROUP BY 1 ORDER BY 1",
    ),
    "image_hour_count": (
        "SELECT captured_hour, n FROM image_hour_count WHERE n > 0 ORDER BY 1",
        "SELECT captured_hour, count(*) FROM image GROUP BY 1 ORDER BY 1",
    ),
    "image_hour_facet": (
        (
            "SELECT captured_hour, batch_id, device_id, annotation_status, split, sync_state, "
            "source, model_version, n FROM image_hour_facet WHERE n > 0 "
            "ORDER BY 1, 2, 3, 4, 5, 6, 7, 8"
        ),
        (
            "SELECT captured_hour, batch_id, device_id, annotation_status, split, sync_state, "
            "source, model_version, count(*) FROM image GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 "
            "ORDER BY 1, 2, 3, 4, 5, 6, 7, 8"
        ),
    ),
    "image_hour_class": (
        (
            "SELECT class_value, captured_hour, n, annotations FROM image_hour_class "
            "WHERE n > 0 OR annotations <> 0 ORDER BY 1, 2"
        ),
        (
            "SELECT a.class_value, i.captured_hour, count(DISTINCT i.id), count(*) "
            "FROM annotation a JOIN image i ON i.id = a.image_id GROUP BY 1, 2 ORDER BY 1, 2"
        ),
    ),
    "image_origin_facet": (
        (
            "SELECT batch_id, device_id, annotation_status, split, sync_state, source, "
            "model_version, n FROM image_origin_facet WHERE n > 0 ORDER BY 1, 2, 3, 4, 5, 6, 7"
        ),
        (
            "SELECT batch_id, device_id, annotation_status, split, sync_state, source, "
            "model_version, count(*) FROM image GROUP BY 1, 2, 3, 4, 5, 6, 7 "
            "ORDER BY 1, 2, 3, 4, 5, 6, 7"
        ),
    ),
}


def assert_class_sets_match_annotations() -> None:
    """Every image's class set is the set of its annotations' classes (0: none), and the
    member table lists each set's classes."""
    classes: dict[int, set[str]] = {}
    for image_id, class_value in database.execute_sql(
        "SELECT image_id, class_value FROM annotation"
    ).fetchall():
        classes.setdefault(image_id, set()).add(class_value)
    sets = dict(database.execute_sql("SELECT id, classes FROM class_set").fetchall())
    members: dict[int, set[str]] = {}
    for class_value, set_id in database.execute_sql(
        "SELECT class_value, set_id FROM class_set_member"
    ).fetchall():
        members.setdefault(set_id, set()).add(class_value)
    for image_id, set_id in database.execute_sql("SELECT id, class_set_id FROM image").fetchall():
        want = classes.get(image_id, set())
        have = set(sets[set_id].split("\x1f")) if set_id else set()
        assert have == want, (image_id, have, want)
        assert members.get(set_id, set()) == want, (image_id, set_id)


def assert_zones_bound_rows() -> None:
    """Every zone holding rows has bounds that hold each of its rows' keys (every declared
    one: the sort keys and captured_at)."""
    outside = " OR ".join(
        f"i.{key} < z.{lo} OR i.{key} > z.{hi}" for key, (lo, hi) in zones.BOUNDS.items()
    )
    loose = database.execute_sql(
        "SELECT i.id >> ?, count(*) FROM image i LEFT JOIN image_zone z ON z.zone = i.id >> ? "
        f"WHERE z.zone IS NULL OR {outside} GROUP BY 1",
        (zones.ZONE_BITS, zones.ZONE_BITS),
    ).fetchall()
    assert loose == [], f"rows outside their zone's bounds (zone, rows): {loose}"


def copy_image(source_id: int, new_id: int | None, filename: str) -> int:
    """A raw copy of an image row under another id (None: the next one) and filename, through
    the row triggers alone."""
    generated = {column for table, column in GENERATED_COLUMNS if table == "image"}
    cols = [c.name for c in database.get_columns("image") if c.name not in generated]
    given = {"id": new_id, "filename": filename, "sha256": f"{filename}-{new_id}"}
    picked = [c for c in cols if c != "id" or new_id is not None]
    select = ", ".join("?" if c in given else c for c in picked)
    args = [given[c] for c in picked if c in given] + [source_id]
    return engine().insert_id(
        database.cursor(),
        f"INSERT INTO image ({', '.join(picked)}) SELECT {select} FROM image WHERE id = ?",
        args,
    )


def assert_counts_match_rows() -> dict[str, list[tuple]]:
    """Assert every count table equals its recount, and every zone's bounds hold its rows;
    returns the recounts by table."""
    assert_class_sets_match_annotations()
    assert_zones_bound_rows()
    assert set(RECOUNTS) == {t.name for t in COUNT_TABLES}  # every declared table checked
    recounted = {}
    for table, (kept, recount) in RECOUNTS.items():
        have = database.execute_sql(kept).fetchall()
        want = database.execute_sql(recount).fetchall()
        assert have == want, table
        recounted[table] = want
    return recounted
