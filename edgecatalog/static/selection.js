// Selecting images in the grid and changing them together: click a tile's box to select it,
// shift-click for the range from the last one, Ctrl/Cmd-A for every image matching the filters
// (counted by the list's exact total, not by the tiles loaded). The bulk bar sends one
// PATCH /data/images: the ids, or the filters themselves for "every image". Above 1,000
// images it asks first. A failed change shows the server's message and leaves the grid and
// the selection as they were.

import { api, describeError } from "./api.js";
import { SELECTING_KEYS } from "./filters.js";

const CONFIRM_ABOVE = 1000;
const MAX_IDS = 10000; // per request, as the API takes them
const $ = (id) => document.getElementById(id);

function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Selection {
  constructor(grid) {
    this.grid = grid;
    this.ids = new Set();
    this.all = false; // every image matching the grid's filters
    this.anchor = null;
    this.pending = null;
    $("bulk-clear").addEventListener("click", () => this.clear());
    $("bulk-status").addEventListener("change", (e) => {
      const value = e.target.value;
      e.target.value = "";
      if (value) this.change({ set: { annotation_status: value } });
    });
    $("bulk-split").addEventListener("change", (e) => {
      const value = e.target.value;
      e.target.value = "";
      if (value === "assign") {
        this.change({ assign_split: { train: 0.8, val: 0.1, test: 0.1 } });
      } else if (value) {
        this.change({ set: { split: value } });
      }
    });
    for (const button of document.querySelectorAll("#bulk-bar [data-set]")) {
      button.addEventListener("click", () => this.change(
        { set: { [button.dataset.set]: button.dataset.value === "true" } }));
    }
    $("bulk-yes").addEventListener("click", () => {
      const change = this.pending;
      this.pending = null;
      $("bulk-confirm").hidden = true;
      if (change) this.send(change);
    });
    $("bulk-no").addEventListener("click", () => {
      this.pending = null;
      $("bulk-confirm").hidden = true;
    });
  }

  get count() {
    return this.all ? (this.grid.total ?? 0) : this.ids.size;
  }

  has(id) {
    return this.all || this.ids.has(id);
  }

  clear() {
    this.ids.clear();
    this.all = false;
    this.anchor = null;
    this.render();
  }

  // A click on a tile's box: toggle it, or with shift the range from the last one clicked.
  pick(index, range) {
    const images = this.grid.images;
    if (this.all) { // from "every image" to the loaded ones, then as asked
      this.all = false;
      images.forEach((image) => this.ids.add(image.id));
    }
    if (range && this.anchor !== null) {
      const [from, to] = [Math.min(this.anchor, index), Math.max(this.anchor, index)];
      for (let i = from; i <= to; i += 1) this.ids.add(images[i].id);
    } else {
      const id = images[index].id;
      if (this.ids.has(id)) this.ids.delete(id);
      else this.ids.add(id);
    }
    this.anchor = index;
    this.render();
  }

  selectAll() {
    this.all = true;
    this.ids.clear();
    this.render();
  }

  render() {
    for (const tile of this.grid.list.children) {
      const on = this.has(Number(tile.dataset.id));
      tile.classList.toggle("selected", on);
      const box = tile.querySelector(".tile-select");
      if (box) box.checked = on;
    }
    const n = this.count;
    $("bulk-bar").hidden = n === 0;
    $("sel-count").textContent = `${n.toLocaleString("en-US")} selected` +
      (this.all ? " (every image matching the filters)" : "");
    if (n === 0) {
      $("bulk-confirm").hidden = true;
      this.pending = null;
    }
  }

  change(change) {
    $("bulk-error").hidden = true;
    $("bulk-result").textContent = "";
    const n = this.count;
    if (n > CONFIRM_ABOVE) {
      this.pending = change;
      $("bulk-confirm").querySelector("span").textContent =
        `Change ${n.toLocaleString("en-US")} images?`;
      $("bulk-confirm").hidden = false;
      $("bulk-yes").focus();
      return;
    }
    this.send(change);
  }

  async send(change) {
    const bodies = [];
    if (this.all) {
      const filter = {};
      for (const key of SELECTING_KEYS) {
        if (this.grid.state && this.grid.state[key] !== undefined) filter[key] = this.grid.state[key];
      }
      bodies.push({ filter, ...change });
    } else {
      const ids = [...this.ids];
      for (let at = 0; at < ids.length; at += MAX_IDS) {
        bodies.push({ ids: ids.slice(at, at + MAX_IDS), ...change });
      }
    }
    const sum = { matched: 0, changed: 0, skipped_locked: 0 };
    try {
      for (const body of bodies) {
        // One key per request: a retry of the same request is answered, never done twice.
        const answer = await api("PATCH", "/data/images", body, { "Idempotency-Key": newKey() });
        for (const k of Object.keys(sum)) sum[k] += answer.data[k];
      }
    } catch (err) {
      $("bulk-error").textContent = describeError(err);
      $("bulk-error").hidden = false;
      return; // the grid and the selection stay as they were
    }
    const kept = sum.skipped_locked ? `; ${sum.skipped_locked} kept their locked split` : "";
    const result = `Changed ${sum.changed} of ${sum.matched} images${kept}.`;
    // The selection stays (a second change often follows); the grid shows the new state.
    await this.grid.reset(this.grid.state);
    this.render();
    $("bulk-result").textContent = result;
  }
}
