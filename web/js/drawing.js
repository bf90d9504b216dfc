// The drawing pad: pointer strokes (mouse, touch, pen) on a square buffer, with undo and clear.
//
// Strokes are painted by our own round brush, not by ctx.stroke(): the same arithmetic as
// multidigit/strokes.py `render_strokes`, so Python renders the recorded points to the very bytes the page
// shows and sends. For each buffer pixel centre p = (x + 0.5, y + 0.5) and segment a -> b:
//   t = clamp(((p - a) . (b - a)) / |b - a|^2, 0, 1)   (t = 0 when a = b)
//   d = sqrt(|p - a - t (b - a)|^2),  coverage = clamp(width / 2 + 0.5 - d, 0, 1)
//   byte = floor(coverage * 255 + 0.5), and a pixel keeps the largest byte over all segments.
// Doubles throughout, in the Python's order (JS never fuses a*b + c), Math.sqrt is correctly rounded.
// Live drawing paints only the new segments' boxes; replay (undo, clear) paints every stroke again with
// the same function, and max is order-free, so both give the same bytes.
//
// With `readWidth` set (the manifest's input.read_brush) a second buffer, `readGrey`, holds the same
// strokes painted at that one width: what the detector reads, whatever the slider shows. `widen()` moves
// the boxes found there to the widths drawn (multidigit/strokes.py `widen_boxes`).

export class DrawingPad {
  /**
   * @param {HTMLCanvasElement} canvas square drawing buffer (e.g. 400 x 400)
   * @param {{brushWidth?: number, onChange?: () => void}} options
   */
  constructor(canvas, { brushWidth = 10, onChange = () => {} } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.side = canvas.width;
    this.grey = new Uint8Array(this.side * this.side); // the drawing, one grey byte per buffer pixel
    this.readGrey = new Uint8Array(this.side * this.side); // the same strokes at readWidth
    this.brushWidth = brushWidth;
    this._readWidth = null;
    this.onChange = onChange;
    this.history = []; // {kind: "stroke", width, points: [[x, y]...]} | {kind: "image", pixels, size} | {kind: "clear"}
    this.current = null;
    this.redraw();
    canvas.addEventListener("pointerdown", (e) => this.#down(e));
    canvas.addEventListener("pointermove", (e) => this.#move(e));
    canvas.addEventListener("pointerup", (e) => this.#up(e));
    canvas.addEventListener("pointercancel", (e) => this.#up(e));
  }

  /** The brush width the detector reads strokes at (null: each stroke's own); repaints when set. */
  get readWidth() {
    return this._readWidth;
  }

  set readWidth(width) {
    this._readWidth = width ?? null;
    this.redraw();
  }

  /** The grey bytes the detector reads: `readGrey` when a read width is set, else the drawing itself. */
  get modelGrey() {
    return this._readWidth === null ? this.grey : this.readGrey;
  }

  /**
   * Boxes found on `modelGrey` (canvas px, objects with x, y, w, h), moved to the widths drawn: each edge
   * out by (w - readWidth) / 2 buffer px, w the widest stroke with a point inside the box; clipped.
   */
  widen(detections) {
    if (this._readWidth === null) return detections;
    const f = this.side / 100;
    const strokes = this.strokes;
    return detections.map((d) => {
      const [x0, y0, x1, y1] = [d.x * f, d.y * f, (d.x + d.w) * f, (d.y + d.h) * f];
      const inside = strokes
        .filter((s) => s.points.some(([x, y]) => x >= x0 && x <= x1 && y >= y0 && y <= y1))
        .map((s) => s.width);
      const grow = inside.length ? (Math.max(...inside) - this._readWidth) / (2 * f) : 0;
      const left = Math.max(d.x - grow, 0);
      const top = Math.max(d.y - grow, 0);
      const right = Math.min(d.x + d.w + grow, 100);
      const bottom = Math.min(d.y + d.h + grow, 100);
      return { ...d, x: left, y: top, w: Math.max(right - left, 0), h: Math.max(bottom - top, 0) };
    });
  }

  /** Whether an example image is shown (it has no strokes to redraw). */
  get hasImage() {
    const start = this.history.findLastIndex((a) => a.kind === "clear") + 1;
    return this.history.slice(start).some((a) => a.kind === "image");
  }

  get isEmpty() {
    const last = this.history.findLastIndex((a) => a.kind === "clear");
    return this.history.length - 1 === last;
  }

  /** The strokes drawn since the last clear: [{width, points}] in buffer pixels (what Python replays). */
  get strokes() {
    const start = this.history.findLastIndex((a) => a.kind === "clear") + 1;
    return this.history
      .slice(start)
      .filter((a) => a.kind === "stroke")
      .map(({ width, points }) => ({ width, points }));
  }

  /** A new grey buffer holding `lines` ([[x, y], ...] in buffer px) painted at `width` (the page's second
   * look, web/js/rescale.js). */
  paintLines(lines, width) {
    const grey = new Uint8Array(this.side * this.side);
    for (const points of lines) this.#paintInto(grey, { points }, 0, width);
    return grey;
  }

  #point(e) {
    // CSS pixels -> buffer pixels (the canvas is displayed at any size).
    const rect = this.canvas.getBoundingClientRect();
    return [
      ((e.clientX - rect.left) * this.canvas.width) / rect.width,
      ((e.clientY - rect.top) * this.canvas.height) / rect.height,
    ];
  }

  #down(e) {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    e.preventDefault();
    this.canvas.setPointerCapture(e.pointerId);
    this.current = { kind: "stroke", width: this.brushWidth, points: [this.#point(e)], id: e.pointerId };
    this.#show(this.#paint(this.current, 0));
  }

  #move(e) {
    if (!this.current || e.pointerId !== this.current.id) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    const start = this.current.points.length - 1;
    for (const ev of events.length ? events : [e]) this.current.points.push(this.#point(ev));
    this.#show(this.#paint(this.current, start));
  }

  #up(e) {
    if (!this.current || e.pointerId !== this.current.id) return;
    const { id, ...stroke } = this.current;
    this.current = null;
    this.history.push(stroke);
    this.redraw();
    this.onChange();
  }

  /** Max one segment's brush bytes into `grey`; returns its clipped box [x0, y0, x1, y1] or null. */
  #segment(grey, a, b, width) {
    const { side } = this;
    const half = width / 2 + 0.5;
    const reach = width / 2 + 1;
    const [ax, ay] = a;
    const [bx, by] = b;
    // pixels outside the box get coverage <= 0 anyway, so the box only saves work
    const x0 = Math.max(0, Math.floor(Math.min(ax, bx) - reach));
    const x1 = Math.min(side - 1, Math.ceil(Math.max(ax, bx) + reach));
    const y0 = Math.max(0, Math.floor(Math.min(ay, by) - reach));
    const y1 = Math.min(side - 1, Math.ceil(Math.max(ay, by) + reach));
    if (x0 > x1 || y0 > y1) return null;
    const dx = bx - ax;
    const dy = by - ay;
    const len2 = dx * dx + dy * dy;
    for (let y = y0; y <= y1; y++) {
      const ry = y + 0.5 - ay;
      for (let x = x0; x <= x1; x++) {
        const rx = x + 0.5 - ax;
        const t = len2 > 0 ? Math.min(Math.max((rx * dx + ry * dy) / len2, 0), 1) : 0;
        const ex = rx - t * dx;
        const ey = ry - t * dy;
        const d = Math.sqrt(ex * ex + ey * ey);
        const cover = Math.min(Math.max(half - d, 0), 1);
        const byte = Math.floor(cover * 255 + 0.5);
        const i = y * side + x;
        if (byte > grey[i]) grey[i] = byte;
      }
    }
    return [x0, y0, x1, y1];
  }

  /** Paint a stroke's segments from point index `from` on (and at readWidth into readGrey); returns the
   * union box they touched in `grey`. */
  #paint(stroke, from) {
    if (this._readWidth !== null) this.#paintInto(this.readGrey, stroke, from, this._readWidth);
    return this.#paintInto(this.grey, stroke, from, stroke.width);
  }

  #paintInto(grey, stroke, from, width) {
    const pts = stroke.points;
    const boxes = [];
    if (pts.length === 1) boxes.push(this.#segment(grey, pts[0], pts[0], width));
    for (let i = Math.max(1, from + 1); i < pts.length; i++) boxes.push(this.#segment(grey, pts[i - 1], pts[i], width));
    const hit = boxes.filter(Boolean);
    if (!hit.length) return null;
    return [
      Math.min(...hit.map((b) => b[0])),
      Math.min(...hit.map((b) => b[1])),
      Math.max(...hit.map((b) => b[2])),
      Math.max(...hit.map((b) => b[3])),
    ];
  }

  /** Copy a box of `grey` (default: all of it) onto the canvas as opaque grey pixels. */
  #show(box = [0, 0, this.side - 1, this.side - 1]) {
    if (!box) return;
    const [x0, y0, x1, y1] = box;
    const w = x1 - x0 + 1;
    const h = y1 - y0 + 1;
    const img = this.ctx.createImageData(w, h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = this.grey[(y0 + y) * this.side + x0 + x];
        const o = (y * w + x) * 4;
        img.data[o] = img.data[o + 1] = img.data[o + 2] = v;
        img.data[o + 3] = 255;
      }
    }
    this.ctx.putImageData(img, x0, y0);
  }

  /** Repaint everything since the last clear. */
  redraw() {
    const { grey, readGrey, side } = this;
    grey.fill(0);
    readGrey.fill(0);
    const start = this.history.findLastIndex((a) => a.kind === "clear") + 1;
    for (const action of this.history.slice(start)) {
      if (action.kind === "stroke") this.#paint(action, 0);
      else if (action.kind === "image") {
        // nearest upscale: each model pixel becomes an exact f x f block, which the reduction undoes
        const { pixels, size } = action;
        for (let y = 0; y < side; y++) {
          const row = Math.floor((y * size) / side) * size;
          for (let x = 0; x < side; x++) grey[y * side + x] = pixels[row + Math.floor((x * size) / side)];
        }
        readGrey.set(grey); // an image has no strokes to redraw: it is read as shown
      }
    }
    this.#show();
  }

  /** Show a uint8 size x size grey canvas (an example), replacing the drawing; undoable. */
  loadPixels(pixels, size) {
    this.history.push({ kind: "clear" }, { kind: "image", pixels: Uint8Array.from(pixels), size });
    this.redraw();
    this.onChange();
  }

  undo() {
    if (!this.history.length) return;
    const last = this.history.pop();
    // An example is pushed as clear + image: undo both at once.
    if (last.kind === "image" && this.history.at(-1)?.kind === "clear") this.history.pop();
    this.redraw();
    this.onChange();
  }

  clear() {
    if (this.isEmpty) return;
    this.history.push({ kind: "clear" });
    this.redraw();
    this.onChange();
  }
}
