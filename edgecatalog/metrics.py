"""Prometheus metrics of the service. No Flask.

* ``ingest_counter(kind)`` is the small API ingestion code calls (``indexed``, ``duplicate``,
  ``rejected``); the counts live in this process and every app's registry reads them.
* ``Metrics`` owns one ``CollectorRegistry`` per app (never the global one, so tests that build
  several apps do not collide): HTTP request counts and latencies by route and status, plus a
  collector that reads catalog totals, the sync outbox and disk space at scrape time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from peewee import SQL, fn
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .config import Settings

log = logging.getLogger("edgecatalog.metrics")

INGEST_KINDS = ("indexed", "duplicate", "rejected")
CONTENT_TYPE = CONTENT_TYPE_LATEST
_ingest_lock = threading.Lock()
_ingest_counts = dict.fromkeys(INGEST_KINDS, 0)


def ingest_counter(kind: str, amount: int = 1) -> None:
    """Count an ingestion outcome; ``kind`` is one of INGEST_KINDS."""
    if kind not in _ingest_counts:
        raise ValueError(f"ingest counter kind must be one of {', '.join(INGEST_KINDS)}")
    with _ingest_lock:
        _ingest_counts[kind] += amount


def ingest_counts() -> dict[str, int]:
    with _ingest_lock:
        return dict(_ingest_counts)


class CatalogCollector:
    """Figures read when Prometheus scrapes: each is one indexed COUNT/SUM, or a statvfs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        ingest = CounterMetricFamily(
            "edgecatalog_ingest_events",
            "Ingestion outcomes since the process started.",
            labels=["kind"],
        )
        for kind, count in ingest_counts().items():
            ingest.add_metric([kind], count)
        yield ingest
        yield from self._disk()
        yield from self._database()

    def _disk(self) -> Iterator[Metric]:
        from .health import disk_figures

        try:
            free = disk_figures(self.settings.data_dir)["free_bytes"]
        except OSError:
            return
        yield GaugeMetricFamily(
            "edgecatalog_disk_free_bytes",
            "Free bytes on the data folder's file system.",
            value=free,
        )

    def _database(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "edgecatalog_database_up", "1 when the scrape could read the catalog database."
        )
        try:
            figures = _database_figures()
        except Exception as exc:  # noqa: BLE001 - a scrape reports the outage, never a 500
            log.warning("metrics: database figures unavailable: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, help_text, value in figures[:-1]:
            yield GaugeMetricFamily(name, help_text, value=value)
        yield from figures[-1]  # per selection rule


def _rule_metrics() -> list[Metric]:
    """Per ``[upstream] select`` rule (label ``rule``: its name; "" for images no rule
    matched): uploads sent since the catalog began, and those skipped or deferred now."""
    from .models import Outbox
    from .sync.usage import totals

    sent = CounterMetricFamily(
        "edgecatalog_sync_rule_sent_images", "Uploads sent per selection rule.", labels=["rule"]
    )
    sent_bytes = CounterMetricFamily(
        "edgecatalog_sync_rule_sent_bytes", "Bytes uploaded per selection rule.", labels=["rule"]
    )
    for rule, spent in sorted(totals().items()):
        sent.add_metric([rule], spent.images)
        sent_bytes.add_metric([rule], spent.bytes)
    held = {
        state: GaugeMetricFamily(
            f"edgecatalog_sync_rule_{state}",
            f"Uploads {state} now per selection rule"
            + (" (kept local)." if state == "skipped" else " (past a quota)."),
            labels=["rule"],
        )
        for state in ("skipped", "deferred")
    }
    rows = (
        Outbox.select(Outbox.state, Outbox.rule, fn.COUNT(SQL("*")))
        .where(Outbox.state.in_(tuple(held)))
        .group_by(Outbox.state, Outbox.rule)
        .tuples()
    )
    for state, rule, count in rows:
        held[state].add_metric([rule], count)
    return [sent, sent_bytes, *held.values()]


def _count(model, *where) -> int:
    # COUNT(*), not peewee's .count() (a subquery) nor COUNT(id): SQLite then scans the
    # smallest covering index, 3x-10x faster at a million rows (benchmarks/ops.py).
    query = model.select(fn.COUNT(SQL("*")))
    return (query.where(*where) if where else query).scalar()


def _database_figures() -> list:
    from .health import _connection
    from .models import Annotation, Image, Outbox, RejectedFile

    with _connection():
        queue = (
            Outbox.select(fn.COUNT(SQL("*")), fn.COALESCE(fn.SUM(Outbox.byte_size), 0))
            .where(Outbox.state.not_in(("quarantined", "skipped")))
            .scalar(as_tuple=True)
        )
        last_sync = _last_sync_success()
        return [
            ("edgecatalog_images", "Images in the catalog.", _count(Image)),
            ("edgecatalog_annotations", "Annotations in the catalog.", _count(Annotation)),
            (
                "edgecatalog_rejected_files",
                "Capture files recorded as rejected.",
                _count(RejectedFile),
            ),
            ("edgecatalog_sync_queue_depth", "Outbox items waiting to go upstream.", queue[0]),
            ("edgecatalog_sync_bytes_pending", "Bytes of the outbox items waiting.", queue[1]),
            (
                "edgecatalog_sync_quarantined",
                "Outbox items quarantined.",
                _count(Outbox, Outbox.state == "quarantined"),
            ),
            (
                "edgecatalog_sync_last_success_timestamp_seconds",
                "Unix time of the newest successful sync; 0 = never.",
                (last_sync or 0) / 1_000_000,
            ),
            _rule_metrics(),
        ]


def _last_sync_success() -> int | None:
    """Microseconds of the newest successful sync, as the sync worker records it."""
    from .sync.state import load_status

    return load_status().last_success_at


class Metrics:
    """One app's registry and the HTTP instruments the request hooks update."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "edgecatalog_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgecatalog_http_request_duration_seconds",
            "Time to produce the response (headers), by route.",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.registry.register(CatalogCollector(settings))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
