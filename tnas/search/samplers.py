"""Registry of search strategies: name -> a function building an Optuna sampler.

>>> type(create_sampler("nsga2", seed=0)).__name__
'NSGAIISampler'
"""

from __future__ import annotations

from collections.abc import Callable

from tnas.space.errors import unknown_name


def _nsga2(seed, population_size, space):
    import optuna

    return optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed)


def _nsga3(seed, population_size, space):
    import warnings

    import optuna

    with warnings.catch_warnings():  # "experimental": we pin and test the version we use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.NSGAIIISampler(population_size=population_size, seed=seed)


def _tpe(seed, population_size, space):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)


def _gp(seed, population_size, space):
    import optuna

    return optuna.samplers.GPSampler(seed=seed)


def _random(seed, population_size, space):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _linas(seed, population_size, space):
    from tnas.search.linas import LinasSampler

    if space is None:
        raise ValueError("the linas sampler needs the design space")
    return LinasSampler(space, seed=seed, batch_size=population_size)


SAMPLERS: dict[str, Callable] = {
    "nsga2": _nsga2,
    "nsga3": _nsga3,
    "tpe": _tpe,
    "gp": _gp,
    "random": _random,
    "linas": _linas,
}


def create_sampler(name: str, seed: int, population_size: int = 16, space=None):
    """An Optuna sampler. `population_size` is NSGA-II/III's population and `linas`'s batch;
    `space` (a DesignSpace) is needed by `linas`. Constraints reach the samplers that use
    them through `Trial.set_constraint` (the driver sets them on every trial)."""
    if name not in SAMPLERS:
        raise ValueError(unknown_name("sampler", name, SAMPLERS))
    return SAMPLERS[name](seed, population_size, space)
