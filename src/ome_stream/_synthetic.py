"""Synthetic microscope frames: fluorescent blobs that differ by channel,
z plane and position, with camera noise. Used by the demo and benchmarks."""

from __future__ import annotations

import numpy as np


class SyntheticSample:
    """A fixed field of cells; `frame` renders one plane of it."""

    def __init__(self, shape: tuple[int, int], n_cells: int = 40, seed: int = 0):
        self.shape = shape
        rng = np.random.default_rng(seed)
        self._rng = rng
        self._centers = rng.uniform(0, 1, size=(n_cells, 2)) * np.array(shape)
        self._radii = rng.uniform(0.02, 0.05, size=n_cells) * min(shape)
        self._depth = rng.uniform(-1, 1, size=n_cells)
        self._brightness = rng.uniform(0.4, 1.0, size=(n_cells, 4))
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        self._yy = yy.astype(np.float32)
        self._xx = xx.astype(np.float32)

    def frame(
        self,
        *,
        t: int = 0,
        c: int = 0,
        z: float = 0.0,
        p: int = 0,
        dtype: str = "uint16",
    ) -> np.ndarray:
        """One plane: cells drift with t, defocus with z, shift with position."""
        image = np.zeros(self.shape, np.float32)
        shift = np.array([p * 0.13, p * 0.29]) * np.array(self.shape)
        drift = np.array([t * 0.7, t * 0.4])
        height, width = self.shape
        for i, (center, radius) in enumerate(zip(self._centers, self._radii)):
            cy, cx = (center + shift + drift) % np.array(self.shape)
            defocus = 1.0 + 2.0 * abs(z - self._depth[i])
            sigma = radius * defocus
            weight = self._brightness[i, c % 4] / defocus**2
            # Render each cell only where it is visible (4 sigma around it).
            reach = int(4 * sigma) + 1
            y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach, height)
            x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach, width)
            yy = self._yy[y0:y1, x0:x1]
            xx = self._xx[y0:y1, x0:x1]
            image[y0:y1, x0:x1] += weight * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)
            )
        info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
        top = 0.8 * info.max if info is not None else 1.0
        noise = self._rng.normal(0, 0.01 * top, size=self.shape)
        data = 0.05 * top + image * top * 0.9 + noise
        if info is not None:
            data = np.clip(data, info.min, info.max)
        return data.astype(dtype)
