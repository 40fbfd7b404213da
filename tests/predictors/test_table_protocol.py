"""A latency table's metadata: its protocol, space and time survive JSON; a table measured
otherwise, or a file that is not a table, is refused in one line."""

from __future__ import annotations

import json

import pytest

from tnas.predictors.latency import (
    PROTOCOL_FIELDS,
    LatencyPredictor,
    LatencyTable,
    block_key,
    default_seq_len,
    overhead_key,
)
from tnas.space import ArchConfig, LayerConfig

PROTOCOL = {"batch": 1, "seq_len": 128, "repeats": 10, "warmup": 3, "threads": 2}
SPACE = {"name": "simq", "digest": "0123456789abcdef"}


def config(*ffn_dims: int) -> ArchConfig:
    return ArchConfig(
        d_model=32,
        n_layers=len(ffn_dims),
        vocab_size=64,
        max_seq_len=16,
        layers=tuple(LayerConfig(ffn_dim=f) for f in ffn_dims),
    )


def table_with_metadata() -> LatencyTable:
    cfg = config(32, 64)
    table = LatencyTable(
        device_id="abc",
        fingerprint={"id": "abc", "device": "cpu"},
        protocol=dict(PROTOCOL),
        space=dict(SPACE),
        calibrated="2025-01-02T03:04:05+00:00",
        node_ip="127.0.0.2",
    )
    for layer in cfg.layers:
        table.entries[block_key(cfg, layer, 1, 16)] = layer.ffn_dim / 100
    table.overhead[overhead_key(cfg, 1, 16)] = 0.1
    table.full_models.append((cfg.to_json(), 1, 16, 1.0))
    return table


def one_line_error(call, *fragments: str) -> str:
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_metadata_round_trips_through_json_and_a_file(tmp_path):
    table = table_with_metadata()
    assert LatencyTable.from_json(table.to_json()) == table
    path = tmp_path / "T.json"
    table.save(path)
    stored = json.loads(path.read_text())
    assert stored["protocol"] == PROTOCOL and stored["space"] == SPACE
    assert stored["calibrated"] == "2025-01-02T03:04:05+00:00" and stored["node_ip"] == "127.0.0.2"
    loaded = LatencyTable.load(path)
    assert loaded == table
    assert (loaded.protocol, loaded.space, loaded.calibrated) == (PROTOCOL, SPACE, table.calibrated)
    assert loaded.fingerprint == {"id": "abc", "device": "cpu"} and loaded.source == str(path)


def test_a_table_written_before_the_metadata_still_loads():
    data = table_with_metadata().to_dict()
    for name in ("protocol", "space", "calibrated", "node_ip"):
        del data[name]
    old = LatencyTable.from_dict(data)
    assert (old.protocol, old.space, old.calibrated, old.node_ip) == (None, None, None, None)
    assert old.entries == table_with_metadata().entries


def test_the_same_protocol_passes_and_each_differing_field_is_named():
    table = table_with_metadata()
    table.source = "T.json"
    table.check_protocol(dict(PROTOCOL))  # no error
    study = PROTOCOL | {"repeats": 20, "threads": 1}
    message = one_line_error(lambda: table.check_protocol(study))
    assert message == (
        "latency table T.json was calibrated with repeats 10, threads 2; this study measures "
        "with repeats 20, threads 1: calibrate it again with --repeats 20 --threads 1"
    )
    one_line_error(
        lambda: table.check_protocol(PROTOCOL | {"seq_len": 64}),
        "seq_len 128; this study measures with seq_len 64",
        "--seq-len 64",
    )
    assert "batch" not in one_line_error(lambda: table.check_protocol(study))


@pytest.mark.parametrize("name", PROTOCOL_FIELDS)
def test_every_protocol_field_is_checked(name):
    one_line_error(
        lambda: table_with_metadata().check_protocol(PROTOCOL | {name: PROTOCOL[name] + 1}),
        f"with {name} {PROTOCOL[name]};",
    )


def test_a_table_older_than_protocols_is_refused():
    table = table_with_metadata()
    table.protocol = None
    one_line_error(
        lambda: table.check_protocol(PROTOCOL), "predates measurement protocols", "calibrate"
    )


def test_a_table_of_another_space_is_refused():
    table = table_with_metadata()
    table.source = "T.json"
    table.check_space("simq", SPACE["digest"])  # no error
    table.check_space("renamed", SPACE["digest"])  # the digest, not the name, decides
    one_line_error(
        lambda: table.check_space("primer", "fedcba9876543210"),
        "latency table T.json is a table for another space",
        "simq (digest 0123456789abcdef)",
        "primer (digest fedcba9876543210)",
        "--space primer",
    )
    table.space = None
    one_line_error(lambda: table.check_space("simq", SPACE["digest"]), "predates", "--space simq")


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "No such file"),
        (b"not json {", "is not JSON (line 1"),
        (b"\xff\xfe\x00", "is not JSON"),
        (b"[1, 2]", "not a latency table: a JSON list"),
        (b'{"device_id": "x"}', "not a latency table: no field 'entries'"),
        (
            b'{"device_id": "x", "entries": [[1]], "overhead": [], "full_models": []}',
            "not a latency table: not enough values",
        ),
        (
            b'{"device_id": "x", "entries": [], "overhead": [], "full_models": [],'
            b' "protocol": {"batch": 1}}',
            "protocol must hold batch, seq_len, repeats, warmup, threads",
        ),
        (
            b'{"device_id": "x", "entries": [], "overhead": [], "full_models": [],'
            b' "space": "simq"}',
            "space must be a name and a digest",
        ),
    ],
    ids=[
        "missing",
        "not-json",
        "not-utf8",
        "a-list",
        "no-entries",
        "bad-row",
        "bad-protocol",
        "bad-space",
    ],  # fmt: skip
)
def test_a_file_that_is_not_a_table_is_one_line_naming_it(tmp_path, content, fragment):
    path = tmp_path / "T.json"
    if content is not None:
        path.write_bytes(content)
    one_line_error(lambda: LatencyTable.load(path), f"latency table {path}", fragment)


def test_a_directory_is_not_a_table(tmp_path):
    one_line_error(lambda: LatencyTable.load(tmp_path), "latency table", "Is a directory")


def test_seq_len_is_cut_to_max_seq_len_as_a_study_cuts_it():
    cfg = config(32)  # max_seq_len 16
    assert default_seq_len(cfg, 128) == 16
    assert default_seq_len(cfg, 8) == 8
    assert default_seq_len(cfg, None) == 16
    table = table_with_metadata()
    predictor = LatencyPredictor(table)
    assert predictor.predict(cfg, 1, 128) == predictor.predict(cfg, 1, 16)


def test_adapt_keeps_the_protocol_and_space():
    table = table_with_metadata()
    adapted = LatencyPredictor(table).adapt([(config(32, 64), 2.0), (config(64), 1.0)], 1, 16)
    assert adapted.table.protocol == PROTOCOL and adapted.table.space == SPACE
    adapted.table.protocol["repeats"] = 99  # a copy, not the old table's dict
    assert table.protocol["repeats"] == 10
