"""Face detection for redaction, on a synthetic two-tile "call" built from a real face photo.

Each 320x360 tile of a 640x360 frame holds ``skimage.data.astronaut()`` scaled down on grey, the
two at different sizes and offsets. Where the face is in a frame follows from where its tile was
pasted, so every assertion is against a known face box, not against another detector's output.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from vault.redaction import faces
from vault.redaction.faces import (
    DEFAULT_THRESHOLD,
    MODEL_SHA256,
    SENSITIVE_THRESHOLD,
    Box,
    CenterFace,
    FaceTracker,
    HaarFaces,
    ModelIntegrityError,
    blur_boxes,
    default_centerface,
    faces_present,
    overlaps,
)

WIDTH, HEIGHT, TILE_WIDTH = 640, 360, 320
ASTRONAUT = data.astronaut()  # RGB, 512x512
FACE_IN_ASTRONAUT = (185, 75, 265, 170)  # brows to chin, cheek to cheek, checked by eye
# Per tile: astronaut side, its top-left corner in frame 0, and its motion per frame.
TILES = ((280, 8, 40, 2, 1), (240, TILE_WIDTH + 60, 80, -2, -1))
MODEL_FILE = Path(faces.__file__).parent / "models" / "centerface.onnx"

Scene = tuple[np.ndarray, list[Box]]


def call_frame(index: int = 0) -> Scene:
    """Frame ``index`` of the synthetic call, and the true face box of each tile."""
    frame = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    truth = []
    for size, x, y, dx, dy in TILES:
        x, y = x + dx * index, y + dy * index
        frame[y : y + size, x : x + size] = cv2.resize(
            ASTRONAUT, (size, size), interpolation=cv2.INTER_AREA
        )
        k = size / ASTRONAUT.shape[1]
        fx0, fy0, fx1, fy1 = FACE_IN_ASTRONAUT
        truth.append(
            Box(round(x + k * fx0), round(y + k * fy0), round(x + k * fx1), round(y + k * fy1), 1.0)
        )
    return frame, truth


def pixelated(frame: np.ndarray, block: int = 16) -> np.ndarray:
    h, w = frame.shape[:2]
    out = frame.copy()
    for y in range(0, h, block):
        for x in range(0, w, block):
            cell = out[y : y + block, x : x + block]
            cell[...] = cell.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    return out


def colour_bars() -> np.ndarray:
    """A testsrc-like card: saturated bars over a grey ramp and a hue/brightness gradient."""
    frame = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    bars = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0)]
    bars += [(255, 0, 255), (255, 0, 0), (0, 0, 255), (0, 0, 0)]
    for i, colour in enumerate(bars):
        frame[:200, i * 80 : (i + 1) * 80] = colour
    frame[200:280] = np.linspace(0, 255, WIDTH).astype(np.uint8)[None, :, None]
    yy, xx = np.mgrid[0:80, 0:WIDTH]
    frame[280:, :, 0] = (255 * xx / WIDTH).astype(np.uint8)
    frame[280:, :, 1] = (255 * yy / 80).astype(np.uint8)
    frame[280:, :, 2] = 255 - frame[280:, :, 0]
    return frame


def coverage(face: Box, boxes: Sequence[Box]) -> float:
    """Fraction of ``face``'s pixels inside at least one of ``boxes``."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    for b in boxes:
        mask[b.y0 : b.y1, b.x0 : b.x1] = True
    return float(mask[face.y0 : face.y1, face.x0 : face.x1].mean())


def tile_of(box: Box) -> int:
    return 0 if box.x1 <= TILE_WIDTH else 1


@pytest.fixture(scope="module")
def centerface() -> CenterFace:
    return default_centerface()


@pytest.fixture(scope="module")
def haar() -> HaarFaces:
    return HaarFaces()


@pytest.fixture(scope="module")
def scene() -> Scene:
    return call_frame(0)


def test_default_model_is_the_pinned_file_loaded_once() -> None:
    assert hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest() == MODEL_SHA256
    assert (MODEL_FILE.parent / "LICENSE-centerface.txt").is_file()
    assert default_centerface() is default_centerface()


def test_centerface_finds_one_face_per_tile(centerface: CenterFace, scene: Scene) -> None:
    frame, truth = scene
    boxes = centerface.detect(frame)
    assert sorted(tile_of(b) for b in boxes) == [0, 1]
    for box in boxes:
        tile = tile_of(box)
        assert box.score > DEFAULT_THRESHOLD
        assert tile * TILE_WIDTH <= box.x0 < box.x1 <= (tile + 1) * TILE_WIDTH
        assert 0 <= box.y0 < box.y1 <= HEIGHT
        assert overlaps(box, truth[tile]) > 0.8
        assert coverage(truth[tile], [box]) > 0.8


def test_haar_finds_both_faces_too(haar: HaarFaces, scene: Scene) -> None:
    frame, truth = scene
    boxes = haar.detect(frame)
    for face in truth:
        assert any(overlaps(b, face) > 0.5 for b in boxes), (face, boxes)


def test_blurred_faces_escape_both_detectors(
    centerface: CenterFace, haar: HaarFaces, scene: Scene
) -> None:
    frame, truth = scene
    boxes = centerface.detect(frame)
    blurred = frame.copy()
    blur_boxes(blurred, boxes)

    found = faces_present(blurred, centerface=centerface, haar=haar, sensitive=True)
    assert [b for b in found if any(overlaps(b, face) > 0.3 for face in truth)] == []
    # Only the faces (and their margins) changed.
    changed = np.any(blurred != frame, axis=2)
    grown = np.zeros_like(changed)
    for b in boxes:
        mx, my = 0.3 * (b.x1 - b.x0) + 1, 0.3 * (b.y1 - b.y0) + 1
        grown[max(0, int(b.y0 - my)) : int(b.y1 + my), max(0, int(b.x0 - mx)) : int(b.x1 + mx)] = 1
    assert changed.any() and not (changed & ~grown).any()
    for face in truth:
        assert changed[face.y0 : face.y1, face.x0 : face.x1].mean() > 0.9


def test_tampered_model_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tampered = tmp_path / "centerface.onnx"
    shutil.copyfile(MODEL_FILE, tampered)
    raw = bytearray(tampered.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    tampered.write_bytes(bytes(raw))
    loads: list[object] = []
    monkeypatch.setattr(cv2.dnn, "readNetFromONNX", lambda *a: loads.append(a))

    with pytest.raises(ModelIntegrityError, match=MODEL_SHA256):
        CenterFace(tampered)
    assert loads == []


def test_tracker_detects_every_fifth_frame_and_keeps_moving_faces_covered(
    centerface: CenterFace,
) -> None:
    class Counting:
        def __init__(self) -> None:
            self.frames: list[int] = []
            self.current = -1

        def detect(self, frame: np.ndarray, *, threshold: float = 0.5) -> list[Box]:
            self.frames.append(self.current)
            return centerface.detect(frame, threshold=threshold)

    detector = Counting()
    tracker = FaceTracker(detector, every=5)
    for index in range(12):
        frame, truth = call_frame(index)
        detector.current = index
        boxes = tracker.boxes_for(frame)
        for face in truth:
            assert coverage(face, boxes) >= 0.8, (index, face, boxes)
    assert detector.frames == [0, 5, 10]


def test_no_face_in_colour_bars(centerface: CenterFace) -> None:
    assert centerface.detect(colour_bars()) == []


def test_pixelated_faces_do_not_fool_sensitive_centerface(
    centerface: CenterFace, scene: Scene
) -> None:
    frame, _ = scene
    assert centerface.detect(pixelated(frame), threshold=SENSITIVE_THRESHOLD) == []


def test_frame_sizes_may_change_and_threads_may_share_the_net(
    centerface: CenterFace, scene: Scene
) -> None:
    # OpenCV keeps shape state in a net: a second size must not inherit the first's.
    frame, _ = scene
    small = cv2.resize(frame, (480, 270), interpolation=cv2.INTER_AREA)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(centerface.detect, [frame, small, frame, small]))
    assert [len(r) for r in results] == [2, 2, 2, 2]
    for a, b in [(results[0], results[2]), (results[1], results[3])]:
        assert [(x.x0, x.y0, x.x1, x.y1) for x in a] == [(x.x0, x.y0, x.x1, x.y1) for x in b]
        assert [x.score for x in a] == pytest.approx([x.score for x in b], abs=1e-4)


def test_overlaps_and_input_checks(centerface: CenterFace) -> None:
    outer, inner = Box(0, 0, 100, 100, 1.0), Box(10, 10, 30, 30, 1.0)
    assert overlaps(outer, inner) == overlaps(inner, outer) == 1.0
    assert overlaps(outer, Box(50, 0, 150, 100, 1.0)) == 0.5
    assert overlaps(outer, Box(100, 0, 200, 100, 1.0)) == 0.0
    with pytest.raises(ValueError, match="RGB uint8"):
        centerface.detect(np.zeros((32, 32, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        centerface.detect(np.zeros((32, 32, 3), dtype=np.float32))
