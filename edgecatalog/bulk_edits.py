"""Bulk changes of images (``PATCH /data/images``): one change applied to a selection of
images, by their ids or by the list's filters, chunk by chunk. No Flask.

The selection is fixed when the request starts: the ids given that exist, or the images the
filters match then (an image that stops matching while the change runs is still changed; one
added meanwhile is not). It is applied ``CHUNK`` images per short write transaction, so the
catalog's other writers (uploads, the capture folder, sync) wait for one chunk at most, never
for the whole change, and readers never wait (SQLite's WAL, PostgreSQL's MVCC). Each chunk
sets ``updated_at`` on the images it changes, records the edits (``edit_clock``) and queues a
synced image's change for upstream exactly as a single edit does; the count tables follow in
the same transaction (their triggers), so totals are exact after every chunk.

Under an ``Idempotency-Key`` the request is idempotent as a whole: each chunk's transaction
also records how far the change has come (``IdempotencyRecord``, status 0 while it runs), so
a retry after a crash or a lost answer goes on from the last committed chunk, with the same
selection bound, and a retry after the end gets the first answer again.

Rules: ``split`` (set or assigned) never moves an image whose split is locked, unless
``force`` (counted in ``skipped_locked``; the image's other fields still change), and a
``split_locked: false`` in the same change unlocks first, as for a single edit.
``assign_split`` picks each image's split from its content hash (``split_for``): the same
bytes always land in the same split, whatever the order or the other images.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import edit_clock, listing
from .catalog import PATCHABLE
from .db import write_tx
from .errors import ValidationError
from .listing.sql import Sql, compose, ids_cond, where
from .models import SPLITS, FieldEdit, IdempotencyRecord, Image, Outbox, database
from .timeutil import now_us

MAX_IDS = 10_000
# Images per write transaction: ~30 ms of writing (with the count tables' triggers) keeps an
# upload waiting behind a chunk far below a second, while 100,000 images still take seconds.
CHUNK = 1_000
SETTABLE = ("annotation_status", "split", "split_locked", "pinned")
RUNNING = 0  # IdempotencyRecord.status of a bulk change still under way


@dataclass(frozen=True)
class BulkChange:
    """What to change (``values``, ``assign_split``) on which images (``ids`` or
    ``filters``, exactly one of the two)."""

    ids: tuple[int, ...] | None = None
    filters: Mapping[str, Any] | None = None
    values: Mapping[str, Any] = field(default_factory=dict)  # of SETTABLE
    assign_split: tuple[tuple[str, float], ...] = ()  # (split, share) in SPLITS order
    force: bool = False


@dataclass
class BulkReport:
    matched: int = 0
    changed: int = 0
    skipped_locked: int = 0
    done_through: int = 0  # the last image id (in id order) the change has dealt with

    def answer(self) -> dict[str, int]:
        return {
            "matched": self.matched,
            "changed": self.changed,
            "skipped_locked": self.skipped_locked,
        }


def split_for(sha256: str, shares: tuple[tuple[str, float], ...]) -> str:
    """The split of an image with this content hash: its first 64 bits as a point in [0, 1),
    placed on the shares laid end to end in ``SPLITS`` order."""
    point = int(sha256[:16], 16) / 2**64
    reached = 0.0
    for name, share in shares:
        reached += share
        if point < reached:
            return name
    return shares[-1][0]  # a sum of shares a rounding short of 1


def parse_shares(value: Any, where_: str = "assign_split") -> tuple[tuple[str, float], ...]:
    """``{"train": 0.8, "val": 0.1, "test": 0.1}``: splits to shares in 0..1 summing to 1."""
    if not isinstance(value, dict) or not value:
        raise ValidationError(
            where_,
            f"{where_} must be an object of split: share, e.g. "
            '{"train": 0.8, "val": 0.1, "test": 0.1}',
        )
    for name, share in value.items():
        if name not in SPLITS:
            raise ValidationError(
                f"{where_}.{name}", f"{name!r} is not a split; one of {', '.join(SPLITS)}"
            )
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ValidationError(f"{where_}.{name}", f"{name} must be a number in 0..1")
    if abs(sum(value.values()) - 1) > 1e-6:
        raise ValidationError(where_, f"the shares of {where_} must add up to 1")
    return tuple((name, float(value[name])) for name in SPLITS if value.get(name))


# -- the selection ------------------------------------------------------------------------------


def _selected(change: BulkChange, after: int, bound: int | None) -> tuple[array, int]:
    """The selection's ids above ``after`` (and at most ``bound``: the largest id when the
    change first started), in order, and that bound."""
    if change.ids is not None:
        return array("q", sorted(i for i in set(change.ids) if i > after)), 0
    if bound is None:
        bound = int(database.execute_sql("SELECT coalesce(max(id), 0) FROM image").fetchone()[0])
    query = listing.ImageQuery(filters=dict(change.filters or {}))
    conds = [
        *listing.IMAGES.conditions(query).render(),
        Sql("t.id > ?", (after,)),
        Sql("t.id <= ?", (bound,)),
    ]
    statement = compose("SELECT t.id FROM image t{} ORDER BY t.id", where(conds))
    cursor = database.execute_sql(statement.text, statement.args)
    return array("q", (row[0] for row in cursor)), bound


def _chunks(ids: array) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK].tolist()


# -- one chunk ----------------------------------------------------------------------------------

_COLUMNS = ("id", "annotation_status", "split", "split_locked", "pinned", "sync_state", "sha256")


def _new_values(row: dict[str, Any], change: BulkChange) -> tuple[dict[str, Any], bool]:
    """The fields of one image that change, and whether its split stayed for its lock."""
    wanted = dict(change.values)
    if change.assign_split:
        wanted["split"] = split_for(row["sha256"], change.assign_split)
    locked = bool(wanted.get("split_locked", row["split_locked"])) and bool(row["split_locked"])
    held = "split" in wanted and wanted["split"] != row["split"] and locked and not change.force
    if held:
        del wanted["split"]
    current = {**row, "split_locked": bool(row["split_locked"]), "pinned": bool(row["pinned"])}
    return {k: v for k, v in wanted.items() if current[k] != v}, held


def _apply_chunk(ids: list[int], change: BulkChange, report: BulkReport, now: int) -> None:
    """Change one chunk's images, in the caller's transaction."""
    statement = compose(
        f"SELECT {', '.join('t.' + c for c in _COLUMNS)} FROM image t{{}}", where([ids_cond(ids)])
    )
    rows = [dict(zip(_COLUMNS, r)) for r in database.execute_sql(*statement).fetchall()]
    report.matched += len(rows)
    groups: dict[tuple, list[int]] = {}
    outbox, edits = [], []
    for row in rows:
        values, held = _new_values(row, change)
        report.skipped_locked += held
        if not values:
            continue
        report.changed += 1
        groups.setdefault(tuple(sorted(values.items())), []).append(row["id"])
        upstream = {k: v for k, v in values.items() if k in PATCHABLE}
        if upstream:
            edits.extend((row["id"], name) for name in upstream)
            if row["sync_state"] == "synced":  # as ``catalog.queue_change``
                outbox.append(_outbox_row(row["id"], upstream, now))
    for values, group in groups.items():
        Image.update(updated_at=now, **dict(values)).where(Image.id.in_(group)).execute()
    if edits:
        FieldEdit.insert_many(
            [
                {"image": image, "field": name, "edited_at": now, "origin": edit_clock.LOCAL}
                for image, name in edits
            ]
        ).on_conflict(
            conflict_target=[FieldEdit.image, FieldEdit.field],
            update={FieldEdit.edited_at: now, FieldEdit.origin: edit_clock.LOCAL},
        ).execute()
    if outbox:
        Outbox.insert_many(outbox).execute()


def _outbox_row(image_id: int, payload: dict[str, Any], now: int) -> dict[str, Any]:
    text = json.dumps(payload, sort_keys=True)
    key = hashlib.sha256(f"patch_image\n{image_id}\n{now}\n{text}".encode()).hexdigest()
    return {
        "image": image_id,
        "kind": "patch_image",
        "idempotency_key": key,
        "payload": json.dumps(payload),
        "created_at": now,
        "updated_at": now,
    }


# -- the whole change ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Idempotency:
    """Where a keyed change keeps its progress: the caller's scope, the key, and the request
    (method, path and a digest of the body) the key belongs to."""

    scope: str
    key: str
    request: str


def apply(change: BulkChange, idem: Idempotency | None = None) -> dict[str, int]:
    """Apply ``change``; the answer ``{matched, changed, skipped_locked}``. Under a key, the
    stored progress is the one account of the change: every chunk adds to it in its own
    transaction, so two runs of the same key (a retry while the first still runs) share it."""
    report, bound = BulkReport(), None
    if idem is not None:
        state = _progress(idem)
        if state is not None and state[0] != RUNNING:
            return state[1]  # done before: the first answer
        if state is not None:
            report, bound = _resumed(state[1]), state[1]["bound"]
    ids, bound = _selected(change, report.done_through, bound)
    for chunk in _chunks(ids):
        now = now_us()
        with write_tx():
            if idem is not None:
                state = _progress(idem)
                if state is not None and state[0] != RUNNING:
                    break
                report = _resumed(state[1]) if state is not None else report
                if report.done_through >= chunk[-1]:
                    continue  # another run of this key did it
            _apply_chunk(chunk, change, report, now)
            report.done_through = chunk[-1]
            if idem is not None:
                _save(idem, RUNNING, {**report.answer(), "after": chunk[-1], "bound": bound})
    if idem is None:
        return report.answer()
    with write_tx():
        state = _progress(idem)
        if state is not None and state[0] != RUNNING:
            return state[1]
        answer = (_resumed(state[1]) if state is not None else report).answer()
        _save(idem, 200, answer)
    return answer


def _resumed(body: Mapping[str, Any]) -> BulkReport:
    return BulkReport(body["matched"], body["changed"], body["skipped_locked"], body["after"])


def _progress(idem: Idempotency) -> tuple[int, dict[str, Any]] | None:
    row = IdempotencyRecord.get_or_none(
        (IdempotencyRecord.scope == idem.scope) & (IdempotencyRecord.key == idem.key)
    )
    if row is None:
        return None
    if row.request != idem.request:
        raise ValidationError(
            "Idempotency-Key",
            "this Idempotency-Key was first used for another request (another route or "
            "another body); use a new key for a new change",
        )
    return row.status, json.loads(row.body)


def _save(idem: Idempotency, status: int, body: dict[str, Any]) -> None:
    text = json.dumps(body, separators=(",", ":"))
    IdempotencyRecord.insert(
        scope=idem.scope,
        key=idem.key,
        request=idem.request,
        status=status,
        body=text,
        created_at=now_us(),
    ).on_conflict(
        conflict_target=[IdempotencyRecord.scope, IdempotencyRecord.key],
        update={IdempotencyRecord.status: status, IdempotencyRecord.body: text},
    ).execute()
