// The status bar: sync state, pending work, last sync, the queue per priority, what the
// selection rules keep local or hold past a quota, the recent rate with the time the queue
// would take to drain at it, the sync window, and free disk, from /sync/status and
// /readyz. Either endpoint may be missing on a device (404): its fields say "unavailable"
// and the rest of the page carries on.

import { probe } from "./api.js";
import { formatBytes } from "./detail.js";

const POLL_MS = 15000;

function set(id, text, state) {
  const node = document.getElementById(id);
  node.textContent = text;
  node.dataset.state = state || "";
}

// The first number found under a key the predicate accepts, however deep: the exact shape
// of these bodies belongs to other parts of the service.
function findValue(obj, accept, depth = 0) {
  if (!obj || typeof obj !== "object" || depth > 4) return undefined;
  for (const [key, value] of Object.entries(obj)) {
    if (accept(key, value)) return value;
  }
  for (const value of Object.values(obj)) {
    const found = findValue(value, accept, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}

export function ago(iso) {
  if (!iso) return "never";
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return String(iso);
  const s = Math.round((Date.now() - then) / 1000);
  if (s < 60) return `${Math.max(s, 0)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const SYNC_FIELDS = ["st-sync", "st-pending", "st-last", "st-queue", "st-held", "st-rate",
  "st-window"];

function duration(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// "P1 3 (12 kB) · P9 120 (2.4 MB)": pending rows per priority (1 goes first); rows the worker
// has not decided yet are "new".
function queueText(rows) {
  if (!Array.isArray(rows) || !rows.length) return "empty";
  const name = (p) => (p < 0 ? "new" : `P${p}`);
  return rows.map((r) => `${name(r.priority)} ${r.count} (${formatBytes(r.bytes)})`).join(" · ");
}

function showSelection(d) {
  set("st-queue", queueText(d.pending_by_priority));
  const held = `${d.skipped_count ?? 0} / ${d.deferred_count ?? 0}`;
  set("st-held", held, d.deferred_count ? "warning" : "");
  const rate = d.throughput_images_per_minute;
  set("st-rate", typeof rate !== "number" ? "unknown" : `${rate}/min` +
    (typeof d.drain_eta_seconds === "number" ? `, drains in ${duration(d.drain_eta_seconds)}`
      : ""));
  const opens = d.next_window_at ? new Date(d.next_window_at) : null;
  const clock = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  set("st-window", d.in_window === false && opens
    ? `closed, opens ${opens.toLocaleTimeString([], clock)}` : "open",
  d.in_window === false ? "warning" : "");
}

function showSync(result) {
  if (!result.available) {
    for (const id of SYNC_FIELDS) set(id, result.reason, "unavailable");
    return;
  }
  const d = result.data || {};
  set("st-sync", String(d.state ?? "unknown"), String(d.state ?? ""));
  const count = typeof d.pending === "object" && d.pending ? d.pending.count : undefined;
  const pending = d.pending_count ?? count ?? (typeof d.pending === "number" ? d.pending : null);
  const bytes = d.pending_bytes ?? (d.pending && d.pending.bytes);
  set("st-pending", pending === null || pending === undefined ? "unknown"
    : `${pending}${typeof bytes === "number" ? ` (${formatBytes(bytes)})` : ""}`);
  const last = d.last_success_at ?? d.last_success ?? d.last_success_time ??
    (d.last_success && d.last_success.time);
  set("st-last", ago(typeof last === "object" && last ? last.time : last));
  showSelection(d);
}

function showDisk(result) {
  if (!result.available) {
    set("st-disk", result.reason, "unavailable");
    return;
  }
  const free = findValue(result.data, (k, v) => /free/i.test(k) && /bytes|^disk_?free$|^free$/i
    .test(k) && typeof v === "number");
  const ready = result.status === 200 ? "" : " (not ready)";
  set("st-disk", typeof free === "number" ? `${formatBytes(free)}${ready}` : `unknown${ready}`,
    result.status === 200 ? "" : "warning");
}

export async function refreshStatus() {
  const [sync, ready] = await Promise.all([probe("/sync/status"), probe("/readyz")]);
  showSync(sync);
  showDisk(ready);
}

export function startStatus() {
  refreshStatus();
  // Bounded: one poll every 15 s while the tab is visible, none in a background tab.
  return setInterval(() => {
    if (document.visibilityState === "visible") refreshStatus();
  }, POLL_MS);
}
