// Entry point of the inspection page: sign-in, wiring of filters, grid, detail view and status
// bar, and the keyboard. Plain ES modules, no build step, nothing fetched from elsewhere.

import { api, clearToken, describeError, getToken, setToken, takeTokenFromFragment,
  tokenScopes } from "./api.js";
import { Detail } from "./detail.js";
import { recount, showFacets } from "./facets.js";
import { applyToForm, fillSources, formState, readQuery, writeQuery } from "./filters.js";
import { Grid } from "./grid.js";
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
});
const detail = new Detail(grid);

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
  const canWrite = tokenScopes().includes("write");
  const badge = $("scope-badge");
  badge.textContent = canWrite ? "read & write" : "read only";
  badge.className = `badge ${canWrite ? "ok" : "warn"}`;
  badge.title = canWrite ? "" : "Review actions need a token with the write scope";
  badge.hidden = false;
  document.body.classList.toggle("read-only", !canWrite);
}

// A brushed range of the timeline: a filter like any other (in the URL, bookmarkable).
function setRange(after, before) {
  const state = { ...formState(form), captured_after: after, captured_before: before };
  writeQuery(state);
  load(state);
}

function load(state) {
  showMessage("");
  applyToForm(form, state);
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

document.addEventListener("keydown", (event) => {
  if (detail.isOpen) {
    if (event.key === "Escape") {
      event.preventDefault();
      detail.close();
    } else if (!inControl(event.target) && (event.key === "ArrowLeft" || event.key === "ArrowRight")) {
      event.preventDefault();
      detail.step(event.key === "ArrowLeft" ? -1 : 1);
    }
    return;
  }
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
