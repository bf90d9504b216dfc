// The page's own inference code: load an exported TF.js version, check its files, run it, decode it.
//
// Contract (common brief, section 4; the browser parity test runs exactly this file):
//   loadDetector(baseUrl, {backend, vendorUrl, verify}) -> {manifest, backend, detect, raw, dispose}
//     baseUrl   the version folder, e.g. "/models/20250101-120000-ab12cd34/"
//     backend   TF.js backend to use ("wasm", "webgl", "cpu"); default: keep the page's, else the first
//               of BACKENDS that starts
//   raw(pixels)    pixels: Float32Array(100 * 100) in [0, 1], row-major, white digits on black.
//                  -> Float32Array(N * 15), per box slot [x, y, w, h (pixels, top-left), objectness,
//                  10 class probabilities] (manifest.output.channels).
//   detect(pixels, {scoreThreshold}) -> [{x, y, w, h, label, score}] best first:
//                  score = objectness * max class prob, label = argmax class, keep score >= threshold,
//                  class-aware NMS, at most max_detections, boxes merged when the manifest says so. Same rule
//                  as multidigit.boxes.postprocess.
// Every decoding constant (thresholds, NMS IoU, max detections, class offset, grid, input size) is
// read from the version's manifest.json: the export stage writes it, nothing is repeated here.
//
// TF.js comes from the page's global `tf` (its UMD bundles via <script>) or, when absent, the same
// bundles added here as classic scripts from /vendor/ (the CSP allows same-origin scripts only).

export const BACKENDS = ["wasm", "webgl", "cpu"];
const DEFAULT_VENDOR = "/vendor";

/** Add a classic <script> (UMD bundles need `this` = window; as modules they would need eval). */
function loadScript(url) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = url;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`cannot load ${url}`));
    document.head.append(script);
  });
}

async function loadTf(vendorUrl) {
  if (!globalThis.tf?.loadGraphModel) await loadScript(`${vendorUrl}/tfjs/tf.es2017.min.js`);
  if (!globalThis.tf.wasm) await loadScript(`${vendorUrl}/tfjs-backend-wasm/tf-backend-wasm.es2017.min.js`);
  return globalThis.tf;
}

async function useBackend(tf, wanted, vendorUrl) {
  // setWasmPaths must run before the wasm backend first initialises.
  if (tf.wasm && !globalThis.__multidigitWasmPaths) {
    tf.wasm.setWasmPaths(`${vendorUrl}/tfjs-backend-wasm/`);
    globalThis.__multidigitWasmPaths = true;
  }
  const names = wanted ? [wanted] : BACKENDS;
  for (const name of names) {
    try {
      if (await tf.setBackend(name)) {
        await tf.ready();
        return tf.getBackend();
      }
    } catch {
      // this backend cannot start here (no WebGL, no wasm): try the next one
    }
  }
  throw new Error(`no TF.js backend could start (tried ${names.join(", ")})`);
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Fetch one file of the version; refuse it when its sha256 differs from the manifest's. */
async function fetchChecked(base, name, manifest, verify) {
  const response = await fetch(`${base}${name}`);
  if (!response.ok) throw new Error(`${base}${name}: HTTP ${response.status}`);
  const data = await response.arrayBuffer();
  const expected = manifest.files?.[name]?.sha256;
  if (verify && !expected) throw new Error(`${name} is not listed in ${base}manifest.json`);
  // crypto.subtle exists in secure contexts only (https, localhost); elsewhere the check is skipped.
  if (verify && globalThis.crypto?.subtle) {
    const actual = hex(await crypto.subtle.digest("SHA-256", data));
    if (actual !== expected) throw new Error(`sha256 mismatch: ${name} expected ${expected} got ${actual}`);
  }
  return data;
}

async function loadGraph(tf, base, manifest, verify) {
  const modelJson = JSON.parse(new TextDecoder().decode(await fetchChecked(base, manifest.model, manifest, verify)));
  const artifacts = await tf.io.getModelArtifactsForJSON(modelJson, async (groups) => {
    const specs = groups.flatMap((group) => group.weights);
    const shards = [];
    for (const group of groups) {
      for (const path of group.paths) shards.push(await fetchChecked(base, path, manifest, verify));
    }
    return [specs, shards]; // shards concatenate in manifest order (a tf.io WeightData list)
  });
  return tf.loadGraphModel(tf.io.fromMemory(artifacts));
}

/**
 * Load an exported version and return its detector.
 * @param {string} baseUrl the version folder (with or without a trailing slash)
 * @param {{backend?: string, vendorUrl?: string, verify?: boolean}} options
 */
export async function loadDetector(baseUrl, { backend, vendorUrl = DEFAULT_VENDOR, verify = true } = {}) {
  const tf = await loadTf(vendorUrl);
  const base = baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`;
  const response = await fetch(`${base}manifest.json`);
  if (!response.ok) throw new Error(`${base}manifest.json: HTTP ${response.status}`);
  const manifest = await response.json();
  const chosen = tf.engine().backendName; // set when the page already picked a backend
  const usedBackend = backend || !chosen ? await useBackend(tf, backend, vendorUrl) : chosen;
  const model = await loadGraph(tf, base, manifest, verify);
  const [, height, width, channels] = manifest.input.shape;
  const [slots, row] = manifest.output.shape;
  const { score, iou, max_detections: maxDetections, nms_class_offset: classOffset } = manifest.thresholds;
  const merge = manifest.thresholds.merge === true; // manifests before the merge option had none
  const numClasses = manifest.classes.length;

  async function raw(pixels) {
    if (pixels.length !== height * width * channels) {
      throw new Error(`pixels has ${pixels.length} values, need ${height * width * channels}`);
    }
    const output = tf.tidy(() => model.execute(tf.tensor4d(pixels, [1, height, width, channels], "float32")));
    const data = await output.data();
    output.dispose();
    return data;
  }

  async function detect(pixels, { scoreThreshold = score } = {}) {
    const out = await raw(pixels);
    // Candidates: score >= threshold (tf's NMS filter is strict '>', so filter here as Python does).
    const index = [];
    const labels = [];
    const scores = [];
    for (let i = 0; i < slots; i++) {
      let label = 0;
      for (let c = 1; c < numClasses; c++) if (out[i * row + 5 + c] > out[i * row + 5 + label]) label = c;
      const s = out[i * row + 4] * out[i * row + 5 + label];
      if (s >= scoreThreshold) index.push(i), labels.push(label), scores.push(s);
    }
    if (index.length === 0) return [];
    // Class-aware NMS in one pass: each class moves to its own far-away region of the plane.
    const corners = new Float32Array(index.length * 4); // [y1, x1, y2, x2] as tf.image wants
    index.forEach((i, k) => {
      const shift = labels[k] * classOffset;
      const [x, y, w, h] = [out[i * row], out[i * row + 1], out[i * row + 2], out[i * row + 3]];
      corners.set([y + shift, x + shift, y + h + shift, x + w + shift], k * 4);
    });
    const boxes = tf.tensor2d(corners, [index.length, 4]);
    const scoreTensor = tf.tensor1d(scores);
    const keep = await tf.image.nonMaxSuppressionAsync(boxes, scoreTensor, maxDetections, iou);
    const kept = await keep.data();
    tf.dispose([boxes, scoreTensor, keep]);
    const boxOf = (k) => Array.from(out.subarray(index[k] * row, index[k] * row + 4));
    return Array.from(kept, (k) => {
      const [x, y, w, h] = merge ? mergedBox(k) : boxOf(k);
      return { x, y, w, h, label: labels[k], score: scores[k] };
    });

    // Same rule as multidigit.boxes.merge_boxes: the score-weighted mean of the same-class candidates
    // overlapping the kept box by more than the NMS IoU, itself included.
    function mergedBox(k) {
      const sum = [0, 0, 0, 0];
      let total = 0;
      for (let m = 0; m < index.length; m++) {
        if (labels[m] !== labels[k] || iouXywh(boxOf(k), boxOf(m)) <= iou) continue;
        boxOf(m).forEach((v, c) => (sum[c] += scores[m] * v));
        total += scores[m];
      }
      return sum.map((v) => v / total);
    }
  }

  function iouXywh(a, b) {
    const iw = Math.max(Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]), 0);
    const ih = Math.max(Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]), 0);
    const union = a[2] * a[3] + b[2] * b[3] - iw * ih;
    return union > 0 ? (iw * ih) / union : 0;
  }

  return { manifest, backend: usedBackend, raw, detect, dispose: () => model.dispose() };
}
