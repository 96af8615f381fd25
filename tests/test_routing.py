"""The router against numpy's own unravel/transposition (independent maths)."""

from __future__ import annotations

import numpy as np
import pytest

from ome_stream import AcquisitionSettings, Dimension, dims_from_standard_axes
from ome_stream._routing import FrameRouter


def _router(
    sizes: dict[str, object], root: str = "a.ome.zarr", **kw: object
) -> FrameRouter:
    dims = dims_from_standard_axes(sizes)  # type: ignore[arg-type]
    settings = AcquisitionSettings(root_path=root, dimensions=dims, dtype="uint8", **kw)  # type: ignore[arg-type]
    return FrameRouter(settings)


@pytest.mark.parametrize(
    ("sizes", "storage"),
    [
        ({"t": 2, "c": 3, "z": 4, "y": 2, "x": 2}, "tcz"),
        ({"t": 2, "z": 4, "c": 3, "y": 2, "x": 2}, "tcz"),
        ({"z": 4, "c": 3, "t": 2, "y": 2, "x": 2}, "tcz"),
        ({"c": 3, "z": 4, "y": 2, "x": 2}, "cz"),
    ],
)
def test_zarr_ome_order_matches_numpy_transpose(
    sizes: dict[str, int], storage: str
) -> None:
    router = _router(sizes)
    names = [k for k in sizes if k not in "yx"]
    shape = [sizes[k] for k in names]
    n = int(np.prod(shape))
    # where numpy puts frame i after transposing acquisition -> storage order
    acquisition = np.arange(n).reshape(shape)
    stored = np.transpose(acquisition, [names.index(a) for a in storage])
    for target in router:
        assert stored[target.storage_index] == target.frame_number
    assert target.frame_number == n - 1


def test_positions_split_out_wherever_they_are() -> None:
    router = _router({"t": 2, "c": 2, "p": ["a", "b", "c"], "z": 2, "y": 2, "x": 2})
    seen = {}
    for target in router:
        t, c, p, z = np.unravel_index(target.frame_number, (2, 2, 3, 2))
        assert target.position_index == p
        assert target.storage_index == (t, c, z)
        seen[(target.position_index, target.storage_index)] = True
    assert len(seen) == 24


def test_unbounded_first_axis_never_ends() -> None:
    router = _router({"t": None, "p": ["a", "b"], "c": 3, "y": 2, "x": 2})
    assert router.num_frames is None
    target = router.route(1000)
    t, rem = divmod(1000, 6)
    p, c = divmod(rem, 3)
    assert (target.position_index, target.storage_index) == (p, (t, c))


def test_route_past_the_end_raises() -> None:
    router = _router({"t": 2, "y": 2, "x": 2})
    with pytest.raises(IndexError):
        router.route(2)


def test_acquisition_storage_order_is_identity() -> None:
    router = _router({"z": 3, "t": 2, "y": 2, "x": 2}, storage_order="acquisition")
    assert [t.storage_index for t in router] == [
        (z, t) for z in range(3) for t in range(2)
    ]


def test_single_frame_without_loop_dimensions() -> None:
    settings = AcquisitionSettings(
        root_path="a.ome.zarr",
        dimensions=[Dimension(name="y", count=2), Dimension(name="x", count=2)],
        dtype="uint8",
    )
    router = FrameRouter(settings)
    assert [t.storage_index for t in router] == [()]


def test_two_position_dimensions_route_to_their_product() -> None:
    settings = AcquisitionSettings(
        root_path="",
        format="scratch",
        dtype="uint8",
        dimensions=[
            Dimension(name="t", count=2),
            Dimension(name="p", coords=["a", "b", "c"]),
            Dimension(name="z", count=2),
            Dimension(name="cam", type="position", coords=["L", "R"]),
            Dimension(name="y", count=2),
            Dimension(name="x", count=2),
        ],
    )
    router = FrameRouter(settings)
    got = [(t.position_index, t.storage_index) for t in router]
    want = [
        (p * 2 + cam, (t, z))
        for t in range(2)
        for p in range(3)
        for z in range(2)
        for cam in range(2)
    ]
    assert got == want
