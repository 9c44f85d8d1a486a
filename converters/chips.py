"""The Speck family as data: one limits table per device, each fact with its source.

``--chip`` selects a :class:`ChipProfile`; :meth:`ChipProfile.limits` turns it into the
:class:`~flexsnn.converters.speck2e.ChipLimits` every converter step checks against. A fact
that no public source states is recorded as unknown (``value=None``), and whatever needs it is
refused by name (:meth:`ChipProfile.require`) rather than guessed.

Sources (named in each :class:`Fact`):

- ``sinabs-chips``: sinabs 3.1.3 ``backend/dynapcnn/chips/{dynapcnn,speck2e,speck2f}.py``.
  ``DynapcnnConfigBuilder.get_constraints`` holds the kernel/neuron/bias memory per core;
  Speck2e and Speck2f inherit it unchanged; ``get_samna_module`` names the samna module.
- ``sinabs-io``: sinabs' ``backend/dynapcnn/io.py`` ``device_types`` (samna device names).
- ``sinabs-1.x``: sinabs 1.x/2.x ``chips/dynapcnn.py`` (``samna.dynapcnn``,
  ``DynapcnnConfiguration``) and ``chip_factory.py`` (``"dynapcnndevkit"``); DYNAP-CNN was
  dropped from sinabs 3's chip factory, its core design (the base class above) was not.
- ``speck-docs``: sinabs' Speck documentation (“overview of the chip”, “the limits of the
  chip”): per-core input/output sizes, features, kernel, stride, padding, pooling,
  destinations, 8-bit weights, 16-bit state; readout block and its channel erratum (Speck2e
  and Speck2f). Summarised in ARCHITECTURE.md, “Speck2e facts”.
- ``speck2e-sheet``: the samna Speck2e spec sheet (cores 0 and 1 run in parallel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from flexsnn.converters.speck2e import KI, ChipLimits
from flexsnn.errors import ChipConstraintError, ConfigError, Violation

SOURCES: dict[str, str] = {
    "sinabs-chips": "sinabs 3.1.3 sinabs/backend/dynapcnn/chips/{dynapcnn,speck2e,speck2f}.py "
                    "(DynapcnnConfigBuilder.get_constraints, get_samna_module)",
    "sinabs-io": "sinabs 3.1.3 sinabs/backend/dynapcnn/io.py (device_types)",
    "sinabs-1.x": "sinabs 1.x/2.x sinabs/backend/dynapcnn/chips/dynapcnn.py and chip_factory.py "
                  "(samna.dynapcnn, 'dynapcnndevkit')",
    "speck-docs": "sinabs Speck documentation: overview and limits of the chip (ARCHITECTURE.md)",
    "speck2e-sheet": "samna Speck2e spec sheet (ARCHITECTURE.md)",
}


@dataclass(frozen=True)
class Fact:
    """One device fact: ``value`` (None = unknown) and the key of its source in :data:`SOURCES`."""

    value: Any
    source: Optional[str]


#: facts every export needs; an unknown one refuses the device for export
EXPORT_FACTS = (
    "n_cores", "kernel_memory", "neuron_memory", "bias_memory", "max_input_size", "max_output_size",
    "max_features", "max_kernel_size", "strides", "max_padding", "poolings", "max_destinations",
    "max_dvs_channels", "weight_bits", "bias_bits", "state_bits",
)


@dataclass(frozen=True)
class ChipProfile:
    """A device of the Speck family: ``name`` (the ``--chip`` value), ``title`` and its facts.

    Facts: the :class:`ChipLimits` fields (see :data:`EXPORT_FACTS`), ``readout_classes``,
    ``readout_erratum`` (class k on channel ``4(k-1)``), ``nondeterministic_cores``,
    ``samna_module`` and ``device_names`` (samna device type names of its boards).
    """

    name: str
    title: str
    facts: dict[str, Fact]

    def fact(self, key: str) -> Fact:
        """The fact ``key`` (ConfigError naming the known keys when there is no such fact)."""
        if key not in self.facts:
            raise ConfigError(f"{self.name}.{key}", None, f"one of {sorted(self.facts)}")
        return self.facts[key]

    def require(self, key: str, purpose: str) -> Any:
        """The value of fact ``key``; :class:`ChipConstraintError` when it is unknown."""
        f = self.fact(key)
        if f.value is None:
            raise ChipConstraintError([Violation(
                f"chip {self.name} ({self.title})", key, "unknown", f"a sourced value (needed for {purpose})",
                f"no public source states {key} for {self.title}, so flexsnn refuses rather than guesses: "
                f"choose a device whose {key} is known (`--chip speck2e`), or avoid {purpose}")], self.name)
        return f.value

    def unknown(self) -> list[str]:
        """Names of the facts no source states."""
        return sorted(k for k, f in self.facts.items() if f.value is None)

    def limits(self) -> ChipLimits:
        """The :class:`ChipLimits` the converter checks against (refuses unknown export facts).

        An unknown readout gives ``readout_classes=0`` (every readout request is refused);
        unknown nondeterministic cores give ``()``.
        """
        values = {k: self.require(k, "an export") for k in EXPORT_FACTS}
        for key in ("kernel_memory", "neuron_memory", "bias_memory"):
            if len(values[key]) != values["n_cores"]:
                raise ConfigError(f"{self.name}.{key}", values[key], f"{values['n_cores']} entries (one per core)")
        readout = self.fact("readout_classes").value
        nondet = self.fact("nondeterministic_cores").value
        return ChipLimits(name=self.name, readout_classes=int(readout or 0),
                          nondeterministic_cores=tuple(nondet or ()), **values)

    def table(self) -> str:
        """Plain-text table: fact, value, source."""
        rows = [(k, "unknown" if f.value is None else str(f.value), f.source or "-")
                for k, f in self.facts.items()]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows)


def _core_facts() -> dict[str, Fact]:
    """The DYNAP-CNN core design shared by DYNAP-CNN, Speck2e and Speck2f (sinabs' base class)."""
    return {
        "n_cores": Fact(9, "sinabs-chips"),
        "kernel_memory": Fact((16 * KI,) * 3 + (32 * KI,) * 2 + (64 * KI,) * 2 + (16 * KI,) * 2, "sinabs-chips"),
        "neuron_memory": Fact((64 * KI,) * 3 + (32 * KI,) * 2 + (16 * KI,) * 4, "sinabs-chips"),
        "bias_memory": Fact((KI,) * 9, "sinabs-chips"),
        "max_input_size": Fact(128, "speck-docs"),
        "max_output_size": Fact(64, "speck-docs"),
        "max_features": Fact(1024, "speck-docs"),
        "max_kernel_size": Fact(16, "speck-docs"),
        "strides": Fact((1, 2, 4, 8), "speck-docs"),
        "max_padding": Fact(7, "speck-docs"),
        "poolings": Fact((1, 2, 4), "speck-docs"),
        "max_destinations": Fact(2, "speck-docs"),
        "max_dvs_channels": Fact(2, "speck-docs"),
        "weight_bits": Fact(8, "speck-docs"),
        "bias_bits": Fact(8, "speck-docs"),
        "state_bits": Fact(16, "speck-docs"),
    }


SPECK2E_PROFILE = ChipProfile("speck2e", "Speck2e", {
    **_core_facts(),
    "readout_classes": Fact(15, "speck-docs"),
    "readout_erratum": Fact(True, "speck-docs"),
    "nondeterministic_cores": Fact((0, 1), "speck2e-sheet"),
    "samna_module": Fact("samna.speck2e", "sinabs-chips"),
    "device_names": Fact(("Speck2eTestBoard", "Speck2eDevKit"), "sinabs-io"),
})

SPECK2F_PROFILE = ChipProfile("speck2f", "Speck2f", {
    **_core_facts(),
    "readout_classes": Fact(15, "speck-docs"),
    "readout_erratum": Fact(True, "speck-docs"),
    "nondeterministic_cores": Fact(None, None),
    "samna_module": Fact("samna.speck2f", "sinabs-chips"),
    "device_names": Fact(("Speck2fModuleDevKit", "Speck2fDevKit"), "sinabs-io"),
})

DYNAPCNN_PROFILE = ChipProfile("dynapcnn", "DYNAP-CNN devkit", {
    **{k: Fact(f.value, "sinabs-1.x" if k.endswith("memory") or k == "n_cores" else f.source)
       for k, f in _core_facts().items()},
    "readout_classes": Fact(None, None),  # the readout block is a Speck feature; not sourced here
    "readout_erratum": Fact(None, None),
    "nondeterministic_cores": Fact(None, None),
    "samna_module": Fact("samna.dynapcnn", "sinabs-1.x"),
    "device_names": Fact(("DynapcnnDevKit",), "sinabs-1.x"),
})

PROFILES: dict[str, ChipProfile] = {p.name: p for p in (SPECK2E_PROFILE, SPECK2F_PROFILE, DYNAPCNN_PROFILE)}


def get_profile(name: str) -> ChipProfile:
    """The profile of device ``name`` (case-insensitive; ConfigError listing the known ones)."""
    key = str(name).strip().lower().replace("-", "")
    if key not in PROFILES:
        raise ConfigError("--chip", name, f"one of {', '.join(PROFILES)}",
                          "sinabs' own chip definitions cover these devices; others are not supported")
    return PROFILES[key]


def chip_limits(name: str) -> ChipLimits:
    """Shortcut: ``get_profile(name).limits()``."""
    return get_profile(name).limits()


if __name__ == "__main__":  # python -m flexsnn.converters.chips: every profile with its sources
    for _p in PROFILES.values():
        print(f"== {_p.name} ({_p.title})\n{_p.table()}\n")
    print("sources:\n" + "\n".join(f"  {k}: {v}" for k, v in SOURCES.items()))
