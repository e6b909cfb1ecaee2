"""Plan and run: how one image list request is answered, and the answer.

``ImageList.select`` resolves the query, plans its total from the declared count tables, runs
a fixed number of statements (device lookup, total, page, and annotations when asked, read as
the page is written out) and returns a ``Page`` of plain dicts with the exact total and the
plan's choices in words (``edgecatalog explain`` prints them). The choices:

- total: a sum over the first declared count table (``counts.source_for``) whose key columns
  cover every filter's ``counted_by`` columns (with ``class_values``: a per-class table for
  one class; for several, a class-set table summed over the sets holding any of them,
  ``class_sets``);
  a search alone: the sum of its carried per-zone counts; a captured_at range: its whole
  hours from a table keyed by the capture's hour plus ``COUNT(*)`` of the one or two hours it
  cuts (``hours``); a confidence range alone: its buckets (``confidence_bits``); otherwise
  ``COUNT(*)`` (with a search, over the zones holding its matches only).
  The count tables are kept by triggers in the writing transaction: never stale.
- page: the page's ids from ``image`` alone by the sort index, then the joins for those ids.
  Where no index gives the filters' rows in the sort order, a walk of the sort index bounded
  from the exact counts tries first (a shorter one by ``updated_at`` for filters with too few
  rows for the long one), then the zones of the filters' ``created_at`` window
  (``zone_page``), before the engine sorts the filters' rows (a few that the walk did not
  find: with the sort key kept out of the index choice).
- class: an ``EXISTS`` probe per row when the class is common (the sort-index walk finds a
  page after a few rows), the ``IN`` list when it is rare; decided from the exact counts.
- search: the engine's substring index gives candidates, bounded by ``FTS_PROBE``, which the
  exact LIKE rechecks (count and page ids in one statement). A common term (more candidates),
  one without 3 literal characters in a row, or one already counted is counted per zone over
  the filename index once and carried across inserts (``scan_cache.search_zones``; a search
  alone's total is their sum); its page comes from a bounded walk of the sort index where the
  matches are dense (longer when not sorted by ``created_at``), else from the zones holding
  them in the order of their bounds (``zone_page``), unless the other filters' own index reads
  fewer rows; with other filters, the zones' ``created_at`` span bounds the count and a
  ``created_at``-sorted page. With classes of at most ``CLASS_PROBE`` images, a search starts
  from those images instead, each rechecked with every condition.

``ImageList`` holds the declarations (filters, count tables); ``IMAGES`` is the service's.
No Flask.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from .. import confidence_bits
from ..engines import current as engine
from ..errors import NotFound
from ..models import Device, database
from . import counts, scan_cache, zone_page, zones
from . import hours as hours_mod
from .counts import CountTable
from .query import FILTERS, Filter, ImageQuery
from .sql import (
    Sql,
    annotation_tuples_in_order,
    annotations_in_order,
    bits_cond,
    bits_total,
    class_in,
    class_probe,
    compose,
    confidence_cond,
    ids_cond,
    image_row,
    like_pattern,
    page_rows,
    paired,
    project_cond,
    search_cond,
    unindexed,
    walk_ids,
    where,
)

# Above this many trigram candidates, counting the term's matches per zone over the filename
# index once (then carried across inserts) costs less than rechecking them every time
# (measured at 1M images: a 2,001-row probe of a common term costs 1-9 ms).
FTS_PROBE = 2_000
# A search with classes having at most this many images (``image_class_count``, an upper
# bound for several): those images are rechecked with every condition, ~1 us each, instead of
# the term's matches being found first (a day's term and a rare class at 1M: 17k images
# rechecked in ~15 ms, against ~60 ms through the term's zones).
CLASS_PROBE = 20_000
# A search's bounded walk reads 4 times the rows a page takes on average, at least WALK_MIN,
# and is tried only when that is at most WALK_BUDGET (~2 ms at 1M); else the zones answer.
WALK_MIN, WALK_BUDGET = 1_024, 2_048
# Other filters whose index does not give the sort order: 16 times, at least FILTER_WALK_MIN,
# at most FILTER_WALK_BUDGET (~16 ms) and never more than the filter's rows.
FILTER_WALK_MIN, FILTER_WALK_BUDGET = 8_192, 16_384
SIZE = Sql("(SELECT coalesce(max(id), 0) FROM image)")
CAPTURED = ("captured_after", "captured_before")


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]  # without their annotations: see ``items``
    total: int
    limit: int
    offset: int
    include_annotations: bool = False
    plan: dict[str, str] = field(default_factory=dict)  # the choices made, in words

    def items(self, tuples: bool = False) -> Iterator[dict[str, Any]]:
        """The page's rows, each with its annotations when the query asked for them, read
        from the cursor as the rows are consumed: a page of images at the annotation caps is
        never all in memory at once (the view writes each image out as it comes). With
        ``tuples``, each annotation is a tuple of ``sql.ANNOTATION_COLUMNS``, not a dict."""
        if not self.include_annotations:
            yield from self.rows
            return
        ids = [row["id"] for row in self.rows]
        if tuples:
            annotations: Iterator[Any] = annotation_tuples_in_order(ids)
        else:
            annotations = annotations_in_order(ids)
        for row, mine in paired(self.rows, annotations, dicts=not tuples):
            row["annotations"] = mine
            yield row
            del row["annotations"]  # written out: let it go


def known_device_pk(device_id: str) -> int:
    """The row id of a device filter; an unknown device is a 404 naming it, not an empty page."""
    device = Device.get_or_none(Device.device_id == device_id)
    if device is None:
        raise NotFound(f"device {device_id!r} is not known to this catalog", "device_id")
    return device.id


@dataclass
class _Conditions:
    """A request's filters as conditions, built once, in declaration order (the project's,
    which combines project and stage, last); the class's slot is rendered per use."""

    entries: list[tuple[Filter | None, Sql | None]]  # (None, cond): the project's, a window
    classes: tuple[str, ...] | None
    columns: set[str] | None  # count-table columns the non-class filters read; None: some none
    names_batch: bool  # a batch or project among them
    # The same as ``columns`` without the search's (which no count table has): None when
    # another filter has none either.
    searchless: set[str] | None
    # A confidence range without classes, as buckets (``confidence_bits.split``); None: none.
    confidence: confidence_bits.Split | None = None
    # A captured_at range as whole hours and the rest (``hours``), with the count-table
    # columns of the other filters (None: one has none) and the range's created_at window.
    hours: hours_mod.Hours | None = None
    timeless: set[str] | None = None
    window: Sql | None = None

    @property
    def hour_columns(self) -> set[str] | None:
        """The count-table columns a table keyed by the hour must have, or None (no range,
        or another filter no table keys)."""
        if self.hours is None or self.timeless is None:
            return None
        return {*self.timeless, hours_mod.COLUMN}

    def hour_others(self) -> list[Sql]:
        """``others()`` over a table keyed by the hour: the range as its whole hours."""
        return [*self._untimed(self.render(), classes=False), *self.hours.whole()]

    def edge_rows(self, *, probe: bool = False, classes: bool = True) -> list[list[Sql]]:
        """For each hour the range covers in part, every condition (``classes``: the class's
        too) with the range narrowed to that hour's part and the created_at window of that
        part alone, which the created_at index serves (the whole range's window can be the
        whole catalog)."""
        if self.hours is None:
            return []
        untimed = self._untimed(self.render(probe=probe), classes=classes)
        return [
            [
                *untimed,
                Sql("t.captured_at >= ? AND t.captured_at < ?", (lo, hi)),
                zone_page.captured_window(lo, hi),
            ]
            for lo, hi in self.hours.edges()
        ]

    def _untimed(self, rendered: list[Sql], *, classes: bool) -> list[Sql]:
        """``rendered`` (one condition per entry, as ``render`` gives them) without the
        captured range's conditions and window, and without the class's unless ``classes``."""
        return [
            cond
            for (flt, entry), cond in zip(self.entries, rendered)
            if entry is not self.window
            and getattr(flt, "param", None) not in CAPTURED
            and (classes or getattr(flt, "param", None) != "class_values")
        ]

    @property
    def search_alone(self) -> bool:
        """Whether the search is the only condition (its per-zone counts are then exact)."""
        return len(self.entries) == 1 and getattr(self.entries[0][0], "param", None) == "search"

    def render(
        self, *, probe: bool = False, search: bool = True, batch_first: bool = False
    ) -> list[Sql]:
        """Every condition; the classes as a probe per row or their IN list; ``batch_first``:
        as in ``others``."""
        out = []
        for flt, cond in self.entries:
            if flt is not None and flt.param == "class_values":
                out.append(class_probe(self.classes) if probe else class_in(self.classes))
            elif search or flt is None or flt.param != "search":
                weak = flt is not None and flt.weak_index and batch_first and self.names_batch
                out.append(unindexed(cond) if weak else cond)
        return out

    def with_search_ids(self, ids: list[int]) -> _Conditions:
        """The same conditions with the search's LIKE replaced by its matching ids (found
        once by ``ImageList.search_matches``), so a statement over the rows reads those rows
        alone instead of every filename."""
        entries = [
            (flt, ids_cond(ids) if getattr(flt, "param", None) == "search" else cond)
            for flt, cond in self.entries
        ]
        return replace(self, entries=entries)

    def others(self, *, batch_first: bool = False) -> list[Sql]:
        """The conditions of the filters other than the class. ``batch_first``: with a batch
        among them, the 3-4 valued columns are taken out of the index choice. Without
        statistics the planner walks such a column's index (every 'val' image) rather than the
        batch's (docs/performance.md has the figures at 1M)."""
        out = []
        for flt, cond in self.entries:
            if flt is not None and flt.param == "class_values":
                continue
            weak = flt is not None and flt.weak_index and batch_first and self.names_batch
            out.append(unindexed(cond) if weak else cond)
        return out


class ImageList:
    """The image list over its declarations: ``filters`` and the ``count_tables`` that can
    answer their totals."""

    def __init__(
        self,
        filters: tuple[Filter, ...] = FILTERS,
        count_tables: tuple[CountTable, ...] = counts.COUNT_TABLES,
    ) -> None:
        self.filters = filters
        self.count_tables = count_tables

    def conditions(self, query: ImageQuery) -> _Conditions:
        filters = dict(query.filters)
        if "device_id" in filters:
            filters["device_id"] = known_device_pk(filters["device_id"])
        classes = filters.get("class_values") or None
        entries: list[tuple[Filter | None, Sql | None]] = []
        columns: set[str] | None = set()
        searchless: set[str] | None = set()
        timeless: set[str] | None = set()
        for flt in self.filters:
            if flt.param not in filters or (flt.param == "split" and filters["split"] == "all"):
                continue
            if flt.param == "class_values":
                if classes:
                    entries.append((flt, None))
                continue
            if columns is not None:
                columns = None if flt.counted_by is None else columns | set(flt.counted_by)
            if searchless is not None and flt.param != "search":
                searchless = None if flt.counted_by is None else searchless | set(flt.counted_by)
            if timeless is not None and flt.param not in CAPTURED:
                timeless = None if flt.counted_by is None else timeless | set(flt.counted_by)
            cond = flt.condition(filters[flt.param])
            if cond is not None:
                entries.append((flt, cond))
        if "project_id" in filters:
            # As upstream: stage narrows by batch stage only when a project is given.
            entries.append((None, project_cond(filters["project_id"], filters.get("stage"))))
        window = hours = None
        confidence = None
        if "min_confidence" in filters or "max_confidence" in filters:
            stored = engine().stored_confidence
            low = stored(filters.get("min_confidence", 0.0))
            high = stored(filters.get("max_confidence", 1.0))
            if classes:
                # One annotation meets both bounds and the classes: an uncertain box of a
                # class, not one class's box and another's uncertain score.
                entries.append((None, confidence_cond(low, high, classes)))
            else:  # any annotation: the image's confidence bits answer (``confidence_bits``)
                confidence = confidence_bits.split(low, high)
                entries.append((None, bits_cond(confidence.full, confidence.partial)))
        if "captured_after" in filters or "captured_before" in filters:
            # captured_at has no index: the range's created_at window (from the zones' bounds)
            # lets a created_at index serve it. Its whole hours can come from count tables.
            after, before = filters.get("captured_after"), filters.get("captured_before")
            window = zone_page.captured_window(after, before)
            entries.append((None, window))
            hours = hours_mod.split(after, before)
        names_batch = "batch_id" in filters or "project_id" in filters
        return _Conditions(
            entries,
            classes,
            columns,
            names_batch,
            searchless,
            confidence=confidence,
            hours=hours,
            timeless=timeless,
            window=window,
        )

    def select(self, query: ImageQuery) -> Page:
        """The page and its exact total: a bounded number of statements (device lookup, the
        search's counts, total, page ids, rows, and annotations when asked), whatever the
        page size."""
        conds = self.conditions(query)
        plan: dict[str, str] = {}
        ids, matches, total, size, page_conds = self._counted(query, conds, plan)
        rows: list[dict[str, Any]] = []
        walked_short = False
        if total <= query.offset:
            plan["page"] = f"no page statement: the total is not above offset {query.offset}"
            found = None
        elif matches is not None and self._by_zones(query, conds, matches, plan):
            found = self._search_page(query, conds, page_conds, matches, total, size, plan)
        elif ids is None and page_conds and query.sort != "created_at":
            found, walked_short = self._filter_page(query, page_conds, total, size, plan)
        else:
            found = None
        if found is not None:
            rows = page_rows([ids_cond(found)], query.sort, query.order, query.limit, 0)
        elif total > query.offset:
            # Few rows whose page a walk of the sort order did not find (they sit together
            # far along it, as a device's names do in the filename order): sorted, never
            # walked to.
            few = walked_short and total <= FILTER_WALK_BUDGET
            rows = page_rows(
                page_conds, query.sort, query.order, query.limit, query.offset, sort_rows=few
            )
            plan["page"] = (
                f"the page's ids from image alone by {query.sort} {query.order} (limit "
                f"{query.limit}, offset {query.offset}), then the joins for those ids only"
                + ("; the ids are the rechecked candidates" if ids is not None else "")
                + (
                    f"; the bounded walk came back short and the filters select {total} "
                    "rows: they are sorted (the sort key kept out of the index choice)"
                    if few
                    else ""
                )
            )
        return Page(rows, total, query.limit, query.offset, query.include_annotations, plan)

    def count(self, query: ImageQuery) -> int:
        """The exact total of ``query``'s filters, as ``select`` answers it, without a page."""
        return self._counted(query, self.conditions(query), {})[2]

    def _counted(
        self, query: ImageQuery, conds: _Conditions, plan: dict[str, str]
    ) -> tuple[list | None, dict[int, int] | None, int, int, list[Sql]]:
        """(the trigram candidates' ids or None, a search's matches per zone or None, the
        exact total, the catalog's size (0: not read), the conditions the page is selected
        with)."""
        search = query.filters.get("search")
        ids = None
        if search is not None and conds.classes:
            ids = self._class_candidates(conds, plan)
        if ids is None and search is not None and not scan_cache.is_carried(like_pattern(search)):
            ids = self._candidates(search, conds, plan)
        if ids is not None:
            plan["total"] = "the count of the rechecked candidates (no count statement)"
            plan["page"] = "the rechecked candidates' ids"
            return ids, None, len(ids), 0, [ids_cond(ids)]
        matches: dict[int, int] | None = None
        size = 0
        if search is not None:
            carried = scan_cache.search_zones(like_pattern(search))
            matches, size = carried.zones, carried.max_id
        total, counted_size, page_conds = self._total(query, conds, plan, matches)
        if matches is not None and query.sort == "created_at" and not conds.search_alone:
            # The matches' time span: a (filter, created_at) index then seeks into it for the
            # page instead of walking its newer rows. Not for the other sorts: there it could
            # draw the engine to the created_at index and a sort of the span.
            page_conds = [*page_conds, zone_page.created_window(matches)]
        return None, matches, total, size or counted_size, page_conds

    def _search_page(
        self,
        query: ImageQuery,
        conds: _Conditions,
        page_conds: list[Sql],
        matches: dict[int, int],
        total: int,
        size: int,
        plan: dict[str, str],
    ) -> list[int]:
        """The page's ids of a search the trigram index did not narrow. Spread over the
        catalog, its matches fill a page within the first rows of the sort order: a walk
        bounded to 4 times what that takes on average tries first; clustered elsewhere, the
        walk comes back short and the zones holding the matches answer."""
        wanted = query.offset + query.limit
        budget = max(4 * wanted * size // max(total, 1), WALK_MIN)
        # By created_at the zones are as good as a longer walk (ids follow created_at: the
        # newest zone or two hold a spread term's page). By updated_at their bounds overlap
        # (an image is edited days after it came), so the zones visited for a page can be
        # most of them (~35 ms for a device's prefix at 1M), where the walk a filter gets
        # (FILTER_WALK_BUDGET, ~1 us a row) finds it in a few ms.
        longest = WALK_BUDGET if query.sort == "created_at" else FILTER_WALK_BUDGET
        if budget <= longest:
            found = _walk(query, page_conds, budget, total, size, plan)
            if found is not None:
                return found
        alone = conds.search_alone
        plan["page"] = (
            f"zone by zone: the {sum(1 for n in matches.values() if n)} zone(s) holding the "
            f"term's matches (at most {zone_page.cost(matches)} rows) in the order of their "
            f"{query.sort} bounds, until no later zone can beat the page's last row"
            + ("; a deep offset skips whole zones by their counts" if alone else "")
            + "; then the joins for those ids only"
        )
        return zone_page.page_ids(
            matches,
            page_conds,
            query.sort,
            query.order,
            query.limit,
            query.offset,
            exact=alone,
        )

    def _filter_page(
        self,
        query: ImageQuery,
        page_conds: list[Sql],
        total: int,
        size: int,
        plan: dict[str, str],
    ) -> tuple[list[int] | None, bool]:
        """The page's ids when the filters' own index does not give the sort order (no
        (column, sort key) index: the engine would take all the filters' rows and sort them,
        ~2 us a row, a project's 173k in 0.33 s at 1M), or None to let it. Spread over the
        catalog, they fill a page within the first rows of the sort order, which a bounded
        walk (~1 us a row; 16 times what a page takes on average) tries first; sitting
        together in time, the zones of their created_at window answer. With None, whether a
        bounded walk was tried and came back short."""
        if total <= WALK_BUDGET:
            return None, False  # few rows: sorting them is cheap
        wanted = query.offset + query.limit
        budget = min(max(16 * wanted * size // max(total, 1), FILTER_WALK_MIN), total)
        if budget > FILTER_WALK_BUDGET:
            # Too few rows for 16 times the average within the budget (a device's 33k of 1M):
            # by updated_at, 4 times it still finds the page of rows spread over the sort
            # order (~1,500 rows for that device, where sorting its 33k took ~40 ms). Not by
            # filename: names begin with what filters select (a device's, a day's), so such
            # rows sit together in that order, and the walk came back short (+15 ms).
            budget = min(max(4 * wanted * size // max(total, 1), WALK_MIN), total)
            if budget > FILTER_WALK_BUDGET or query.sort == "filename":
                return None, False
            found = _walk(query, page_conds, budget, total, size, plan)
            return found, found is None
        found = _walk(query, page_conds, budget, total, size, plan)
        if found is not None:
            return found, False
        if query.sort not in zones.BOUNDS or total <= FILTER_WALK_BUDGET:
            return None, True
        span = zone_page.window(page_conds)
        if zone_page.cost(span) >= 2 * total:
            return None, True
        plan["page"] = (
            f"zone by zone: the bounded walk of {budget} rows came back short; the {len(span)} "
            f"zone(s) of the filters' created_at window in the order of their {query.sort} "
            "bounds; then the joins for those ids only"
        )
        found = zone_page.page_ids(
            span, page_conds, query.sort, query.order, query.limit, query.offset
        )
        return found, False

    def _by_zones(
        self, query: ImageQuery, conds: _Conditions, matches: dict[int, int], plan: dict
    ) -> bool:
        """Whether the search's page is found zone by zone (``zone_page``): when the sort has
        zone bounds and visiting the zones holding matches reads fewer rows than the other
        filters select (a batch's few hundred rows are walked through its own index)."""
        if query.sort not in zones.BOUNDS:
            return False
        if conds.search_alone:
            plan["zones"] = (
                "a search alone: a bounded walk when its matches fill a page within the first "
                "rows, else the zones holding them (a deep offset skips whole zones by their "
                "exact counts)"
            )
            return True
        visit = zone_page.cost(matches)
        others = self._searchless_count(conds)
        if others is not None and others <= visit:
            plan["zones"] = (
                f"the other filters select {others} images, no more than the {visit} rows of "
                "the zones holding the term's matches: the page walks their index"
            )
            return False
        return True

    def _searchless_count(self, conds: _Conditions) -> int | None:
        """The images matching the filters other than the search (and the classes), from a
        count table; the catalog's size with no other filter; None when no table covers
        them."""
        others = [
            cond
            for flt, cond in conds.entries
            if flt is None or flt.param not in ("search", "class_values")
        ]
        if conds.searchless is None:
            return None
        statement = SIZE
        if others:
            source = counts.source_for(conds.searchless, per_class=False, tables=self.count_tables)
            if source is None:
                return None
            statement = _sum(source, others)
        return int(database.execute_sql(f"SELECT {statement.text}", statement.args).fetchone()[0])

    # -- search ---------------------------------------------------------------------------

    def search_matches(self, term: str) -> list[int] | None:
        """The ids whose filename contains ``term``, when the substring index narrows it to
        at most FTS_PROBE candidates; None otherwise (the LIKE then reads every filename)."""
        alone = self.conditions(ImageQuery(filters={"search": term}))
        return self._candidates(term, alone, {})

    def _class_candidates(self, conds: _Conditions, plan: dict[str, str]) -> list | None:
        """The ids matching every filter, a search among them, found from the images of the
        classes when they are at most CLASS_PROBE (their IN list drives; each one is
        rechecked with every condition); None for classes with more images."""
        (images,) = scan_cache.fetchone(*compose("SELECT {}", self._class_images(conds.classes)))
        if images > CLASS_PROBE:
            return None
        statement = compose(
            f"SELECT {engine().json_ids('t.id')} FROM image t{{}}", where(conds.render())
        )
        (ids,) = scan_cache.fetchone(statement.text, statement.args)
        plan["search"] = (
            f"the classes have at most {images} images (at most {CLASS_PROBE}): each rechecked "
            "with every condition, the search's LIKE among them; total and page ids in one "
            "statement"
        )
        return json.loads(ids)

    def _candidates(self, term: str, conds: _Conditions, plan: dict[str, str]) -> list | None:
        """The ids matching ``term`` and every other filter exactly, found through the
        engine's substring index when it gives at most FTS_PROBE candidates; None when it
        gives more (a common term) or cannot narrow the term at all (no run of 3+ characters
        without '%' or '_'): its matches are then counted per zone (``scan_cache``)."""
        if max(len(run) for run in re.split(r"[%_]", term)) < 3:
            plan["search"] = (
                "trigram index not used: the term has no run of 3 literal characters; the "
                "exact LIKE over the filename index counts it per zone (carried across "
                "inserts)"
            )
            return None
        candidates = Sql(*engine().search_candidates(term, FTS_PROBE + 1))
        matching = where(
            [
                *conds.render(probe=True, search=False),  # the candidates drive, not a class
                Sql("t.id IN (SELECT id FROM cand)"),
                search_cond(term),
            ]
        )
        # Used twice, the CTE is materialized once (SQLite >= 3.35); LIMIT bounds the probe.
        statement = compose(
            f"WITH cand(id) AS ({{}}) SELECT (SELECT count(*) FROM cand), "
            f"(SELECT {engine().json_ids('t.id')} FROM image t{{}})",
            candidates,
            matching,
        )
        found, ids = scan_cache.fetchone(statement.text, statement.args)
        if found > FTS_PROBE:
            plan["search"] = (
                f"trigram index gave more than {FTS_PROBE} candidates: the exact LIKE over the "
                "filename index counts it per zone instead (carried across inserts)"
            )
            return None
        plan["search"] = (
            f"trigram index gave {found} candidate(s) (at most {FTS_PROBE}), rechecked by the "
            "exact LIKE; total and page ids in one statement"
        )
        return json.loads(ids)

    # -- the total ------------------------------------------------------------------------

    def _total(
        self,
        query: ImageQuery,
        conds: _Conditions,
        plan: dict[str, str],
        matches: dict[int, int] | None = None,
    ) -> tuple[int, int, list[Sql]]:
        """The exact total, the catalog's size (0: not read), and the conditions the page is
        then best selected with. ``matches``: a search's matches per zone
        (``scan_cache.search_zones``)."""
        if conds.search_alone and matches is not None:  # carried forward across inserts
            plan["total"] = (
                "a search alone: the sum of its exact per-zone LIKE counts over the filename "
                "index, carried forward across inserts"
            )
            return sum(matches.values()), 0, conds.render()
        statement = self._count(conds, plan, matches)
        if "search" in query.filters:  # a LIKE over the filename index: remembered until a write
            row = scan_cache.fetchone(statement.text, statement.args)
        else:
            row = database.execute_sql(statement.text, statement.args).fetchone()
        # int(): a sum is a NUMERIC on PostgreSQL.
        total, size, other, class_images = (int(v) for v in row[:4])
        if conds.classes is None:
            return total, size, conds.render()
        # Walking the sort index and probing each row finds the page after about
        # (offset+limit)*other/total rows; the class's IN list costs about class_images rows.
        wanted = query.offset + query.limit
        probe = bool(total) and wanted * other < total * class_images
        reason = (
            f"(offset+limit)*other = {wanted}*{other} = {wanted * other} vs "
            f"total*class_images = {total}*{class_images} = {total * class_images}"
        )
        if total <= query.offset:
            plan["classes"] = f"no page statement; {reason}"
        elif probe:
            plan["classes"] = (
                f"the page probes the classes per row while walking the sort index: {reason}, "
                "smaller"
            )
        else:
            plan["classes"] = (
                f"the page takes the classes' IN list (rare enough): {reason}, not smaller"
            )
        return total, size, conds.render(probe=probe)

    def _count(
        self, conds: _Conditions, plan: dict[str, str], matches: dict[int, int] | None = None
    ) -> Sql:
        """One statement giving (total, size, other, class_images): the exact total; max(id)
        as the catalog's size; the images matching the filters other than the class; the
        classes' images summed (exact for one class, an upper bound for several). With a
        search's ``matches`` per zone, a count over the rows reads only the zones holding
        them."""
        by_hours = self._hourly_count(conds, plan)
        if by_hours is not None:
            return by_hours
        others = conds.others()
        # Counted over the rows: with a search, only the zones holding its matches.
        # (The classes as a probe per row there: the zones' ranges, not a common class's
        # image list, are then what the engine walks.)
        if matches is None:
            every = conds.render()
        else:
            every = [
                *conds.render(probe=True),
                zone_page.within(matches),
                zone_page.created_window(matches),
            ]
        covered = conds.columns is not None
        images = counts.source_for(conds.columns or (), per_class=False, tables=self.count_tables)
        source = images if covered else None
        if conds.confidence is not None and len(conds.entries) == 1:
            table = counts.source_for(
                ("confidence_bits",), per_class=False, tables=self.count_tables
            )
            if table is not None:
                plan["total"] = (
                    f"count table kept by triggers: {table.name} (the buckets wholly inside the "
                    f"confidence range), plus {len(conds.confidence.partial)} partly covered end "
                    "bucket(s) rechecked through the confidence index"
                )
                total = bits_total(table.name, conds.confidence.full, conds.confidence.partial)
                return compose("SELECT {}, {}, 0, 0", total, SIZE)
        if conds.classes is None:
            if source is not None:
                plan["total"] = f"count table kept by triggers: {source.name}"
                # "other" is read only with classes: the sum once (PostgreSQL runs each
                # subquery of the select list, ~13 ms for a project's 21k facet rows at 10M).
                return compose("SELECT {}, {}, 0, 0", _sum(source, others), SIZE)
            plan["total"] = "COUNT(*) over image with every condition (a filter no count table has)"
            counted = compose("(SELECT count(*) FROM image t{})", where(every))
            return compose("SELECT {}, {}, {}, 0", counted, SIZE, SIZE)
        classes = conds.classes
        class_images = self._class_images(classes)
        other = SIZE if not others or source is None else _sum(source, others)
        if len(classes) == 1 and covered:
            table = counts.source_for(conds.columns, per_class=True, tables=self.count_tables)
            if table is not None:
                plan["total"] = f"count table kept by triggers: {table.name} (one class)"
                total = _sum(table, [Sql("t.class_value = ?", classes), *others])
                return compose("SELECT {}, {}, {}, {}", total, SIZE, other, class_images)
        sets = (
            counts.source_for(
                (*conds.columns, "class_set_id"), per_class=False, tables=self.count_tables
            )
            if covered
            else None
        )
        if sets is not None:
            # Each image counts once, in its class set: the sum over the sets holding any of
            # the classes. With other filters their key range leads (the set test is only
            # checked on it: an index probe per set costs a seek per set and filter value).
            plan["total"] = (
                f"count table kept by triggers: {sets.name} (the class sets holding any of the "
                "classes)"
            )
            column = engine().no_index("t.class_set_id") if others else "t.class_set_id"
            member = Sql(
                f"{column} IN (SELECT set_id FROM class_set_member WHERE "
                f"class_value IN ({','.join('?' * len(classes))}))",
                classes,
            )
            total = _sum(sets, [*others, member])
            return compose("SELECT {}, {}, {}, {}", total, SIZE, other, class_images)
        # A declaration without a class-set table that covers the filters (the service's
        # always has one): every condition counted over the images.
        plan["total"] = "COUNT(*) over image with every condition (no count table covers them)"
        counted = compose("(SELECT count(*) FROM image t{})", where(every))
        return compose("SELECT {}, {}, {}, {}", counted, SIZE, SIZE, class_images)

    def _class_images(self, classes: tuple[str, ...]) -> Sql:
        """The classes' images summed from the per-class count table: exact for one class,
        an upper bound for several (an image with two of them counts twice)."""
        per_class = counts.source_for((), per_class=True, tables=self.count_tables)
        return compose(
            f"(SELECT coalesce(sum(n), 0) FROM {per_class.name} WHERE class_value IN "
            f"({','.join('?' * len(classes))}))",
            Sql("", classes),
        )

    def _hourly_count(self, conds: _Conditions, plan: dict[str, str]) -> Sql | None:
        """``_count``'s statement for a captured_at range that tables keyed by the hour
        answer (its whole hours; the rows of the hours it covers in part counted beside), or
        None. With one class and no other filter: the class's hour table, and the images of
        the range for the page's choice."""
        wanted = conds.hour_columns
        if wanted is None or (
            conds.classes is not None and (len(conds.classes) != 1 or wanted != {hours_mod.COLUMN})
        ):
            return None
        images = counts.source_for(wanted, per_class=False, tables=self.count_tables)
        if images is None:
            return None
        in_range = _plus(_sum(images, conds.hour_others()), _rows(conds.edge_rows(classes=False)))
        cut = " plus COUNT(*) over the rows of the hours it covers in part" * bool(
            conds.hours.edges()
        )
        if conds.classes is None:
            plan["total"] = (
                f"count table kept by triggers: {images.name} over the range's whole hours{cut}"
            )
            return compose("SELECT {}, {}, 0, 0", in_range, SIZE)
        table = counts.source_for(wanted, per_class=True, tables=self.count_tables)
        if table is None:
            return None
        classes = conds.classes
        plan["total"] = (
            f"count table kept by triggers: {table.name} (one class) over the range's whole "
            f"hours{cut}"
        )
        total = _plus(
            _sum(table, [Sql("t.class_value = ?", classes), *conds.hour_others()]),
            _rows(conds.edge_rows(probe=True)),
        )
        per_class = counts.source_for((), per_class=True, tables=self.count_tables)
        class_images = Sql(
            f"(SELECT coalesce(sum(n), 0) FROM {per_class.name} WHERE class_value = ?)", classes
        )
        return compose("SELECT {}, {}, {}, {}", total, SIZE, in_range, class_images)

    # -- one image ------------------------------------------------------------------------

    def get_image_row(self, image_id: int) -> dict[str, Any]:
        row = image_row(image_id)
        if row is None:
            raise NotFound(f"image {image_id} does not exist", "id")
        row["annotations"] = list(annotations_in_order([image_id]))
        return row


def _walk(
    query: ImageQuery, conds: list[Sql], budget: int, total: int, size: int, plan: dict[str, str]
) -> list[int] | None:
    """The page's ids from the first ``budget`` rows of the sort order, or None when they do
    not hold a whole page (and are not every row)."""
    wanted = query.offset + query.limit
    found = walk_ids(conds, query.sort, query.order, wanted, budget)
    if len(found) < wanted and budget < size:
        return None
    plan["page"] = (
        f"the first {budget} rows by {query.sort} {query.order} held the page (a bounded walk: "
        f"{wanted}*{size}/{total} rows on average), then the joins for those ids only"
    )
    return found[query.offset :]


def _sum(table: CountTable, conds: list[Sql]) -> Sql:
    return compose(f"(SELECT coalesce(sum(t.n), 0) FROM {table.name} t{{}})", where(conds))


def _rows(parts: list[list[Sql]]) -> Sql:
    """COUNT(*) of the image rows each part's conditions select, summed (0 for none)."""
    counted = [compose("(SELECT count(*) FROM image t{})", where(every)) for every in parts]
    return functools.reduce(_plus, counted) if counted else Sql("0")


def _plus(a: Sql, b: Sql) -> Sql:
    return compose("({} + {})", a, b)


IMAGES = ImageList()
select_images = IMAGES.select
get_image_row = IMAGES.get_image_row
