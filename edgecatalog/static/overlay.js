// Drawing annotations over an image: an SVG whose viewBox is the image's pixel size, laid
// exactly over the <img>, so pixel geometry from the API needs no scaling code.

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

// One colour per class: the first dozen classes seen get clearly different colours from a
// fixed palette (a hash would let two classes share one), later ones golden-angle hues. The
// grid registers classes as pages arrive, so a class keeps its colour for the whole session.
const PALETTE = ["#4ea1ff", "#ff6b6b", "#3ecf8e", "#f5b748", "#c77dff", "#2ed3d3",
  "#ff8fd1", "#ff9f43", "#a3e635", "#8d99ff", "#ffd166", "#ef476f"];
const assigned = new Map();

export function classColour(name) {
  const key = String(name);
  if (!assigned.has(key)) {
    const n = assigned.size;
    assigned.set(key, n < PALETTE.length ? PALETTE[n] : `hsl(${(n * 137.508) % 360} 80% 62%)`);
  }
  return assigned.get(key);
}

export function visibleAnnotations(annotations, threshold) {
  // Manual boxes have no confidence: a threshold on model scores never hides them.
  return annotations.filter((a) => a.confidence === null || a.confidence === undefined ||
    a.confidence >= threshold);
}

function pixelPoints(ann, width, height) {
  const g = Array.isArray(ann.geometry) ? ann.geometry : [];
  if (ann.type === "polygon" && g.length >= 6) return g;
  if (ann.type === "bbox" && g.length === 4) {
    return [g[0], g[1], g[2], g[1], g[2], g[3], g[0], g[3]];
  }
  // No pixel geometry: fall back to the normalized box every annotation carries.
  const x1 = (ann.x_center - ann.width / 2) * width;
  const y1 = (ann.y_center - ann.height / 2) * height;
  const x2 = x1 + ann.width * width;
  const y2 = y1 + ann.height * height;
  return [x1, y1, x2, y1, x2, y2, x1, y2];
}

export function labelText(ann) {
  const conf = typeof ann.confidence === "number" ? ` ${ann.confidence.toFixed(2)}` : "";
  return `${ann.class_value}${conf}`;
}

const LABEL_PX = 14;

// Replace the overlay's content with the given annotations; returns the drawn shapes.
export function drawAnnotations(overlay, annotations, width, height, selectedId) {
  overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
  overlay.replaceChildren();
  // Labels keep one size on screen whatever the image's pixel size or zoom.
  const shown = overlay.getBoundingClientRect().width;
  const font = shown > 0 ? LABEL_PX * (width / shown) : Math.max(width, height) / 45;
  const shapes = [];
  for (const ann of annotations) {
    const colour = classColour(ann.class_value);
    const points = pixelPoints(ann, width, height);
    const group = svg("g", { class: "ann-group", "data-id": ann.id });
    const isBox = ann.type !== "polygon";
    const shape = isBox
      ? svg("rect", { x: Math.min(points[0], points[4]), y: Math.min(points[1], points[5]),
        width: Math.abs(points[4] - points[0]), height: Math.abs(points[5] - points[1]) })
      : svg("polygon", { points: points.join(" ") });
    shape.setAttribute("class", `ann ann-${isBox ? "bbox" : "polygon"}` +
      (ann.id === selectedId ? " selected" : ""));
    shape.setAttribute("stroke", colour);
    shape.setAttribute("fill", colour);
    shape.setAttribute("vector-effect", "non-scaling-stroke");
    shape.dataset.id = ann.id;
    const xs = points.filter((_, i) => i % 2 === 0);
    const ys = points.filter((_, i) => i % 2 === 1);
    const pad = font / 5;
    const lx = Math.max(0, Math.min(...xs));
    const ly = Math.max(font + 2 * pad, Math.min(...ys)); // above the box, inside the image
    const text = labelText(ann);
    const bg = svg("rect", { class: "ann-label-bg", x: lx, y: ly - font - 2 * pad,
      width: text.length * font * 0.62 + 2 * pad, height: font + 2 * pad, fill: colour });
    const label = svg("text", { class: "ann-label", x: lx + pad, y: ly - 1.5 * pad,
      "font-size": font });
    label.textContent = text;
    group.append(shape, bg, label);
    overlay.append(group);
    shapes.push(shape);
  }
  return shapes;
}

// Drag to draw a box; calls done([xc, yc, w, h]) in normalized coordinates, or nothing for a
// click too small to be a box. Pointer events cover mouse, pen and touch alike.
export function enableBoxDrawing(overlay, isActive, done) {
  let start = null;
  let preview = null;
  const point = (event) => {
    const r = overlay.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    return [clamp((event.clientX - r.left) / r.width), clamp((event.clientY - r.top) / r.height)];
  };
  const box = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]),
    Math.abs(a[0] - b[0]), Math.abs(a[1] - b[1])];
  overlay.addEventListener("pointerdown", (event) => {
    if (!isActive()) return;
    event.preventDefault();
    overlay.setPointerCapture(event.pointerId);
    start = point(event);
    const [, , w, h] = overlay.viewBox.baseVal ? [0, 0, overlay.viewBox.baseVal.width,
      overlay.viewBox.baseVal.height] : [0, 0, 1, 1];
    preview = svg("rect", { class: "ann-preview", x: start[0] * w, y: start[1] * h,
      width: 0, height: 0, "vector-effect": "non-scaling-stroke" });
    preview.dataset.scale = `${w},${h}`;
    overlay.append(preview);
  });
  overlay.addEventListener("pointermove", (event) => {
    if (!start || !preview) return;
    const [w, h] = preview.dataset.scale.split(",").map(Number);
    const [x, y, bw, bh] = box(start, point(event));
    for (const [k, v] of Object.entries({ x: x * w, y: y * h, width: bw * w, height: bh * h })) {
      preview.setAttribute(k, String(v));
    }
  });
  const finish = (event) => {
    if (!start) return;
    const [x, y, w, h] = box(start, point(event));
    start = null;
    if (preview) preview.remove();
    preview = null;
    const r = overlay.getBoundingClientRect();
    if (w * r.width < 6 || h * r.height < 6) return; // a tap, not a drag
    done([x + w / 2, y + h / 2, w, h]);
  };
  overlay.addEventListener("pointerup", finish);
  overlay.addEventListener("pointercancel", () => {
    start = null;
    if (preview) preview.remove();
    preview = null;
  });
}
