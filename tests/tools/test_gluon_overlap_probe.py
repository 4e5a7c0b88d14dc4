"""``tools/gluon_overlap_probe.py``: Gluon's FlashAttention-3-order loop overlaps the softmax with P·V at 128x128
on sm_90 (compile level, Triton 3.9), which plain Triton's builds don't (bench/results/kernels_overlap.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # Triton's compiler and ptxas, in a process without the interpreter

pytest.importorskip("triton.experimental.gluon")

TOOLS = Path(__file__).resolve().parents[2] / "tools"
PROBE = f"""
import json, sys
sys.path.insert(0, {str(TOOLS)!r})
from gluon_overlap_probe import compile_probe
print(json.dumps(compile_probe(128, 128, 8)))
"""


def test_gluon_loop_keeps_p_v_in_flight_through_the_softmax_at_128x128():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("{")))
    assert result["spill_bytes"] == 0 and result["serialized"] == [] and result["registers"] <= 255
    (loop,) = result["loops"]
    assert loop["waits"] == [1, 0]  # S waited on with P·V still in flight, then P·V
    assert loop["hgmma"] == 16 and loop["mufu"] == loop["mufu_in_flight"] == 66, loop["sequence"]
