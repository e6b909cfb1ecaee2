// The detail view of one image: the full picture with its annotations drawn over it, its
// fields, and the review actions, all through the public API.

import { api, describeError, localPath } from "./api.js";
import { classColour, drawAnnotations, enableBoxDrawing, labelText,
  visibleAnnotations } from "./overlay.js";

const $ = (id) => document.getElementById(id);

function formatBytes(n) {
  if (typeof n !== "number") return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export { formatBytes };

export class Detail {
  constructor(grid) {
    this.grid = grid;
    this.index = -1;
    this.image = null;
    this.drawing = false;
    this.selected = null;
    this.hiddenBoxes = new Set(); // boxes hidden with "h", for this image
    this.root = $("detail");
    $("d-close").addEventListener("click", () => this.close());
    $("d-prev").addEventListener("click", () => this.step(-1));
    $("d-next").addEventListener("click", () => this.step(1));
    $("d-threshold").addEventListener("input", () => this.render());
    $("d-image").addEventListener("load", () => {
      this.fitImage();
      this.render();
    });
    window.addEventListener("resize", () => {
      this.fitImage();
      this.render(); // label sizes follow the new scale
    });
    $("d-draw").addEventListener("click", () => this.setDrawing(!this.drawing));
    $("d-split").addEventListener("change", (e) => this.patch({ split: e.target.value }));
    $("d-locked").addEventListener("change", (e) => this.patch({ split_locked: e.target.checked }));
    $("d-status").addEventListener("change",
      (e) => this.patch({ annotation_status: e.target.value }));
    $("d-pinned").addEventListener("change", (e) => this.patch({ pinned: e.target.checked }));
    enableBoxDrawing($("d-overlay"), () => this.drawing, (g) => this.addBox(g));
    $("d-overlay").addEventListener("click", (e) => {
      const id = e.target.dataset && e.target.dataset.id;
      if (!this.drawing && id) this.select(Number(id));
    });
  }

  get isOpen() {
    return !this.root.hidden;
  }

  open(index) {
    const image = this.grid.images[index];
    if (!image) return;
    if (index !== this.index) this.hiddenBoxes.clear();
    this.index = index;
    this.selected = null;
    this.setDrawing(false);
    this.root.hidden = false;
    document.body.classList.add("detail-open");
    this.show(image);
    this.fitImage(); // same picture as last time: no load event comes
    $("d-close").focus({ preventScroll: true });
    this.refresh(); // the grid's copy may be minutes old
  }

  close() {
    if (!this.isOpen) return;
    this.root.hidden = true;
    document.body.classList.remove("detail-open");
    this.setDrawing(false);
    this.grid.focus(this.index);
  }

  async step(delta) {
    let next = this.index + delta;
    if (next >= this.grid.images.length && !this.grid.done) await this.grid.loadMore();
    next = Math.min(Math.max(next, 0), this.grid.images.length - 1);
    if (next !== this.index) this.open(next);
  }

  show(image) {
    this.image = image;
    $("d-title").textContent = image.filename;
    const img = $("d-image");
    const src = localPath(image.image_url);
    $("d-nofile").hidden = Boolean(src);
    $("d-stage").hidden = !src;
    if (src && img.getAttribute("src") !== src) {
      img.alt = image.filename;
      img.src = src;
    }
    $("d-split").value = image.split;
    $("d-locked").checked = Boolean(image.split_locked);
    $("d-split").disabled = Boolean(image.split_locked);
    $("d-status").value = image.annotation_status;
    $("d-pinned").checked = Boolean(image.pinned);
    this.renderFields();
    this.render();
  }

  // Scale the picture (up or down) to the space it has; the overlay follows the <img> box.
  fitImage() {
    const img = $("d-image");
    if (!this.isOpen || !img.naturalWidth) return;
    const wrap = img.closest(".stage-wrap");
    const stacked = getComputedStyle(wrap.parentElement).flexDirection === "column";
    const availW = wrap.clientWidth - 24;
    const availH = stacked ? window.innerHeight * 0.6 : wrap.clientHeight - 24;
    const scale = Math.max(0.05, Math.min(availW / img.naturalWidth,
      availH / img.naturalHeight, 8));
    img.style.width = `${Math.floor(img.naturalWidth * scale)}px`;
    img.style.height = `${Math.floor(img.naturalHeight * scale)}px`;
  }

  async refresh() {
    const id = this.image.id;
    try {
      const body = await api("GET", `/data/images/${id}?include_image_url=true`);
      if (!this.image || this.image.id !== id) return;
      this.grid.update(body.data);
      this.show(body.data);
    } catch (err) {
      this.message(describeError(err));
    }
  }

  render() {
    const image = this.image;
    if (!image) return;
    const all = image.annotations || [];
    const threshold = Number($("d-threshold").value);
    $("d-threshold-out").textContent = threshold.toFixed(2);
    const shown = visibleAnnotations(all, threshold).filter((a) => !this.hiddenBoxes.has(a.id));
    const img = $("d-image");
    const width = image.width || img.naturalWidth || 1;
    const height = image.height || img.naturalHeight || 1;
    drawAnnotations($("d-overlay"), shown, width, height, this.selected);
    $("d-shown").textContent = `(showing ${shown.length} of ${all.length})`;
    this.renderList(all, new Set(shown.map((a) => a.id)));
  }

  renderList(all, shownIds) {
    const items = all.map((ann) => {
      const li = document.createElement("li");
      li.dataset.id = ann.id;
      li.className = (shownIds.has(ann.id) ? "" : "filtered ") +
        (ann.id === this.selected ? "selected" : "");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = classColour(ann.class_value);
      const text = document.createElement("span");
      text.className = "grow";
      text.textContent = `${labelText(ann)} · ${ann.type}${ann.source ? ` · ${ann.source}` : ""}`;
      text.addEventListener("click", () => this.select(ann.id));
      const del = document.createElement("button");
      del.type = "button";
      del.className = "small write-only";
      del.textContent = "Delete";
      del.setAttribute("aria-label", `Delete ${ann.class_value} annotation ${ann.id}`);
      del.addEventListener("click", () => this.confirmDelete(del, ann.id));
      li.append(swatch, text, del);
      return li;
    });
    $("d-annotations").replaceChildren(...items);
  }

  renderFields() {
    const i = this.image;
    const rows = [
      ["id", i.id], ["filename", i.filename], ["size", `${i.width} × ${i.height}`],
      ["device", i.device_id], ["batch", i.batch_name || i.batch_id],
      ["project", i.project_name || "none"], ["created", i.created_at],
      ["updated", i.updated_at], ["sync state", i.sync_state],
      ["synced at", i.synced_at || "not yet"], ["dataset version", i.version_name || "none"],
      ["storage key", i.storage_key],
    ];
    const nodes = [];
    for (const [name, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = String(value ?? "");
      if (name === "sync state") dd.className = `sync-text sync-${i.sync_state}`;
      nodes.push(dt, dd);
    }
    $("d-fields").replaceChildren(...nodes);
  }

  select(id) {
    this.selected = this.selected === id ? null : id;
    this.render();
  }

  setDrawing(on) {
    this.drawing = on;
    $("d-draw").setAttribute("aria-pressed", String(on));
    $("d-draw").textContent = on ? "Drawing… (drag on the image)" : "Draw box";
    $("d-overlay").classList.toggle("drawing", on);
  }

  message(text) {
    const box = $("d-message");
    box.textContent = text || "";
    box.hidden = !text;
  }

  // True when the action went through. On failure its message shows, and the controls go
  // back to what the server holds: the view is as it was.
  async run(action) {
    this.message("");
    let done = true;
    try {
      await action();
    } catch (err) {
      this.message(describeError(err));
      done = false;
    }
    await this.refresh();
    return done;
  }

  // -- keyboard review ------------------------------------------------------------------

  // An action that moves on: the next image of the queue once the change is stored.
  async decide(changes) {
    if (await this.patch(changes)) await this.step(1);
  }

  // "b": the next box becomes the selected one (the first after the last).
  nextBox() {
    const all = this.image ? this.image.annotations || [] : [];
    if (!all.length) return;
    const at = all.findIndex((a) => a.id === this.selected);
    this.selected = all[(at + 1) % all.length].id;
    this.render();
  }

  // "h": hide or show the selected box, or every box when none is selected.
  toggleBox() {
    const all = this.image ? this.image.annotations || [] : [];
    const ids = this.selected !== null ? [this.selected] : all.map((a) => a.id);
    const hide = ids.some((id) => !this.hiddenBoxes.has(id));
    for (const id of ids) {
      if (hide) this.hiddenBoxes.add(id);
      else this.hiddenBoxes.delete(id);
    }
    this.render();
  }

  patch(changes) {
    return this.run(() => api("PATCH", `/data/images/${this.image.id}`, changes));
  }

  addBox(geometry) {
    const cls = $("d-class").value.trim();
    if (!cls) {
      this.message("Type a class name for the new box first.");
      return;
    }
    const body = { image_id: this.image.id, class_value: cls, type: "bbox",
      geometry: geometry.map((v) => Math.round(v * 1e6) / 1e6) };
    this.setDrawing(false);
    this.run(() => api("POST", "/data/annotations", body));
  }

  confirmDelete(button, id) {
    if (button.dataset.armed !== "1") {
      button.dataset.armed = "1";
      button.textContent = "Confirm";
      button.classList.add("danger");
      return;
    }
    this.run(() => api("DELETE", `/data/annotations/${id}`));
  }
}
