"""The selection rules applied to the queue: which uploads are sent (and at which priority),
which are ``skipped`` (kept here, evicted like synced ones), which wait as ``deferred`` past
a quota; and deciding again, when the rules change, what has not been sent yet.

The worker decides rows at the start of each pass, under the pass lock, before it picks what
to send, so a row is never sent undecided. A decision reads the image as it is then (its
annotations, status, device, pin); it is made once, and made again only by ``sync
--reselect`` or a start-up with different rules. Sent rows are gone from the queue, so
deciding again can never send anything twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from peewee import EXCLUDED

from ..config import Settings
from ..db import write_tx
from ..models import Annotation, Device, Image, Outbox, SyncSelection
from ..timeutil import now_us
from . import usage
from .rules import (
    SEND_ALL,
    Facts,
    Rule,
    decide,
    in_window,
    parse_rules,
    parse_windows,
    period_starts,
)

log = logging.getLogger("edgecatalog.sync")
UPLOAD = "upload"
UNDECIDED = -1
NO_RULE = ""  # the rule of an image no rule matched
DECIDE_CHUNK = 500
OPEN_STATES = ("pending", "skipped", "deferred")  # an upload's states before it is sent
PRUNE_EVERY_SECONDS = 3600.0  # how often minutes of sent counts no quota reads are dropped


def rules_of(select: list) -> tuple[Rule, ...]:
    """``[upstream] select`` (checked at start-up) as rules; none configured: send all."""
    return parse_rules(select) or SEND_ALL


def fingerprint(rules: Sequence[Rule]) -> str:
    text = json.dumps([rule.to_config() for rule in rules], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class DecideReport:
    selected: int = 0
    skipped: int = 0


def facts_of(image_ids: Sequence[int]) -> dict[int, Facts]:
    """What the rules look at, for each image (two queries)."""
    anns: dict[int, list[tuple[str, float | None, str]]] = {}
    for image_id, cls, conf, source in (
        Annotation.select(
            Annotation.image, Annotation.class_value, Annotation.confidence, Annotation.source
        )
        .where(Annotation.image.in_(list(image_ids)))
        .tuples()
    ):
        anns.setdefault(image_id, []).append((cls, conf, source))
    rows = (
        Image.select(
            Image.id, Image.sha256, Image.annotation_status, Image.pinned, Device.device_id
        )
        .join(Device, on=(Image.device == Device.id))
        .where(Image.id.in_(list(image_ids)))
        .tuples()
    )
    facts = {}
    for image_id, sha, status, pinned, device_id in rows:
        own = anns.get(image_id, [])
        facts[image_id] = Facts(
            sha256=sha,
            device_id=device_id,
            annotation_status=status,
            pinned=bool(pinned),
            classes=frozenset(c for c, _, _ in own),
            sources=frozenset(s for _, _, s in own),
            confidences=tuple(c for _, c, _ in own if c is not None),
            annotated=bool(own),
        )
    return facts


def change_priority(rules: Sequence[Rule]) -> int:
    """The priority of a change to an image already upstream: the rules' last (largest)
    number. All changes share it, so they keep their order among themselves (a later patch
    never overtakes an earlier one), images of higher priority still overtake them, and with
    no rules everything is priority 1 and leaves oldest first, changes and uploads alike."""
    return max(rule.priority for rule in rules)


def decide_pending(rules: Sequence[Rule]) -> DecideReport:
    """Decide every pending row not yet decided, a chunk per transaction."""
    report = DecideReport()
    changes_at = change_priority(rules)
    while True:
        rows = list(
            Outbox.select(Outbox.id, Outbox.image, Outbox.kind)
            .where((Outbox.state == "pending") & (Outbox.priority == UNDECIDED))
            .order_by(Outbox.id)
            .limit(DECIDE_CHUNK)
        )
        if not rows:
            return report
        uploads = {row.id: row.image_id for row in rows if row.kind == UPLOAD}
        facts = facts_of(list(uploads.values()))
        groups: dict[tuple[str, int, bool], list[int]] = {}
        for row_id, image_id in uploads.items():
            image = facts.get(image_id)
            if image is None:  # deleted meanwhile: the worker drops the row when it comes
                groups.setdefault((NO_RULE, changes_at, True), []).append(row_id)
                continue
            rule, selected = decide(rules, image)
            key = (rule.name, rule.priority, selected) if rule else (NO_RULE, 0, False)
            groups.setdefault(key, []).append(row_id)
        changes = [row.id for row in rows if row.kind != UPLOAD]
        with write_tx():
            _apply(groups, changes, changes_at, report)


def _apply(
    groups: dict[tuple[str, int, bool], list[int]],
    changes: list[int],
    changes_at: int,
    report: DecideReport,
) -> None:
    still = (Outbox.state == "pending") & (Outbox.priority == UNDECIDED)
    if changes:
        Outbox.update(priority=changes_at).where(still & Outbox.id.in_(changes)).execute()
    for (rule, priority, selected), ids in groups.items():
        if selected:
            Outbox.update(priority=priority, rule=rule).where(still & Outbox.id.in_(ids)).execute()
            report.selected += len(ids)
            continue
        images = Outbox.select(Outbox.image).where(still & Outbox.id.in_(ids))
        Image.update(sync_state="skipped").where(
            Image.id.in_(images) & (Image.sync_state == "pending")
        ).execute()
        Outbox.update(priority=priority, rule=rule, state="skipped").where(
            still & Outbox.id.in_(ids)
        ).execute()
        report.skipped += len(ids)


def reopen() -> int:
    """Every upload not yet sent (pending, skipped, deferred) back to undecided and pending;
    returns how many. Quarantined rows stay as they are: they wait for a person; so do
    skipped images whose file retention has evicted (there is nothing left to send)."""
    evicted = Image.select(Image.id).where(Image.evicted_at.is_null(False))
    open_uploads = (
        (Outbox.kind == UPLOAD) & Outbox.state.in_(OPEN_STATES) & Outbox.image.not_in(evicted)
    )
    with write_tx():
        count = (
            Outbox.update(state="pending", priority=UNDECIDED, rule=NO_RULE)
            .where(open_uploads)
            .execute()
        )
        # Changes take the new rules' change priority (the same for all: their order holds).
        Outbox.update(priority=UNDECIDED).where(
            (Outbox.kind != UPLOAD) & (Outbox.priority != UNDECIDED)
        ).execute()
        Image.update(sync_state="pending").where(
            Image.sync_state.in_(("skipped", "deferred")) & Image.evicted_at.is_null()
        ).execute()
    return count


def reselect(rules: Sequence[Rule]) -> DecideReport:
    """Decide again every upload not yet sent, and remember the rules that decided them. A
    crash half way leaves rows undecided, which the next pass decides before sending any."""
    reopen()
    report = decide_pending(rules)
    with write_tx():
        SyncSelection.insert(id=1, fingerprint=fingerprint(rules), updated_at=now_us()).on_conflict(
            conflict_target=[SyncSelection.id],
            update={SyncSelection.fingerprint: EXCLUDED.fingerprint,
                    SyncSelection.updated_at: EXCLUDED.updated_at},
        ).execute()  # fmt: skip
    return report


def reselect_if_changed(rules: Sequence[Rule]) -> DecideReport | None:
    """At start-up: decide the queue again when the rules differ from those that decided it."""
    row = SyncSelection.get_or_none(SyncSelection.id == 1)
    if row is not None and row.fingerprint == fingerprint(rules):
        return None
    return reselect(rules)


# -- quotas ----------------------------------------------------------------------------------
class Quotas:
    """Quota use of each rule with a quota in the current local hour and day, loaded once per
    pass and counted on as the pass sends."""

    def __init__(self, rules: Sequence[Rule], now: float) -> None:
        self.limits = {rule.name: rule.quotas for rule in rules if rule.quotas}
        hour, day = period_starts(now)
        self.hour = usage.spent_since(int(hour * 1e6)) if self.limits else {}
        self.day = usage.spent_since(int(day * 1e6)) if self.limits else {}
        self.held: set[str] = set()  # rules deferred during this pass

    def _used(self, rule: str, key: str) -> int:
        spent = (self.hour if key.startswith("per_hour") else self.day).get(rule)
        if spent is None:
            return 0
        return spent.bytes if key.endswith("_bytes") else spent.images

    def allows(self, rule: str, size: int) -> bool:
        """Whether one more image of ``size`` bytes fits every quota of ``rule``. An image
        larger than a byte quota goes alone, first in its period, or it would never go."""
        if rule in self.held:
            return False
        for key, limit in self.limits.get(rule, {}).items():
            used, more = self._used(rule, key), size if key.endswith("_bytes") else 1
            if limit == 0 or (used + more > limit and used > 0):
                return False
        return True

    def exhausted(self) -> set[str]:
        """Rules with a quota used up for now (not one more image of any size)."""
        return {
            rule
            for rule, limits in self.limits.items()
            if any(limit == 0 or self._used(rule, key) >= limit for key, limit in limits.items())
        }

    def hold(self, rule: str) -> None:
        self.held.add(rule)

    def spend(self, rule: str, size: int) -> None:
        for spent in (self.hour, self.day):
            old = spent.get(rule, usage.Spent())
            spent[rule] = usage.Spent(old.images + 1, old.bytes + size)


def defer(rules: Iterable[str]) -> int:
    """Pending uploads of these rules wait for their next period (``deferred``)."""
    names = list(rules)
    if not names:
        return 0
    which = (Outbox.state == "pending") & (Outbox.kind == UPLOAD) & Outbox.rule.in_(names)
    with write_tx():
        Image.update(sync_state="deferred").where(
            Image.id.in_(Outbox.select(Outbox.image).where(which)) & (Image.sync_state == "pending")
        ).execute()
        return Outbox.update(state="deferred").where(which).execute()


def release(exhausted: set[str]) -> int:
    """Deferred uploads of rules whose quotas have room again go back in the queue."""
    which = Outbox.state == "deferred"
    if exhausted:
        which &= Outbox.rule.not_in(list(exhausted))
    with write_tx():
        Image.update(sync_state="pending").where(
            Image.id.in_(Outbox.select(Outbox.image).where(which))
            & (Image.sync_state == "deferred")
        ).execute()
        return Outbox.update(state="pending").where(which).execute()


class Selector:
    """The rules, windows and quotas of one worker, applied at the start of each pass."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.rules = rules_of(settings["upstream.select"])
        self.windows = parse_windows(settings["upstream.windows"])
        self.always_priority: int = settings["upstream.always_priority"]
        self.clock = clock  # wall time: windows and quota periods are the device's local time
        self._checked = False  # the queue is decided again once if the rules changed
        self._pruned = -PRUNE_EVERY_SECONDS

    def reselect(self) -> DecideReport:
        self._checked = True
        return reselect(self.rules)

    def prepare(self) -> tuple[int | None, Quotas]:
        """Decide new rows (the whole queue again, once, if the rules changed since it was
        decided), defer or release by quota. Returns the highest priority number allowed
        now (None: any; outside the windows, ``always_priority``) and the quotas' use, which
        the pass counts on as it sends."""
        if not self._checked:
            decided = reselect_if_changed(self.rules)
            if decided is not None:
                log.info(
                    "selection rules changed: %d upload(s) to send, %d skipped",
                    decided.selected,
                    decided.skipped,
                )
            self._checked = True
        decide_pending(self.rules)
        now = self.clock()
        quotas = Quotas(self.rules, now)
        if quotas.limits:
            exhausted = quotas.exhausted()
            release(exhausted)
            defer(exhausted)
            if time.monotonic() - self._pruned >= PRUNE_EVERY_SECONDS:
                with write_tx():
                    usage.prune()
                self._pruned = time.monotonic()
        return (None if in_window(self.windows, now) else self.always_priority), quotas
