"""Shared conformance tests over every registered predictor family, plus features and metrics."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tnas.predictors import (
    DERIVED_FEATURES,
    PREDICTORS,
    create_predictor,
    feature_matrix,
    feature_names,
    kendall_tau,
    load_predictor,
    mape,
    select_family,
    spearman,
)
from tnas.predictors.families import TARGET_TRANSFORMS
from tnas.space import load_space

FAMILIES = list(PREDICTORS)
N_TRAIN = 100


@pytest.fixture(scope="module")
def space():
    return load_space("primer")


@pytest.fixture(scope="module")
def dataset(space):
    """150 primer configs; target = log10 params + 0.05 per attention layer + small noise."""
    rng = np.random.default_rng(0)
    configs = [space.sample(rng) for _ in range(150)]
    X = feature_matrix(space, configs)
    names = feature_names(space)
    log_params = X[:, names.index("derived.log10_params")]
    attention = X[:, names.index("derived.attention_layers")]
    y = log_params + 0.05 * attention + rng.normal(0.0, 0.01, len(configs))
    return X, y


@pytest.fixture(scope="module")
def fitted(dataset):
    X, y = dataset
    return {name: create_predictor(name, seed=0).fit(X[:N_TRAIN], y[:N_TRAIN]) for name in FAMILIES}


def test_import_loads_neither_torch_nor_sklearn():
    code = (
        "import sys, tnas.predictors; "
        "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_features_fixed_length_and_finite(space, dataset):
    X, _ = dataset
    names = feature_names(space)
    assert X.shape == (150, len(names))
    assert len(set(names)) == len(names)
    assert names[-len(DERIVED_FEATURES) :] == list(DERIVED_FEATURES)
    assert np.isfinite(X).all()
    assert feature_matrix(space, []).shape == (0, len(names))


@pytest.mark.parametrize("preset", ["wide", "mixers", "simq", "matformer"])
def test_features_every_preset(preset):
    space = load_space(preset)
    rng = np.random.default_rng(1)
    X = feature_matrix(space, [space.sample(rng) for _ in range(5)])
    assert X.shape == (5, len(feature_names(space)))
    assert np.isfinite(X).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_family_ranks_held_out_configs(name, dataset, fitted):
    X, y = dataset
    mean, std = fitted[name].predict_with_std(X[N_TRAIN:])
    assert mean.shape == std.shape == (len(y) - N_TRAIN,)
    assert kendall_tau(y[N_TRAIN:], mean) > 0.7
    assert (std >= 0).all()
    np.testing.assert_array_equal(fitted[name].predict(X[N_TRAIN:]), mean)


def test_ensemble_std_is_informative(dataset, fitted):
    X, _ = dataset
    _, std = fitted["mlp_ensemble"].predict_with_std(X[N_TRAIN:])
    assert (std >= 0).all() and (std > 0).any()


@pytest.mark.parametrize("name", ["ridge", "svr", "gbt"])
def test_single_models_report_zero_std(name, dataset, fitted):
    X, _ = dataset
    _, std = fitted[name].predict_with_std(X[:5])
    np.testing.assert_array_equal(std, np.zeros(5))


@pytest.mark.parametrize("name", FAMILIES)
def test_same_seed_same_predictions(name, dataset, fitted):
    X, y = dataset
    again = create_predictor(name, seed=0).fit(X[:N_TRAIN], y[:N_TRAIN])
    np.testing.assert_array_equal(again.predict(X[N_TRAIN:]), fitted[name].predict(X[N_TRAIN:]))


@pytest.mark.parametrize("name", FAMILIES)
def test_save_load_round_trip(name, dataset, fitted, tmp_path):
    X, _ = dataset
    path = tmp_path / f"{name}.skops"
    fitted[name].save(path)
    loaded = load_predictor(path)
    assert type(loaded) is type(fitted[name])
    assert loaded.n_features == X.shape[1]
    assert loaded._params() == fitted[name]._params()
    for a, b in zip(loaded.predict_with_std(X), fitted[name].predict_with_std(X), strict=True):
        np.testing.assert_array_equal(a, b)


def _rewrite_schema(path, edit):
    """Rewrite the schema.json inside a skops zip file with `edit(text) -> text`."""
    with zipfile.ZipFile(path) as zf:
        entries = {info.filename: zf.read(info) for info in zf.infolist()}
    entries["schema.json"] = edit(entries["schema.json"].decode()).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for filename, content in entries.items():
            zf.writestr(filename, content)
    path.write_bytes(buffer.getvalue())


def test_tampered_type_is_refused(fitted, tmp_path):
    path = tmp_path / "ridge.skops"
    fitted["ridge"].save(path)
    _rewrite_schema(
        path,
        lambda text: text.replace('"StandardScaler"', '"system"', 1).replace(
            '"sklearn.preprocessing._data"', '"os"', 1
        ),
    )
    with pytest.raises(ValueError, match="refusing to load untrusted types: os.system"):
        load_predictor(path)


class Foreign:
    """A type of ours that skops would persist but we never trust."""

    def __init__(self):
        self.payload = 1


def test_foreign_files_are_refused(tmp_path):
    import skops.io

    untrusted = tmp_path / "foreign.skops"
    skops.io.dump({"meta": "{}", "models": [Foreign()]}, untrusted)
    with pytest.raises(ValueError, match="untrusted types: .*Foreign"):
        load_predictor(untrusted)

    not_ours = tmp_path / "layout.skops"
    skops.io.dump({"something": 1}, not_ours)
    with pytest.raises(ValueError, match="not a tnas predictor file"):
        load_predictor(not_ours)

    garbage = tmp_path / "garbage.skops"
    garbage.write_bytes(b"\x80\x04not a zip at all")
    with pytest.raises(ValueError, match="not a tnas predictor file"):
        load_predictor(garbage)

    with pytest.raises(ValueError, match="cannot read"):
        load_predictor(tmp_path / "missing.skops")


def test_unknown_family_in_file_is_refused(fitted, tmp_path):
    import skops.io

    path = tmp_path / "xgb.skops"
    meta = {"format": 1, "family": "xgb", "n_features": 69, "seed": 0, "params": {}}
    skops.io.dump({"meta": json.dumps(meta), "models": fitted["ridge"].models}, path)
    with pytest.raises(ValueError, match="unknown predictor 'xgb'; valid: ridge, svr"):
        load_predictor(path)


def test_unknown_family_lists_names():
    with pytest.raises(ValueError, match="unknown predictor 'xgb'; valid: ridge, svr, gbt, mlp"):
        create_predictor("xgb")


def test_predict_checks_fit_and_width(dataset, fitted):
    X, _ = dataset
    with pytest.raises(RuntimeError, match="not fitted"):
        create_predictor("ridge").predict(X)
    with pytest.raises(ValueError, match="expected X of shape"):
        fitted["ridge"].predict(X[:, :-1])


def test_metrics_on_known_values():
    y = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert kendall_tau(y, [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert kendall_tau(y, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman(y, [1, 4, 9, 16, 25]) == pytest.approx(1.0)
    assert spearman(y, [-1, -2, -3, -4, -5]) == pytest.approx(-1.0)
    assert mape(y, y) == 0.0
    assert mape([2.0, 4.0], [1.0, 5.0]) == pytest.approx(0.375)
    with pytest.raises(ValueError, match="differ in length"):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="zero targets"):
        mape([0.0, 1.0], [0.0, 1.0])


@pytest.mark.parametrize("metric", ["kendall", "mape"])
def test_select_family_scores_every_family(metric, dataset):
    X, y = dataset
    best, scores, predictor = select_family(X, y, metric=metric, folds=3, seed=0)
    assert set(scores) == set(FAMILIES)
    assert all(np.isfinite(score) for score in scores.values())
    pick = max if metric == "kendall" else min
    assert best == pick(scores, key=scores.get)
    assert predictor.name == best and predictor.n_features == X.shape[1]
    assert kendall_tau(y, predictor.predict(X)) > 0.7


def test_select_family_rejects_bad_arguments(dataset):
    X, y = dataset
    with pytest.raises(ValueError, match="unknown metric 'r2'; valid: kendall, spearman, mape"):
        select_family(X, y, metric="r2")
    with pytest.raises(ValueError, match="unknown predictor 'xgb'"):
        select_family(X, y, families=["ridge", "xgb"])
    with pytest.raises(ValueError, match="unknown target transform 'log'; valid: standard, quan"):
        select_family(X, y, targets=["standard", "log"])


@pytest.fixture(scope="module")
def quantile_fitted(dataset):
    X, y = dataset
    return {
        name: create_predictor(name, seed=0, target="quantile").fit(X[:N_TRAIN], y[:N_TRAIN])
        for name in FAMILIES
    }


@pytest.mark.parametrize("name", FAMILIES)
def test_quantile_target_ranks_the_same_under_any_increasing_rescaling(
    name, dataset, quantile_fitted
):
    X, y = dataset
    skewed = np.exp(3.0 * (y - y.mean()))  # strictly increasing in y, with a long upper tail
    rescaled = create_predictor(name, seed=0, target="quantile").fit(X[:N_TRAIN], skewed[:N_TRAIN])
    # each model sees the same normal scores; an ensemble's mean is taken in target units
    for model, other in zip(quantile_fitted[name].models, rescaled.models, strict=True):
        assert kendall_tau(model.predict(X[N_TRAIN:]), other.predict(X[N_TRAIN:])) > 0.99
    assert kendall_tau(y[N_TRAIN:], quantile_fitted[name].predict(X[N_TRAIN:])) > 0.7


@pytest.mark.parametrize("name", FAMILIES)
def test_quantile_target_predicts_within_the_training_range(name, dataset, quantile_fitted):
    X, y = dataset
    wide = np.vstack([X[N_TRAIN:], X[N_TRAIN:] * 3.0 - 1.0])  # held out, and far outside
    predicted = quantile_fitted[name].predict(wide)
    assert y[:N_TRAIN].min() <= predicted.min() and predicted.max() <= y[:N_TRAIN].max()


@pytest.mark.parametrize("name", FAMILIES)
def test_quantile_target_survives_save_and_load(name, dataset, quantile_fitted, tmp_path):
    X, _ = dataset
    path = tmp_path / f"{name}-quantile.skops"
    quantile_fitted[name].save(path)
    loaded = load_predictor(path)
    assert loaded.target == "quantile"
    np.testing.assert_array_equal(loaded.predict(X), quantile_fitted[name].predict(X))


def test_unknown_target_lists_transforms():
    assert TARGET_TRANSFORMS == ("standard", "quantile")
    with pytest.raises(ValueError, match="unknown target transform 'log'; valid: standard, quan"):
        create_predictor("svr", target="log")


def test_select_family_over_targets_keeps_each_familys_best(dataset):
    X, y = dataset
    families = ["ridge", "svr"]
    per_target = {
        target: select_family(X, y, families=families, folds=3, targets=[target])[1]
        for target in TARGET_TRANSFORMS
    }
    best, scores, predictor = select_family(
        X, y, families=families, folds=3, targets=TARGET_TRANSFORMS
    )
    for name in families:
        assert scores[name] == max(per_target[t][name] for t in TARGET_TRANSFORMS)
    winner = max(TARGET_TRANSFORMS, key=lambda t: per_target[t][best])
    assert best == max(scores, key=scores.get)
    assert (predictor.name, predictor.target) == (best, winner)
