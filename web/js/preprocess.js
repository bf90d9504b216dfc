// The drawing reduction, mirror of multidigit/strokes.py `reduce_drawing` (one definition, which
// services/drawing.py and the generator import; the browser tests check that both give the same bytes on
// the same drawing):
//   1. strokes are drawn white on black on a square buffer of side f * 100 (f = 4 on the page);
//   2. grey level = the pad's grey byte (the canvas shows it as opaque grey, so also its red channel);
//   3. each f x f block is area-averaged, rounding half up in integers: (sum + f*f/2) / (f*f), floored;
//   4. the uint8 100 x 100 result looks like a training canvas; /255 gives the model's [0, 1] input.

export const CANVAS_SIZE = 100;

/**
 * Reduce a square grey drawing (one byte per pixel, side f * 100) to the uint8 (100 x 100) model canvas.
 * @param {Uint8Array} grey side * side grey levels, row-major
 * @param {number} side
 * @returns {Uint8Array} 10000 grey levels, row-major
 */
export function reduceGrey(grey, side) {
  const factor = side / CANVAS_SIZE;
  if (grey.length !== side * side || !Number.isInteger(factor) || factor < 1) {
    throw new Error(`drawing is ${grey.length} bytes for side ${side}, need a square of side 100 * f`);
  }
  const area = factor * factor;
  const out = new Uint8Array(CANVAS_SIZE * CANVAS_SIZE);
  for (let by = 0; by < CANVAS_SIZE; by++) {
    for (let bx = 0; bx < CANVAS_SIZE; bx++) {
      let sum = 0;
      for (let dy = 0; dy < factor; dy++) {
        let i = (by * factor + dy) * side + bx * factor;
        for (let dx = 0; dx < factor; dx++, i++) sum += grey[i];
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
