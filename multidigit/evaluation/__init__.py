"""Evaluation in one home: every split (test, drawn, any other check) is scored by the same code.

One module per job, each readable on its own:
    coco      COCO JSON and pycocotools COCOeval: mAP/AR, per-class AP and COCOeval's per-image matches
    matching  operating-point figures built on COCOeval's matches: P/R/F1, counts, confusion, buckets
    drawn     the drawn split: reading order, sequence accuracy, brush-width and size buckets
    gates     the per-stage quality gates and their one-line failure message
    figures   PR / F1 curves, confusion matrix, canvas galleries, curve CSVs
    report    reports/summary.md and the README results block (one markdown-table helper)
    stage     the `evaluate@<stage>` DVC stage: detect, score, write metrics and plots, apply the gate

Nothing is imported here, so `import multidigit.evaluation.gates` stays free of TensorFlow and matplotlib.
"""
