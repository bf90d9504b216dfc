// The page's second look, mirror of multidigit/rescale.py (the same float64 operations in the same
// order, so the page and Python scale the same strokes to the same points; tests/test_page_e2e.py checks
// it): when the digits the first reading listed have a median height outside the manifest's
// input.read_height band, the strokes are redrawn scaled about their ink's centre so that the median
// becomes its height (as far as the canvas allows), read again, and the boxes mapped back.

import { median } from "./reading.js";

const CANVAS_SIZE = 100;
const STEP = 1 / 32; // scales are multiples of this
const MIN_CHANGE = 0.1; // a plan scales by at least this much, or the first reading stands
const MARGIN = 2; // canvas px kept free of ink at the edges, beyond the read brush's reach

/**
 * @param {number[][][]} lines polylines [[x, y], ...] in buffer px
 * @param {number[]} heights heights (canvas px) of the boxes the first reading listed
 * @param {{height: number, band: number[]}} readHeight the manifest's input.read_height
 * @param {number} readBrush the width both readings render the strokes at
 * @param {number} side the buffer's side
 * @returns {{scale: number, centre: number[], to: number[]} | null}
 */
export function planRescale(lines, heights, readHeight, readBrush, side) {
  if (!heights.length || !lines.length) return null;
  const m = median(heights);
  const [low, high] = readHeight.band;
  if ((low <= m && m <= high) || m <= 0) return null;
  const lo = [Infinity, Infinity];
  const hi = [-Infinity, -Infinity];
  for (const line of lines) {
    for (const [x, y] of line) {
      lo[0] = Math.min(lo[0], x);
      lo[1] = Math.min(lo[1], y);
      hi[0] = Math.max(hi[0], x);
      hi[1] = Math.max(hi[1], y);
    }
  }
  const factor = side / CANVAS_SIZE;
  const pad = MARGIN * factor + readBrush / 2;
  const room = side / 2 - pad;
  const half = Math.max(hi[0] - lo[0], hi[1] - lo[1]) / 2;
  let scale = readHeight.height / m;
  if (half * scale > room) scale = room / half;
  scale = Math.floor(scale / STEP) * STEP;
  if (Math.abs(scale - 1) < MIN_CHANGE || scale <= 0) return null;
  const centre = [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2];
  const to = centre.map((c, k) =>
    Math.min(Math.max(c, pad + ((hi[k] - lo[k]) / 2) * scale), side - pad - ((hi[k] - lo[k]) / 2) * scale),
  );
  return { scale, centre, to };
}

/** The polylines moved by the plan. */
export function scaledLines(lines, plan) {
  const { scale, centre, to } = plan;
  return lines.map((line) => line.map(([x, y]) => [(x - centre[0]) * scale + to[0], (y - centre[1]) * scale + to[1]]));
}

/** Detections ({x, y, w, h, ...}, canvas px) found on the scaled drawing, in the drawing's own canvas px. */
export function boxesBack(detections, plan, readBrush, side) {
  const { scale, centre, to } = plan;
  const factor = side / CANVAS_SIZE;
  const ink = readBrush / (2 * factor);
  const grow = ink - ink / scale;
  return detections.map((d) => {
    let left = ((d.x * factor - to[0]) / scale + centre[0]) / factor - grow;
    let top = ((d.y * factor - to[1]) / scale + centre[1]) / factor - grow;
    let right = left + d.w / scale + 2 * grow;
    let bottom = top + d.h / scale + 2 * grow;
    left = Math.max(left, 0);
    top = Math.max(top, 0);
    right = Math.min(right, CANVAS_SIZE);
    bottom = Math.min(bottom, CANVAS_SIZE);
    return { ...d, x: left, y: top, w: Math.max(right - left, 0), h: Math.max(bottom - top, 0) };
  });
}
