"""Per-block latency lookup table and the predictor built on it. Imports no torch.

A `LatencyTable` holds, for one device (its `device_fingerprint` id), the measured milliseconds
of single quantized blocks keyed by `block_key`, of the model minus its blocks (embeddings,
final norm, head) keyed by `overhead_key`, and a few whole-model measurements. A
`LatencyPredictor` sums the entries a config needs, adds the overhead and a ridge-fitted
residual correction learned from the whole-model measurements. `tnas.workers.calibrate` fills
the table with real measurements.

A table also records how it was measured: its `protocol` (batch, seq_len, repeats, warmup,
threads), the design space it was calibrated on (`space`: name and digest) and when
(`calibrated`). A latency is only comparable with one measured the same way, so
`check_protocol` and `check_space` refuse, in one line, a table measured otherwise.

>>> from tnas.space import ArchConfig, LayerConfig
>>> cfg = ArchConfig(d_model=32, n_layers=2, vocab_size=64, max_seq_len=16,
...                  layers=(LayerConfig(ffn_dim=64), LayerConfig(ffn_dim=64, bits=8)))
>>> table = LatencyTable(device_id="example")
>>> for layer in cfg.layers:
...     table.entries[block_key(cfg, layer, batch=1, seq_len=16)] = 0.25 * layer.bits / 8
>>> table.overhead[overhead_key(cfg, batch=1, seq_len=16)] = 0.1
>>> round(LatencyPredictor(table).predict(cfg, batch=1, seq_len=16), 6)
1.35
>>> LatencyTable.from_json(table.to_json()) == table
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tnas.predictors.selection import kendall_tau, mape
from tnas.space.config import ArchConfig, LayerConfig
from tnas.space.errors import one_line, shown

DEFAULT_SEQ_LEN = 128
BLOCK_KEY_FIELDS = (
    "mixer",
    "d_model",
    "n_heads",
    "ffn_dim",
    "activation",
    "bits",
    "dconv_kernel",
    "conv_kernel",
    "state_size",
    "norm",
    "causal",
    "batch",
    "seq_len",
    "head_dim",  # last, so the positions above stay those of tables written before it
)
PROTOCOL_FIELDS = ("batch", "seq_len", "repeats", "warmup", "threads")
PROTOCOL_OPTIONS = {"seq_len": "--seq-len"}  # the calibrate option of a field, if not --FIELD
OVERHEAD_KEY_FIELDS = (
    "d_model",
    "vocab_size",
    "norm",
    "head",
    "tie_embeddings",
    "n_classes",
    "batch",
    "seq_len",
)


def block_key(config: ArchConfig, layer: LayerConfig, batch: int, seq_len: int) -> tuple:
    """What one block's latency depends on, as a hashable tuple (fields in `BLOCK_KEY_FIELDS`).

    Besides the layer's own knobs it holds the model's `d_model`, its `norm` (each block has
    two) and whether mixers run causally (`head == "lm"`), because both change the kernels run.

    >>> cfg = ArchConfig(d_model=32, n_layers=1, layers=(LayerConfig(ffn_dim=64),))
    >>> block_key(cfg, cfg.layers[0], batch=1, seq_len=16)
    ('attention', 32, 4, 64, 'gelu', 32, 0, 0, 0, 'layernorm', True, 1, 16, 0)
    """
    values = asdict(layer) | {
        "d_model": config.d_model,
        "norm": config.norm,
        "causal": config.head == "lm",
        "batch": batch,
        "seq_len": seq_len,
    }
    return tuple(values[name] for name in BLOCK_KEY_FIELDS)


def overhead_key(config: ArchConfig, batch: int, seq_len: int) -> tuple:
    """What the model minus its blocks depends on (fields in `OVERHEAD_KEY_FIELDS`)."""
    return (
        config.d_model,
        config.vocab_size,
        config.norm,
        config.head,
        config.tie_embeddings,
        config.n_classes,
        batch,
        seq_len,
    )


def default_seq_len(config: ArchConfig, seq_len: int | None) -> int:
    """`seq_len` (128 when None) cut to the config's `max_seq_len`, as a study's
    `ProfileSettings` cuts it: the tokens a measurement of `config` runs on.

    >>> default_seq_len(ArchConfig(max_seq_len=64), 128), default_seq_len(ArchConfig(), None)
    (64, 128)
    """
    return min(DEFAULT_SEQ_LEN if seq_len is None else seq_len, config.max_seq_len)


@dataclass
class LatencyTable:
    """Measured milliseconds on one device.

    - `entries`: `{block_key: ms}` for one quantized block's forward on a (B, T, D) input.
    - `overhead`: `{overhead_key: ms}` for embeddings + final norm + head.
    - `full_models`: `[(config_json, batch, seq_len, ms)]`, whole-model `profile` latencies
      that `LatencyPredictor` fits its residual correction on.
    - `fingerprint`: the `device_fingerprint` dict, when known.
    - `protocol`: `{"batch", "seq_len", "repeats", "warmup", "threads"}` it was measured with
      (`seq_len` before each config's `max_seq_len` cuts it), None in tables older than it.
    - `space`: `{"name", "digest"}` of the `DesignSpace` it was calibrated on, or None.
    - `task`: the task spec (`digits,tokens=patch`) whose vocabulary, sequence length and head
      the configs were adapted to, as a search's trials are; None: the space's configs as
      they are.
    - `calibrated`: when it was measured (UTC, ISO 8601), or None.
    - `node_ip`: the Ray node it was measured on, None when measured in the caller's process.

    Stored as plain JSON (`save`/`load`); keys become lists there and tuples again on load.
    `source` is the file it was loaded from, for messages (not stored, not compared).

    >>> table = LatencyTable("cpu0", protocol={"batch": 1, "seq_len": 128, "repeats": 10,
    ...                                        "warmup": 3, "threads": 1})
    >>> table.check_protocol({"batch": 1, "seq_len": 128, "repeats": 20, "warmup": 3,
    ...                       "threads": 1})
    Traceback (most recent call last):
    ...
    ValueError: this latency table was calibrated with repeats 10; this study measures with ...
    """

    device_id: str
    entries: dict[tuple, float] = field(default_factory=dict)
    overhead: dict[tuple, float] = field(default_factory=dict)
    full_models: list[tuple[str, int, int, float]] = field(default_factory=list)
    fingerprint: dict | None = None
    protocol: dict | None = None
    space: dict | None = None
    task: str | None = None
    calibrated: str | None = None
    node_ip: str | None = None
    source: str = field(default="", compare=False, repr=False)

    @property
    def measurements(self) -> int:
        return len(self.entries) + len(self.overhead) + len(self.full_models)

    @property
    def name(self) -> str:
        """How messages name the table: `latency table FILE`, or `this latency table`."""
        return f"latency table {one_line(self.source)}" if self.source else "this latency table"

    def to_dict(self) -> dict:
        return {
            "device_id": self.device_id,
            "fingerprint": self.fingerprint,
            "protocol": self.protocol,
            "space": self.space,
            "task": self.task,
            "calibrated": self.calibrated,
            "node_ip": self.node_ip,
            "entries": [[list(key), ms] for key, ms in self.entries.items()],
            "overhead": [[list(key), ms] for key, ms in self.overhead.items()],
            "full_models": [list(row) for row in self.full_models],
        }

    @classmethod
    def from_dict(cls, data: dict) -> LatencyTable:
        """The table `to_dict` gave; a `ValueError` (one line) for data of another shape.
        Tables written before `protocol`, `space`, `calibrated` and `node_ip` load with None."""
        if not isinstance(data, dict):
            raise ValueError(f"not a latency table: a JSON {type(data).__name__}, not an object")
        try:
            return cls(
                device_id=str(data["device_id"]),
                entries={_upgrade(tuple(key)): float(ms) for key, ms in data["entries"]},
                overhead={tuple(key): float(ms) for key, ms in data["overhead"]},
                full_models=[
                    (str(c), int(b), int(t), float(ms)) for c, b, t, ms in data["full_models"]
                ],
                fingerprint=_optional(data, "fingerprint", dict),
                protocol=_protocol(data.get("protocol")),
                space=_space(data.get("space")),
                task=_optional(data, "task", str),
                calibrated=_optional(data, "calibrated", str),
                node_ip=_optional(data, "node_ip", str),
            )
        except KeyError as err:
            raise ValueError(f"not a latency table: no field {err}") from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"not a latency table: {one_line(err)}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def digest(self) -> str:
        """16 hex digits of SHA-256 over the table's content (`to_json`), not its file name or
        layout: a study on `--latency table:FILE` keeps it, so a table calibrated again in
        place is told apart."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, text: str) -> LatencyTable:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """The table in the JSON file `path`. A missing or unreadable file, a file that is not
        JSON, or JSON that is not a latency table is a one-line `ValueError` naming the file."""
        name = one_line(str(path))  # the whole name: it is what the user has to find
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ValueError(f"latency table {name}: {err.strerror or one_line(err)}") from None
        except UnicodeDecodeError:
            raise ValueError(f"latency table {name} is not JSON (not UTF-8 text)") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"latency table {name} is not JSON (line {err.lineno}: {err.msg})"
            ) from None
        except RecursionError:
            raise ValueError(f"latency table {name} is not JSON (nested too deep)") from None
        try:
            table = cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"latency table {name}: {err}") from None
        table.source = str(path)
        return table

    def check_protocol(self, protocol: dict[str, Any]) -> None:
        """Refuse, with a one-line `ValueError`, a table measured with another protocol than
        `protocol` (`{"batch", "seq_len", "repeats", "warmup", "threads"}`, a study's
        `ProfileSettings`), naming each field that differs and the options to calibrate it
        again with; also a table older than protocols, which cannot tell."""
        if self.protocol is None:
            raise ValueError(
                f"{self.name} predates measurement protocols (it does not record its batch, "
                "seq_len, repeats, warmup or threads): calibrate it again with tnas predictors "
                "calibrate"
            )
        differ = [name for name in PROTOCOL_FIELDS if self.protocol.get(name) != protocol[name]]
        if not differ:
            return

        def values(source: dict) -> str:
            return ", ".join(f"{name} {source.get(name)}" for name in differ)

        options = " ".join(
            f"{PROTOCOL_OPTIONS.get(name, '--' + name)} {protocol[name]}" for name in differ
        )
        raise ValueError(
            f"{self.name} was calibrated with {values(self.protocol)}; this study measures with "
            f"{values(protocol)}: calibrate it again with {options}"
        )

    def check_task(self, task: str | None) -> None:
        """Refuse, with a one-line `ValueError`, a table whose configs were adapted to another
        task than `task` (its sequence length and vocabulary change every latency)."""
        if self.task != task:
            calibrated = f"task {self.task}" if self.task else "no task (the space's configs)"
            raise ValueError(
                f"{self.name} was calibrated for {calibrated}, not for task {task}: calibrate "
                f"it again with --task {task}"
            )

    def check_space(self, name: str, digest: str) -> None:
        """Refuse, with a one-line `ValueError`, a table calibrated on another design space than
        the one named `name` with `digest` (`DesignSpace.digest`), or on an unrecorded one."""
        if self.space is None:
            raise ValueError(
                f"{self.name} predates recorded design spaces (it does not say which space it "
                f"was calibrated on): calibrate it again with tnas predictors calibrate --space "
                f"{name}"
            )
        if self.space["digest"] != digest:
            raise ValueError(
                f"{self.name} is a table for another space: calibrated on "
                f"{self.space['name']} (digest {self.space['digest']}), not on {name} "
                f"(digest {digest}): calibrate it again with --space {name}"
            )


def _optional(data: dict, name: str, kind: type) -> Any:
    value = data.get(name)
    if value is not None and not isinstance(value, kind):
        raise ValueError(f"{name} must be a {kind.__name__} or null, got {shown(value)}")
    return value


def _protocol(value: object) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(PROTOCOL_FIELDS):
        raise ValueError(f"protocol must hold {', '.join(PROTOCOL_FIELDS)}, got {shown(value)}")
    if not all(
        v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in value.values()
    ):
        raise ValueError(f"protocol values must be integers, got {shown(value)}")
    return {name: value[name] for name in PROTOCOL_FIELDS}


def _space(value: object) -> dict | None:
    if value is None:
        return None
    if not (
        isinstance(value, dict)
        and set(value) == {"name", "digest"}
        and all(isinstance(v, str) for v in value.values())
    ):
        raise ValueError(f"space must be a name and a digest, got {shown(value)}")
    return dict(value)


def _upgrade(key: tuple) -> tuple:
    """A block key of a table written before `head_dim` joined the key: head_dim 0 (the
    default, d_model // n_heads), which every block then had."""
    return key + (0,) if len(key) == len(BLOCK_KEY_FIELDS) - 1 else key


def _block_features(key: tuple) -> list[float]:
    """Work terms of a block: constant, FFN matmuls (T·D·F), projections (T·D²), scores (T²·D)."""
    D, F, B, T = key[1], key[3], key[11], key[12]
    return [1.0, B * T * D * F, B * T * D * D, B * T * T * D]


def _overhead_features(key: tuple) -> list[float]:
    D, V, B, T = key[0], key[1], key[6], key[7]
    return [1.0, B * T * D * V, B * T * D]


# Interpolation groups, tried in order: the first with any entry is fitted.
BLOCK_GROUPS: tuple[Callable[[tuple], tuple], ...] = (
    lambda key: key[:1] + key[4:11],  # same mixer, activation, bits, options, norm, causality
    lambda key: (key[0], key[5]),  # same mixer and bits
)
OVERHEAD_GROUPS: tuple[Callable[[tuple], tuple], ...] = (
    lambda key: key[2:6],  # same norm and head
    lambda key: key[3:4],  # same head
)


def _interpolate(
    key: tuple,
    table: dict[tuple, float],
    groups: Sequence[Callable[[tuple], tuple]],
    features: Callable[[tuple], list[float]],
) -> float:
    for group in groups:
        members = [(other, ms) for other, ms in table.items() if group(other) == group(key)]
        if members:
            break
    else:
        raise KeyError(f"no table entry to interpolate {key} from")
    X = np.asarray([features(other) for other, _ in members])
    y = np.asarray([ms for _, ms in members])
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    coef, *_ = np.linalg.lstsq(X / scale, y, rcond=None)  # min-norm when underdetermined
    estimate = float(np.asarray(features(key)) / scale @ coef)
    return max(estimate, float(y.min()) * 1e-3)


def _bracketing_neighbours(key: tuple, table: dict[tuple, float]) -> float | None:
    """Linear interpolation in ffn_dim between the nearest entries on either side that differ
    from `key` only in ffn_dim; None when there is no such pair."""
    line = [
        (other[3], ms) for other, ms in table.items() if other[:3] + other[4:] == key[:3] + key[4:]
    ]
    below = [point for point in line if point[0] < key[3]]
    above = [point for point in line if point[0] > key[3]]
    if not below or not above:
        return None
    (f0, ms0), (f1, ms1) = max(below), min(above)
    return ms0 + (ms1 - ms0) * (key[3] - f0) / (f1 - f0)


def _ridge(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge on standardised columns with an unpenalised intercept; coef in original units."""
    mean, std = X.mean(axis=0), X.std(axis=0)
    std[std == 0] = 1.0
    Z = (X - mean) / std
    y_mean = y.mean()
    coef = np.linalg.solve(Z.T @ Z + alpha * np.eye(Z.shape[1]), Z.T @ (y - y_mean)) / std
    return coef, float(y_mean - mean @ coef)


class LatencyPredictor:
    """Latency in ms of a config from a `LatencyTable`: the sum of its blocks' entries, plus the
    overhead entry, plus a residual correction.

    The residual is a ridge fit of (measured whole-model ms - table sum) on
    `[n_layers, table sum]` (`fit_residual`); it is fitted on the table's `full_models` when it
    has at least two, and is zero otherwise.

    A block key missing from the table is interpolated: linearly in `ffn_dim` between the nearest
    entries on either side that differ only in `ffn_dim`; otherwise by a least-squares fit over
    the entries of the same mixer, activation, bits, options, norm and causality (or, failing
    any, of the same mixer and bits) of ms against the block's work terms
    (1, B·T·D·F, B·T·D², B·T²·D). A missing overhead key is fitted the same way on
    (1, B·T·D·V, B·T·D). Keys with no entry of the same mixer and bits raise `KeyError`.
    `interpolated` counts the keys that were not in the table.
    """

    def __init__(self, table: LatencyTable, alpha: float = 1.0):
        self.table = table
        self.alpha = alpha
        self.residual_coef = np.zeros(2)
        self.residual_intercept = 0.0
        self.interpolated = 0
        if len(table.full_models) >= 2:
            rows = [(ArchConfig.from_json(c), b, t, ms) for c, b, t, ms in table.full_models]
            self.fit_residual(
                [row[0] for row in rows],
                [row[3] for row in rows],
                batch=[row[1] for row in rows],
                seq_len=[row[2] for row in rows],
            )

    def block_ms(self, key: tuple) -> float:
        if key in self.table.entries:
            return self.table.entries[key]
        self.interpolated += 1
        neighbours = _bracketing_neighbours(key, self.table.entries)
        if neighbours is not None:
            return neighbours
        return _interpolate(key, self.table.entries, BLOCK_GROUPS, _block_features)

    def overhead_ms(self, key: tuple) -> float:
        if key in self.table.overhead:
            return self.table.overhead[key]
        self.interpolated += 1
        return _interpolate(key, self.table.overhead, OVERHEAD_GROUPS, _overhead_features)

    def table_sum(self, config: ArchConfig, batch: int = 1, seq_len: int | None = None) -> float:
        """Block entries plus overhead, without the residual correction."""
        seq_len = default_seq_len(config, seq_len)
        blocks = sum(
            self.block_ms(block_key(config, layer, batch, seq_len)) for layer in config.layers
        )
        return blocks + self.overhead_ms(overhead_key(config, batch, seq_len))

    def _residual_features(self, config: ArchConfig, table_ms: float) -> np.ndarray:
        return np.asarray([float(config.n_layers), table_ms])

    def predict(self, config: ArchConfig, batch: int = 1, seq_len: int | None = None) -> float:
        """Predicted whole-model latency in ms (seq_len None: 128 capped at max_seq_len)."""
        table_ms = self.table_sum(config, batch, seq_len)
        correction = self._residual_features(config, table_ms) @ self.residual_coef
        return float(table_ms + correction + self.residual_intercept)

    def fit_residual(
        self,
        configs: Sequence[ArchConfig],
        measured_ms: Sequence[float],
        batch: int | Sequence[int] = 1,
        seq_len: int | None | Sequence[int | None] = None,
        alpha: float | None = None,
    ) -> LatencyPredictor:
        """Ridge-fit measured - table sum on `[n_layers, table sum]`; returns self."""
        n = len(configs)
        if n != len(measured_ms) or n < 2:
            raise ValueError(
                f"need >= 2 configs and as many measurements, got {n}, {len(measured_ms)}"
            )
        batches = [batch] * n if isinstance(batch, int) else list(batch)
        seq_lens = list(seq_len) if isinstance(seq_len, Sequence) else [seq_len] * n
        sums = [self.table_sum(c, b, t) for c, b, t in zip(configs, batches, seq_lens, strict=True)]
        X = np.asarray([self._residual_features(c, s) for c, s in zip(configs, sums, strict=True)])
        y = np.asarray(measured_ms, dtype=np.float64) - np.asarray(sums)
        self.residual_coef, self.residual_intercept = _ridge(
            X, y, self.alpha if alpha is None else alpha
        )
        return self

    def adapt(
        self,
        new_measurements: Sequence[tuple[ArchConfig, float]],
        batch: int = 1,
        seq_len: int | None = None,
        device_id: str = "adapted",
    ) -> LatencyPredictor:
        """A predictor for a new device from a handful of (config, measured whole-model ms).

        Keeps the table's keys and fits, by least squares, a scale and a per-layer offset for
        each mixer and a scale for the overhead: measured ≈ Σ_mixer (scale·Σ its block ms +
        offset·its layer count) + scale_overhead·overhead. The fit is the minimum change from
        (scale 1, offset 0) that explains the measurements, so with fewer measurements than
        parameters the unidentified ones stay near the old device's. Returns a new predictor
        whose table has each entry replaced by scale·ms + offset (`scales`, `offsets` and
        `overhead_scale` record the fit) and keeps the old table's `protocol` and `space`; its
        residual starts at zero.
        """
        mixers = sorted({key[0] for key in self.table.entries})
        columns = [f"scale:{m}" for m in mixers] + [f"offset:{m}" for m in mixers] + ["overhead"]
        rows, targets = [], []
        for config, ms in new_measurements:
            t = default_seq_len(config, seq_len)
            row = dict.fromkeys(columns, 0.0)
            for layer in config.layers:
                row[f"scale:{layer.mixer}"] += self.block_ms(block_key(config, layer, batch, t))
                row[f"offset:{layer.mixer}"] += 1.0
            row["overhead"] = self.overhead_ms(overhead_key(config, batch, t))
            rows.append([row[c] for c in columns])
            targets.append(ms)
        if not rows:
            raise ValueError("adapt needs at least one (config, measured ms) pair")
        X = np.asarray(rows)
        prior = np.asarray([1.0] * len(mixers) + [0.0] * len(mixers) + [1.0])
        scale = np.abs(X).max(axis=0)
        scale[scale == 0] = 1.0
        delta, *_ = np.linalg.lstsq(X / scale, np.asarray(targets) - X @ prior, rcond=None)
        theta = prior + delta / scale
        k = len(mixers)
        scales = dict(zip(mixers, theta[:k].tolist(), strict=True))
        offsets = dict(zip(mixers, theta[k : 2 * k].tolist(), strict=True))
        table = LatencyTable(
            device_id=device_id,
            entries={
                key: scales[key[0]] * ms + offsets[key[0]] for key, ms in self.table.entries.items()
            },
            overhead={key: float(theta[-1]) * ms for key, ms in self.table.overhead.items()},
            protocol=None if self.table.protocol is None else dict(self.table.protocol),
            space=None if self.table.space is None else dict(self.table.space),
        )
        adapted = LatencyPredictor(table, alpha=self.alpha)
        adapted.scales, adapted.offsets, adapted.overhead_scale = scales, offsets, float(theta[-1])
        return adapted

    def report(
        self,
        configs: Sequence[ArchConfig],
        measured: Sequence[float],
        batch: int = 1,
        seq_len: int | None = None,
    ) -> dict[str, float]:
        """`mape` (a fraction), `within_10pct` (fraction of configs within ±10 %) and
        `kendall_tau` of predictions against measured ms."""
        predicted = np.asarray([self.predict(c, batch, seq_len) for c in configs])
        y = np.asarray(measured, dtype=np.float64)
        return {
            "mape": mape(y, predicted),
            "within_10pct": float(np.mean(np.abs(predicted - y) <= 0.1 * np.abs(y))),
            "kendall_tau": kendall_tau(y, predicted),
        }


__all__ = [
    "BLOCK_KEY_FIELDS",
    "OVERHEAD_KEY_FIELDS",
    "PROTOCOL_FIELDS",
    "LatencyPredictor",
    "LatencyTable",
    "block_key",
    "overhead_key",
]
