"""Run the query matrix against the service, the floor and Datasette on one generated catalog,
and print latencies, throughput, ratios and pass/fail against the list's speed goals.

Usage: ``python benchmarks/queries.py --data /tmp/ec-100k [--duration 3] [--only REGEX]
[--matrix standard|adversarial]`` (``--data`` is a folder made by ``generate.py``; the
adversarial matrix, ``adversarial.py``, adds 100 images with many annotations to it once). All three servers run as subprocesses on
loopback ports; the service is the real ``edgecatalog serve`` with a real JWT.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

import adversarial
import load
import matrix
import servers

GOAL_P95_MS, GOAL_MEDIAN_MS, GOAL_FLOOR_SHARE, GOAL_DATASETTE_X = 50.0, 10.0, 0.6, 2.0
GOAL_RSS_MB, GOAL_COLD_S, GOAL_BYTES_PER_IMAGE = 80, 1.5, 1536


def check_answers(case: matrix.Case, svc: servers.Server, floor: servers.Server) -> str:
    """Do the service and the floor agree on this request (total and page ids)?"""
    a = requests.get(svc.url + case.url(), headers=svc.headers, timeout=120)
    b = requests.get(floor.url + case.url(), timeout=120)
    if a.status_code != 200 or b.status_code != 200:
        return f"status {a.status_code}/{b.status_code}"
    if case.path != "/data/images":
        return "same" if a.content == b.content else "bytes differ"
    ja, jb = a.json(), b.json()
    if ja["meta"]["total"] != jb["meta"]["total"]:
        return f"total {ja['meta']['total']} != floor {jb['meta']['total']}"
    if [r["id"] for r in ja["data"]] != [r["id"] for r in jb["data"]]:
        return "page ids differ"
    return "same"


def check_datasette(
    case: matrix.Case, ds: servers.Server, floor: servers.Server, db_name: str
) -> str:
    """Does Datasette's answer match the floor's (count, then page ids)?"""
    url = case.datasette_url(db_name)
    if url is None:
        return ""
    a = requests.get(ds.url + url, timeout=120)
    b = requests.get(floor.url + case.url(), timeout=120)
    if a.status_code != 200:
        return f"status {a.status_code}"
    ja, jb = a.json(), b.json()
    if ja.get("filtered_table_rows_count") != jb["meta"]["total"]:
        return f"count {ja.get('filtered_table_rows_count')} != {jb['meta']['total']}"
    # Datasette breaks ties in the sort column its own way, so equal counts are what matters.
    return (
        "same"
        if [r["id"] for r in ja["rows"]] == [r["id"] for r in jb["data"]]
        else "same count, ids differ (ties)"
    )


def run_case(
    case: matrix.Case, targets: dict[str, servers.Server], db_name: str, args: argparse.Namespace
) -> dict:
    result: dict = {"name": case.name, "url": case.url(), "note": case.note}
    for name, server in targets.items():
        url = case.url() if name != "datasette" else case.datasette_url(db_name)
        if url is None:
            continue
        full = server.url + url
        lat = load.measure_latency(full, server.headers, args.duration)
        thr = load.measure_throughput(full, server.headers, args.duration, args.concurrency)
        result[name] = {
            "url": url,
            **asdict(lat),
            "rps": thr.rps,
            "rps_requests": thr.requests,
            "rps_errors": thr.errors,
        }
    return result


def verdict(row: dict) -> dict:
    svc, floor, ds = row.get("service"), row.get("floor"), row.get("datasette")
    out = {"p95_ok": svc["p95_ms"] <= GOAL_P95_MS, "errors": svc["errors"] + svc["rps_errors"]}
    out["floor_share"] = svc["rps"] / floor["rps"] if floor and floor["rps"] else None
    out["vs_datasette"] = svc["rps"] / ds["rps"] if ds and ds["rps"] else None
    out["floor_ok"] = out["floor_share"] is None or out["floor_share"] >= GOAL_FLOOR_SHARE
    out["ds_ok"] = out["vs_datasette"] is None or out["vs_datasette"] >= GOAL_DATASETTE_X
    out["pass"] = out["p95_ok"] and out["floor_ok"] and out["ds_ok"] and not out["errors"]
    return out


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict]) -> None:
    width = max([24] + [min(56, len(r["name"])) for r in rows])
    head = (
        f"{'query':{width}} {'p50':>6} {'p95':>6} {'p99':>6} {'rps8':>6} {'floor':>6} "
        f"{'ds':>6} {'/floor':>6} {'xds':>5} {'fl p50':>6} {'ds p50':>6}  ok  check"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        svc, v = row["service"], row["verdict"]
        floor, ds = row.get("floor") or {}, row.get("datasette") or {}
        print(
            f"{row['name'][:width]:{width}} {svc['p50_ms']:6.1f} {svc['p95_ms']:6.1f} "
            f"{svc['p99_ms']:6.1f} {svc['rps']:6.0f} {_fmt(floor.get('rps'), '.0f'):>6} "
            f"{_fmt(ds.get('rps'), '.0f'):>6} {_fmt(v['floor_share'], '.2f'):>6} "
            f"{_fmt(v['vs_datasette'], '.2f'):>5} {_fmt(floor.get('p50_ms')):>6} "
            f"{_fmt(ds.get('p50_ms')):>6}  {'yes' if v['pass'] else 'NO ':3} {row['check']}"
            + (f"; datasette: {row['datasette_check']}" if row.get("datasette_check") else "")
        )


def summary(rows: list[dict], extra: dict) -> dict:
    p50s = [r["service"]["p50_ms"] for r in rows]
    out = {
        "median_p50_ms": statistics.median(p50s),
        "queries": len(rows),
        "p95_fail": [r["name"] for r in rows if not r["verdict"]["p95_ok"]],
        "floor_fail": [r["name"] for r in rows if not r["verdict"]["floor_ok"]],
        "datasette_fail": [r["name"] for r in rows if not r["verdict"]["ds_ok"]],
        "median_floor_share": statistics.median(
            [r["verdict"]["floor_share"] for r in rows if r["verdict"]["floor_share"]] or [0]
        ),
        "median_vs_datasette": statistics.median(
            [r["verdict"]["vs_datasette"] for r in rows if r["verdict"]["vs_datasette"]] or [0]
        ),
        "not_in_datasette": {r["name"]: r["note"] for r in rows if "datasette" not in r},
        **extra,
    }
    out["median_ok"] = out["median_p50_ms"] <= GOAL_MEDIAN_MS
    return out


def print_summary(s: dict) -> None:
    print()
    print(
        f"median p50 over the matrix: {s['median_p50_ms']:.1f} ms "
        f"(goal <= {GOAL_MEDIAN_MS:g}: {'ok' if s['median_ok'] else 'MISSED'})"
    )
    print(f"p95 > {GOAL_P95_MS:g} ms: {len(s['p95_fail'])}/{s['queries']} {s['p95_fail']}")
    print(
        f"rps < {GOAL_FLOOR_SHARE:.0%} of floor: {len(s['floor_fail'])} {s['floor_fail']}; "
        f"median share {s['median_floor_share']:.2f}"
    )
    print(
        f"rps < {GOAL_DATASETTE_X:g}x Datasette: {len(s['datasette_fail'])} "
        f"{s['datasette_fail']}; median ratio {s['median_vs_datasette']:.2f}"
    )
    print(
        f"cold start: {s['cold_start_s']} s {s['cold_starts_s']} (goal <= {GOAL_COLD_S}); "
        "peak RSS service: "
        f"{s['service_peak_rss_mb']} MB (goal <= {GOAL_RSS_MB}; "
        f"{s['service_rss_after_start_mb']} MB after its first answer); "
        f"floor {s['floor_peak_rss_mb']}"
        f" MB; datasette {s['datasette_peak_rss_mb']} MB"
    )
    print(
        f"database: {s['db_bytes']:,} bytes, {s['bytes_per_image']:.0f} bytes/image "
        f"(goal <= {GOAL_BYTES_PER_IMAGE})"
    )
    print(
        "not expressible in Datasette: "
        + "; ".join(f"{k} ({v})" for k, v in s["not_in_datasette"].items())
    )


def cold_starts(
    data: Path, workdir: Path, n: int, threads: int
) -> tuple[list[float], float, servers.Server]:
    """Start the service n times; keep the last one running for the matrix. Also returns the
    peak RSS (MB) right after its first answer: the baseline the queries add to."""
    times = []
    for i in range(n):
        server = servers.start_service(data, workdir, threads)
        times.append(round(server.cold_start_s, 3))
        started_rss = round((server.peak_rss_kb() or 0) / 1024, 1)
        if i < n - 1:
            server.stop()
    return times, started_rss, server


def db_size(db_path: Path) -> int:
    wal = db_path.with_name(db_path.name + "-wal")
    return db_path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def run(args: argparse.Namespace) -> dict:
    data = args.data.resolve()
    db_path = data / "catalog.db"
    generated = json.loads((data / "generate.json").read_text())
    if args.matrix == "adversarial":
        every = adversarial.cases(db_path)
    else:
        every = matrix.cases(matrix.read_facts(db_path), generated["real_files"][0])
    case_list = [c for c in every if not args.only or re.search(args.only, c.name)]
    workdir = servers.make_workdir()
    started: list[servers.Server] = []
    try:
        starts, started_rss, svc = cold_starts(data, workdir, args.cold_starts, args.threads)
        started.append(svc)
        floor = servers.start_floor(db_path, workdir, args.threads, args.floor_same_sql)
        started.append(floor)
        targets = {"service": svc, "floor": floor}
        if not args.no_datasette:
            ds = servers.start_datasette(db_path, workdir)
            if ds is not None:
                started.append(ds)
                targets["datasette"] = ds
        rows = []
        for case in case_list:
            row = run_case(case, targets, db_path.stem, args)
            row["check"] = check_answers(case, svc, floor)
            if "datasette" in targets:
                row["datasette_check"] = check_datasette(
                    case, targets["datasette"], floor, db_path.stem
                )
            row["verdict"] = verdict(row)
            rows.append(row)
            print(
                f"  {case.name}: p50 {row['service']['p50_ms']:.1f} ms, "
                f"{row['service']['rps']:.0f} req/s",
                file=sys.stderr,
                flush=True,
            )
        rss = {f"{s.name}_peak_rss_mb": round((s.peak_rss_kb() or 0) / 1024, 1) for s in started}
    finally:
        for server in started:
            server.stop()
        # The run's config holds a JWT secret; the servers' logs stay for a post-mortem.
        (workdir / "bench-service.toml").unlink(missing_ok=True)
        print(f"server logs: {workdir}", file=sys.stderr)
    rss.setdefault("datasette_peak_rss_mb", None)
    size = db_size(db_path)
    extra = {
        "cold_start_s": statistics.median(starts),
        "cold_starts_s": starts,
        **rss,
        "service_rss_after_start_mb": started_rss,
        "db_bytes": size,
        "bytes_per_image": size / generated["images"],
        "images": generated["images"],
        "matrix": args.matrix,
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    return {"rows": rows, "summary": summary(rows, extra)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder made by generate.py")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, default=4, help="waitress threads (both servers)")
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--only", help="regex: run only the matching queries")
    parser.add_argument(
        "--matrix",
        choices=("standard", "adversarial"),
        default="standard",
        help="the typical queries (matrix.py) or the hard cases (adversarial.py)",
    )
    parser.add_argument("--no-datasette", action="store_true")
    parser.add_argument(
        "--floor-same-sql",
        action="store_true",
        help="the floor runs the service's own SQL (isolates framework cost)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    result = run(args)
    print(
        f"\n{result['summary']['images']:,} images; {args.duration:g} s per phase; "
        f"c={args.concurrency}; {result['summary']['date']}\n"
    )
    print_table(result["rows"])
    print_summary(result["summary"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
