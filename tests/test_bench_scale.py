"""The scale benchmark (bench/scale.py, issue 14) cannot rot: it runs end to end on a
tiny store, its streamed population is `generate_population`'s, and the change stream's
new codes are moved off the codes of residents it did not sample. No timings asserted."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from array import array
from pathlib import Path

from jukisync.sim import synth

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import scale  # noqa: E402  (bench/ is not a package)


def test_stream_population_is_generate_population() -> None:
    held = synth.generate_population(300, seed=5)
    streamed = tuple(synth.stream_population(300, seed=5))
    assert streamed == held.residents


def test_scale_script_runs_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "scale.py"),
            "--records",
            "1500,2000",
            "--changes",
            "2000",
            "--lookups",
            "500",
            "--json",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert [r["records"] for r in results] == [1500, 2000]
    for r in results:
        assert r["fill"]["updates"] == r["records"]
        assert r["apply_changes"]["updates"] > 0
        assert r["lookups"] == 500
        for key in ("get_many", "get_many_field", "get", "lmdb_get_loop", "lmdb_get_single"):
            assert r[key]["per_s"] > 0
        assert r["bytes_per_record"] > 0
        assert set(r["environment"]) >= {"load_before", "load_after", "commit", "cpu_model"}
    assert "growth 1,500 -> 2,000 records" in done.stderr
    assert list(tmp_path.iterdir()) == []  # the stores are deleted


def test_unclash_moves_codes_the_fill_issued() -> None:
    population = synth.generate_population(400, seed=3)
    sample = list(population.residents[:100])
    sampled = synth.Population(
        tuple(sample),
        population.as_of,
        population.municipalities,
        population.juminhyo_check_digit,
        population.seed,
    )
    stream = list(
        synth.generate_changes(sampled, 3000, seed=4, start=dt.date(2024, 1, 1), max_span_days=365)
    )
    own = {r.juminhyo_code for r in sample}
    created = sorted({u.juminhyo_code for _, u in stream} - own)
    assert created, "the stream issued no codes: pick another seed"
    clash = created[0]
    # As if the fill had issued `clash` (and every other resident's code) too.
    issued = [int(r.juminhyo_code) for r in population.residents] + [int(clash)]
    numbers = sorted(int(r.kojin_bango) for r in population.residents)
    out, moved = scale._unclash(stream, sample, array("q", sorted(issued)), array("q", numbers), 1)
    assert moved == 1
    after = {u.juminhyo_code for _, u in out} | {
        u.previous_juminhyo_code for _, u in out if u.previous_juminhyo_code
    }
    assert clash not in after
    assert len(out) == len(stream)
    replaced = [b for (_, a), (_, b) in zip(stream, out, strict=True) if a != b]
    assert replaced
    fresh = {u.juminhyo_code for u in replaced} | {
        u.previous_juminhyo_code for u in replaced if u.previous_juminhyo_code
    }
    fresh -= own | set(created)
    assert len(fresh) == 1 and synth.placeholder_juminhyo_check(fresh.pop())
