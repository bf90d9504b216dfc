// The page's own inference code: load an exported version, check its files, run its graph.
//
// Contract (the browser parity test runs exactly this file; the manifest is the detector contract):
//   loadDetector(baseUrl, {backend, vendorUrl, verify, threads}) -> {manifest, backend, threads, detect, run, dispose}
//     baseUrl   the version folder, e.g. "/models/20250101-120000-ab12cd34/"
//     backend   TF.js backend to use ("wasm", "webgl", "cpu"); default: keep the page's, else the first
//               of BACKENDS that starts
//     threads   wasm threads, only before the wasm backend first starts (tfjs runs at most one per 2
//               logical cores, 8 in all, and only where the page is cross-origin isolated; else 1). The
//               detector reports the count it runs on.
//   run(pixels, {scoreThreshold}) -> every kept box [{x, y, w, h, label, score, shown}], best first
//   detect(pixels, {scoreThreshold}) -> the shown ones only: what the page lists
//   warmUp(detector, runs) -> ms spent running the graph `runs` times on a few strokes (call once on load)
//     pixels    Float32Array(100 * 100) in [0, 1], row-major, white digits on black.
// The graph does all the post-processing (scoring, threshold, class-aware NMS, merge, one box per digit);
// this file feeds manifest.inputs and reads manifest.outputs by name. The default score threshold is the
// manifest's (calibrated by evaluation); nothing about decoding is repeated here.
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

async function useBackend(tf, wanted, vendorUrl, threads) {
  // setWasmPaths and setThreadsCount must run before the wasm backend first initialises.
  if (tf.wasm && !globalThis.__multidigitWasmPaths) {
    tf.wasm.setWasmPaths(`${vendorUrl}/tfjs-backend-wasm/`);
    if (threads) tf.wasm.setThreadsCount(threads);
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
export async function loadDetector(baseUrl, { backend, vendorUrl = DEFAULT_VENDOR, verify = true, threads } = {}) {
  const tf = await loadTf(vendorUrl);
  const base = baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`;
  const response = await fetch(`${base}manifest.json`);
  if (!response.ok) throw new Error(`${base}manifest.json: HTTP ${response.status}`);
  const manifest = await response.json();
  if (!manifest.outputs?.shown) throw new Error(`${base}manifest.json: no graph outputs (exported before post-processing moved into the graph)`);
  const chosen = tf.engine().backendName; // set when the page already picked a backend
  const usedBackend = backend || !chosen ? await useBackend(tf, backend, vendorUrl, threads) : chosen;
  const model = await loadGraph(tf, base, manifest, verify);
  const [, height, width, channels] = manifest.inputs.image.shape;
  const names = Object.keys(manifest.outputs); // boxes, scores, labels, shown, count

  async function run(pixels, { scoreThreshold = manifest.thresholds.score } = {}) {
    if (pixels.length !== height * width * channels) {
      throw new Error(`pixels has ${pixels.length} values, need ${height * width * channels}`);
    }
    const image = tf.tensor4d(pixels, [1, height, width, channels], "float32");
    const threshold = tf.scalar(scoreThreshold, "float32");
    const tensors = await model.executeAsync({ image, score_threshold: threshold }, names);
    const out = Object.fromEntries(await Promise.all(names.map(async (name, i) => [name, await tensors[i].data()])));
    tf.dispose([image, threshold, ...tensors]);
    return Array.from(out.scores, (score, k) => {
      const [x, y, w, h] = out.boxes.subarray(k * 4, k * 4 + 4);
      return { x, y, w, h, label: out.labels[k], score, shown: out.shown[k] === 1 };
    });
  }

  async function detect(pixels, options) {
    return (await run(pixels, options)).filter((d) => d.shown);
  }

  const threadsUsed = usedBackend === "wasm" ? tf.wasm.getThreadsCount() : null;
  return { manifest, backend: usedBackend, threads: threadsUsed, run, detect, dispose: () => model.dispose() };
}

/** Three strokes and a bar on a 100 x 100 canvas: enough ink that every post-processing step has boxes. */
function warmUpPixels(side = 100) {
  const px = new Float32Array(side * side);
  for (let r = 20; r < 80; r++) for (const c of [20, 21, 22, 50, 51, 52, 75, 76]) px[r * side + c] = 1;
  for (let c = 40; c < 70; c++) px[30 * side + c] = 1;
  return px;
}

/**
 * Run the graph on a few strokes before anyone draws. wasm compiles its kernels lazily: without this the
 * page's first reading took a median 83-96 ms against ~30 ms for the next ones, with two runs 36-40 ms, for
 * 0.13-0.23 s more loading (benchmarks/first_reading.py, 2026-12-04). A blank canvas warms less (38-70 ms in a
 * throw-away run): with no boxes, NMS and the fit to ink run on empty tensors.
 * @returns {Promise<number>} milliseconds spent
 */
export async function warmUp(detector, runs = 2) {
  const t0 = performance.now();
  const pixels = warmUpPixels();
  for (let i = 0; i < runs; i++) await detector.run(pixels);
  return performance.now() - t0;
}
