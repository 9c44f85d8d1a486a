"""Accuracy estimation and temporal-configuration search (seed paper §4.3.3 and A.3).

The accuracy of a TFSNN at configuration ``t = (t_1, ..., t_n)`` is modelled as
``acc(t) ≈ Σ_i K_i · sqrt(log2 t_i) + c``; ``K`` and ``c`` are fitted by least squares on a
few (~18) measured configurations and checked on held-out ones. The energy of ``t`` is
``Σ_i t_i · R_i`` with ``R_i`` the firing rate (spikes per neuron per time step) of stage i
measured at T_max. A depth-first search with branch-and-bound finds the configuration with
the best estimated accuracy whose energy is within a budget, e.g. the energy of uniform T=3.

The math here (fit, energy, DFS) is pure NumPy; :func:`run_search` adds the measurements on a
model and dataset (imported lazily).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from flexsnn.errors import ConfigError

log = logging.getLogger(__name__)

TemporalConfig = tuple[int, ...]


def config_features(configs: Sequence[Sequence[int]]) -> np.ndarray:
    """``sqrt(log2 t_i)`` for each configuration: float64 ``[N, n_stages]``."""
    arr = np.asarray(configs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ConfigError("configs", f"shape {arr.shape}", "a non-empty list of equal-length configurations")
    if (arr < 1).any():
        raise ConfigError("configs", arr.min(), "time steps >= 1")
    return np.sqrt(np.log2(arr))


@dataclass(frozen=True)
class AccuracyModel:
    """``acc(t) = Σ K_i sqrt(log2 t_i) + c`` (accuracy as a fraction)."""

    K: tuple[float, ...]
    c: float

    def predict(self, configs: Sequence[Sequence[int]]) -> np.ndarray:
        """Estimated accuracies ``[N]`` of the configurations."""
        feats = config_features(configs)
        if feats.shape[1] != len(self.K):
            raise ConfigError("configs", f"{feats.shape[1]} stages", f"{len(self.K)} stages (as fitted)")
        return feats @ np.asarray(self.K) + self.c


def fit_accuracy_model(configs: Sequence[Sequence[int]], accuracies: Sequence[float]) -> AccuracyModel:
    """Least-squares fit of ``K`` (one per stage) and ``c``.

    Raises:
        ConfigError: fewer configurations than unknowns, or lengths that differ.
    """
    feats = config_features(configs)
    acc = np.asarray(accuracies, dtype=np.float64)
    if acc.shape != (feats.shape[0],):
        raise ConfigError("accuracies", f"{acc.shape[0] if acc.ndim else acc} values",
                          f"one per configuration ({feats.shape[0]})")
    if feats.shape[0] < feats.shape[1] + 1:
        raise ConfigError("configs", f"{feats.shape[0]} configurations",
                          f">= {feats.shape[1] + 1} (stages + 1) to fit K and c", "sample more configurations")
    design = np.concatenate([feats, np.ones((feats.shape[0], 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, acc, rcond=None)
    return AccuracyModel(K=tuple(float(k) for k in coef[:-1]), c=float(coef[-1]))


@dataclass(frozen=True)
class FitQuality:
    """Goodness of the accuracy model on a set of configurations.

    ``r2`` (coefficient of determination; ``nan`` when the measured accuracies are constant),
    ``mae`` (mean absolute error, accuracy fraction), ``max_abs_error``, ``pearson`` and ``n``.
    """

    r2: float
    mae: float
    max_abs_error: float
    pearson: float
    n: int


def fit_quality(model: AccuracyModel, configs: Sequence[Sequence[int]], accuracies: Sequence[float]) -> FitQuality:
    """R², MAE, max error and correlation of ``model`` on measured ``accuracies``."""
    acc = np.asarray(accuracies, dtype=np.float64)
    pred = model.predict(configs)
    err = pred - acc
    ss_tot = float(((acc - acc.mean()) ** 2).sum())
    r2 = 1.0 - float((err ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    if len(acc) > 1 and acc.std() > 0 and pred.std() > 0:
        pearson = float(np.corrcoef(pred, acc)[0, 1])
    else:
        pearson = float("nan")
    return FitQuality(r2=r2, mae=float(np.abs(err).mean()), max_abs_error=float(np.abs(err).max()),
                      pearson=pearson, n=int(len(acc)))


def energy(config: Sequence[int], rates: Sequence[float]) -> float:
    """Estimated energy ``Σ t_i · R_i`` (spikes per neuron, summed over stages)."""
    if len(config) != len(rates):
        raise ConfigError("config", tuple(config), f"{len(rates)} stages (one per firing rate)")
    return float(sum(int(t) * float(r) for t, r in zip(config, rates)))


@dataclass(frozen=True)
class SearchResult:
    """The best configuration found: ``config``, ``estimated_accuracy``, ``energy``,
    ``budget``, ``nodes`` (DFS nodes visited)."""

    config: TemporalConfig
    estimated_accuracy: float
    energy: float
    budget: float
    nodes: int


def dfs_search(
    model: AccuracyModel,
    rates: Sequence[float],
    budget: float,
    stage_ranges: Sequence[tuple[int, int]],
    *,
    tol: float = 1e-9,
) -> SearchResult:
    """Depth-first search for ``argmax acc(t)`` subject to ``energy(t, rates) <= budget``.

    Exact: branch-and-bound prunes a branch when even the cheapest completion exceeds the
    budget, or when the most accurate completion cannot beat the best found so far.

    Args:
        model: fitted accuracy model (one ``K_i`` per stage).
        rates: firing rate ``R_i >= 0`` per stage.
        budget: energy upper bound (same unit as :func:`energy`).
        stage_ranges: inclusive ``(lo, hi)`` T range per stage (``lo == hi`` fixes a stage).
        tol: slack on the budget comparison (float rounding).

    Raises:
        ConfigError: inconsistent lengths, bad ranges, or no configuration within the budget.
    """
    n = len(model.K)
    if len(rates) != n or len(stage_ranges) != n:
        raise ConfigError("stage_ranges", f"{len(stage_ranges)} ranges / {len(rates)} rates",
                          f"{n} of each (one per stage)")
    for i, (lo, hi) in enumerate(stage_ranges):
        if not (1 <= lo <= hi):
            raise ConfigError(f"stage_ranges[{i}]", (lo, hi), "1 <= lo <= hi")
    if any(r < 0 for r in rates):
        raise ConfigError("rates", tuple(rates), "non-negative firing rates")
    K = np.asarray(model.K, dtype=np.float64)
    R = np.asarray(rates, dtype=np.float64)
    values = [np.arange(lo, hi + 1) for lo, hi in stage_ranges]
    gains = [K[i] * np.sqrt(np.log2(values[i])) for i in range(n)]
    costs = [values[i] * R[i] for i in range(n)]
    # suffix bounds: cheapest energy and best gain from stage i to the end
    min_cost_suffix = np.zeros(n + 1)
    max_gain_suffix = np.zeros(n + 1)
    for i in range(n - 1, -1, -1):
        min_cost_suffix[i] = min_cost_suffix[i + 1] + costs[i].min()
        max_gain_suffix[i] = max_gain_suffix[i + 1] + gains[i].max()
    if min_cost_suffix[0] > budget + tol:
        raise ConfigError("budget", budget, f">= {min_cost_suffix[0]:.6g} (the cheapest configuration)",
                          "raise the budget or lower the stage minimum")
    best: dict[str, Any] = {"gain": -np.inf, "config": None, "energy": None}
    nodes = 0
    chosen = [0] * n
    # visit values by decreasing gain so good solutions come first (stronger pruning)
    orders = [np.argsort(-g, kind="stable") for g in gains]

    def visit(i: int, gain: float, cost: float) -> None:
        nonlocal nodes
        nodes += 1
        if i == n:
            if gain > best["gain"] + 1e-15:
                best.update(gain=gain, config=tuple(chosen), energy=cost)
            return
        if gain + max_gain_suffix[i] <= best["gain"] + 1e-15:
            return
        for j in orders[i]:
            c = cost + costs[i][j]
            if c + min_cost_suffix[i + 1] > budget + tol:
                continue
            chosen[i] = int(values[i][j])
            visit(i + 1, gain + gains[i][j], c)

    visit(0, 0.0, 0.0)
    return SearchResult(config=best["config"], estimated_accuracy=float(best["gain"] + model.c),
                        energy=float(best["energy"]), budget=float(budget), nodes=nodes)


def sample_distinct_configs(
    n: int, stage_ranges: Sequence[tuple[int, int]], rng: np.random.Generator, *,
    exclude: Sequence[Sequence[int]] = (),
) -> list[TemporalConfig]:
    """``n`` distinct random configurations (uniform per stage), none in ``exclude``."""
    space = int(np.prod([hi - lo + 1 for lo, hi in stage_ranges]))
    seen = {tuple(int(t) for t in c) for c in exclude}
    if n > space - len(seen):
        raise ConfigError("n_configs", n, f"<= {space - len(seen)} (distinct configurations left)")
    out: list[TemporalConfig] = []
    while len(out) < n:
        cfg = tuple(int(rng.integers(lo, hi + 1)) for lo, hi in stage_ranges)
        if cfg not in seen:
            seen.add(cfg)
            out.append(cfg)
    return out


@dataclass
class SearchReport:
    """Everything :func:`run_search` measured (accuracies are fractions in [0, 1])."""

    fit_configs: list[TemporalConfig]
    fit_accuracies: list[float]
    holdout_configs: list[TemporalConfig]
    holdout_accuracies: list[float]
    model: AccuracyModel
    fit_quality_train: FitQuality
    fit_quality_holdout: FitQuality | None
    rates: list[float]
    budget_T: int
    budget: float
    result: SearchResult
    found_accuracy: float
    baseline_config: TemporalConfig
    baseline_accuracy: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_search(
    measure_accuracy: Callable[[TemporalConfig], float],
    rates: Sequence[float],
    stage_ranges: Sequence[tuple[int, int]],
    *,
    budget_T: int = 3,
    n_fit: int = 18,
    n_holdout: int = 10,
    seed: int = 0,
    baseline_config: TemporalConfig | None = None,
) -> SearchReport:
    """The paper's procedure, independent of how accuracy is measured.

    Samples ``n_fit`` + ``n_holdout`` distinct configurations, measures them with
    ``measure_accuracy(config) -> fraction``, fits the accuracy model, reports fit quality on
    both sets, runs :func:`dfs_search` under the energy of ``baseline_config`` (default:
    uniform ``budget_T``, clipped into each stage's range) and measures the found
    configuration and the baseline.
    """
    from flexsnn.seeding import numpy_rng

    rng = numpy_rng(seed, 0x5EA)
    fit_cfgs = sample_distinct_configs(n_fit, stage_ranges, rng)
    hold_cfgs = sample_distinct_configs(n_holdout, stage_ranges, rng, exclude=fit_cfgs) if n_holdout else []
    fit_acc = [float(measure_accuracy(c)) for c in fit_cfgs]
    hold_acc = [float(measure_accuracy(c)) for c in hold_cfgs]
    acc_model = fit_accuracy_model(fit_cfgs, fit_acc)
    q_train = fit_quality(acc_model, fit_cfgs, fit_acc)
    q_hold = fit_quality(acc_model, hold_cfgs, hold_acc) if hold_cfgs else None
    if baseline_config is None:
        baseline_config = tuple(min(max(budget_T, lo), hi) for lo, hi in stage_ranges)
    budget = energy(baseline_config, rates)
    result = dfs_search(acc_model, rates, budget, stage_ranges)
    found_acc = float(measure_accuracy(result.config))
    base_acc = float(measure_accuracy(tuple(baseline_config)))
    log.info("search: found %s (est %.4f, measured %.4f) vs baseline %s (%.4f)",
             result.config, result.estimated_accuracy, found_acc, baseline_config, base_acc)
    return SearchReport(fit_configs=fit_cfgs, fit_accuracies=fit_acc, holdout_configs=hold_cfgs,
                        holdout_accuracies=hold_acc, model=acc_model, fit_quality_train=q_train,
                        fit_quality_holdout=q_hold, rates=[float(r) for r in rates], budget_T=int(budget_T),
                        budget=budget, result=result, found_accuracy=found_acc,
                        baseline_config=tuple(baseline_config), baseline_accuracy=base_acc)


def bn_calibrated_measure(
    model: Any,
    measure_accuracy: Callable[[TemporalConfig], float],
    calibration_batches: Callable[[TemporalConfig, int], Any],
    *,
    n_calibrations: int = 3,
    n_batches: int = 10,
) -> Callable[[TemporalConfig], float]:
    """Per-configuration BN calibration around ``measure_accuracy`` (paper A.3).

    For a model with BatchNorm, each measurement re-estimates the BN statistics at that
    configuration (:func:`~flexsnn.training.bn_calibration.calibrate_bn`, ``n_batches``
    training batches, cumulative average) ``n_calibrations`` times, each on the batches of
    ``calibration_batches(config, k)`` (k = 0..n-1: seed different draws there), measures after
    each and returns the mean accuracy; the model's own statistics are restored afterwards.
    A model without BN (or ``n_calibrations == 0``) gets ``measure_accuracy`` unchanged.
    """
    from flexsnn.training.bn_calibration import calibrate_bn, has_batch_norm

    if n_calibrations < 0:
        raise ConfigError("n_calibrations", n_calibrations, "an integer >= 0 (0 = the checkpoint's statistics)")
    if n_calibrations == 0 or not has_batch_norm(model):
        return measure_accuracy
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def measure(config: TemporalConfig) -> float:
        accs = []
        try:
            for k in range(n_calibrations):
                calibrate_bn(model, calibration_batches(tuple(config), k), config=tuple(config), n_batches=n_batches)
                accs.append(float(measure_accuracy(tuple(config))))
        finally:
            model.load_state_dict(saved)
        return float(np.mean(accs))

    return measure
