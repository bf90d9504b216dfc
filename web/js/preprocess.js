// The drawing reduction, mirror of multidigit/strokes.py `reduce_drawing` (one definition, which
// services/drawing.py and the generator import; the browser tests check that both give the same bytes on
// the same drawing):
//   1. strokes are drawn white on black on a square buffer of side f * 100 (f = 4 on the page);
//   2. grey level = red channel;
//   3. each f x f block is area-averaged, rounding half up in integers: (sum + f*f/2) / (f*f), floored;
//   4. the uint8 100 x 100 result looks like a training canvas; /255 gives the model's [0, 1] input.

export const CANVAS_SIZE = 100;

/**
 * Reduce the drawing on a canvas 2D context to the uint8 (100 x 100) model canvas.
 * @param {CanvasRenderingContext2D} ctx drawing context of a square canvas, side f * 100
 * @returns {Uint8Array} 10000 grey levels, row-major
 */
export function reduceDrawing(ctx) {
  const side = ctx.canvas.width;
  const factor = side / CANVAS_SIZE;
  if (ctx.canvas.height !== side || !Number.isInteger(factor) || factor < 1) {
    throw new Error(`drawing is ${side}x${ctx.canvas.height}, need a square of side 100 * f`);
  }
  const rgba = ctx.getImageData(0, 0, side, side).data;
  const area = factor * factor;
  const out = new Uint8Array(CANVAS_SIZE * CANVAS_SIZE);
  for (let by = 0; by < CANVAS_SIZE; by++) {
    for (let bx = 0; bx < CANVAS_SIZE; bx++) {
      let sum = 0;
      for (let dy = 0; dy < factor; dy++) {
        let i = ((by * factor + dy) * side + bx * factor) * 4;
        for (let dx = 0; dx < factor; dx++, i += 4) sum += rgba[i];
      }
      out[by * CANVAS_SIZE + bx] = Math.floor((sum + Math.floor(area / 2)) / area);
    }
  }
  return out;
}

/**
 * Scale a uint8 canvas to the model input: float32 in [0, 1] (multidigit.preprocess.to_model_input).
 * @param {Uint8Array} canvas 10000 grey levels
 * @returns {Float32Array}
 */
export function toModelInput(canvas) {
  const input = new Float32Array(canvas.length);
  for (let i = 0; i < canvas.length; i++) input[i] = canvas[i] / 255;
  return input;
}

/**
 * Decode an example canvas sent as base64 of uint8 row-major bytes.
 * @param {string} b64
 * @returns {Uint8Array}
 */
export function decodePixels(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
