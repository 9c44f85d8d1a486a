"""ChipImage: the integer description of one Speck2e deployment.

A ChipImage is what the converter produces and what every backend consumes (asynchronous
simulator, time-binned sinabs backend, Speck2e devkit). It holds integers only, needs neither
torch nor samna, and is saved as one zip file (conventionally ``*.chip``) containing

- ``chip_image.json``: every scalar field, ``format_version`` (2), for each array its
  dtype, shape and sha256, and ``document_sha256``: the sha256 of the document's canonical
  JSON (sorted keys, no spaces, without this key), so editing any field is detected;
- ``arrays/<name>.npy``: the integer arrays (loaded with ``allow_pickle=False``).

Loading reads no member it does not expect and none larger than its recorded shape allows,
checks every field's exact type, length and bounds before use (errors name the field path,
e.g. ``cores[0].stride``), then the hashes, then :func:`check_chip_image`
(:mod:`flexsnn.converters.chip_check`). Version-1 images (no document hash) load only with
``trust_edits=True`` (``--trust-edits``); otherwise re-export them.

Layouts: weights ``[c_out, c_in, kh, kw]`` int8; biases ``[c_out]`` int16 (values within
the chip's bias bits); shapes are ``(C, H, W)``; stride and padding are ``(y, x)``.
A core's output map is the convolution's output before pooling; each destination applies its
own sum pooling to the events on their way to the destination core.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
import zlib
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
from flexsnn.converters.chip_check import check_chip_image, chip_image_violations  # noqa: F401  (re-exported)
from flexsnn import fields
from flexsnn.errors import CheckpointError
from flexsnn.fields import canonical_sha256
from flexsnn.io_utils import atomic_path

FORMAT_VERSION = 2  # 2: document_sha256 covers the whole JSON document (1 had array hashes only)
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
        """Write the image atomically to ``path`` (a zip; ``.chip`` by convention).

        The JSON document records each array's sha256 and, in ``document_sha256``, the sha256
        of its own canonical JSON, so an edit to any field or array is refused on load.
        """
        check_chip_image(self)
        arrays: dict[str, np.ndarray] = {}
        cores_json = []
        for c in self.cores:
            w_name, b_name = f"core{c.core}_weights", f"core{c.core}_biases"
            arrays[w_name] = np.ascontiguousarray(c.weights, dtype=np.int8)
            arrays[b_name] = np.ascontiguousarray(c.biases, dtype=np.int16)
            cores_json.append(_plain({
                "core": c.core, "layer": c.layer, "name": c.name, "input_shape": list(c.input_shape),
                "output_shape": list(c.output_shape), "kernel_size": c.kernel_size,
                "stride": list(c.stride), "padding": list(c.padding), "weights": w_name, "biases": b_name,
                "threshold_high": c.threshold_high, "threshold_low": c.threshold_low,
                "reset_mode": c.reset_mode, "leak_enabled": c.leak_enabled,
                "destinations": [{"core": d.core, "pooling": d.pooling} for d in c.destinations]}))
        blobs = {name: _npy_bytes(a) for name, a in arrays.items()}
        doc = _plain({
            "magic": MAGIC,
            "format_version": FORMAT_VERSION,
            "chip": self.chip,
            "input": {"shape": list(self.input.shape), "destinations": list(self.input.destinations),
                      "pooling": self.input.pooling, "merge_polarities": self.input.merge_polarities},
            "cores": cores_json,
            "output_core": self.output_core,
            "readout": asdict(self.readout) if self.readout else None,
            "layer_scales": [float(s) for s in self.layer_scales],
            "source": self.source,
            "notes": {str(k): str(v) for k, v in self.notes.items()},
            "arrays": {
                name: {"dtype": str(arrays[name].dtype), "shape": list(arrays[name].shape),
                       "sha256": hashlib.sha256(blob).hexdigest()}
                for name, blob in blobs.items()
            },
        })
        doc[DOC_HASH] = canonical_sha256(doc, exclude=DOC_HASH)
        with atomic_path(path) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                # fixed member dates: the same image always gives the same bytes (and sha256)
                zf.writestr(_member(JSON_MEMBER), json.dumps(doc, indent=2))
                for name, blob in blobs.items():
                    zf.writestr(_member(f"arrays/{name}.npy"), blob)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, *, limits: ChipLimits | None = None, trust_edits: bool = False) -> "ChipImage":
        """Read and fully check a chip image: size of every member before reading it, schema
        (every field's type, length and bounds), version, document and array hashes, then
        :func:`check_chip_image`.

        ``limits``: the device to check against; None (default) takes the one the image names in
        its ``chip`` field (speck2e, speck2f, dynapcnn: :mod:`flexsnn.converters.chips`).
        ``trust_edits`` accepts a document whose hash no longer matches (a hand-edited image)
        and a version-1 image (which has no document hash); every other check still runs.

        Raises:
            CheckpointError: unreadable, foreign, tampered, malformed or oversized file; names
                the field path (``cores[0].stride``), its value and the fix.
            ChipConstraintError: the file is intact but breaks a chip limit.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(path, "chip image not found", "export one with `flexsnn export`")
        try:
            with zipfile.ZipFile(path) as zf:
                doc = fields.json_loads(_read_member(zf, JSON_MEMBER, MAX_JSON_BYTES, path), path)
                reader = fields.FieldReader(path, REEXPORT)
                if not isinstance(doc, dict) or doc.get("magic") != MAGIC:
                    raise CheckpointError(path, f"missing magic {MAGIC!r}: not a flexsnn chip image",
                                          "pass a file written by `flexsnn export`")
                _check_version_and_hash(doc, path, trust_edits)
                infos = _array_infos(reader, doc.get("arrays"))
                names = set(zf.namelist())
                extra = sorted(names - {JSON_MEMBER} - {f"arrays/{n}.npy" for n in infos})
                if extra:
                    raise CheckpointError(path, f"unexpected member {extra[0]!r} in the chip image (not read)",
                                          "the file was altered; " + REEXPORT, field="members", value=extra)
                members = {}
                for name, (dtype, shape, _sha) in infos.items():
                    limit = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize + NPY_HEADER_MAX
                    members[name] = _read_member(zf, f"arrays/{name}.npy", limit, path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, OSError, EOFError, RuntimeError,
                NotImplementedError, ValueError, zlib.error) as err:
            raise CheckpointError(path, f"not a readable chip image ({type(err).__name__}: "
                                  f"{fields.short(str(err), 160)})", REEXPORT) from err
        return _from_document(doc, members, infos, path, limits)


MAX_JSON_BYTES = 64 << 20  # a chip image's JSON is a few kB; refuse a bomb before reading it
MAX_ARRAY_ELEMENTS = 1 << 24  # more than any Speck2e core's kernel memory
NPY_HEADER_MAX = 4096
REEXPORT = "re-export it with `flexsnn export --checkpoint CKPT --out FILE.chip`"
DOC_HASH = "document_sha256"


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _plain(obj: Any) -> Any:
    """``obj`` with NumPy scalars turned into Python ones (JSON-able, hash-stable)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _read_member(zf: zipfile.ZipFile, name: str, max_bytes: int, path: Path) -> bytes:
    """One zip member, refused by its recorded size before it is decompressed, and read with a
    cap (a member whose header lies about its size cannot grow past ``max_bytes``)."""
    info = zf.getinfo(name)  # KeyError: member missing
    if info.file_size > max_bytes:
        raise CheckpointError(path, f"member {name!r} is {info.file_size} bytes, more than the {max_bytes} "
                              "its header allows (not read)", REEXPORT, field=name, value=info.file_size)
    with zf.open(info) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise CheckpointError(path, f"member {name!r} is larger than {max_bytes} bytes (not read)", REEXPORT,
                              field=name)
    return data


def _check_version_and_hash(doc: dict, path: Path, trust_edits: bool) -> None:
    version = doc.get("format_version")
    if version == 1:
        if not trust_edits:
            raise CheckpointError(path, "format_version 1: this chip image has no document hash, so edits to "
                                  "its scalar fields cannot be detected",
                                  f"{REEXPORT} (writes version {FORMAT_VERSION}), or pass --trust-edits to "
                                  "read it anyway", field="format_version", value=1)
        return
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise CheckpointError(path, f"format_version {fields.short(version)} is not supported (this flexsnn "
                              f"reads version {FORMAT_VERSION}, and 1 with --trust-edits)",
                              "re-export the checkpoint with this flexsnn version", field="format_version",
                              value=version)
    recorded = doc.get(DOC_HASH)
    try:
        actual = canonical_sha256(doc, exclude=DOC_HASH)
    except (ValueError, TypeError) as err:
        actual = f"<unhashable: {err}>"
    if recorded != actual and not trust_edits:
        raise CheckpointError(path, f"tampered: the document's sha256 {actual[:12]}... does not match the "
                              f"recorded {DOC_HASH} {str(recorded)[:12]}... (a field was edited after export)",
                              f"{REEXPORT}, or pass --trust-edits if you edited it on purpose",
                              field=DOC_HASH, value=recorded)


def _array_infos(r: fields.FieldReader, raw: Any) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """``arrays`` of the document: name -> (dtype, shape, sha256), every field checked."""
    r.obj(raw, "arrays", extra_ok=True)
    if len(raw) > 64:
        r.fail("arrays", f"<{len(raw)} entries>", "at most 64 arrays (2 per core)")
    out = {}
    total = 0
    for name, info in raw.items():
        where = f"arrays.{name}"
        if not (name.replace("_", "").isalnum() and len(name) <= 64):
            r.fail(where, name, "an array name of letters, digits and '_'")
        r.obj(info, where, required=("dtype", "shape", "sha256"))
        dtype = r.str(info["dtype"], f"{where}.dtype", choices=("int8", "int16"))
        shape = r.ints(info["shape"], f"{where}.shape", lo=0, hi=MAX_ARRAY_ELEMENTS, max_len=4)
        sha = r.str(info["sha256"], f"{where}.sha256", max_len=64)
        total += math.prod(shape)
        if total > MAX_ARRAY_ELEMENTS:
            r.fail(f"{where}.shape", list(shape), f"at most {MAX_ARRAY_ELEMENTS} elements in all arrays")
        out[name] = (dtype, shape, sha)
    return out


def _load_arrays(members: dict[str, bytes], infos: dict, path: Path) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, (dtype, shape, sha) in infos.items():
        blob = members[name]
        if hashlib.sha256(blob).hexdigest() != sha:
            raise CheckpointError(path, f"sha256 of array {name!r} does not match the recorded hash",
                                  REEXPORT, field=f"arrays.{name}.sha256", value=sha)
        try:
            arr = np.load(io.BytesIO(blob), allow_pickle=False)
        except Exception as err:  # numpy's header parser raises assorted types on garbage (tokenize.TokenError, ...)
            raise CheckpointError(path, f"array {name!r} is not a plain .npy array ({err})", REEXPORT,
                                  field=f"arrays.{name}") from err
        if str(arr.dtype) != dtype or tuple(arr.shape) != shape:
            raise CheckpointError(path, f"array {name!r} has dtype {arr.dtype} shape {list(arr.shape)}, "
                                  f"recorded {dtype} {list(shape)}", REEXPORT, field=f"arrays.{name}")
        arrays[name] = arr
    return arrays


CORE_FIELDS = ("core", "layer", "name", "input_shape", "output_shape", "kernel_size", "stride", "padding",
               "weights", "biases", "threshold_high", "threshold_low", "reset_mode", "leak_enabled",
               "destinations")
TOP_FIELDS = ("magic", "format_version", "chip", "input", "cores", "output_core", "arrays")
TOP_OPTIONAL = ("readout", "layer_scales", "source", "notes", DOC_HASH)
SMALL = 1 << 16  # bound of ids, shapes, kernel sizes: far above the chip's, far below overflow


def _read_core(r: fields.FieldReader, raw: Any, i: int, arrays: dict[str, np.ndarray]) -> CoreConfig:
    f = f"cores[{i}]"
    r.obj(raw, f, required=CORE_FIELDS)
    s_lo, s_hi = -(2 ** 31), 2 ** 31 - 1

    def array(key: str) -> np.ndarray:
        name = r.str(raw[key], f"{f}.{key}", max_len=64)
        if name not in arrays:
            r.fail(f"{f}.{key}", name, f"the name of an array in 'arrays' ({sorted(arrays)})")
        return arrays[name]

    dests = r.list(raw["destinations"], f"{f}.destinations", max_len=8)
    destinations = []
    for j, d in enumerate(dests):
        r.obj(d, f"{f}.destinations[{j}]", required=("core", "pooling"))
        destinations.append(Destination(core=r.int(d["core"], f"{f}.destinations[{j}].core", 0, SMALL),
                                        pooling=r.int(d["pooling"], f"{f}.destinations[{j}].pooling", 1, SMALL)))
    return CoreConfig(
        core=r.int(raw["core"], f"{f}.core", 0, SMALL), layer=r.int(raw["layer"], f"{f}.layer", -1, SMALL),
        name=r.str(raw["name"], f"{f}.name", max_len=256),
        input_shape=r.ints(raw["input_shape"], f"{f}.input_shape", length=3, lo=0, hi=SMALL),  # type: ignore[arg-type]
        output_shape=r.ints(raw["output_shape"], f"{f}.output_shape", length=3, lo=-SMALL, hi=SMALL),  # type: ignore[arg-type]
        kernel_size=r.int(raw["kernel_size"], f"{f}.kernel_size", 1, SMALL),
        stride=r.ints(raw["stride"], f"{f}.stride", length=2, lo=1, hi=SMALL),  # type: ignore[arg-type]
        padding=r.ints(raw["padding"], f"{f}.padding", length=2, lo=0, hi=SMALL),  # type: ignore[arg-type]
        weights=array("weights"), biases=array("biases"),
        threshold_high=r.int(raw["threshold_high"], f"{f}.threshold_high", s_lo, s_hi),
        threshold_low=r.int(raw["threshold_low"], f"{f}.threshold_low", s_lo, s_hi),
        reset_mode=r.str(raw["reset_mode"], f"{f}.reset_mode", choices=("subtract", "zero")),  # type: ignore[arg-type]
        leak_enabled=r.bool(raw["leak_enabled"], f"{f}.leak_enabled"),
        destinations=tuple(destinations),
    )


def _from_document(doc: dict, members: dict[str, bytes], infos: dict, path: Path,
                   limits: ChipLimits | None) -> ChipImage:
    r = fields.FieldReader(path, REEXPORT)
    r.obj(doc, "", required=TOP_FIELDS, optional=TOP_OPTIONAL)
    arrays = _load_arrays(members, infos, path)
    inp = r.obj(doc["input"], "input", required=("shape", "destinations", "pooling", "merge_polarities"))
    cores = tuple(_read_core(r, c, i, arrays) for i, c in enumerate(r.list(doc["cores"], "cores", max_len=64)))
    readout = None
    if doc.get("readout") is not None:
        ro = r.obj(doc["readout"], "readout", required=("num_classes", "channel_erratum"))
        readout = ReadoutConfig(num_classes=r.int(ro["num_classes"], "readout.num_classes", 0, SMALL),
                                channel_erratum=r.bool(ro["channel_erratum"], "readout.channel_erratum"))
    notes = r.obj(doc.get("notes", {}), "notes", extra_ok=True)
    from flexsnn.converters.chips import PROFILES, chip_limits

    chip = r.str(doc["chip"], "chip", choices=tuple(PROFILES))
    limits = limits or chip_limits(chip)  # the device the image was exported for, unless asked otherwise
    image = ChipImage(
        input=InputConfig(
            shape=r.ints(inp["shape"], "input.shape", length=3, lo=0, hi=SMALL),  # type: ignore[arg-type]
            destinations=r.ints(inp["destinations"], "input.destinations", lo=0, hi=SMALL, max_len=8),
            pooling=r.int(inp["pooling"], "input.pooling", 1, SMALL),
            merge_polarities=r.bool(inp["merge_polarities"], "input.merge_polarities")),
        cores=cores,
        output_core=r.int(doc["output_core"], "output_core", 0, SMALL),
        readout=readout,
        chip=chip,
        layer_scales=tuple(r.float(s, f"layer_scales[{i}]")
                           for i, s in enumerate(r.list(doc.get("layer_scales", []), "layer_scales", max_len=64))),
        source=r.str(doc.get("source", ""), "source"),
        notes={r.str(k, "notes", max_len=256): r.str(v, f"notes.{k}") for k, v in notes.items()},
        format_version=int(doc["format_version"]),
    )
    check_chip_image(image, limits=limits, source=str(path))
    return image


def with_core(image: ChipImage, core_id: int, **changes: Any) -> ChipImage:
    """A copy of ``image`` with fields of core ``core_id`` replaced (images are immutable)."""
    cores = tuple(replace(c, **changes) if c.core == core_id else c for c in image.cores)
    return replace(image, cores=cores)
