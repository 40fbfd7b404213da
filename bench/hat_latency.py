"""External check: our latency predictors on HAT's measured latency tables, 200 training rows each.

    OMP_NUM_THREADS=1 python bench/hat_latency.py [--data DIR] [--train 200] [--seeds 5]
                                                  [--reference]

The tables (shared/data/hat-latency, from the Hardware-Aware Transformers project; see its
README) hold 2,000 encoder-decoder configurations per file, measured on a Raspberry Pi 4, an
Intel Xeon or an NVIDIA TITAN Xp. The features are the authors' own 10 columns; the target is
the encoder's plus the decoder's mean latency in ms, the total that HAT's own predictor learns.
For each file and seed, `--train` random rows train every `tnas.predictors` family, and
`select_family` picks one by 5-fold CV on those rows (default settings: standardised targets;
the quantile transform does not help latency on NAS-Bench-201, see bench/predictors.py); the
other rows are the test set. Figures are RMSE (ms), the share of predictions within ±10 % of
the measured latency, MAPE and Kendall τ, each the mean over seeds.
The baseline, in the same run, is HAT's predictor as its paper describes it: an MLP with three
hidden layers of 400 ReLU units trained by Adam on squared error (scikit-learn's MLPRegressor
on standardised features and targets). `--reference` adds the CV-selected family trained on all
rows but `--train` of them, as a measure of what the 10 features allow at all.
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from tnas.predictors import PREDICTORS, create_predictor, kendall_tau, mape, select_family

FEATURES = (
    "encoder_embed_dim",
    "encoder_layer_num",
    "encoder_ffn_embed_dim_avg",
    "encoder_self_attention_heads_avg",
    "decoder_embed_dim",
    "decoder_layer_num",
    "decoder_ffn_embed_dim_avg",
    "decoder_self_attention_heads_avg",
    "decoder_ende_attention_heads_avg",
    "decoder_arbitrary_ende_attn_avg",
)
TARGET = ("latency_mean_encoder", "latency_mean_decoder")  # summed: whole-model ms
REPO = Path(__file__).resolve().parent.parent
DATA_DIRS = (REPO / "shared/data/hat-latency", REPO.parent / "shared/data/hat-latency")


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 10), total latency ms (N,)) of one CSV file."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    X = np.array([[float(row[name]) for name in FEATURES] for row in rows])
    y = np.array([sum(float(row[name]) for name in TARGET) for row in rows])
    return X, y


def hat_mlp(seed: int):
    """HAT's latency predictor: 3 hidden layers of 400 ReLU units, Adam, squared error."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlp = MLPRegressor(
        hidden_layer_sizes=(400, 400, 400), batch_size=128, max_iter=2500, random_state=seed
    )
    return TransformedTargetRegressor(
        regressor=make_pipeline(StandardScaler(), mlp), transformer=StandardScaler()
    )


def scores(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "rmse_ms": float(np.sqrt(np.mean((predicted - y) ** 2))),
        "within_10pct": float(np.mean(np.abs(predicted - y) <= 0.1 * np.abs(y))),
        "mape": mape(y, predicted),
        "tau": kendall_tau(y, predicted),
    }


def evaluate(X, y, n_train: int, seed: int, families, reference: bool) -> dict[str, dict]:
    """{row: scores on the held-out rows} for one random training draw."""
    from sklearn.exceptions import ConvergenceWarning

    order = np.random.default_rng(seed).permutation(len(y))
    train, test = order[:n_train], order[n_train:]
    results = {}
    for family in families:
        predictor = create_predictor(family, seed=seed).fit(X[train], y[train])
        results[family] = scores(y[test], predictor.predict(X[test]))
    picked, _, predictor = select_family(X[train], y[train], families=families, seed=seed)
    results["selected (CV)"] = scores(y[test], predictor.predict(X[test])) | {"picked": picked}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        baseline = hat_mlp(seed).fit(X[train], y[train])
    results["baseline: HAT MLP 3x400"] = scores(y[test], baseline.predict(X[test]))
    if reference:
        rest, few = order[n_train:], order[:n_train]
        _, _, predictor = select_family(X[rest], y[rest], families=families, seed=seed)
        results[f"reference: selected, {len(rest)} rows"] = scores(
            y[few], predictor.predict(X[few])
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder of the CSV files")
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--families", default=",".join(PREDICTORS))
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args()
    folder = args.data or next((d for d in DATA_DIRS if d.is_dir()), None)
    if folder is None or not sorted(folder.glob("*.csv")):
        raise SystemExit(f"no HAT latency CSV files; pass --data (looked in {DATA_DIRS})")
    families = args.families.split(",")
    start = time.perf_counter()
    print(
        f"HAT latency tables in {folder}: train on {args.train} random rows, test on the rest, "
        f"{args.seeds} seeds; target = encoder + decoder mean latency (ms); mean over seeds"
    )
    summary = []
    for path in sorted(folder.glob("*.csv")):
        X, y = load(path)
        runs = [
            evaluate(X, y, args.train, seed, families, args.reference) for seed in range(args.seeds)
        ]
        print(f"\n{path.stem}: {len(y):,} rows, {y.min():.1f}–{y.max():.1f} ms")
        print(f"{'predictor':32s} {'RMSE ms':>9s} {'±10%':>7s} {'MAPE':>7s} {'τ':>6s}  picked")
        for row in runs[0]:
            mean = {
                key: float(np.mean([run[row][key] for run in runs]))
                for key in ("rmse_ms", "within_10pct", "mape", "tau")
            }
            picks = Counter(run[row]["picked"] for run in runs if "picked" in run[row])
            picked = ", ".join(f"{name} ×{n}" for name, n in picks.most_common())
            print(
                f"{row:32s} {mean['rmse_ms']:9.2f} {mean['within_10pct']:7.1%} "
                f"{mean['mape']:7.1%} {mean['tau']:6.3f}  {picked}"
            )
            if row in ("selected (CV)", "baseline: HAT MLP 3x400"):
                summary.append((path.stem, row, mean["within_10pct"]))
    print("\nshare within ±10 % (goal: ≥ 99 %)")
    stems = list(dict.fromkeys(stem for stem, _, _ in summary))
    print(f"{'file':36s} {'selected (CV)':>14s} {'HAT MLP':>8s}")
    for stem in stems:
        ours, theirs = (share for s, _, share in summary if s == stem)
        print(f"{stem:36s} {ours:14.1%} {theirs:8.1%}")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
