// Filter state: the form, the URL query (so a view can be bookmarked and shared) and the
// GET /data/images query are three views of one plain object.

import { api, ApiError } from "./api.js";
import { classColour } from "./overlay.js";

export const FILTER_KEYS = ["search", "class_values", "project_id", "stage", "batch_id",
  "device_id", "annotation_status", "split", "sync_state", "captured_after", "captured_before",
  "min_confidence", "max_confidence", "has_annotations", "pinned", "updated_after",
  "sort", "order"];
// The keys that select images (PATCH /data/images takes them as its filter); the rest order.
export const SELECTING_KEYS = FILTER_KEYS.filter((k) => k !== "sort" && k !== "order");

// The review queues: a queue is a set of filters, replacing the others.
export const QUEUES = {
  uncertain: { min_confidence: "0.4", max_confidence: "0.6" },
  unlabelled: { has_annotations: "false" },
  pinned: { pinned: "true" },
};
const DEFAULTS = { sort: "created_at", order: "desc" };

function clean(entries) {
  const state = {};
  for (const [key, raw] of entries) {
    const value = String(raw).trim();
    if (!FILTER_KEYS.includes(key) || value === "" || DEFAULTS[key] === value) continue;
    state[key] = value;
  }
  return state;
}

export function readQuery() {
  return clean(new URLSearchParams(location.search).entries());
}

export function writeQuery(state, { replace = false } = {}) {
  const query = new URLSearchParams(state).toString();
  const url = location.pathname + (query ? `?${query}` : "");
  if (url === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
}

export function formState(form) {
  return clean(new FormData(form).entries());
}

function ensureOption(select, value) {
  if ([...select.options].some((o) => o.value === value)) return;
  const option = new Option(`#${value}`, value);
  select.add(option);
}

export function applyToForm(form, state) {
  for (const key of FILTER_KEYS) {
    const value = state[key] ?? DEFAULTS[key] ?? "";
    for (const el of form.querySelectorAll(`[name="${key}"]`)) {
      if (el.disabled) continue;
      if (el.tagName === "SELECT" && value !== "") ensureOption(el, value);
      el.value = value;
    }
  }
}

export function listQuery(state, offset, limit) {
  const params = new URLSearchParams(state);
  params.set("include_annotations", "true");
  params.set("include_image_url", "true");
  params.set("limit", String(limit));
  params.set("offset", String(offset));
  return `/data/images?${params}`;
}

// Swap a select for its free-text fallback when the endpoint that fills it is missing.
function useFallback(form, name) {
  const select = form.querySelector(`select[name="${name}"]`);
  const input = form.querySelector(`input[name="${name}"][data-fallback]`);
  if (!select || !input || select.hidden) return;
  input.value = select.value;
  select.hidden = true;
  select.disabled = true;
  input.hidden = false;
  input.disabled = false;
}

function replaceOptions(select, items, label) {
  const keep = select.value;
  const fixed = [...select.options].filter((o) => o.value === "" || o.value === "null");
  select.replaceChildren(...fixed);
  for (const item of items) select.add(new Option(label(item), String(item.id)));
  if (keep) ensureOption(select, keep);
  select.value = keep;
}

async function fill(form, name, path, label) {
  const select = form.querySelector(`select[name="${name}"]`);
  try {
    const body = await api("GET", path);
    replaceOptions(select, Array.isArray(body.data) ? body.data : [], label);
  } catch (err) {
    // 404: this device's API has no such list yet; typing an id still filters.
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
      useFallback(form, name);
    }
  }
}

export async function fillSources(form) {
  const project = form.querySelector('[name="project_id"]:not([disabled])');
  const batchQuery = new URLSearchParams({ limit: "100" });
  if (project && project.value) batchQuery.set("project_id", project.value);
  await Promise.all([
    fill(form, "project_id", "/data/projects?limit=100", (p) => p.name || `project ${p.id}`),
    fill(form, "batch_id", `/data/batches?${batchQuery}`,
      (b) => `${b.name || `batch ${b.id}`}${b.stage ? ` (${b.stage})` : ""}`),
  ]);
}

// Class and device suggestions from what the grid has shown so far.
export function rememberSuggestions(images) {
  const classes = document.getElementById("known-classes");
  const devices = document.getElementById("known-devices");
  const have = (list) => new Set([...list.options].map((o) => o.value));
  const knownClasses = have(classes);
  const knownDevices = have(devices);
  for (const image of images) {
    for (const ann of image.annotations || []) {
      classColour(ann.class_value); // fixes the class's colour in grid order
      if (!knownClasses.has(ann.class_value)) {
        knownClasses.add(ann.class_value);
        classes.append(new Option(ann.class_value));
      }
    }
    if (image.device_id && !knownDevices.has(image.device_id)) {
      knownDevices.add(image.device_id);
      devices.append(new Option(image.device_id));
    }
  }
}
