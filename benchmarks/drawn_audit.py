"""Whose are the drawn split's errors: the detector's, or the re-stroking's? A reader the generator did not
shape decides.

    python benchmarks/drawn_audit.py [--models models] [--epochs 3] [--canvases 1000]

The reader is `benchmarks/restroke_fidelity.py`'s: a plain MNIST classifier trained here on the original
MNIST train split only, never on canvases or strokes. It reads each digit of the stage-3 drawn split twice:
- the MNIST test digit the split took it from, as it is;
- the same digit redrawn from the split's own strokes of it, at the page's read brush (`input.read_brush`).

A digit both readings get right is legible as its label, before and after re-stroking, to a reader with
no stake in our generator. The page's reading of each canvas comes from `drawn_page.python_as_page` (read
brush, second look, boxes widened; the page lists the same, `benchmarks/drawn_page.py`). A drawn digit
is then:
- right: the listed box of best IoU with it, at IoU >= 0.5, carries its label;
- misread: that box carries another;
- missed: no listed box reaches IoU 0.5.

The report splits the detector's outcomes by the reader's verdicts. Its `ceiling_recall` is the recall of
a detector right on every digit both readings get right, and as now on the rest: how far the split's own
re-stroking lets recall go for this detector. `ceiling_sequence` is the same for sequence accuracy: a
canvas counts as read if each of its digits the reader calls odd is read right now (its legible digits
would be, and a detector right on them lists nothing extra). It also lists the confusions on the legible
digits. Writes benchmarks/results/drawn_audit.json.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import drawn_page  # noqa: E402
import independent  # noqa: E402
import restroke_fidelity  # noqa: E402

from multidigit.atomic import save_json  # noqa: E402
from multidigit.evaluation.drawn import read_digits  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "drawn_audit.json"
SLIDER_DEFAULT = 10.0  # the redraw's width for a version whose page reads strokes as drawn
MATCH_IOU = 0.5
OUTCOMES = ("right", "misread", "missed")
VERDICTS = {  # (original read right, redraw read right) -> name
    (True, True): "legible",
    (True, False): "re-stroking changed it",
    (False, True): "original odd, redraw read",
    (False, False): "odd either way",
}


def outcomes(boxes: np.ndarray, labels: np.ndarray, listed: dict) -> list[tuple[str, int]]:
    """(outcome, the label read or -1) of each true digit of one canvas against what the page lists."""
    from multidigit.boxes import iou_matrix

    found, read = np.asarray(listed["boxes"]).reshape(-1, 4), np.asarray(listed["labels"])
    overlaps = iou_matrix(np.asarray(boxes).reshape(-1, 4), found)  # (digits, listed)
    out = []
    for label, overlap in zip(labels, overlaps, strict=True):
        best = int(np.argmax(overlap)) if len(overlap) else -1
        if best < 0 or overlap[best] < MATCH_IOU:
            out.append(("missed", -1))
        else:
            out.append(("right" if int(read[best]) == int(label) else "misread", int(read[best])))
    return out


def reader_verdicts(
    reader, sources: np.ndarray, read_brush: float, mnist: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Per MNIST test digit (M,): (original read right, redraw read right); False for digits not used."""
    from multidigit import stroke_cache
    from multidigit.mnist import read_split

    digits, labels = read_split("test", mnist)
    used = np.unique(sources[sources >= 0])
    lines = stroke_cache.for_split(digits).lines(used)
    redrawn = np.stack([restroke_fidelity.redraw(one, read_brush) for one in lines])
    original_ok = np.zeros(len(digits), bool)
    redraw_ok = np.zeros(len(digits), bool)
    for images, out in ((digits[used], original_ok), (redrawn, redraw_ok)):
        guess = reader.predict(images[..., None] / 255.0, batch_size=512, verbose=0).argmax(1)
        out[used] = guess == labels[used]
    return original_ok, redraw_ok


def tabulate(rows: list[tuple[str, str, int, int]]) -> dict:
    """rows of (verdict, outcome, true label, read label) -> the report's tables."""
    table = {name: {"digits": 0, **dict.fromkeys(OUTCOMES, 0)} for name in VERDICTS.values()}
    confusions: collections.Counter = collections.Counter()
    for verdict, outcome, truth, read in rows:
        table[verdict]["digits"] += 1
        table[verdict][outcome] += 1
        if verdict == "legible" and outcome == "misread":
            confusions[f"{truth}->{read}"] += 1
    total = len(rows)
    right = sum(t["right"] for t in table.values())
    ceiling = right + table["legible"]["digits"] - table["legible"]["right"]
    return {
        "digits": total,
        "recall": round(right / max(total, 1), 4),
        "ceiling_recall": round(ceiling / max(total, 1), 4),
        "by_reader_verdict": table,
        "legible_misreads": dict(confusions.most_common()),
    }


def sequences(canvases: list[tuple[bool, list[tuple[str, str]]]]) -> dict:
    """Per canvas (the page's reading equals the drawn digits, its digits' (verdict, outcome)) -> sequence
    accuracy now, and with every legible digit read right and nothing extra listed."""
    now = sum(read for read, _ in canvases)
    ceiling = sum(
        all(outcome == "right" for verdict, outcome in digits if verdict != "legible")
        for _, digits in canvases
    )
    n = max(len(canvases), 1)
    return {"sequence": round(now / n, 4), "ceiling_sequence": round(ceiling / n, 4)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=ROOT / "models", help="folder holding tfjs/ and stage3/")
    p.add_argument("--detector", type=Path, help=".keras detector (default: <models>/stage3/detector.keras)")
    p.add_argument(
        "--data", type=Path, default=ROOT / "data" / "canvases", help="canvases folder of the split"
    )
    p.add_argument(
        "--canvases", type=int, default=1000, help="drawn canvases read (default: the split's 1,000)"
    )
    p.add_argument(
        "--mnist",
        type=Path,
        default=ROOT / "data" / "mnist",
        help="MNIST npz splits: the reader's train, the test",
    )
    add_reader_args(p, RESULTS)
    return p.parse_args(argv)


def add_reader_args(p: argparse.ArgumentParser, results: Path) -> None:
    """The options every audit shares: its reader's training, and where its report goes."""
    p.add_argument("--epochs", type=int, default=3, help="reader training epochs (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=results)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    drawings = drawn_page.drawn_split(args.canvases, args.data)
    sources = drawn_page.drawn_sources(args.data, len(drawings))
    source = independent.resolve_model(args.models, None, args.detector, None)
    read = drawn_page.read_input(source)
    read_brush = read["read_brush"] or SLIDER_DEFAULT
    _, listed, _ = drawn_page.python_as_page(source, drawings, [c.brush for c in drawings], read)
    reader = restroke_fidelity.train_reader(args.epochs, args.seed, args.mnist)
    original_ok, redraw_ok = reader_verdicts(reader, sources, read_brush, args.mnist)
    rows, canvases = [], []
    for canvas, slots, found in zip(drawings, sources, listed, strict=True):
        labels = canvas.labels  # the split's own boxes and labels: what the replay's truth equals
        digits = []
        for src, label, (outcome, got) in zip(
            slots[slots >= 0], labels, outcomes(canvas.boxes, labels, found), strict=True
        ):
            verdict = VERDICTS[(bool(original_ok[src]), bool(redraw_ok[src]))]
            rows.append((verdict, outcome, int(label), got))
            digits.append((verdict, outcome))
        exact = read_digits(found["boxes"], found["labels"]) == read_digits(canvas.boxes, labels)
        canvases.append((exact, digits))
    used = np.unique(sources[sources >= 0])
    result = {
        "canvases": len(drawings),
        "model": independent.model_record(source),
        "read": read,
        "reader": {
            "originals_right": round(float(original_ok[used].mean()), 4),
            f"redrawn_at_{read_brush:g}_right": round(float(redraw_ok[used].mean()), 4),
        },
        **tabulate(rows),
        **sequences(canvases),
        "seconds": round(time.perf_counter() - start, 1),
    }
    save_json(args.out, result)
    print_report(result, args.out)
    return result


def print_report(result: dict, out: Path) -> None:
    print(f"{result['digits']} drawn digits of {result['canvases']} canvases, read as the page reads them")
    print(f"reader (MNIST originals only): {result['reader']}")
    for verdict, row in result["by_reader_verdict"].items():
        print(f"  {verdict:>26}: {row}")
    print(f"recall {result['recall']}; right on every legible digit: {result['ceiling_recall']}")
    print(f"sequence {result['sequence']}; right on every legible digit: {result['ceiling_sequence']}")
    print(f"legible digits misread: {result['legible_misreads']}")
    print(f"-> {independent.workspace_path(out)}")


if __name__ == "__main__":
    main()
