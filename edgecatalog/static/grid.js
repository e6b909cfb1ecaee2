// The thumbnail grid: newest first, one API page at a time as the user scrolls. Tiles load
// /files/{id}/thumbnail (never the full image), lazily, so a long grid stays light. A
// thumbnail the device has not made yet may be refused "busy" (503 + Retry-After) while it
// decodes others; such a tile asks again after that delay, so a grid of new images fills in.

import { api, describeError, thumbnailPath } from "./api.js";
import { listQuery, rememberSuggestions } from "./filters.js";

const PAGE_SIZE = 48;
// Asks per tile after its first failure: with the server's Retry-After (1 s and up, longer
// when big images queue) this outlasts a screenful of fresh full-size pictures on a Pi.
const THUMB_TRIES = 12;
const MAX_RETRY_SECONDS = 30;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// Whole seconds (the only form this server sends); anything else: 1 s. Up to half again as
// much at random, so the tiles refused together do not all come back together.
function retryDelay(header) {
  const seconds = Number.parseInt(header || "", 10);
  const base = Number.isFinite(seconds) && seconds >= 0
    ? Math.min(seconds, MAX_RETRY_SECONDS) : 1;
  return Math.max(base, 0.2) * 1000 * (1 + Math.random() / 2);
}

// An <img> cannot see a status or a header, so after a failed load the tile asks the same URL
// with fetch(): 503 -> wait Retry-After and ask again; 200 -> put a fresh <img> in its place
// (its load is served from the HTTP cache the fetch filled); anything else, or too many tries
// -> a "no preview" box. One counter per tile, so the whole exchange is bounded.
function thumbnailImage(image) {
  const state = { tries: 0 };
  const make = () => {
    const img = el("img", "thumb");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = image.filename;
    img.src = thumbnailPath(image.image_url, 256);
    img.srcset = `${img.src} 1x, ${thumbnailPath(image.image_url, 512)} 2x`;
    img.addEventListener("error", () => recover(img), { once: true });
    return img;
  };
  const recover = async (img) => {
    const url = img.currentSrc || img.src;
    let text = "no preview";
    while (state.tries < THUMB_TRIES && img.isConnected) {
      state.tries += 1;
      let response = null;
      try {
        response = await fetch(url);
      } catch {
        response = null; // the device is briefly unreachable: same as busy
      }
      if (response && response.ok) {
        await response.arrayBuffer().catch(() => null);
        if (img.isConnected) img.replaceWith(make());
        return;
      }
      if (response && response.status !== 503) {
        const body = await response.json().catch(() => null);
        const code = body && body.error ? body.error.code : "";
        if (code === "IMAGE_TOO_LARGE") text = "too large to preview";
        break;
      }
      await sleep(retryDelay(response && response.headers.get("Retry-After")));
    }
    if (img.isConnected) img.replaceWith(el("div", "thumb thumb-missing", text));
  };
  return make();
}

export class Grid {
  constructor({ list, empty, more, count, onOpen, onError, onPick }) {
    Object.assign(this, { list, empty, more, count, onOpen, onError, onPick });
    this.images = [];
    this.total = null;
    this.loading = null;
    this.generation = 0;
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && !this.failed) this.loadMore();
    }, { rootMargin: "600px" });
    this.observer.observe(this.more);
    more.querySelector("button").addEventListener("click", () => {
      this.failed = false;
      this.loadMore();
    });
    list.addEventListener("keydown", (event) => this.onKey(event));
  }

  get done() {
    return this.total !== null && this.images.length >= this.total;
  }

  reset(state) {
    this.state = state;
    this.images = [];
    this.total = null;
    this.generation += 1; // answers to an older filter are dropped
    this.loading = null;
    this.failed = false;
    this.list.replaceChildren();
    this.empty.hidden = true;
    this.count.textContent = "";
    return this.loadMore();
  }

  loadMore() {
    if (this.loading || this.done || !this.state) return this.loading;
    const generation = this.generation;
    this.loading = api("GET", listQuery(this.state, this.images.length, PAGE_SIZE))
      .then((body) => {
        if (generation !== this.generation) return;
        this.total = body.meta ? body.meta.total : body.data.length;
        this.append(body.data);
      })
      .catch((err) => {
        if (generation !== this.generation) return;
        this.failed = true; // no automatic retries: the user sees the error and decides
        this.onError(err, describeError(err));
      })
      .finally(() => {
        if (generation !== this.generation) return;
        this.loading = null;
        this.showProgress();
        // A tall screen may still show the sentinel: keep filling until it scrolls away.
        if (!this.done && !this.failed && this.sentinelVisible()) this.loadMore();
      });
    return this.loading;
  }

  sentinelVisible() {
    const rect = this.more.getBoundingClientRect();
    return rect.top < window.innerHeight + 600;
  }

  showProgress() {
    const shown = this.images.length;
    this.empty.hidden = this.total !== 0;
    this.count.textContent = this.total === null ? "" : `${shown} of ${this.total} images`;
    if (this.onPick) this.onPick(null); // new tiles show whether they are selected
    this.more.querySelector("button").hidden = this.done || (this.total === null && !this.failed);
  }

  append(images) {
    const start = this.images.length;
    this.images.push(...images);
    rememberSuggestions(images);
    const fragment = document.createDocumentFragment();
    images.forEach((image, i) => fragment.append(this.tile(image, start + i)));
    this.list.append(fragment);
  }

  tile(image, index) {
    const item = el("li", image.pinned ? "tile pinned" : "tile");
    item.dataset.id = image.id;
    const button = el("button", "tile-button");
    button.type = "button";
    button.dataset.index = String(index);
    button.setAttribute("aria-label", `Open ${image.filename}`);
    this.fillTile(button, image);
    // Ctrl/Cmd-click and shift-click select, as in a file manager; a plain click opens.
    button.addEventListener("click", (event) => {
      if (this.onPick && (event.ctrlKey || event.metaKey || event.shiftKey)) {
        event.preventDefault();
        this.onPick(index, event.shiftKey);
      } else {
        this.onOpen(index);
      }
    });
    const box = el("input", "tile-select write-only");
    box.type = "checkbox";
    box.setAttribute("aria-label", `Select ${image.filename}`);
    box.addEventListener("click", (event) => {
      event.preventDefault(); // the selection decides what the box shows
      if (this.onPick) this.onPick(index, event.shiftKey);
    });
    item.append(box, button);
    return item;
  }

  fillTile(button, image) {
    const children = [];
    if (image.image_url) {
      children.push(thumbnailImage(image));
    } else {
      children.push(el("div", "thumb thumb-missing", "file evicted"));
    }
    const caption = el("span", "caption");
    caption.append(el("span", "name", image.filename));
    const n = (image.annotations || []).length;
    const meta = el("span", "meta");
    meta.append(el("span", "pill", `${n} ann.`), el("span", `pill split-${image.split}`,
      image.split), el("span", `dot sync-${image.sync_state}`, ""));
    meta.lastChild.title = `sync: ${image.sync_state}`;
    caption.append(meta);
    children.push(caption);
    if (image.pinned) {
      const pin = el("span", "pin-mark", "\u{1F4CC}");
      pin.title = "pinned: kept on this device";
      pin.setAttribute("aria-label", "pinned");
      children.push(pin);
    }
    button.replaceChildren(...children);
    button.closest("li")?.classList.toggle("pinned", Boolean(image.pinned));
  }

  // After a review action: show the new state without reloading the list.
  update(image) {
    const index = this.images.findIndex((i) => i.id === image.id);
    if (index < 0) return;
    this.images[index] = image;
    const button = this.list.querySelector(`button[data-index="${index}"]`);
    if (button) this.fillTile(button, image);
  }

  focus(index) {
    const button = this.list.querySelector(`button[data-index="${index}"]`);
    if (button) {
      button.focus();
      button.scrollIntoView({ block: "nearest" });
    }
  }

  columns() {
    const first = this.list.firstElementChild;
    if (!first) return 1;
    const top = first.offsetTop;
    let n = 0;
    for (const child of this.list.children) {
      if (child.offsetTop !== top) break;
      n += 1;
    }
    return Math.max(1, n);
  }

  onKey(event) {
    const current = Number(event.target.dataset && event.target.dataset.index);
    if (Number.isNaN(current)) return;
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: this.columns(),
      ArrowUp: -this.columns() }[event.key];
    if (step === undefined) return;
    event.preventDefault();
    const next = Math.min(Math.max(current + step, 0), this.images.length - 1);
    if (next >= this.images.length - PAGE_SIZE / 2) this.loadMore();
    this.focus(next);
  }
}
