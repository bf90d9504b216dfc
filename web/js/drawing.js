// The drawing pad: pointer strokes (mouse, touch, pen) on a square buffer, with undo and clear.
// The canvas always shows the replay of `history` after a stroke ends, so the pixels the model sees
// depend only on the recorded strokes, not on how the live segments happened to be painted.

const BACKGROUND = "#000";
const INK = "#fff";

export class DrawingPad {
  /**
   * @param {HTMLCanvasElement} canvas square drawing buffer (e.g. 400 x 400)
   * @param {{brushWidth?: number, onChange?: () => void}} options
   */
  constructor(canvas, { brushWidth = 10, onChange = () => {} } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.brushWidth = brushWidth;
    this.onChange = onChange;
    this.history = []; // {kind: "stroke", width, points: [[x, y]...]} | {kind: "image", canvas} | {kind: "clear"}
    this.current = null;
    this.redraw();
    canvas.addEventListener("pointerdown", (e) => this.#down(e));
    canvas.addEventListener("pointermove", (e) => this.#move(e));
    canvas.addEventListener("pointerup", (e) => this.#up(e));
    canvas.addEventListener("pointercancel", (e) => this.#up(e));
  }

  get isEmpty() {
    const last = this.history.findLastIndex((a) => a.kind === "clear");
    return this.history.length - 1 === last;
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
    this.#paint(this.current, 0);
  }

  #move(e) {
    if (!this.current || e.pointerId !== this.current.id) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    const start = this.current.points.length - 1;
    for (const ev of events.length ? events : [e]) this.current.points.push(this.#point(ev));
    this.#paint(this.current, start);
  }

  #up(e) {
    if (!this.current || e.pointerId !== this.current.id) return;
    const { id, ...stroke } = this.current;
    this.current = null;
    this.history.push(stroke);
    this.redraw();
    this.onChange();
  }

  /** Paint a stroke from point index `from` on (live drawing and replay share this). */
  #paint(stroke, from) {
    const { ctx } = this;
    const pts = stroke.points;
    ctx.strokeStyle = INK;
    ctx.fillStyle = INK;
    ctx.lineWidth = stroke.width;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    if (pts.length === 1) {
      ctx.beginPath();
      ctx.arc(pts[0][0], pts[0][1], stroke.width / 2, 0, 2 * Math.PI);
      ctx.fill();
      return;
    }
    ctx.beginPath();
    ctx.moveTo(...pts[Math.max(0, from)]);
    for (let i = Math.max(1, from + 1); i < pts.length; i++) ctx.lineTo(...pts[i]);
    ctx.stroke();
  }

  /** Repaint everything since the last clear. */
  redraw() {
    const { ctx, canvas } = this;
    ctx.fillStyle = BACKGROUND;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const start = this.history.findLastIndex((a) => a.kind === "clear") + 1;
    for (const action of this.history.slice(start)) {
      if (action.kind === "stroke") this.#paint(action, 0);
      else if (action.kind === "image") {
        ctx.imageSmoothingEnabled = false; // nearest: each model pixel becomes an exact f x f block
        ctx.drawImage(action.canvas, 0, 0, canvas.width, canvas.height);
      }
    }
  }

  /** Show a uint8 size x size grey canvas (an example), replacing the drawing; undoable. */
  loadPixels(pixels, size) {
    const small = document.createElement("canvas");
    small.width = small.height = size;
    const sctx = small.getContext("2d");
    const img = sctx.createImageData(size, size);
    for (let i = 0; i < pixels.length; i++) {
      img.data.set([pixels[i], pixels[i], pixels[i], 255], i * 4);
    }
    sctx.putImageData(img, 0, 0);
    this.history.push({ kind: "clear" }, { kind: "image", canvas: small });
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
