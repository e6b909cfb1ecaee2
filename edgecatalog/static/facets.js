// Counts beside the filters, a class bar chart and a timeline strip of captures, all from
// GET /data/images/facets for the current filters (each facet counted without its own filter,
// so a choice shows what picking it would give). Dragging over the timeline sets
// captured_after/captured_before (in the URL, like every filter).

import { api } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const SELECTS = ["annotation_status", "split", "sync_state", "stage", "project_id", "batch_id"];
const HOUR_MS = 3_600_000;
let generation = 0;
let shown = null; // the last answer's facets, for options filled in after it came

// The counts again, on options added since (the project and batch lists fill in later).
export function recount(form) {
  if (shown) showCounts(form, shown);
}

export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

// Hours when the filtered captures span three days or less (or a range is brushed that
// narrow), else days.
function unitFor(state) {
  const after = Date.parse(state.captured_after || "");
  const before = Date.parse(state.captured_before || "");
  return after && before && before - after <= 3 * 24 * HOUR_MS ? "hour" : "day";
}

export function facetsQuery(state, unit) {
  const params = new URLSearchParams(state);
  for (const key of ["sort", "order"]) params.delete(key);
  params.set("facet_size", "100");
  params.set("histogram", `captured_at:${unit}`);
  params.set("tz", browserZone());
  return `/data/images/facets?${params}`;
}

// An option's own words, kept before its count is added (its value too: an <option> without
// a value attribute takes its text as its value).
function label(option) {
  if (option.dataset.label === undefined) {
    option.value = option.value;
    option.dataset.label = option.textContent;
  }
  return option.dataset.label;
}

function showCounts(form, facets) {
  for (const name of SELECTS) {
    const facet = facets[name];
    if (!facet) continue;
    const counts = new Map(facet.values.map((v) => [v.value === null ? "null" : String(v.value), v.count]));
    for (const select of form.querySelectorAll(`select[name="${name}"]`)) {
      for (const option of select.options) {
        if (option.value === "") continue;
        const words = label(option);
        const count = counts.get(option.value) ?? 0;
        option.dataset.count = String(count);
        option.textContent = `${words} (${count})`;
      }
    }
  }
  const devices = document.getElementById("known-devices");
  if (facets.device_id) {
    devices.replaceChildren(...facets.device_id.values.map((v) => {
      const option = new Option(`${v.count} images`, v.value);
      option.dataset.count = String(v.count);
      return option;
    }));
  }
}

function showClasses(facet) {
  const chart = document.getElementById("class-chart");
  const values = facet ? facet.values : [];
  const top = Math.max(1, ...values.map((v) => v.count));
  chart.replaceChildren(...values.map((v) => {
    const item = document.createElement("li");
    item.dataset.value = v.value;
    item.dataset.count = String(v.count);
    const name = document.createElement("span");
    name.textContent = v.value;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round((100 * v.count) / top)}%`;
    const count = document.createElement("b");
    count.textContent = String(v.count);
    item.append(name, bar, count);
    item.title = `${v.count} images, ${v.annotations} annotations`;
    return item;
  }));
  document.getElementById("class-chart-box").hidden = values.length === 0;
}

// The bucket after the last one: an hour later, or the next local midnight.
function bucketEnd(start, unit) {
  const at = new Date(start);
  if (unit === "hour") return new Date(at.getTime() + HOUR_MS);
  return new Date(at.getFullYear(), at.getMonth(), at.getDate() + 1);
}

function showTimeline(histogram, onRange) {
  const strip = document.getElementById("timeline");
  const buckets = histogram ? histogram.buckets : [];
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${Math.max(buckets.length, 1)} 40`);
  svg.setAttribute("preserveAspectRatio", "none");
  const top = Math.max(1, ...buckets.map((b) => b.count));
  buckets.forEach((b, i) => {
    const rect = document.createElementNS(SVG, "rect");
    const h = b.count ? Math.max(2, (38 * b.count) / top) : 0;
    rect.setAttribute("x", String(i + 0.08));
    rect.setAttribute("width", "0.84");
    rect.setAttribute("y", String(40 - h));
    rect.setAttribute("height", String(h));
    rect.dataset.start = b.start;
    rect.dataset.count = String(b.count);
    const tip = document.createElementNS(SVG, "title");
    tip.textContent = `${b.start}: ${b.count}`;
    rect.append(tip);
    svg.append(rect);
  });
  const brush = document.createElementNS(SVG, "rect");
  brush.setAttribute("class", "brush");
  brush.setAttribute("y", "0");
  brush.setAttribute("height", "40");
  brush.setAttribute("width", "0");
  svg.append(brush);
  strip.replaceChildren(svg);
  strip.dataset.unit = histogram ? histogram.unit : "";
  document.getElementById("timeline-box").hidden = buckets.length === 0;
  if (!buckets.length) return;
  const index = (event) => {
    const box = svg.getBoundingClientRect();
    const at = Math.floor(((event.clientX - box.left) / box.width) * buckets.length);
    return Math.min(buckets.length - 1, Math.max(0, at));
  };
  let from = null;
  const paint = (a, b) => {
    brush.setAttribute("x", String(Math.min(a, b)));
    brush.setAttribute("width", String(Math.abs(b - a) + 1));
  };
  svg.addEventListener("pointerdown", (event) => {
    from = index(event);
    svg.setPointerCapture(event.pointerId);
    paint(from, from);
  });
  svg.addEventListener("pointermove", (event) => {
    if (from !== null) paint(from, index(event));
  });
  svg.addEventListener("pointerup", (event) => {
    if (from === null) return;
    const to = index(event);
    const [first, last] = [Math.min(from, to), Math.max(from, to)];
    from = null;
    const after = buckets[first].start;
    const before = last + 1 < buckets.length
      ? buckets[last + 1].start
      : bucketEnd(buckets[last].start, histogram.unit).toISOString();
    onRange(after, before);
  });
}

// Counts for ``state``; an answer to an older state is dropped.
export async function showFacets(form, state, onRange) {
  const mine = ++generation;
  const body = await api("GET", facetsQuery(state, unitFor(state)));
  if (mine !== generation) return;
  shown = body.data.facets;
  showCounts(form, shown);
  showClasses(body.data.facets.class_value);
  showTimeline(body.data.histogram, onRange);
  const range = document.getElementById("time-range");
  const brushed = state.captured_after || state.captured_before;
  range.hidden = !brushed;
  range.querySelector("span").textContent = brushed
    ? `${state.captured_after || "…"} – ${state.captured_before || "…"}`
    : "";
}
