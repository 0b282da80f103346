"""Picture operations on RGB frames (uint8 arrays, H x W x 3), and the pixelation check.

Rectangles come as fractions ``[x, y, w, h]`` of the frame (see :mod:`vault.profiles`).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["PIXEL_TOLERANCE", "black_box", "block_detail", "blur_box", "pixel_rect", "pixelate"]

# The pixelation check's tolerance: the 99th percentile, over all blocks of a sampled frame, of
# the luma standard deviation inside one block. A pixelated frame is flat inside each block up to
# what lossy H.264 (4:2:0, default CRF) adds at block edges: about 2-4 levels of 255 measured
# here. Picture detail (text, edges, faces) gives 15 and more.
PIXEL_TOLERANCE = 8.0


def pixel_rect(shape: Sequence[int], rect: Sequence[float]) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` in pixels of a fractional rectangle, at least one pixel wide."""
    height, width = int(shape[0]), int(shape[1])
    x, y, w, h = rect
    x0, y0 = min(int(x * width), width - 1), min(int(y * height), height - 1)
    x1 = max(x0 + 1, min(width, round((x + w) * width)))
    y1 = max(y0 + 1, min(height, round((y + h) * height)))
    return x0, y0, x1, y1


def _block_grid(frame: np.ndarray, block: int) -> tuple[np.ndarray, int, int]:
    """The frame padded (edge pixels repeated) to whole blocks, and its height and width."""
    height, width = frame.shape[:2]
    pad_h, pad_w = (-height) % block, (-width) % block
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame, height, width


def pixelate(frame: np.ndarray, block: int) -> None:
    """In place: every ``block`` x ``block`` tile (grid from the top left) becomes its mean."""
    padded, height, width = _block_grid(frame, block)
    rows, cols = padded.shape[0] // block, padded.shape[1] // block
    tiles = padded.reshape(rows, block, cols, block, 3).mean(axis=(1, 3), dtype=np.float32)
    means = np.rint(tiles).astype(np.uint8)
    full = np.repeat(np.repeat(means, block, axis=0), block, axis=1)
    frame[:] = full[:height, :width]


def black_box(frame: np.ndarray, rect: Sequence[float]) -> None:
    x0, y0, x1, y1 = pixel_rect(frame.shape, rect)
    frame[y0:y1, x0:x1] = 0


def blur_box(frame: np.ndarray, rect: Sequence[float]) -> None:
    """In place: the region shrunk to a few pixels and scaled back (nothing legible survives)."""
    x0, y0, x1, y1 = pixel_rect(frame.shape, rect)
    region = frame[y0:y1, x0:x1]
    small = cv2.resize(
        region, (max(1, (x1 - x0) // 24), max(1, (y1 - y0) // 24)), interpolation=cv2.INTER_AREA
    )
    frame[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)


def block_detail(frame: np.ndarray, block: int) -> float:
    """The 99th percentile over whole blocks of the luma standard deviation within a block: how
    much detail finer than ``block`` a frame still holds (0 for a perfectly pixelated frame)."""
    height, width = frame.shape[:2]
    rows, cols = height // block, width // block
    if rows == 0 or cols == 0:
        return 0.0
    luma = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)[: rows * block, : cols * block]
    tiles = luma.reshape(rows, block, cols, block).astype(np.float32)
    return float(np.percentile(tiles.std(axis=(1, 3)), 99))
