"""pytest plumbing of the hardware-in-the-loop suite.

Options (``pytest hwtests --help``): ``--backend reference|sim|speck2e|both`` (default
``sim``), the suite config ``--suite`` (default ``hwtests/suite.json``), ``--chip`` (an exported
chip image for the accuracy and chip-agreement tests), ``--checkpoint`` (a trained speck-iaf
checkpoint; without --chip or it a tiny model is trained in a session fixture), ``--data``
(an N-MNIST folder; default the nmnist-small subset), ``--hw-samples``, ``--device-index`` /
``--device-serial`` (which devkit) and ``--hw-report DIR`` (write ``hwtest_report.json`` and
``hwtest_report.md`` there: outcome per test, accuracy, gap to the simulator, throughput,
latency-to-decision).

Every test that takes the ``backend_name`` fixture runs once per selected backend. The
``speck2e`` parameter skips with the exact reason when samna is unusable or no devkit is found.

Each backend is compared with a run it was not derived from (:func:`comparison_backend`): the
simulator (``sim``) with the independent plain-Python reference, the reference and the devkit
with the simulator. So the suite can fail on a machine without a devkit.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from flexsnn.hwtests.report import collect_outcome, write_reports

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_SUITE = HERE / "suite.json"
NMNIST_SMALL = Path(os.environ.get("FLEXSNN_NMNIST_SMALL", REPO.parent / "shared" / "data" / "nmnist-small"))
BACKENDS = {"reference": ("reference",), "sim": ("sim",), "speck2e": ("speck2e",), "both": ("sim", "speck2e")}
#: What each backend is compared with (make_backend names): never a run derived from itself.
COMPARISON = {"sim": "reference", "reference": "async", "speck2e": "async"}

#: Per-session collections for the report (reset in pytest_configure): test id -> outcome,
#: test id -> metrics recorded through the ``hw_metrics`` fixture.
_STATE: dict[str, dict] = {"outcomes": {}, "metrics": {}}


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("flexsnn-hw", "flexsnn hardware-in-the-loop suite")
    g.addoption("--backend", choices=sorted(BACKENDS), default="sim",
                help="backend(s) under test: reference (independent plain-Python simulator standing in for "
                     "the device), sim (asynchronous simulator), speck2e (devkit) or both (sim and speck2e)")
    g.addoption("--chip", default=None, help="exported chip image (.chip) for the accuracy and chip tests")
    g.addoption("--suite", default=str(DEFAULT_SUITE), help="suite config JSON (thresholds, sizes)")
    g.addoption("--checkpoint", default=None, help="trained checkpoint (.safetensors) for the accuracy test")
    g.addoption("--data", default=None, help="N-MNIST folder (original layout); default: nmnist-small")
    g.addoption("--hw-samples", type=int, default=None, help="test samples for the accuracy test")
    g.addoption("--device-index", type=int, default=None, help="which Speck2e devkit (0-based)")
    g.addoption("--device-serial", default=None, help="Speck2e devkit serial number")
    g.addoption("--hw-report", default=None, help="folder for hwtest_report.json / .md")


def pytest_configure(config: pytest.Config) -> None:
    _STATE["outcomes"], _STATE["metrics"] = {}, {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        names = BACKENDS[metafunc.config.getoption("--backend")]
        metafunc.parametrize("backend_name", names, ids=list(names))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    collect_outcome(_STATE["outcomes"], report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = session.config.getoption("--hw-report")
    if out:
        write_reports(Path(out), backend=session.config.getoption("--backend"),
                      suite=_load_suite(session.config), outcomes=_STATE["outcomes"],
                      metrics=_STATE["metrics"], exitstatus=int(exitstatus))


# ---- fixtures ------------------------------------------------------------------------------
def _load_suite(config: pytest.Config) -> dict:
    path = Path(config.getoption("--suite"))
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise pytest.UsageError(f"--suite {path}: cannot read the suite config ({err})") from err


@pytest.fixture(scope="session")
def suite(pytestconfig: pytest.Config) -> dict:
    """The suite config (``--suite``, default hwtests/suite.json)."""
    return _load_suite(pytestconfig)


@pytest.fixture
def hw_metrics(request: pytest.FixtureRequest) -> dict:
    """A dict whose entries go into the report under this test's id."""
    return _STATE["metrics"].setdefault(request.node.nodeid, {})


@pytest.fixture(scope="session")
def devkit_available() -> tuple[bool, str]:
    """(usable, reason) for a Speck2e devkit, decided once per session."""
    from flexsnn.deploy.speck2e import devkit_status

    return devkit_status()


@pytest.fixture
def open_backend(backend_name: str, suite: dict, pytestconfig: pytest.Config,
                 devkit_available: tuple[bool, str]) -> Callable[[Any], Any]:
    """``open_backend(image, record_all=True)`` -> a loaded backend of the selected kind
    (closed after the test); ``record_all`` returns every core's events, else the output core's.

    Built by :func:`flexsnn.deploy.factory.make_backend`: ``sim`` is the asynchronous simulator
    (``"async"``); ``speck2e`` the devkit (skipped with the reason when unusable).
    """
    from flexsnn.deploy.factory import make_backend

    opened: list = []

    def make(image, *, record_all: bool = True):
        if backend_name == "speck2e":
            ok, reason = devkit_available
            if not ok:
                pytest.skip(f"speck2e devkit unavailable: {reason}")
            backend = make_backend("speck2e", image=image, device_index=pytestconfig.getoption("--device-index"),
                                   serial=pytestconfig.getoption("--device-serial"),
                                   monitor="all" if record_all else "output", **suite.get("speck2e", {}))
        elif backend_name == "reference":
            backend = make_backend("reference", image=image, record_all=record_all)
        else:
            backend = make_backend("async", image=image, record_all=record_all)
        opened.append(backend)
        return backend

    yield make
    for b in opened:
        b.close()


@pytest.fixture(scope="session")
def data_root(pytestconfig: pytest.Config) -> Path:
    """The N-MNIST folder of the accuracy test (``--data`` or nmnist-small; skips when absent)."""
    given = pytestconfig.getoption("--data")
    root = Path(given) if given else NMNIST_SMALL
    if not root.is_dir():
        pytest.skip(f"no N-MNIST data at {root} (pass --data DIR with an N-MNIST folder)")
    return root


@pytest.fixture(scope="session")
def nmnist_test_set(data_root: Path, suite: dict, pytestconfig: pytest.Config):
    """The accuracy test's samples (class-balanced ``limit``, split seed from the suite)."""
    from flexsnn.data.registry import load_event_dataset

    acc = suite["accuracy"]
    n = pytestconfig.getoption("--hw-samples") or acc["samples"]
    return load_event_dataset("nmnist", split="test", root=data_root, limit=int(n), seed=int(acc["dataset_seed"]))


@pytest.fixture(scope="session")
def trained_checkpoint(pytestconfig: pytest.Config, suite: dict, data_root: Path, nmnist_test_set,
                       tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``--checkpoint``, else a speck3c1fc trained in seconds on a few hundred samples
    (no BN, so the export needs no leak; accuracy is low: see suite.json's threshold)."""
    given = pytestconfig.getoption("--checkpoint")
    if given:
        path = Path(given)
        if not path.is_file():
            raise pytest.UsageError(f"--checkpoint {path} does not exist")
        return path
    from flexsnn.data.registry import load_event_dataset
    from flexsnn.training.schemes import SchemeConfig
    from flexsnn.training.trainer import TrainConfig, train

    q = suite["quick_train"]
    train_data = load_event_dataset("nmnist", split="train", root=data_root, limit=int(q["train_samples"]),
                                    seed=int(q["seed"]))
    cfg = TrainConfig(model="speck3c1fc", model_kwargs={"batch_norm": False}, dataset="nmnist",
                      root=str(data_root), T=int(q["T"]), scheme=SchemeConfig(T=int(q["T"])),
                      epochs=int(q["epochs"]), batch_size=int(q["batch_size"]), lr=float(q["lr"]),
                      seed=int(q["seed"]), bn_calibration_batches=0, device="cpu", amp=False,
                      eval_every=int(q["epochs"]))
    out = tmp_path_factory.mktemp("hw_quick_train")
    t0 = time.perf_counter()
    result = train(cfg, out_dir=out, train_data=train_data, test_data=nmnist_test_set)
    _STATE["metrics"].setdefault("session", {})["quick_train_s"] = round(time.perf_counter() - t0, 2)
    return Path(result.final_path)


@pytest.fixture(scope="session")
def given_chip(pytestconfig: pytest.Config):
    """The ``--chip`` image (loaded and fully checked), or None."""
    given = pytestconfig.getoption("--chip")
    if not given:
        return None
    from flexsnn.converters.chip_image import ChipImage
    from flexsnn.errors import FlexsnnError

    try:
        return ChipImage.load(given)
    except FlexsnnError as err:
        raise pytest.UsageError(f"--chip: {err}") from err


@pytest.fixture(scope="session")
def exported_image(given_chip, request: pytest.FixtureRequest):
    """``--chip``, else the checkpoint (``--checkpoint`` or a quickly trained one) exported to
    a ChipImage (flexsnn.converters.export)."""
    if given_chip is not None:
        return given_chip
    from flexsnn.converters.export import export_chip_image

    image, _report = export_chip_image(request.getfixturevalue("trained_checkpoint"))
    return image


@pytest.fixture
def comparison_backend(backend_name: str) -> Callable[[Any], Any]:
    """``comparison_backend(image, record_all=True)`` -> a backend the one under test was not
    derived from, loaded with ``image`` (:data:`COMPARISON`): the independent reference for
    ``sim``, the simulator for ``reference`` and ``speck2e``. Its ``name`` says which."""
    from flexsnn.deploy.factory import make_backend

    def make(image, *, record_all: bool = True):
        return make_backend(COMPARISON[backend_name], image=image, record_all=record_all)

    return make
