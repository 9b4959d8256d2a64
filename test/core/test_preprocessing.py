"""Tests for conla_ros.core.preprocessing: the image pipeline shared by training and the robot."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conla_ros.core.config import config_from_dict, config_to_dict
from conla_ros.core.preprocessing import (
    ImagePreprocessing,
    centre_crop_square,
    preprocess_image,
    preprocess_images,
)

IMAGENET = ImagePreprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def expected_range(spec: ImagePreprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (low, high) output bounds, shaped to broadcast over (3, S, S)."""
    mean, std = np.array(spec.mean), np.array(spec.std)
    return ((0 - mean) / std)[:, None, None], ((1 - mean) / std)[:, None, None]


def test_output_shape_dtype_contiguous() -> None:
    out = preprocess_image(random_image(480, 640), ImagePreprocessing(size=64))
    assert out.shape == (3, 64, 64)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous


def test_white_image_maps_to_one_minus_mean_over_std() -> None:
    white = np.full((120, 160, 3), 255, dtype=np.uint8)
    assert np.all(preprocess_image(white, ImagePreprocessing()) == 1.0)
    out = preprocess_image(white, IMAGENET)
    expected = ((1 - np.array(IMAGENET.mean)) / np.array(IMAGENET.std)).astype(np.float32)
    np.testing.assert_array_equal(out, np.broadcast_to(expected[:, None, None], out.shape))


def test_black_image_maps_to_minus_mean_over_std() -> None:
    black = np.zeros((64, 64, 3), dtype=np.uint8)
    assert np.all(preprocess_image(black, ImagePreprocessing()) == -1.0)


def test_matches_plain_reference_pipeline() -> None:
    image = random_image(480, 640)
    spec = IMAGENET
    square = image[:, 80:560]
    resized = cv2.resize(square, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
    reference = ((resized - spec.mean) / spec.std).transpose(2, 0, 1)
    np.testing.assert_allclose(preprocess_image(image, spec), reference, rtol=1e-6, atol=1e-6)


def test_channel_order_is_kept() -> None:
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[..., 0] = 255  # pure red in RGB
    out = preprocess_image(image, ImagePreprocessing(size=16))
    assert np.all(out[0] == 1.0) and np.all(out[1] == -1.0) and np.all(out[2] == -1.0)


def test_centre_crop_of_wide_image_keeps_the_middle() -> None:
    red, green = (255, 0, 0), (0, 255, 0)
    image = np.empty((100, 300, 3), dtype=np.uint8)
    image[:, :100] = red
    image[:, 100:200] = green
    image[:, 200:] = red
    crop = centre_crop_square(image)
    assert crop.shape == (100, 100, 3)
    assert np.all(crop == green)
    out = preprocess_image(image, ImagePreprocessing(size=32))
    assert np.all(out[0] == -1.0) and np.all(out[1] == 1.0) and np.all(out[2] == -1.0)


def test_centre_crop_of_tall_image_and_fraction() -> None:
    image = np.zeros((200, 100, 3), dtype=np.uint8)
    image[50:150] = 255
    assert np.all(centre_crop_square(image) == 255)
    crop = centre_crop_square(image, 0.5)
    assert crop.shape == (50, 50, 3)
    assert np.shares_memory(crop, image)  # a view, no copy
    # The 0.5 crop of a 100-pixel side starts 25 pixels in on the short axis.
    marked = np.arange(100 * 100).reshape(100, 100)
    np.testing.assert_array_equal(centre_crop_square(marked, 0.5), marked[25:75, 25:75])


def test_crop_fraction_zooms_in() -> None:
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[25:75, 25:75] = 255  # a white square covering the middle half
    out = preprocess_image(image, ImagePreprocessing(size=16, crop_fraction=0.5))
    assert np.all(out == 1.0)


@pytest.mark.parametrize(("height", "width"), [(480, 640), (640, 480), (37, 91), (64, 64), (20, 30)])
@pytest.mark.parametrize("interpolation", ["area", "linear"])
def test_batch_equals_per_image(height: int, width: int, interpolation: str) -> None:
    spec = ImagePreprocessing(size=32, crop_fraction=0.9, interpolation=interpolation)  # type: ignore[arg-type]
    images = np.stack([random_image(height, width, seed) for seed in range(4)])
    batch = preprocess_images(images, spec)
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == np.float32 and batch.flags.c_contiguous
    for i in range(4):
        np.testing.assert_array_equal(batch[i], preprocess_image(images[i], spec))


def test_empty_batch() -> None:
    out = preprocess_images(np.zeros((0, 48, 64, 3), dtype=np.uint8), ImagePreprocessing(size=16))
    assert out.shape == (0, 3, 16, 16)


def test_non_square_and_upscaled_inputs() -> None:
    for shape in [(31, 200, 3), (200, 31, 3), (10, 12, 3)]:
        out = preprocess_image(random_image(*shape[:2]), ImagePreprocessing(size=48))
        assert out.shape == (3, 48, 48)
        low, high = expected_range(ImagePreprocessing(size=48))
        assert np.all(out >= low) and np.all(out <= high)


def test_area_and_linear_differ_when_shrinking() -> None:
    image = random_image(256, 256)
    area = preprocess_image(image, ImagePreprocessing(size=32, interpolation="area"))
    linear = preprocess_image(image, ImagePreprocessing(size=32, interpolation="linear"))
    assert not np.array_equal(area, linear)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64, 3), dtype=np.float32),
        np.zeros((64, 64), dtype=np.uint8),
        np.zeros((64, 64, 4), dtype=np.uint8),
        np.zeros((0, 64, 3), dtype=np.uint8),
        np.zeros((1, 64, 64, 3), dtype=np.uint8),
    ],
)
def test_bad_image_raises_naming_shape_and_dtype(bad: np.ndarray) -> None:
    with pytest.raises(ValueError) as info:
        preprocess_image(bad, ImagePreprocessing())
    assert str(bad.shape) in str(info.value) and str(bad.dtype) in str(info.value)


def test_bad_batch_raises() -> None:
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\).*\(64, 64, 3\)"):
        preprocess_images(np.zeros((64, 64, 3), dtype=np.uint8), ImagePreprocessing())
    with pytest.raises(ValueError, match="list"):
        preprocess_image([[0, 0, 0]], ImagePreprocessing())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"size": 4}, "size must be an int >= 8, got 4"),
        ({"size": 32.0}, "got 32.0"),
        ({"size": True}, "got True"),
        ({"crop_fraction": 0.0}, "crop_fraction must be in (0, 1], got 0.0"),
        ({"crop_fraction": 1.5}, "got 1.5"),
        ({"std": (0.5, 0.0, 0.5)}, "std must be > 0 in every channel, got (0.5, 0.0, 0.5)"),
        ({"std": (0.5, 0.5)}, "std must be 3 finite numbers (R, G, B), got (0.5, 0.5)"),
        ({"mean": (0.5, float("nan"), 0.5)}, "mean must be 3 finite numbers"),
        ({"interpolation": "cubic"}, "interpolation must be 'area' or 'linear', got 'cubic'"),
    ],
)
def test_invalid_spec_names_value(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        ImagePreprocessing(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_spec_normalises_lists_to_float_tuples() -> None:
    spec = ImagePreprocessing(mean=[0, 0, 0], std=[1, 1, 1])  # type: ignore[arg-type]
    assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)
    assert hash(spec) == hash(ImagePreprocessing(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))


def test_spec_round_trips_through_config() -> None:
    spec = ImagePreprocessing(size=96, crop_fraction=0.8, mean=IMAGENET.mean, std=IMAGENET.std)
    assert config_from_dict(ImagePreprocessing, config_to_dict(spec)) == spec


def test_centre_crop_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="got 2"):
        centre_crop_square(np.zeros((8, 8, 3), dtype=np.uint8), 2)



@settings(max_examples=50, deadline=None)
@given(
    height=st.integers(8, 200),
    width=st.integers(8, 200),
    size=st.integers(8, 96),
    crop_fraction=st.floats(0.05, 1.0),
    interpolation=st.sampled_from(["area", "linear"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_output_finite_and_in_range(
    height: int, width: int, size: int, crop_fraction: float, interpolation: str, seed: int
) -> None:
    spec = ImagePreprocessing(
        size=size,
        crop_fraction=crop_fraction,
        mean=IMAGENET.mean,
        std=IMAGENET.std,
        interpolation=interpolation,
    )  # type: ignore[arg-type]
    out = preprocess_image(random_image(height, width, seed), spec)
    assert out.shape == (3, size, size) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    low, high = expected_range(spec)
    # float32 rounding of the bounds themselves may land one ulp outside the float64 values.
    assert np.all(out >= low.astype(np.float32)) and np.all(out <= high.astype(np.float32))


def test_strided_views_match_contiguous_copies() -> None:
    # Callers pass views such as a BGR→RGB flip (`image[..., ::-1]`); OpenCV must not misread them.
    image = random_image(48, 64)
    spec = ImagePreprocessing(size=16)
    for view in (image[..., ::-1], image[::2, ::3], image[::-1]):
        expected = preprocess_image(np.ascontiguousarray(view), spec)
        np.testing.assert_array_equal(preprocess_image(view, spec), expected)
        np.testing.assert_array_equal(preprocess_images(view[None], spec)[0], expected)
