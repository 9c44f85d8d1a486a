"""The one layout-assertion helper of the test suite."""


def assert_layout(tensor, shape: tuple, *, name: str = "tensor") -> None:
    """Assert ``tensor.shape == shape``; ``None`` entries in ``shape`` match any size."""
    actual = tuple(tensor.shape)
    assert len(actual) == len(shape) and all(s is None or s == a for s, a in zip(shape, actual)), (
        f"{name}: shape {actual} does not match expected layout {shape}"
    )
