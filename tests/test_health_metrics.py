"""GET /healthz, /readyz and /metrics against the real app (and a real waitress where the
client address matters for /metrics)."""

from __future__ import annotations

import re

import pytest
from conftest import make_settings, seed_image
from prometheus_client.parser import text_string_to_metric_families
from serve_process import ThreadedServer

from edgecatalog import create_app, metrics
from edgecatalog.catalog import NewAnnotation
from edgecatalog.models import Outbox, database


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_healthz_needs_no_auth_and_no_database(client, app):
    database.close()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"success": True, "data": {"status": "ok"}}
    assert database.is_closed()  # the view never opened a connection


def test_readyz_ok_reports_each_check_without_paths(client, settings):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["data"]["status"] == "ok"
    assert set(body["data"]["checks"]) == {"database", "migrations", "data_dir", "disk"}
    assert all(c["ok"] for c in body["data"]["checks"].values())
    assert body["data"]["checks"]["disk"]["free_bytes"] > 0
    assert str(settings.data_dir) not in response.get_data(as_text=True)


def test_readyz_503_names_the_failing_check(tmp_path):
    # More free space demanded than any disk has: the disk check must fail, the others pass.
    settings = make_settings(tmp_path, retention__min_free_bytes=2**62)
    app = create_app(settings)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["success"] is False and body["error"]["code"] == "NOT_READY"
    assert body["error"]["details"] == "disk"
    assert body["data"]["checks"]["disk"]["ok"] is False
    assert body["data"]["checks"]["database"]["ok"] is True


def test_writable_check_fails_where_no_file_can_be_created(tmp_path):
    from edgecatalog.health import check_writable

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert check_writable(tmp_path).ok is True
    failed = check_writable(not_a_dir)
    assert failed.ok is False and str(tmp_path) not in failed.message


def test_metrics_need_a_token(client, auth_headers):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=auth_headers("read")).status_code == 200


def test_metrics_figures_match_the_database(app, client, settings, auth_headers):
    ann = NewAnnotation(class_value="scratch", type="bbox", geometry=(0.5, 0.5, 0.2, 0.2))
    with database.connection_context():
        for seed in range(3):
            seed_image(settings, filename=f"m{seed}.jpg", seed=seed, annotations=(ann, ann))
        Outbox.update(state="quarantined").where(
            Outbox.id == Outbox.select(Outbox.id).limit(1).scalar()
        ).execute()
        pending = Outbox.select().where(Outbox.state != "quarantined")
        expected_depth = pending.count()
        expected_bytes = sum(o.byte_size for o in pending)
    before = metrics.ingest_counts()["duplicate"]
    metrics.ingest_counter("duplicate")
    client.get("/data/images", headers=auth_headers("read"))
    client.get("/data/images/999999", headers=auth_headers("read"))
    response = client.get("/metrics", headers=auth_headers("read"))
    assert response.headers["Content-Type"].startswith("text/plain")
    got = samples(response.get_data(as_text=True))
    assert got[("edgecatalog_images", ())] == 3
    assert got[("edgecatalog_annotations", ())] == 6
    assert got[("edgecatalog_sync_queue_depth", ())] == expected_depth
    assert got[("edgecatalog_sync_bytes_pending", ())] == expected_bytes
    assert got[("edgecatalog_sync_quarantined", ())] == 1
    assert got[("edgecatalog_ingest_events_total", (("kind", "duplicate"),))] == before + 1
    assert got[("edgecatalog_disk_free_bytes", ())] > 0
    # Requests are labelled by url rule, never by the raw path (bounded cardinality).
    ok = (("method", "GET"), ("route", "/data/images"), ("status", "200"))
    missing = (("method", "GET"), ("route", "/data/images/<int:image_id>"), ("status", "404"))
    assert got[("edgecatalog_http_requests_total", ok)] == 1
    assert got[("edgecatalog_http_requests_total", missing)] == 1
    assert got[("edgecatalog_http_request_duration_seconds_count", ok)] == 1
    assert "/data/images/999999" not in response.get_data(as_text=True)


def test_two_apps_have_separate_registries(tmp_path, auth_headers):
    first = create_app(make_settings(tmp_path / "a"))
    second = create_app(make_settings(tmp_path / "b"))
    first.test_client().get("/healthz")
    text = second.extensions["edgecatalog.metrics"].render().decode()
    assert 'route="/healthz"' not in text


def test_ingest_counter_rejects_unknown_kinds():
    with pytest.raises(ValueError):
        metrics.ingest_counter("exploded")


@pytest.mark.parametrize(
    "allow, expected",
    [(["127.0.0.1"], 200), (["127.0.0.0/8"], 200), (["10.0.0.0/8"], 401), ([], 401)],
)
def test_metrics_allow_from_over_real_http(tmp_path, allow, expected):
    app = create_app(make_settings(tmp_path, metrics__allow_from=allow))
    server = ThreadedServer(app)
    try:
        response = server.get("/metrics")
    finally:
        server.close()
    assert response.status_code == expected
    if expected == 200:
        assert re.search(r"^edgecatalog_images \d", response.text, re.MULTILINE)


def test_last_sync_success_comes_from_the_sync_state(app, client, auth_headers):
    from edgecatalog.sync.state import save_status

    with database.connection_context():
        save_status(last_success_at=1_700_000_000_250_000)
    got = samples(client.get("/metrics", headers=auth_headers("read")).get_data(as_text=True))
    assert got[("edgecatalog_sync_last_success_timestamp_seconds", ())] == 1_700_000_000.25
