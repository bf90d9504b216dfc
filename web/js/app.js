// The drawing page: wires the pad, the champion detector (web/js/detector.js) and the controls.
import { loadDetector, warmUp } from "./detector.js";
import { DrawingPad } from "./drawing.js";
import { decodePixels, reduceGrey, toModelInput } from "./preprocess.js";
import { readingOrder } from "./reading.js";
import { boxesBack, planRescale, scaledLines } from "./rescale.js";

const DEBOUNCE_MS = 150;
const SCALE = 4; // buffer pixels per model pixel (400 / 100)
const COLOURS = ["#ff595e", "#ffca3a", "#8ac926", "#1982c4", "#6a4c93", "#f15bb5", "#00bbf9", "#00f5d4", "#fee440", "#ff924c"];
const BACKENDS = ["wasm", "webgl", "cpu"]; // wasm first: fastest for a small CNN, deterministic

const $ = (id) => document.getElementById(id);
const state = {
  detector: null,
  manifest: null,
  canvas: null, // last reduced uint8 100 x 100 canvas
  rescale: null, // the last second look: {scale, centre, to, canvas} (web/js/rescale.js), or null
  detections: [],
  // The score threshold detection runs at: the manifest's calibrated value until the slider moves. A range
  // input snaps its value to its 0.01 step (0.4345 reads back as 0.43), so the slider cannot hold it.
  threshold: null,
  warmupMs: null, // time the detector's warm-up runs took on load
  threads: null, // wasm threads: tfjs runs one per 2 logical cores (at most 8) where the page is cross-origin isolated
  examples: null,
  exampleIndex: 0,
  requested: 0, // detections scheduled so far; `done` catches up when the last one has finished
  done: 0,
};

function showBanner(text) {
  $("banner").textContent = text;
  $("banner").hidden = false;
}

async function fetchJson(url) {
  const res = await fetch(url);
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

async function pickBackend() {
  const tf = globalThis.tf;
  const wanted = new URLSearchParams(location.search).get("backend");
  if (tf.wasm) tf.wasm.setWasmPaths("/vendor/tfjs-backend-wasm/");
  for (const name of wanted ? [wanted] : BACKENDS) {
    try {
      if (await tf.setBackend(name)) {
        await tf.ready();
        return tf.getBackend();
      }
    } catch {
      // try the next backend
    }
  }
  throw new Error("no tfjs backend could start");
}

function drawBoxes(detections) {
  const ctx = $("overlay").getContext("2d");
  ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  ctx.font = "bold 18px system-ui, sans-serif";
  ctx.textBaseline = "bottom";
  for (const d of detections) {
    const colour = COLOURS[d.label % COLOURS.length];
    const [x, y, w, h] = [d.x * SCALE, d.y * SCALE, d.w * SCALE, d.h * SCALE];
    ctx.lineWidth = 3;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x, y, w, h);
    const tag = `${d.label}  ${(d.score * 100).toFixed(0)}%`;
    const tw = ctx.measureText(tag).width + 10;
    const ty = y >= 22 ? y : y + h + 22; // label above the box, or below when at the top edge
    ctx.fillStyle = colour;
    ctx.fillRect(x - 1.5, ty - 22, tw, 22);
    ctx.fillStyle = "#0b1020";
    ctx.fillText(tag, x + 4, ty - 2);
  }
}

function listResults(detections) {
  const list = $("results");
  const read = readingOrder(detections); // rows top to bottom, each left to right
  $("reading").textContent = read.map((d) => d.label).join("");
  list.replaceChildren(
    ...read.map((d) => {
      const li = document.createElement("li");
      li.dataset.label = d.label;
      li.dataset.score = d.score.toFixed(4);
      const chip = document.createElement("span");
      chip.className = "digit";
      chip.style.setProperty("--c", COLOURS[d.label % COLOURS.length]);
      chip.textContent = d.label;
      li.append(chip, ` ${(d.score * 100).toFixed(1)}% at (${d.x.toFixed(0)}, ${d.y.toFixed(0)})`);
      return li;
    }),
  );
  $("empty-hint").hidden = detections.length > 0;
}

async function detectNow(pad) {
  const seq = state.requested;
  try {
    await runDetection(pad);
  } finally {
    state.done = Math.max(state.done, seq);
  }
}

/** The second look's plan for the drawing's `lines` and what the first reading found, or null. */
function planSecondLook(pad, lines, found) {
  const readHeight = state.manifest?.input?.read_height;
  // an example image has no strokes to redraw; a drawing read as drawn has no one width to redraw at
  if (!readHeight || pad.readWidth === null || pad.hasImage || !found.length) return null;
  return planRescale(lines, found.map((d) => d.h), readHeight, pad.readWidth, pad.side);
}

async function runDetection(pad) {
  // What the detector reads: the strokes at the manifest's read_brush (or as drawn), reduced.
  state.canvas = reduceGrey(pad.modelGrey, pad.side);
  state.rescale = null;
  if (!state.detector) return;
  const options = { scoreThreshold: state.threshold ?? Number($("threshold").value) };
  const t0 = performance.now();
  let found = pad.isEmpty ? [] : await state.detector.detect(toModelInput(state.canvas), options);
  const lines = pad.strokes.map((s) => s.points);
  const plan = planSecondLook(pad, lines, found);
  if (plan) {
    // digits far from the height the detector reads best: read the strokes again at that height
    const canvas = reduceGrey(pad.paintLines(scaledLines(lines, plan), pad.readWidth), pad.side);
    state.rescale = { ...plan, canvas };
    found = boxesBack(await state.detector.detect(toModelInput(canvas), options), plan, pad.readWidth, pad.side);
  }
  const ms = performance.now() - t0;
  const detections = pad.widen(found); // boxes around the strokes as shown, at the widths drawn
  state.detections = detections;
  $("timing").textContent = plan ? `${ms.toFixed(1)} ms (read twice)` : `${ms.toFixed(1)} ms`;
  drawBoxes(detections);
  listResults(detections);
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    state.requested += 1;
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

async function loadExample(pad) {
  state.examples ??= await fetchJson("/api/examples");
  const list = state.examples?.examples ?? [];
  if (!list.length) {
    showBanner("No example canvases on this server yet (run the pipeline's mnist or generate stage).");
    return;
  }
  const ex = list[state.exampleIndex++ % list.length];
  pad.loadPixels(decodePixels(ex.pixels_b64), state.examples.size);
}

function wireControls(pad, schedule) {
  const brush = $("brush");
  brush.addEventListener("input", () => {
    pad.brushWidth = Number(brush.value);
    $("brush-value").textContent = brush.value;
  });
  const threshold = $("threshold");
  threshold.addEventListener("input", () => {
    setThreshold(Number(threshold.value));
    schedule();
  });
  $("undo").addEventListener("click", () => pad.undo());
  $("clear").addEventListener("click", () => pad.clear());
  $("example").addEventListener("click", () => loadExample(pad));
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z") {
      e.preventDefault();
      pad.undo();
    } else if (e.key === "Escape") pad.clear();
  });
}

function setThreshold(value) {
  state.threshold = value;
  $("threshold").value = String(value);
  $("threshold-value").textContent = Number(value).toFixed(2);
}

async function loadModel(pad) {
  const manifest = await fetchJson("/api/model");
  if (!manifest) {
    $("model-version").textContent = "none";
    showBanner("No model has been exported yet, so nothing can be detected. Run `make run` (or `dvc repro export`), then reload.");
    return;
  }
  state.manifest = manifest;
  pad.readWidth = manifest.input?.read_brush ?? null; // the brush the detector reads strokes at
  $("model-version").textContent = manifest.version;
  const calibrated = manifest.thresholds?.score; // calibrated on val by the evaluate stage
  if (typeof calibrated === "number") setThreshold(calibrated);
  const backend = await pickBackend();
  state.threads = backend === "wasm" ? globalThis.tf.wasm.getThreadsCount() : null;
  $("backend").textContent = state.threads > 1 ? `${backend}, ${state.threads} threads` : backend;
  const detector = await loadDetector(`/models/${manifest.version}/`);
  // before the first drawing, so it reads at the usual speed; ?warmup=0 skips it (benchmarks/first_reading.py)
  const asked = Number.parseInt(new URLSearchParams(location.search).get("warmup") ?? "", 10);
  const runs = asked >= 0 ? asked : 2;
  state.warmupMs = await warmUp(detector, runs);
  state.detector = detector;
}

async function main() {
  let pad = null;
  const schedule = debounce(() => detectNow(pad).catch(report), DEBOUNCE_MS);
  pad = new DrawingPad($("draw"), { brushWidth: Number($("brush").value), onChange: schedule });
  globalThis.multidigit.pad = pad; // tests replay pad.strokes in Python (multidigit/strokes.py)
  wireControls(pad, schedule);
  await loadModel(pad);
  document.body.dataset.ready = state.detector ? "model" : "no-model";
  if (state.detector) schedule();
}

function report(err) {
  showBanner(`Something went wrong: ${err.message}`);
  console.error(err);
}

// Read-only handle for tests and the curious: the last reduced canvas and detections.
globalThis.multidigit = {
  state,
  canvasBytes: () => Array.from(state.canvas ?? []),
  rescaledBytes: () => Array.from(state.rescale?.canvas ?? []), // the second look's canvas, if any
  readingOrder, // tests check it orders boxes as multidigit/evaluation/drawn.py does
};

main().catch(report);
