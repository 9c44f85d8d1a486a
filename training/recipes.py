"""Training recipes for the chip (issue 15): the bias-free fine-tune of a Speck net, with the
parts that make the asynchronous chip keep the time-binned model's accuracy at fewer SynOps.

:func:`chip_finetune_config` builds the :class:`~flexsnn.training.trainer.TrainConfig` of the
fine-tune phase (from an SDT+BN checkpoint, as ``flexsnn demo`` trains it) with any of the
parts switched on; ``benchmarks/async_gap.py`` measures each part (its arms are these configs),
and :func:`chip_recipe_config` is the recipe the ablation picked (:data:`CHIP_RECIPE`):

- ``floor``: the neurons' ``min_v_mem`` (threshold units; the chip's ``threshold_low``). The
  trained default is -1; on the chip an event-by-event run clips inhibition at the floor again
  and again where a time bin would first have summed it, so the model is trained with the
  deeper floor it will be deployed with.
- ``fine``: temporal configurations reaching the chip's regime: the input stage's T and the
  later stages' T drawn log-uniformly from ``[1, fine_T_max]`` (the chip behaves like T of
  about 100 for a 300 ms recording).
- ``qat``: fake quantization as the converter discretizes (:mod:`flexsnn.training.qat`).
- ``budget``: SynOps budget per sample (:mod:`flexsnn.training.synops`), hinge penalty.
- ``spike``: ``"single"`` trains with the chip's one-spike-per-update neuron.
- ``deploy_floor``: the floor the final checkpoint (and so the chip image) gets, deeper than
  the trained ``floor`` (``TrainConfig.deploy_min_v_mem``): where an event-by-event run would
  clip inhibition that a time bin sums, a deeper floor clips less; trained at it, the T=10
  model loses accuracy, so it is set only for deployment.
- ``distill``: weight of knowledge distillation from the base checkpoint (the SDT+BN model at
  ``T``) into every configuration (:mod:`flexsnn.training.distill`); 0 = off;
  ``distill_temperature`` its softmax temperature (default 2).
- ``include_max``: MTT's first configuration of every step is the full-T one (every stage at
  ``T``), the model SDT trains (:attr:`~flexsnn.training.schemes.SchemeConfig.include_max`).
- ``chip_T`` (with ``chip_floor``, ``chip_weight``, ``chip_backprop``): the chip's configuration
  in the mix: every step, besides the scheme's configurations, one more pass with every stage at
  ``chip_T`` frames (default off; 100 imitates the asynchronous chip) at the deployed floor
  (``chip_floor``, default ``deploy_floor`` or -16) for that pass only, by rate-based backprop
  (:mod:`flexsnn.training.chip_config`). Measured on top of the recipe (async_gap arm
  ``mtt-budget19-chip-deep-th2``, 2 seeds): no gain (async 94.1 vs 94.2 %), 4.2x a step; left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from flexsnn.errors import ConfigError
from flexsnn.training.schemes import SchemeConfig

#: The recipe chosen on a validation rendering (``benchmarks/results/async_gap_selection.json``:
#: the most accurate asynchronous arm within 2.0M SynOps on the held-out images rendered with
#: generator seed 1, training seeds 0 and 1; it is also async_gap.json's ``best_arm``
#: "mtt-budget25-w16c128-kd3-floor2-th175", saccade generator v5, 3 seeds; README "Chip-faithful
#: training"): from an SDT+BN base of speck3c1fc with :data:`CHIP_CHANNELS` (16/32/128), MTT
#: trained at the speck-iaf floor -1 with a 2.5M SynOps budget and distillation from the base
#: (weight 3, temperature 2), exported with floor -2 and (its export step, :data:`CHIP_EXPORT`)
#: the first layer's threshold x1.75. Its chip runs at 96.4 % async on 1,000 generated test
#: recordings, 96.2 % async on the 1,000 real nmnist-small recordings, 1.99M SynOps per sample
#: (per seed 1.95 / 1.99 / 2.03M: at the 2.0M limit); SDT's chip (the paper's 8/16/16): 88.0 %
#: async (96.1 % time-binned at T=10), 4.30M. On the other two renderings (seeds 0, 1): 96.3 /
#: 96.3 % against SDT's T=10 96.1 / 96.65 %. What each part gave on the same data (seeds 0, 1):
#: distillation +0.85 pt async (weight 3 over 1: +0.2 pt at +0.2M); conv3 at 128 channels
#: +1.05 pt at 0.15M fewer SynOps (16/32/64 -> 16/32/128); the export floor -2 +0.65 pt at
#: 0.35M fewer SynOps (-1.5: +0.15, -2.5: +0.2, -4: -1.3, -16 on 16/32/64: -0.9); conv1's
#: threshold x1.75 instead of x2 with it +0.6 pt at 0.25M more. Left out, measured:
#: temperature 1 (-0.3 pt; with floor -2 and x1.75: 96.2 %, 1.74M), the trained floor -4, QAT,
#: fine T, fixed fine T (30 by BPTT, 100 by rate backprop), the full-T configuration in every
#: step, the chip's configuration in every step (``chip_T=100``; -1.8 pt async, at 3.2x the
#: training time), 4 epochs instead of 2.
CHIP_RECIPE: dict[str, Any] = dict(scheme="mtt", floor=-1.0, deploy_floor=-2.0, fine=False, qat=False,
                                   budget=2.5e6, distill=3.0, spike="multi")

#: The conv channels ``(conv1, conv2, conv3)`` of the speck3c1fc the recipe's SDT+BN base is
#: trained with (``build_model("speck3c1fc", channels=[16, 32, 128])``): twice the paper's net in
#: conv1 and conv2 (16 is the widest conv1 that fits a Speck2e core) and eight times in conv3,
#: whose spikes are cheap (each reaches only the 10 output neurons). The fine-tune inherits the
#: architecture of the base it starts from (:func:`chip_finetune_config`).
CHIP_CHANNELS: tuple[int, int, int] = (16, 32, 128)

#: The recipe's export step (not a training setting, so not part of :data:`CHIP_RECIPE`):
#: core position -> factor on ``threshold_high`` after discretization
#: (:func:`flexsnn.converters.thresholds.scale_thresholds`, ``flexsnn export --threshold-scale
#: 0=1.75``). On the distilled (weight 1) checkpoints at floor -2 (async_gap, 2 seeds): x1.75
#: 96.3 % async at 1.77M SynOps, x2 95.7 % at 1.53M; at floor -1, x1.5 95.2 % at 2.67M, x2
#: 95.05 % at 1.87M.
CHIP_EXPORT: dict[str, Any] = dict(threshold_scale={0: 1.75})


def recipe_text(recipe: Optional[dict[str, Any]] = None) -> str:
    """What ``recipe`` (default :data:`CHIP_RECIPE` with :data:`CHIP_EXPORT`) trains and
    exports, in words, for reports; e.g.
    ``"trained with floor -4, deployed with floor -16"``."""
    r = CHIP_RECIPE if recipe is None else recipe
    floor, deploy = float(r.get("floor", -1.0)), r.get("deploy_floor")
    parts = [f"trained with floor {floor:g}" + (f", deployed with floor {float(deploy):g}" if deploy is not None
                                                else " (the floor it is deployed with)")]
    if r.get("budget"):
        parts.append(f"a SynOps budget of {float(r['budget']) / 1e6:g}M per sample")
    if r.get("qat"):
        parts.append("fake quantization")
    if r.get("fine"):
        parts.append(f"input and later stages' T log-uniform in [1, {int(r.get('fine_T_max', 100))}]")
    if r.get("include_max"):
        parts.append("the full-T configuration in every step")
    if r.get("distill"):
        parts.append(f"distillation from the base (weight {float(r['distill']):g})")
    scale = r.get("threshold_scale", CHIP_EXPORT["threshold_scale"] if recipe is None else None)
    for pos, k in sorted((scale or {}).items()):
        parts.append(f"core {pos}'s threshold x{float(k):g} at export")
    return ", ".join(parts)


def chip_finetune_config(base_checkpoint: str | Path, *, scheme: str = "mtt", floor: float = -1.0,
                         fine: bool = False, fine_T_max: int = 100, qat: bool = False,
                         budget: Optional[float] = None, budget_weight: float = 1.0,
                         spike: str = "multi", include_max: bool = False, distill: float = 0.0,
                         distill_temperature: float = 2.0,
                         deploy_floor: Optional[float] = None,
                         backprop: str = "bptt", chip_T: Optional[int] = None,
                         chip_floor: Optional[float] = None, chip_weight: float = 1.0,
                         chip_backprop: str = "rate_M",
                         T: int = 10, s: int = 3, epochs: int = 3,
                         lr: float = 1e-3, weight_decay: float = 0.02, batch_size: int = 32,
                         seed: int = 0, dataset: str = "saccade-mnist", root: Optional[str] = None,
                         limit: Optional[int] = None, test_limit: Optional[int] = None,
                         device: str = "auto") -> Any:
    """The bias-removal fine-tune of ``base_checkpoint`` (a Speck net trained with BN) with the
    chosen parts (see module docstring). ``scheme``: ``"sdt"`` (fixed ``T``) or ``"mtt"`` (``s``
    configurations per step; later stages from ``U[1, T]``, or the fine ranges). ``backprop``:
    ``"bptt"`` or rate-based (``"rate_M"``/``"rate_S"``: cost nearly flat in T, measured 1.5x an
    MTT T=10 step for the fine ranges where BPTT took 12x; no QAT with it). ``chip_T``: every
    step also runs the chip's configuration (every stage at ``chip_T`` frames, floor
    ``chip_floor``, default ``deploy_floor`` or -16; loss x ``chip_weight``; by ``chip_backprop``;
    :mod:`flexsnn.training.chip_config`); None = off.

    Raises:
        ConfigError: bad values (``floor`` must be below the threshold 1; ``fine`` needs MTT).
    """
    from flexsnn.training.trainer import TrainConfig

    if not (isinstance(floor, (int, float)) and floor < 1.0):
        raise ConfigError("floor", floor, "a number below the threshold (1.0)", "e.g. -4")
    if scheme == "sdt":
        if fine or include_max:
            raise ConfigError("fine" if fine else "include_max", True, "False with sdt",
                              "temporal configurations to draw need mtt")
        sc = SchemeConfig(name="sdt", T=T)
    elif scheme == "mtt":
        if fine:
            sc = SchemeConfig(name="mtt", T=T, s=s, r_left=T - 1, r_right=max(0, fine_T_max - T),
                              t_input_min=1, t_input_max=fine_T_max, sampling="log-uniform",
                              include_max=include_max)
        else:
            sc = SchemeConfig(name="mtt", T=T, s=s, r_left=T - 1, r_right=0, include_max=include_max)
    else:
        raise ConfigError("scheme", scheme, "sdt or mtt")
    return TrainConfig(
        model_kwargs={"neuron": {"min_v_mem": float(floor)}}, dataset=dataset, root=root, T=T,
        scheme=sc, backprop=backprop, optimizer="adamw", lr=lr, weight_decay=weight_decay, epochs=epochs,
        batch_size=batch_size, seed=seed, limit=limit, test_limit=test_limit, device=device,
        phase="bias_removal", init_checkpoint=str(base_checkpoint), eval_every=max(1, epochs),
        bn_calibration_batches=10, qat=qat, train_spike=spike, synops_budget=budget,
        synops_weight=budget_weight, distill_checkpoint=str(base_checkpoint) if distill else None,
        distill_weight=float(distill) if distill else 1.0, distill_temperature=float(distill_temperature),
        deploy_min_v_mem=deploy_floor, chip_T=chip_T,
        chip_floor=float(chip_floor if chip_floor is not None else (deploy_floor if deploy_floor is not None else -16.0)),
        chip_weight=chip_weight, chip_backprop=chip_backprop)


def chip_recipe_config(base_checkpoint: str | Path, **overrides: Any) -> Any:
    """:func:`chip_finetune_config` with :data:`CHIP_RECIPE` (``overrides`` win), e.g. for the
    demo's MTT arm: ``chip_recipe_config(base, epochs=3, lr=1e-3, seed=0)``."""
    return chip_finetune_config(base_checkpoint, **{**CHIP_RECIPE, **overrides})


def with_floor(checkpoint: str | Path, floor: float) -> Any:
    """The model of ``checkpoint`` with every neuron's ``min_v_mem`` set to ``floor`` (threshold
    units), weights unchanged: a deeper floor to export with than the one it was trained with
    (``deploy_floor`` of the ablation). Returns ``(model, meta)`` as
    :func:`~flexsnn.models.checkpoint.load_model` does.

    Raises:
        ConfigError: ``floor`` not below the threshold 1.
    """
    from flexsnn.models.checkpoint import load_model
    from flexsnn.models.zoo import with_min_v_mem

    if not (isinstance(floor, (int, float)) and floor < 1.0):
        raise ConfigError("deploy_floor", floor, "a number below the threshold (1.0)", "e.g. -16")
    model, meta = load_model(checkpoint)
    return with_min_v_mem(model, floor), meta
