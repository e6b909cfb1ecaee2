// The status bar: sync state, pending work, last sync and free disk, from /sync/status and
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

function showSync(result) {
  if (!result.available) {
    for (const id of ["st-sync", "st-pending", "st-last"]) set(id, result.reason, "unavailable");
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
