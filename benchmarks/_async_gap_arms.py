"""The arms of ``benchmarks/async_gap.py`` (issue 15): each a set of
:func:`flexsnn.training.recipes.chip_finetune_config` parts plus export-only parts, and which
arm's trained checkpoint an export-only variant reuses."""

from __future__ import annotations

from typing import Any

#: the distilled 16/32/128 fine-tune (2.5M budget) that the recipe's arms share
_KD128: dict[str, Any] = dict(scheme="mtt", budget=2.5e6, base_width=[16, 32, 128], distill=1.0)

#: arm name -> chip_finetune_config parts
ARMS: dict[str, dict[str, Any]] = {
    "sdt": dict(scheme="sdt"),
    "mtt": dict(scheme="mtt"),
    "mtt-floor": dict(scheme="mtt", floor=-4.0),
    "mtt-floor-budget": dict(scheme="mtt", floor=-4.0, budget=1.5e6),
    "mtt-floor-budget-qat": dict(scheme="mtt", floor=-4.0, budget=1.5e6, qat=True),
    "mtt-floor-budget-fine": dict(scheme="mtt", floor=-4.0, budget=1.5e6, fine=True),
    # fine T with BPTT cost 12x an MTT T=10 step here (fine_T_cost); rate-based backprop 1.5x
    "mtt-floor-fine-rate": dict(scheme="mtt", floor=-4.0, fine=True, backprop="rate_M"),
    "sdt-floor-budget": dict(scheme="sdt", floor=-4.0, budget=1.5e6),
    "mtt-budget": dict(scheme="mtt", budget=1.5e6),
    "mtt-floor8": dict(scheme="mtt", floor=-8.0),
    "mtt-floor2": dict(scheme="mtt", floor=-2.0),
    "mtt-floor-max": dict(scheme="mtt", floor=-4.0, include_max=True),
    "mtt-floor-max-budget": dict(scheme="mtt", floor=-4.0, include_max=True, budget=1.5e6),
    "mtt-floor8-budget": dict(scheme="mtt", floor=-8.0, budget=1.5e6),
    "mtt-floor-kd": dict(scheme="mtt", floor=-4.0, distill=1.0),
    "mtt-floor-kd-budget": dict(scheme="mtt", floor=-4.0, distill=1.0, budget=1.5e6),
    "sdt-kd": dict(scheme="sdt", distill=1.0),
    # deploy_floor: the chip image gets this floor; trained as the arm without it (reused)
    "mtt-floor-deep": dict(scheme="mtt", floor=-4.0, deploy_floor=-16.0),
    "mtt-floor8-deep": dict(scheme="mtt", floor=-8.0, deploy_floor=-16.0),
    "sdt-deep": dict(scheme="sdt", deploy_floor=-16.0),
    "mtt-deep": dict(scheme="mtt", deploy_floor=-16.0),
    "mtt-floor-budget-deep": dict(scheme="mtt", floor=-4.0, budget=1.5e6, deploy_floor=-16.0),
    "mtt-budget-deep": dict(scheme="mtt", budget=1.5e6, deploy_floor=-16.0),
    "mtt-budget19-deep": dict(scheme="mtt", budget=1.9e6, deploy_floor=-16.0),
    # threshold_scale: core position -> factor on threshold_high after discretization (export only)
    "mtt-budget19-deep-th2": dict(scheme="mtt", budget=1.9e6, deploy_floor=-16.0, threshold_scale={"0": 2.0}),
    # trained in the chip's regime: fixed fine bins (T=100 for the whole recording, every stage),
    # at the deployed floor, by rate-based backprop (BPTT at T=100 costs ~12x an MTT T=10 step)
    "sdt100-rate-floor16": dict(scheme="sdt", T=100, floor=-16.0, backprop="rate_M"),
    # a finer fixed T by BPTT (3x an SDT T=10 step), at the deployed floor
    "sdt30-floor16": dict(scheme="sdt", T=30, floor=-16.0),
    # the base phase too at the deployed floor (its own SDT+BN base), then the recipe's fine-tune
    "mtt-budget19-base16": dict(scheme="mtt", budget=1.9e6, floor=-16.0, base_floor=-16.0),
    # speck3c1fc at twice the channels (16/32/32, its own SDT+BN base): SDT, and the recipe
    "sdt-w16": dict(scheme="sdt", base_width=16),
    "sdt-w16-deep": dict(scheme="sdt", base_width=16, deploy_floor=-16.0),
    "mtt-w16-deep": dict(scheme="mtt", base_width=16, deploy_floor=-16.0),
    "mtt-w16-deep-th2": dict(scheme="mtt", base_width=16, deploy_floor=-16.0, threshold_scale={"0": 2.0}),
    # conv3 twice as wide again (16/32/64): capacity where spikes are cheap (conv3's fan-out is fc's 10)
    "sdt-w16c64": dict(scheme="sdt", base_width=[16, 32, 64]),
    "mtt-budget35-w16c64-deep-th2": dict(scheme="mtt", budget=3.5e6, base_width=[16, 32, 64], deploy_floor=-16.0,
                                         threshold_scale={"0": 2.0}),
    # on the learned data (version 5): what the budget costs the 16/32/64 recipe there
    "mtt-w16c64-deep-th2": dict(scheme="mtt", base_width=[16, 32, 64], deploy_floor=-16.0,
                                threshold_scale={"0": 2.0}),
    "mtt-budget5-w16c64-deep-th2": dict(scheme="mtt", budget=5e6, base_width=[16, 32, 64], deploy_floor=-16.0,
                                        threshold_scale={"0": 2.0}),
    "mtt-w16c64": dict(scheme="mtt", base_width=[16, 32, 64]),
    "mtt-budget35-w16c64": dict(scheme="mtt", budget=3.5e6, base_width=[16, 32, 64]),
    "mtt-budget35-w16c64-th2": dict(scheme="mtt", budget=3.5e6, base_width=[16, 32, 64], threshold_scale={"0": 2.0}),
    # longer-run recipe candidates (the GPU sweep): a tighter budget, distillation from the
    # w16c64 base, conv3 at 128 channels, and SDT under the same budget and threshold
    "mtt-budget25-w16c64": dict(scheme="mtt", budget=2.5e6, base_width=[16, 32, 64]),
    "mtt-budget25-w16c64-th2": dict(scheme="mtt", budget=2.5e6, base_width=[16, 32, 64], threshold_scale={"0": 2.0}),
    "mtt-budget35-w16c64-kd-th2": dict(scheme="mtt", budget=3.5e6, base_width=[16, 32, 64], distill=1.0,
                                       threshold_scale={"0": 2.0}),
    "mtt-budget25-w16c128-th2": dict(scheme="mtt", budget=2.5e6, base_width=[16, 32, 128], threshold_scale={"0": 2.0}),
    "sdt-budget25-w16c64-th2": dict(scheme="sdt", budget=2.5e6, base_width=[16, 32, 64], threshold_scale={"0": 2.0}),
    # the training estimate (mean over MTT's configurations, later stages at T <= 10) is about
    # half the chip's count: budgets of 1.0-1.4M aim at <= 2M on the chip without the threshold x2
    "mtt-budget10-w16c64": dict(scheme="mtt", budget=1.0e6, base_width=[16, 32, 64]),
    "mtt-budget14-w16c64": dict(scheme="mtt", budget=1.4e6, base_width=[16, 32, 64]),
    # the two parts that helped, together: distillation from the base and conv3 at 128
    "mtt-budget25-w16c128-kd-th2": dict(**_KD128, threshold_scale={"0": 2.0}),
    "mtt-budget14-w16c128-kd": dict(scheme="mtt", budget=1.4e6, base_width=[16, 32, 128], distill=1.0),
    # SDT at the recipe's width; the recipe plus the chip's configuration (every stage at T=100,
    # rate_M) at the floor it is deployed with (-1)
    "sdt-w16c128": dict(scheme="sdt", base_width=[16, 32, 128]),
    "mtt-budget25-w16c128-kd-chip-th2": dict(**_KD128, chip_T=100, chip_floor=-1.0, threshold_scale={"0": 2.0}),
    # export-only variants of the distilled 16/32/128 checkpoints: the 1.4M budget's with the
    # threshold x2, the recipe's with x1.5
    "mtt-budget14-w16c128-kd-th2": dict(scheme="mtt", budget=1.4e6, base_width=[16, 32, 128], distill=1.0,
                                        threshold_scale={"0": 2.0}),
    "mtt-budget25-w16c128-kd-th15": dict(**_KD128, threshold_scale={"0": 1.5}),
    # the recipe's checkpoints exported with a moderately deeper floor (-2, -4) instead of -1
    "mtt-budget25-w16c128-kd-floor2-th2": dict(**_KD128, deploy_floor=-2.0, threshold_scale={"0": 2.0}),
    "mtt-budget25-w16c128-kd-floor4-th2": dict(**_KD128, deploy_floor=-4.0, threshold_scale={"0": 2.0}),
    "mtt-budget25-w16c128-kd-floor15-th2": dict(**_KD128, deploy_floor=-1.5, threshold_scale={"0": 2.0}),
    "mtt-budget25-w16c128-kd-floor25-th2": dict(**_KD128, deploy_floor=-2.5, threshold_scale={"0": 2.0}),
    "mtt-budget25-w16c128-kd-floor2-th175": dict(**_KD128, deploy_floor=-2.0, threshold_scale={"0": 1.75}),
    # distillation at temperature 1 (sharper teacher targets) instead of 2
    "mtt-budget25-w16c128-kdt1-th2": dict(**_KD128, distill_temperature=1.0, threshold_scale={"0": 2.0}),
    # distillation as the main loss term (weight 3)
    "mtt-budget25-w16c128-kd3-th2": dict(scheme="mtt", budget=2.5e6, base_width=[16, 32, 128], distill=3.0,
                                         threshold_scale={"0": 2.0}),
    # the recipe's export (floor -2, threshold x1.75) on the kd3 and tau-1 checkpoints
    "mtt-budget25-w16c128-kd3-floor2-th175": dict(scheme="mtt", budget=2.5e6, base_width=[16, 32, 128], distill=3.0,
                                                  deploy_floor=-2.0, threshold_scale={"0": 1.75}),
    "mtt-budget25-w16c128-kdt1-floor2-th175": dict(**_KD128, distill_temperature=1.0, deploy_floor=-2.0,
                                                   threshold_scale={"0": 1.75}),
    "sdt-budget35-w16c64-deep-th2": dict(scheme="sdt", budget=3.5e6, base_width=[16, 32, 64], deploy_floor=-16.0,
                                         threshold_scale={"0": 2.0}),
    # the w16 recipe's budget on the paper's width: what the budget alone buys
    "mtt-budget35-deep-th2": dict(scheme="mtt", budget=3.5e6, deploy_floor=-16.0, threshold_scale={"0": 2.0}),
    "mtt-budget25-w16-deep-th2": dict(scheme="mtt", budget=2.5e6, base_width=16, deploy_floor=-16.0,
                                      threshold_scale={"0": 2.0}),
    "mtt-budget5-w16-deep-th2": dict(scheme="mtt", budget=5e6, base_width=16, deploy_floor=-16.0,
                                     threshold_scale={"0": 2.0}),
    "mtt-budget35-w16-deep-th2": dict(scheme="mtt", budget=3.5e6, base_width=16, deploy_floor=-16.0,
                                      threshold_scale={"0": 2.0}),
    "mtt-budget19-w16-deep-th2": dict(scheme="mtt", budget=1.9e6, base_width=16, deploy_floor=-16.0,
                                      threshold_scale={"0": 2.0}),
    # the recipe plus the chip's configuration in every step: every stage at T=100, floor -16,
    # rate_M, loss weight 1 (training/chip_config.py); the coarse configurations stay at floor -1
    "mtt-budget19-chip-deep-th2": dict(scheme="mtt", budget=1.9e6, chip_T=100, deploy_floor=-16.0,
                                       threshold_scale={"0": 2.0}),
    # ... with the chip pass's loss x3; and a chip pass at T=30 by BPTT (exact gradient, 3x an SDT step)
    "mtt-budget19-chip3-deep-th2": dict(scheme="mtt", budget=1.9e6, chip_T=100, chip_weight=3.0,
                                        deploy_floor=-16.0, threshold_scale={"0": 2.0}),
    "mtt-budget19-chip30bptt-deep-th2": dict(scheme="mtt", budget=1.9e6, chip_T=30, chip_backprop="bptt",
                                             deploy_floor=-16.0, threshold_scale={"0": 2.0}),
}
#: parts that change only the exported chip image, not training
DEPLOY_PARTS = ("deploy_floor", "threshold_scale")


def training_parts(parts: dict[str, Any]) -> dict[str, Any]:
    """``parts`` without the ones that change only the exported chip image."""
    return {k: v for k, v in parts.items() if k not in DEPLOY_PARTS}


def training_arm(arm: str) -> str:
    """The arm whose trained checkpoint ``arm`` reuses: the first arm with the same training
    parts (``arm`` itself when no other has them)."""
    train = training_parts(ARMS[arm])
    return next(a for a, p in ARMS.items() if training_parts(p) == train)
