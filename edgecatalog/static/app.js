// Entry point of the inspection page: sign-in, wiring of filters, grid, detail view and status
// bar, and the keyboard. Plain ES modules, no build step, nothing fetched from elsewhere.

import { api, clearToken, describeError, getToken, setToken, takeTokenFromFragment,
  tokenScopes } from "./api.js";
import { Detail } from "./detail.js";
import { recount, showFacets } from "./facets.js";
import { applyToForm, fillSources, formState, QUEUES, readQuery, writeQuery } from "./filters.js";
import { Grid } from "./grid.js";
import { Selection } from "./selection.js";
import { startStatus } from "./status.js";

const $ = (id) => document.getElementById(id);
const form = $("filters");
let statusTimer = null;

function showMessage(text) {
  $("message").textContent = text || "";
  $("message").hidden = !text;
}

function onError(err, text) {
  if (err && err.status === 401) askForToken(text);
  else showMessage(text);
}

const grid = new Grid({
  list: $("grid"), empty: $("grid-empty"), more: $("grid-more"), count: $("result-count"),
  onOpen: (index) => detail.open(index), onError,
  onPick: (index, range) => (index === null ? selection.render() : selection.pick(index, range)),
});
const detail = new Detail(grid);
const selection = new Selection(grid);

function canWrite() {
  return tokenScopes().includes("write");
}

function askForToken(reason) {
  clearToken();
  $("signin").hidden = false;
  $("signin-error").textContent = reason || "";
  $("signin-error").hidden = !reason;
  $("sign-out").hidden = true;
  $("scope-badge").hidden = true;
  $("signin-token").focus();
}

function showScope() {
  const writes = canWrite();
  const badge = $("scope-badge");
  badge.textContent = writes ? "read & write" : "read only";
  badge.className = `badge ${writes ? "ok" : "warn"}`;
  badge.title = writes ? "" : "Review actions need a token with the write scope";
  badge.hidden = false;
  // No control that would fail: the review controls, the bulk bar and the selection boxes are
  // not shown to a read-only sign-in.
  document.body.classList.toggle("read-only", !writes);
}

// A brushed range of the timeline: a filter like any other (in the URL, bookmarkable).
function setRange(after, before) {
  const state = { ...formState(form), captured_after: after, captured_before: before };
  writeQuery(state);
  load(state);
}

function load(state) {
  showMessage("");
  selection.clear(); // another view: what was selected is not in it
  applyToForm(form, state);
  const since = $("changed-since");
  since.hidden = !state.updated_after;
  since.querySelector("span").textContent = state.updated_after || "";
  showFacets(form, state, setRange).catch((err) => onError(err, describeError(err)));
  return grid.reset(state);
}

function enterApp() {
  $("signin").hidden = true;
  $("sign-out").hidden = false;
  showScope();
  const state = readQuery();
  writeQuery(state, { replace: true });
  load(state);
  // Fill project/batch choices, then show the bookmarked values in them.
  fillSources(form).then(() => {
    applyToForm(form, readQuery());
    recount(form);
  });
  if (statusTimer === null) statusTimer = startStatus();
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("signin-token").value.trim();
  if (!token) return;
  setToken(token);
  try {
    await api("GET", "/data/images?limit=1");
  } catch (err) {
    askForToken(describeError(err));
    return;
  }
  $("signin-token").value = "";
  enterApp();
});

$("sign-out").addEventListener("click", () => {
  detail.close();
  grid.reset(null);
  askForToken("");
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const state = formState(form);
  writeQuery(state);
  load(state);
  document.body.classList.remove("filters-open");
  $("filters-toggle").setAttribute("aria-expanded", "false");
});

$("time-range-clear").addEventListener("click", () => {
  form.querySelector('[name="captured_after"]').value = "";
  form.querySelector('[name="captured_before"]').value = "";
  form.requestSubmit();
});

$("changed-clear").addEventListener("click", () => {
  form.querySelector('[name="updated_after"]').value = "";
  form.requestSubmit();
});

// A review queue replaces the filters (sort and order stay). "Changed since export": the
// images changed after the newest dataset export this catalog made.
async function openQueue(name) {
  const keep = { sort: form.elements.sort.value, order: form.elements.order.value };
  let state = { ...keep, ...(QUEUES[name] || {}) };
  if (name === "changed") {
    let last = null;
    try {
      last = (await api("GET", "/data/exports?limit=1")).data[0] || null;
    } catch (err) {
      onError(err, describeError(err));
      return;
    }
    state = last ? { ...keep, updated_after: last.created_at } : keep;
  }
  writeQuery(state);
  await load(state);
  if (name === "changed" && !state.updated_after) {
    showMessage("No dataset export yet: every image has changed since.");
  }
}

for (const button of document.querySelectorAll("#queues [data-queue]")) {
  button.addEventListener("click", () => openQueue(button.dataset.queue));
}

$("filters-reset").addEventListener("click", () => {
  applyToForm(form, {});
  form.requestSubmit();
});

form.querySelector('select[name="project_id"]').addEventListener("change", () =>
  fillSources(form).then(() => recount(form)));

// Beside the grid a choice applies at once; in the phone overlay, on "Apply".
const sidebar = window.matchMedia("(min-width: 900px)");
form.addEventListener("change", (event) => {
  if (sidebar.matches && event.target.tagName === "SELECT") form.requestSubmit();
});

$("filters-toggle").addEventListener("click", () => {
  const open = document.body.classList.toggle("filters-open");
  $("filters-toggle").setAttribute("aria-expanded", String(open));
});

window.addEventListener("popstate", () => {
  if (getToken()) load(readQuery());
});

function inControl(target) {
  return target && ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName);
}

function showKeys(open) {
  $("keys-help").hidden = !open;
  if (open) $("keys-close").focus();
}

$("keys-close").addEventListener("click", () => showKeys(false));
$("d-keys").addEventListener("click", () => showKeys(true));

// The review keys of the detail view (``?`` lists them). A write key does nothing with a
// read-only token: no request that would fail is made.
const REVIEW_KEYS = {
  a: () => detail.decide({ annotation_status: "completed" }),
  r: () => detail.decide({ annotation_status: "in_progress" }),
  1: () => detail.decide({ split: "train" }),
  2: () => detail.decide({ split: "val" }),
  3: () => detail.decide({ split: "test" }),
  4: () => detail.decide({ split: "none" }),
  l: () => detail.patch({ split_locked: !detail.image.split_locked }),
  p: () => detail.patch({ pinned: !detail.image.pinned }),
};
let busy = false; // one review action at a time: a held key does not queue a dozen

async function reviewKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || inControl(event.target)) return false;
  if (event.key === "?") {
    showKeys($("keys-help").hidden);
  } else if (event.key === "b") {
    detail.nextBox();
  } else if (event.key === "h") {
    detail.toggleBox();
  } else if (REVIEW_KEYS[event.key] && canWrite()) {
    event.preventDefault();
    if (busy) return true;
    busy = true;
    try {
      await REVIEW_KEYS[event.key]();
    } finally {
      busy = false;
    }
  } else {
    return false;
  }
  event.preventDefault();
  return true;
}

document.addEventListener("keydown", (event) => {
  if (!$("keys-help").hidden && (event.key === "Escape" || event.key === "?")) {
    event.preventDefault();
    showKeys(false);
    return;
  }
  if (detail.isOpen) {
    if (event.key === "Escape") {
      event.preventDefault();
      detail.close();
    } else if (!inControl(event.target) && (event.key === "ArrowLeft" || event.key === "ArrowRight")) {
      event.preventDefault();
      if (!busy) detail.step(event.key === "ArrowLeft" ? -1 : 1);
    } else {
      reviewKey(event);
    }
    return;
  }
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "a" &&
      !inControl(event.target) && $("signin").hidden && canWrite()) {
    event.preventDefault(); // every image matching the filters, not the page's text
    selection.selectAll();
    return;
  }
  if (event.key === "Escape" && selection.count) selection.clear();
  if (event.key === "Escape") document.body.classList.remove("filters-open");
  const arrows = ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"];
  if (arrows.includes(event.key) && !inControl(event.target) &&
      !$("grid").contains(event.target) && $("signin").hidden && grid.images.length) {
    event.preventDefault();
    grid.focus(0);
  }
});

takeTokenFromFragment();
if (getToken()) enterApp();
else askForToken("");
