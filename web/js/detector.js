// The page's own inference code (contract: docs in the common brief, section 4).
// MINIMAL VERSION written by the service engineer so the page and its browser tests run before the
// export engineer's detector.js lands; that one replaces this file.
//
// loadDetector(baseUrl) -> {detect(pixels, {scoreThreshold}), raw(pixels)}
//   pixels: Float32Array(100 * 100) in [0, 1], row-major, white digits on black.
//   raw -> Float32Array(N * 15): per box slot [x, y, w, h (pixels, top-left), objectness, 10 class probs].
//   detect -> [{x, y, w, h, label, score}], score = objectness * max class prob, class-aware NMS.
// Uses the global `tf` (the page loads tfjs's UMD bundle, which an ES module cannot import without
// an inline import map, and the CSP forbids inline scripts).

const SIZE = 100;
const ROW = 15;

function iou(a, b) {
  const ix = Math.max(0, Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x));
  const iy = Math.max(0, Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y));
  const inter = ix * iy;
  const union = a.w * a.h + b.w * b.h - inter;
  return union > 0 ? inter / union : 0;
}

/** Score, label and class-aware greedy NMS over the raw (N, 15) output. */
export function postprocess(raw, { scoreThreshold = 0.5, iouThreshold = 0.45, maxDetections = 20 } = {}) {
  const candidates = [];
  for (let i = 0; i + ROW <= raw.length; i += ROW) {
    let label = 0;
    for (let c = 1; c < 10; c++) if (raw[i + 5 + c] > raw[i + 5 + label]) label = c;
    const score = raw[i + 4] * raw[i + 5 + label];
    if (score >= scoreThreshold) {
      candidates.push({ x: raw[i], y: raw[i + 1], w: raw[i + 2], h: raw[i + 3], label, score });
    }
  }
  candidates.sort((a, b) => b.score - a.score);
  const kept = [];
  for (const c of candidates) {
    if (kept.length >= maxDetections) break;
    if (kept.every((k) => k.label !== c.label || iou(k, c) <= iouThreshold)) kept.push(c);
  }
  return kept;
}

async function loadModel(tf, url) {
  const spec = await (await fetch(url)).json();
  return spec.format === "graph-model" ? tf.loadGraphModel(url) : tf.loadLayersModel(url);
}

export async function loadDetector(baseUrl) {
  const tf = globalThis.tf;
  const base = baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`;
  const model = await loadModel(tf, `${base}model.json`);
  const manifest = await (await fetch(`${base}manifest.json`)).json().catch(() => ({}));
  const nms = manifest.nms ?? {};

  async function raw(pixels) {
    if (pixels.length !== SIZE * SIZE) throw new Error(`pixels has ${pixels.length} values, need ${SIZE * SIZE}`);
    const input = tf.tensor4d(pixels, [1, SIZE, SIZE, 1], "float32");
    const output = model.predict(input);
    const data = await output.data();
    tf.dispose([input, output]);
    return data;
  }

  async function detect(pixels, { scoreThreshold = 0.5 } = {}) {
    return postprocess(await raw(pixels), {
      scoreThreshold,
      iouThreshold: nms.iou_threshold ?? 0.45,
      maxDetections: nms.max_detections ?? 20,
    });
  }

  return { raw, detect, backend: tf.getBackend() };
}
