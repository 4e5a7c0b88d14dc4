"""Recording what ran: linear in steps x layers, with CFG's second call counted on the same record."""

from __future__ import annotations

from fastdit.runtime.context import RunContext
from fastdit.runtime.stats import LayerRecord

STEPS, LAYERS = 50, 40


def test_recording_never_searches_the_records(monkeypatch):
    compared = [0]
    equal = LayerRecord.__eq__

    def counting(self, other):
        compared[0] += 1
        return equal(self, other)

    monkeypatch.setattr(LayerRecord, "__eq__", counting)
    context = RunContext()
    context.expect_layers("transformer", range(LAYERS))
    for step in range(STEPS):
        for _ in range(2):  # classifier-free guidance as two forwards: every layer runs twice per step
            context.observe_forward("transformer", 1000.0 - step)
            for layer in range(LAYERS):
                context.record(LayerRecord(step, layer, "transformer", False, 0.5, "radial", 100))
    context.close_step()
    assert compared[0] == 0  # a list search per record made this quadratic in steps x layers
    records = context.stats.records
    assert len(records) == STEPS * LAYERS
    assert [(r.step, r.layer) for r in records] == [(s, la) for s in range(STEPS) for la in range(LAYERS)]
    assert all(r.calls == 2 and r.cached == 0 for r in records)
