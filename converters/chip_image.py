"""ChipImage: the integer description of one Speck2e deployment.

A ChipImage is what the converter produces and what every backend consumes (asynchronous
simulator, time-binned sinabs backend, Speck2e devkit). It holds integers only, needs neither
torch nor samna, and is saved as one zip file (conventionally ``*.chip``) containing

- ``chip_image.json``: every scalar field, ``format_version`` and, for each array,
  its dtype, shape and sha256;
- ``arrays/<name>.npy``: the integer arrays (loaded with ``allow_pickle=False``).

Layouts: weights ``[c_out, c_in, kh, kw]`` int8; biases ``[c_out]`` int16 (values within
the chip's bias bits); shapes are ``(C, H, W)``; stride and padding are ``(y, x)``.
A core's output map is the convolution's output before pooling; each destination applies its
own sum pooling to the events on their way to the destination core.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from flexsnn.converters.speck2e import (
    SPECK2E,
    ChipLimits,
    bias_memory_entries,
    kernel_memory_entries,
    neuron_memory_entries,
)
from flexsnn.errors import CheckpointError, ChipConstraintError, Violation
from flexsnn.io_utils import atomic_path

FORMAT_VERSION = 1
JSON_MEMBER = "chip_image.json"
MAGIC = "flexsnn-chip-image"

ResetMode = Literal["subtract", "zero"]


@dataclass(frozen=True)
class Destination:
    """Where a core's output events go: ``core`` id, after ``pooling`` x ``pooling`` sum pooling."""

    core: int
    pooling: int = 1


@dataclass(frozen=True)
class InputConfig:
    """The DVS input: ``shape`` (C, H, W) of the events fed to ``destinations`` (core ids).

    ``pooling`` is the DVS layer's sum pooling (1 = none); ``merge_polarities`` sends both
    polarities to channel 0.
    """

    shape: tuple[int, int, int]
    destinations: tuple[int, ...]
    pooling: int = 1
    merge_polarities: bool = False


@dataclass(frozen=True)
class ReadoutConfig:
    """Readout block: ``num_classes`` classes read from the output core's channels.

    ``channel_erratum`` applies Speck2e/2f's mapping: class k (1-based) is read from core
    channel ``4*(k-1)``; without it class k is channel ``k-1``.
    """

    num_classes: int
    channel_erratum: bool = True

    def channel_of_class(self, k: int) -> int:
        """Core channel of 0-based class ``k``."""
        return 4 * k if self.channel_erratum else k


@dataclass(frozen=True, eq=False)
class CoreConfig:
    """One used core.

    Attributes:
        core: core id 0..8.
        layer: index of the source layer in the chip-ready model (for messages).
        name: human-readable source layer name.
        input_shape: (C_in, H_in, W_in) of events arriving at this core.
        output_shape: (C_out, H_out, W_out) of the convolution output (before pooling).
        kernel_size: square kernel side.
        stride, padding: (y, x).
        weights: int8 ``[C_out, C_in, k, k]``.
        biases: int16 ``[C_out]`` (zeros unless ``leak_enabled``).
        threshold_high: spike when v_mem >= threshold_high (integer state units).
        threshold_low: v_mem never goes below this (the ``min_v_mem`` floor).
        reset_mode: "subtract" (v -= threshold_high) or "zero".
        leak_enabled: biases added on every slow-clock tick.
        destinations: up to two :class:`Destination`.
    """

    core: int
    layer: int
    name: str
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    kernel_size: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    weights: np.ndarray
    biases: np.ndarray
    threshold_high: int
    threshold_low: int
    reset_mode: ResetMode = "subtract"
    leak_enabled: bool = False
    destinations: tuple[Destination, ...] = ()

    def memory(self) -> dict[str, int]:
        """Entries of kernel, neuron and bias memory this core uses."""
        c_out, c_in, kh, kw = self.weights.shape
        _, h, w = self.output_shape
        return {
            "kernel": kernel_memory_entries(c_in, c_out, kh, kw),
            "neuron": neuron_memory_entries(c_out, h, w),
            "bias": bias_memory_entries(c_out),
        }


@dataclass(frozen=True, eq=False)
class ChipImage:
    """A whole deployment; see the module docstring for the file format.

    ``layer_scales`` records the discretization scale of each core (same order as
    ``cores``), ``source`` the checkpoint or model it came from, ``notes`` free-form strings.
    """

    input: InputConfig
    cores: tuple[CoreConfig, ...]
    output_core: int
    readout: ReadoutConfig | None = None
    chip: str = "speck2e"
    layer_scales: tuple[float, ...] = ()
    source: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    # ---- queries -------------------------------------------------------------------------
    def core(self, core_id: int) -> CoreConfig:
        """The :class:`CoreConfig` of ``core_id`` (KeyError naming the used cores if absent)."""
        for c in self.cores:
            if c.core == core_id:
                return c
        raise KeyError(f"core {core_id} is not used; used cores: {[c.core for c in self.cores]}")

    def core_order(self) -> list[int]:
        """Used core ids from the input onwards (breadth-first along destinations)."""
        order: list[int] = []
        frontier = list(self.input.destinations)
        while frontier:
            c = frontier.pop(0)
            if c in order:
                continue
            order.append(c)
            frontier.extend(d.core for d in self.core(c).destinations)
        return order

    @property
    def num_classes(self) -> int:
        """Number of classes: the readout's, else the output core's channels."""
        if self.readout is not None:
            return self.readout.num_classes
        return self.core(self.output_core).output_shape[0]

    def memory_report(self, limits: ChipLimits = SPECK2E) -> list[dict[str, Any]]:
        """Per used core: kernel/neuron/bias entries used and the core's capacity."""
        rows = []
        for c in self.cores:
            used = c.memory()
            rows.append({
                "core": c.core, "layer": c.layer, "name": c.name,
                "kernel_used": used["kernel"], "kernel_capacity": limits.kernel_memory[c.core],
                "neuron_used": used["neuron"], "neuron_capacity": limits.neuron_memory[c.core],
                "bias_used": used["bias"], "bias_capacity": limits.bias_memory[c.core],
            })
        return rows

    def summary(self, limits: ChipLimits = SPECK2E) -> str:
        """A plain-text table of the used cores (shapes, kernel, thresholds, memory use)."""
        head = (f"ChipImage v{self.format_version} for {self.chip}: input {self.input.shape} -> "
                f"cores {self.core_order()} -> output core {self.output_core}"
                + (f" -> readout ({self.readout.num_classes} classes)" if self.readout else ""))
        cols = ("core", "layer", "name", "in (C,H,W)", "out (C,H,W)", "k", "stride", "pad",
                "thr_hi", "thr_lo", "reset", "dest(core/pool)", "kernel mem", "neuron mem")
        rows = []
        for c, mem in zip(self.cores, self.memory_report(limits)):
            rows.append((
                str(c.core), str(c.layer), c.name, str(c.input_shape), str(c.output_shape),
                str(c.kernel_size), f"{c.stride[0]},{c.stride[1]}", f"{c.padding[0]},{c.padding[1]}",
                str(c.threshold_high), str(c.threshold_low), c.reset_mode,
                " ".join(f"{d.core}/{d.pooling}" for d in c.destinations) or "-",
                f"{mem['kernel_used']}/{mem['kernel_capacity']}",
                f"{mem['neuron_used']}/{mem['neuron_capacity']}",
            ))
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                  for i, h in enumerate(cols)]
        lines = [head, "  ".join(h.ljust(w) for h, w in zip(cols, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
        return "\n".join(lines)

    # ---- file format ---------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the image atomically to ``path`` (a zip; ``.chip`` by convention)."""
        check_chip_image(self)
        arrays: dict[str, np.ndarray] = {}
        cores_json = []
        for c in self.cores:
            w_name, b_name = f"core{c.core}_weights", f"core{c.core}_biases"
            arrays[w_name] = np.ascontiguousarray(c.weights, dtype=np.int8)
            arrays[b_name] = np.ascontiguousarray(c.biases, dtype=np.int16)
            d = {k: v for k, v in asdict(c).items() if k not in ("weights", "biases")}
            d["weights"], d["biases"] = w_name, b_name
            cores_json.append(d)
        blobs = {name: _npy_bytes(a) for name, a in arrays.items()}
        doc = {
            "magic": MAGIC,
            "format_version": self.format_version,
            "chip": self.chip,
            "input": asdict(self.input),
            "cores": cores_json,
            "output_core": self.output_core,
            "readout": asdict(self.readout) if self.readout else None,
            "layer_scales": list(self.layer_scales),
            "source": self.source,
            "notes": dict(self.notes),
            "arrays": {
                name: {"dtype": str(arrays[name].dtype), "shape": list(arrays[name].shape),
                       "sha256": hashlib.sha256(blob).hexdigest()}
                for name, blob in blobs.items()
            },
        }
        with atomic_path(path) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(JSON_MEMBER, json.dumps(doc, indent=2))
                for name, blob in blobs.items():
                    zf.writestr(f"arrays/{name}.npy", blob)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, *, limits: ChipLimits = SPECK2E) -> "ChipImage":
        """Read and fully check a chip image: schema, version, hashes, dtypes, shapes, chip limits.

        Raises:
            CheckpointError: unreadable, foreign, tampered or inconsistent file.
            ChipConstraintError: the file is intact but breaks a chip limit.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(path, "chip image not found", "export one with `flexsnn export`")
        try:
            with zipfile.ZipFile(path) as zf:
                doc = json.loads(zf.read(JSON_MEMBER))
                members = {n: zf.read(n) for n in zf.namelist() if n.startswith("arrays/")}
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
            raise CheckpointError(path, f"not a readable chip image ({type(err).__name__}: {err})",
                                  "re-export it with `flexsnn export`") from err
        return _from_document(doc, members, path, limits)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _from_document(doc: dict, members: dict[str, bytes], path: Path, limits: ChipLimits) -> ChipImage:
    def bad(reason: str) -> CheckpointError:
        return CheckpointError(path, reason, "the file is damaged or was edited; re-export it")

    if not isinstance(doc, dict) or doc.get("magic") != MAGIC:
        raise bad(f"missing magic {MAGIC!r}: not a flexsnn chip image")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(path, f"format_version {version!r} is not supported "
                              f"(this flexsnn reads version {FORMAT_VERSION})",
                              "re-export the checkpoint with this flexsnn version")
    arrays: dict[str, np.ndarray] = {}
    for name, info in doc.get("arrays", {}).items():
        blob = members.get(f"arrays/{name}.npy")
        if blob is None:
            raise bad(f"array {name!r} is listed but missing")
        if hashlib.sha256(blob).hexdigest() != info.get("sha256"):
            raise bad(f"sha256 of array {name!r} does not match the recorded hash")
        try:
            arr = np.load(io.BytesIO(blob), allow_pickle=False)
        except ValueError as err:
            raise bad(f"array {name!r} is not a plain .npy array ({err})") from err
        if str(arr.dtype) != info.get("dtype") or list(arr.shape) != info.get("shape"):
            raise bad(f"array {name!r} has dtype {arr.dtype} shape {list(arr.shape)}, recorded "
                      f"{info.get('dtype')} {info.get('shape')}")
        arrays[name] = arr
    try:
        cores = []
        for d in doc["cores"]:
            d = dict(d)
            d["weights"], d["biases"] = arrays[d["weights"]], arrays[d["biases"]]
            d["destinations"] = tuple(Destination(**x) for x in d["destinations"])
            for key in ("input_shape", "output_shape", "stride", "padding"):
                d[key] = tuple(int(v) for v in d[key])
            cores.append(CoreConfig(**d))
        inp = dict(doc["input"])
        inp["shape"] = tuple(inp["shape"])
        inp["destinations"] = tuple(inp["destinations"])
        image = ChipImage(
            input=InputConfig(**inp),
            cores=tuple(cores),
            output_core=int(doc["output_core"]),
            readout=ReadoutConfig(**doc["readout"]) if doc.get("readout") else None,
            chip=doc["chip"],
            layer_scales=tuple(float(s) for s in doc.get("layer_scales", ())),
            source=doc.get("source", ""),
            notes=dict(doc.get("notes", {})),
            format_version=version,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise bad(f"malformed field ({type(err).__name__}: {err})") from err
    check_chip_image(image, limits=limits, source=str(path))
    return image


# ---- validation --------------------------------------------------------------------------
def chip_image_violations(image: ChipImage, limits: ChipLimits = SPECK2E) -> list[Violation]:
    """Every way ``image`` breaks ``limits`` (empty list when it fits)."""
    out: list[Violation] = []

    def add(where: str, fld: str, value: Any, limit: str, fix: str) -> None:
        out.append(Violation(where, fld, value, limit, fix))

    ids = [c.core for c in image.cores]
    if len(set(ids)) != len(ids):
        add("chip image", "cores", ids, "each core used once", "assign each layer its own core")
    if len(image.cores) > limits.n_cores:
        add("chip image", "number of cores", len(image.cores), f"<= {limits.n_cores}",
            "use fewer layers")
    c_in, h_in, w_in = image.input.shape
    if c_in > limits.max_dvs_channels:
        add("input", "channels", c_in, f"<= {limits.max_dvs_channels}", "merge polarities")
    if max(h_in, w_in) > limits.max_input_size:
        add("input", "size", (h_in, w_in), f"<= {limits.max_input_size}", "pool or crop the input")
    if image.input.pooling not in limits.poolings:
        add("input", "pooling", image.input.pooling, f"one of {limits.poolings}", "use 1, 2 or 4")
    if not image.input.destinations:
        add("input", "destinations", (), ">= 1 core", "connect the input to the first core")
    wlo, whi = limits.weight_range
    blo, bhi = limits.bias_range
    slo, shi = limits.state_range
    for c in image.cores:
        where = f"core {c.core} (layer {c.layer} {c.name})"
        if not 0 <= c.core < limits.n_cores:
            add(where, "core id", c.core, f"0..{limits.n_cores - 1}", "use an existing core")
            continue
        if c.weights.dtype != np.int8:
            add(where, "weights dtype", str(c.weights.dtype), "int8", "discretize the layer")
        if c.weights.ndim != 4 or c.weights.shape[2] != c.weights.shape[3] or \
                c.weights.shape[2] != c.kernel_size:
            add(where, "weights shape", tuple(c.weights.shape),
                f"[c_out, c_in, {c.kernel_size}, {c.kernel_size}]", "re-export")
            continue
        w64 = c.weights.astype(np.int64)
        if w64.size and (w64.min() < wlo or w64.max() > whi):
            add(where, "weight value", (int(w64.min()), int(w64.max())), f"{wlo}..{whi}", "re-discretize")
        if c.biases.shape != (c.weights.shape[0],):
            add(where, "biases shape", tuple(c.biases.shape), f"({c.weights.shape[0]},)", "re-export")
        elif c.biases.size and (int(c.biases.min()) < blo or int(c.biases.max()) > bhi):
            add(where, "bias value", (int(c.biases.min()), int(c.biases.max())), f"{blo}..{bhi}",
                "re-discretize")
        if c.biases.size and np.any(c.biases != 0) and not c.leak_enabled:
            add(where, "biases", "non-zero", "zero unless leak_enabled", "set leak_enabled or zero them")
        c_out, ci, k, _ = c.weights.shape
        if c.output_shape[0] != c_out or c.input_shape[0] != ci:
            add(where, "channels", (c.input_shape[0], c.output_shape[0]),
                f"weights say ({ci}, {c_out})", "re-export")
        if c.input_shape[0] > limits.max_features:
            add(where, "input features", c.input_shape[0], f"<= {limits.max_features}", "fewer channels")
        if c_out > limits.max_features:
            add(where, "output features", c_out, f"<= {limits.max_features}", "fewer channels")
        if max(c.input_shape[1:]) > limits.max_input_size:
            add(where, "input size", c.input_shape[1:], f"<= {limits.max_input_size}", "pool earlier")
        if max(c.output_shape[1:]) > limits.max_output_size:
            add(where, "output size", c.output_shape[1:], f"<= {limits.max_output_size}",
                "add stride or pooling before this layer")
        if k > limits.max_kernel_size:
            add(where, "kernel_size", k, f"<= {limits.max_kernel_size}", "split the convolution")
        for axis, s in zip("yx", c.stride):
            if s not in limits.strides:
                add(where, f"stride_{axis}", s, f"one of {limits.strides}", "use 1, 2, 4 or 8")
        for axis, p in zip("yx", c.padding):
            if not 0 <= p <= limits.max_padding:
                add(where, f"padding_{axis}", p, f"0..{limits.max_padding}", "reduce the padding")
        exp_h = (c.input_shape[1] + 2 * c.padding[0] - k) // c.stride[0] + 1
        exp_w = (c.input_shape[2] + 2 * c.padding[1] - k) // c.stride[1] + 1
        if (exp_h, exp_w) != tuple(c.output_shape[1:]):
            add(where, "output_shape", c.output_shape[1:], f"({exp_h}, {exp_w}) from the geometry",
                "re-export")
        if not slo <= c.threshold_low < c.threshold_high <= shi:
            add(where, "thresholds", (c.threshold_low, c.threshold_high),
                f"{slo} <= low < high <= {shi}", "re-discretize")
        if c.reset_mode not in ("subtract", "zero"):
            add(where, "reset_mode", c.reset_mode, "subtract or zero", "re-export")
        if len(c.destinations) > limits.max_destinations:
            add(where, "destinations", len(c.destinations), f"<= {limits.max_destinations}",
                "remove a branch")
        for d in c.destinations:
            if d.pooling not in limits.poolings:
                add(where, "pooling", d.pooling, f"one of {limits.poolings}", "use 1, 2 or 4")
            if d.core not in ids:
                add(where, "destination core", d.core, f"a used core {ids}", "re-export")
                continue
            dst = image.core(d.core)
            pooled = (c_out, c.output_shape[1] // d.pooling, c.output_shape[2] // d.pooling)
            if dst.input_shape != pooled:
                add(where, "destination shape", pooled, f"core {d.core} expects {dst.input_shape}",
                    "re-export")
        mem = c.memory()
        for kind, cap in (("kernel", limits.kernel_memory[c.core]),
                          ("neuron", limits.neuron_memory[c.core]),
                          ("bias", limits.bias_memory[c.core])):
            if mem[kind] > cap:
                add(where, f"{kind} memory", mem[kind], f"<= {cap} entries on core {c.core}",
                    "map the layer to a larger core or shrink it")
    if image.output_core not in ids:
        add("chip image", "output_core", image.output_core, f"a used core {ids}", "re-export")
    for d in image.input.destinations:
        if d not in ids:
            add("input", "destination core", d, f"a used core {ids}", "re-export")
    if image.readout is not None:
        if not 1 <= image.readout.num_classes <= limits.readout_classes:
            add("readout", "num_classes", image.readout.num_classes,
                f"1..{limits.readout_classes}", "read the output core's events instead")
        elif image.output_core in ids:
            n_ch = image.core(image.output_core).output_shape[0]
            need = image.readout.channel_of_class(image.readout.num_classes - 1) + 1
            if need > n_ch:
                add("readout", "channels", n_ch, f">= {need} output channels for the readout mapping",
                    "place class k on channel 4*(k-1) (Speck2e erratum) or disable the readout")
    return out


def check_chip_image(image: ChipImage, *, limits: ChipLimits = SPECK2E, source: str = "chip image") -> ChipImage:
    """Raise :class:`ChipConstraintError` listing every violation; return ``image`` if it fits."""
    violations = chip_image_violations(image, limits)
    if violations:
        raise ChipConstraintError(violations, chip=f"{limits.name} ({source})")
    return image


def with_core(image: ChipImage, core_id: int, **changes: Any) -> ChipImage:
    """A copy of ``image`` with fields of core ``core_id`` replaced (images are immutable)."""
    cores = tuple(replace(c, **changes) if c.core == core_id else c for c in image.cores)
    return replace(image, cores=cores)
