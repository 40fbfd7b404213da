"""Registry of search strategies: name -> a function building an Optuna sampler.

>>> type(create_sampler("nsga2", seed=0)).__name__
'NSGAIISampler'
>>> create_sampler("nsga2", 0, SamplerOptions(population_size=8)).population_size
8
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tnas.space.errors import unknown_name


@dataclass(frozen=True)
class SamplerOptions:
    """What the samplers take besides a seed: NSGA-II/III's population, and `linas`'s batch
    (configs proposed per predictor round). 5 is `linas`'s measured best on NAS-Bench-201
    (`bench/nb201.py`: 0.993 of the exhaustive front's hypervolume at 125 evaluations against
    0.989 with a batch of 16); it does not follow the population. `top_steps`, the top rung's
    training steps of a multi-fidelity run (None otherwise), makes `linas` learn from every
    rung with the rung as a feature."""

    population_size: int = 16
    linas_batch: int = 5
    top_steps: int | None = None


def _nsga2(seed, options, space):
    import optuna

    return optuna.samplers.NSGAIISampler(population_size=options.population_size, seed=seed)


def _nsga3(seed, options, space):
    import warnings

    import optuna

    with warnings.catch_warnings():  # "experimental": we pin and test the version we use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.NSGAIIISampler(population_size=options.population_size, seed=seed)


def _tpe(seed, options, space):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)


def _gp(seed, options, space):
    import optuna

    class GPSampler(optuna.samplers.GPSampler):
        """Optuna's GP sampler, kept from proposing an infeasible point forever.

        The GP learns only from completed trials, and the driver fails an infeasible
        suggestion before evaluating it, so the GP never sees it and, its model unchanged,
        suggests the same point again on every ask. A repeat of the searched values of a trial
        that broke a constraint is sampled at random instead.
        """

        def sample_relative(self, study, trial, search_space):
            params = super().sample_relative(study, trial, search_space)
            if params and _repeats_infeasible(study, params):
                return {}
            return params

    # our spaces are conditional (layers exist up to n_layers): the GP models the knobs every
    # trial has, and the rest are sampled at random without a warning per knob and trial
    return GPSampler(seed=seed, warn_independent_sampling=False)


def _repeats_infeasible(study, params: dict) -> bool:
    """Whether a failed trial that broke a constraint had the values `params` gives."""
    from optuna.trial import TrialState

    return any(
        any(value > 0 for value in trial.constraints.values())
        and all(trial.params.get(name) == value for name, value in params.items())
        for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    )


def _random(seed, options, space):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _linas(seed, options, space):
    from tnas.search.linas import LinasSampler

    if space is None:
        raise ValueError("the linas sampler needs the design space")
    return LinasSampler(
        space, seed=seed, batch_size=options.linas_batch, top_steps=options.top_steps
    )


SAMPLERS: dict[str, Callable] = {
    "nsga2": _nsga2,
    "nsga3": _nsga3,
    "tpe": _tpe,
    "gp": _gp,
    "random": _random,
    "linas": _linas,
}


def create_sampler(name: str, seed: int, options: SamplerOptions | None = None, space=None):
    """An Optuna sampler, with `options` (`SamplerOptions`; its defaults when None); `space`
    (a DesignSpace) is needed by `linas`. Constraints reach the samplers that use them through
    `Trial.set_constraint` (the driver sets them on every trial)."""
    if name not in SAMPLERS:
        raise ValueError(unknown_name("sampler", name, SAMPLERS))
    return SAMPLERS[name](seed, options or SamplerOptions(), space)
