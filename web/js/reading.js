// Reading order, mirror of multidigit/evaluation/drawn.py `reading_order` (the rule the drawn split's
// sequence accuracy is scored with; tests/test_page_e2e.py checks both order the same boxes alike):
// rows top to bottom, each row left to right. Boxes sorted by y centre start a new row where the next
// centre lies more than ROW_GAP median box heights lower (single linkage: a slanted row stays one row).

export const ROW_GAP = 0.5;

/** The median, the mean of the two middles when even (web/js/rescale.js uses it too). */
export function median(values) {
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/**
 * Detections in the order a person reads them.
 * @param {{x: number, y: number, w: number, h: number}[]} dets boxes, top-left xywh
 * @returns {object[]} the same objects, reordered
 */
export function readingOrder(dets) {
  if (dets.length === 0) return [];
  const cy = dets.map((d) => d.y + d.h / 2);
  const byY = dets.map((_, i) => i).sort((a, b) => cy[a] - cy[b] || a - b); // stable, as numpy's
  const gap = ROW_GAP * median(dets.map((d) => d.h));
  const row = new Array(dets.length);
  let current = 0;
  byY.forEach((i, k) => {
    if (k > 0 && cy[i] - cy[byY[k - 1]] > gap) current += 1;
    row[i] = current;
  });
  const cx = dets.map((d) => d.x + d.w / 2);
  const order = dets.map((_, i) => i).sort((a, b) => row[a] - row[b] || cx[a] - cx[b] || a - b);
  return order.map((i) => dets[i]);
}
