"""The claim scripts (`make claims`) run end to end at toy sizes: each prints one table row per
variant it compares, writes its plot and ends with a verdict. Their figures are not asserted:
at these sizes they mean nothing; docs/results.md holds the real runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tnas.space.catalog import MIXERS

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VERDICT = re.compile(r"^verdict: claim (held|did not hold) at this scale: \S.*$", re.MULTILINE)

TOY = {  # script -> (toy arguments, rows the table must have: each a regex)
    "bench/claims/primer.py": (
        ["--steps", "3", "--seeds", "0,1", "--workers", "0", "--d-model", "32", "--ffn", "64"],
        [rf"^{v} +\d" for v in ("baseline", "squared_relu", "mdha", "primer")],
    ),
    "bench/claims/simq.py": (
        [
            "--trials",
            "3",
            "--steps",
            "3",
            "--seeds",
            "0",
            "--workers",
            "0",
            "--rounds",
            "1",
            "--repeats",
            "2",
        ],
        [r"^baseline +d256 h8/8/8/8 f1024/1024/1024/1024 +8/8/8/8 ", r"^front0 +d\d+ "],
    ),  # fmt: skip
    "bench/claims/wide.py": (
        [
            "--steps",
            "3",
            "--seeds",
            "0,1",
            "--workers",
            "0",
            "--d-model",
            "32",
            "--ffn",
            "64",
            "--repeats",
            "2",
            "--rounds",
            "1",
        ],
        [rf"^{n}x{16 // n} +[\d.]+M" for n in (1, 2, 4, 8, 16)],
    ),  # fmt: skip
    "bench/claims/mqar.py": (
        ["--steps", "3", "--lengths", "16,32", "--workers", "0", "--d-model", "16"],
        [rf"^{m} +[\d,]+ +[\d.]+ % +[\d.]+ %" for m in MIXERS],
    ),
    "bench/matformer.py": (
        ["--steps", "3", "--seeds", "0", "--workers", "1", "--d-model", "32", "--ffn", "64"],
        [rf"^ +{width} +[\d,]+ +\d" for width in (8, 16, 32, 64)],
    ),
}


@pytest.mark.parametrize("script", sorted(TOY))
def test_claim_script_prints_its_table_plot_and_verdict(script, tmp_path):
    arguments, rows = TOY[script]
    plot = tmp_path / "claim.png"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / script), *arguments, "--out", str(plot)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for row in rows:
        assert re.search(row, done.stdout, re.MULTILINE), f"no row {row!r} in:\n{done.stdout}"
    assert len(VERDICT.findall(done.stdout)) == 1, done.stdout
    assert plot.read_bytes()[:8] == PNG_MAGIC
