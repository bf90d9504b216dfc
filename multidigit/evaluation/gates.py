"""The quality gates: minimum figures per stage (params `evaluate.gates`), and their one-line verdict.

evaluate@<stage> applies its gate after writing every output and then fails, so DVC records nothing and
export never runs; export applies the stage-3 gate again to the metrics file it reads, so a stale or
hand-edited file cannot carry a model past it. Stage 3 also gates the drawn split (`gates.stage3.drawn`):
a drawn gate with no drawn figures in the metrics fails too, rather than passing unchecked.
"""

from __future__ import annotations

from multidigit.params import GateParams

DECIMALS = 4


class GateFailed(RuntimeError):
    """A stage's metrics are below its gate; the message is one line."""


def gate_checks(gate: GateParams) -> list[tuple[str, str, float]]:
    """(name in the message, metrics key, minimum) of every threshold a gate sets."""
    checks = [("map50", "metrics/mAP50", gate.map50), ("map50_95", "metrics/mAP50-95", gate.map50_95)]
    if gate.drawn is not None:
        checks += [
            ("drawn map50", "drawn/mAP50", gate.drawn.map50),
            ("drawn sequence_accuracy", "drawn/sequence_accuracy", gate.drawn.sequence_accuracy),
        ]
    return checks


def gate_failure(stage: str, metrics: dict[str, float], gate: GateParams | None) -> str | None:
    """The one-line gate message, or None when every threshold is met (or the stage has no gate).

    Args:
        stage: the stage name, for the message.
        metrics: the stage's metrics (rounded or not).
        gate: the stage's `evaluate.gates` entry, or None.
    Returns:
        e.g. "gate failed: stage3 map50 0.953 < 0.970, drawn sequence_accuracy 0.810 < 0.900".
    """
    if gate is None:
        return None
    failed = []
    for name, key, minimum in gate_checks(gate):
        value = metrics.get(key)
        if value is None:
            failed.append(f"{name} missing ({key} not in the metrics)")
        elif value < minimum:
            # 3 decimals unless they would print a failing value equal to its minimum.
            places = 3 if f"{value:.3f}" != f"{minimum:.3f}" else DECIMALS
            failed.append(f"{name} {value:.{places}f} < {minimum:.{places}f}")
    return f"gate failed: {stage} " + ", ".join(failed) if failed else None
