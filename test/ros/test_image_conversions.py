"""sensor_msgs/Image and CompressedImage <-> numpy, on real rclpy message objects."""

from __future__ import annotations

import array
import subprocess
import sys

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from hypothesis import given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image

from conla_ros.ros.image_conversions import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    compressed_to_rgb,
    image_to_numpy,
    image_to_rgb,
    numpy_to_compressed,
    numpy_to_image,
)

# encoding -> (channels, dtype) of the array image_to_numpy returns
LAYOUT = {
    "rgb8": (3, np.uint8),
    "bgr8": (3, np.uint8),
    "rgba8": (4, np.uint8),
    "bgra8": (4, np.uint8),
    "mono8": (1, np.uint8),
    "mono16": (1, np.uint16),
}


def random_pixels(rng: np.random.Generator, encoding: str, height: int = 5, width: int = 7) -> np.ndarray:
    channels, dtype = LAYOUT[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)


def expected_rgb(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """image_to_rgb's result, worked out independently."""
    if encoding == "mono16":
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return np.stack([pixels] * 3, axis=2)
    return pixels[:, :, [2, 1, 0]] if encoding.startswith("bgr") else pixels[:, :, :3]


def padded_message(pixels: np.ndarray, encoding: str, padding: int, big_endian: bool = False) -> Image:
    """An Image built by hand, with `padding` garbage bytes (0xAB) after every row."""
    height, width = pixels.shape[:2]
    order = ">" if big_endian else "<"
    raw = pixels.astype(pixels.dtype.newbyteorder(order)).tobytes()
    row_bytes = len(raw) // height
    rows = [raw[i * row_bytes : (i + 1) * row_bytes] + b"\xab" * padding for i in range(height)]
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(big_endian),
        step=row_bytes + padding,
        data=b"".join(rows),
    )


def test_supported_encodings() -> None:
    assert set(LAYOUT) == set(SUPPORTED_ENCODINGS)


@pytest.mark.parametrize("encoding", sorted(LAYOUT))
def test_round_trip_is_exact(encoding: str) -> None:
    pixels = random_pixels(np.random.default_rng(0), encoding)
    msg = numpy_to_image(pixels, encoding)
    assert isinstance(msg, Image)
    assert isinstance(msg.data, array.array)
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    assert msg.step == 7 * pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
    assert msg.is_bigendian == int(sys.byteorder == "big")
    back = image_to_numpy(msg)
    assert back.dtype == np.dtype(LAYOUT[encoding][1])  # native-endian
    np.testing.assert_array_equal(back, pixels)


def test_header_is_set() -> None:
    msg = numpy_to_image(np.zeros((2, 3, 3), np.uint8), stamp=Time(sec=12, nanosec=34), frame_id="wrist_cam")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 34, "wrist_cam")


def test_result_does_not_alias_message() -> None:
    msg = numpy_to_image(np.zeros((2, 3, 3), np.uint8))
    for convert in (image_to_numpy, image_to_rgb):
        out = convert(msg)
        out[...] = 255
        assert set(msg.data) == {0}
    msg.data.append(0)  # a live numpy view of msg.data would make this raise BufferError


def test_bgr_to_rgb_swaps_channels() -> None:
    bgr = random_pixels(np.random.default_rng(1), "bgr8")
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(bgr, "bgr8")), bgr[:, :, ::-1])


@pytest.mark.parametrize(("encoding", "rgb_channels"), [("rgba8", [0, 1, 2]), ("bgra8", [2, 1, 0])])
def test_alpha_is_dropped(encoding: str, rgb_channels: list[int]) -> None:
    pixels = random_pixels(np.random.default_rng(2), encoding)
    rgb = image_to_rgb(numpy_to_image(pixels, encoding))
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, pixels[:, :, rgb_channels])


def test_mono_is_replicated() -> None:
    mono = random_pixels(np.random.default_rng(3), "mono8")
    rgb = image_to_rgb(numpy_to_image(mono, "mono8"))
    np.testing.assert_array_equal(rgb, np.stack([mono] * 3, axis=2))


@pytest.mark.parametrize("big_endian", [False, True])
def test_mono16_to_rgb_keeps_high_byte(big_endian: bool) -> None:
    mono = random_pixels(np.random.default_rng(4), "mono16")
    rgb = image_to_rgb(padded_message(mono, "mono16", padding=3, big_endian=big_endian))
    np.testing.assert_array_equal(rgb, np.stack([(mono >> 8).astype(np.uint8)] * 3, axis=2))


def test_rgb_stays_rgb() -> None:
    rgb = random_pixels(np.random.default_rng(5), "rgb8")
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(rgb)), rgb)


@pytest.mark.parametrize("encoding", sorted(LAYOUT))
def test_step_padding_is_skipped(encoding: str) -> None:
    pixels = random_pixels(np.random.default_rng(6), encoding)
    msg = padded_message(pixels, encoding, padding=5)
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


def test_mono16_byte_order() -> None:
    values = np.array([[0x0102, 0xFF00, 0x00FF], [0xABCD, 0, 0xFFFF]], np.uint16)
    big = padded_message(values, "mono16", padding=0, big_endian=True)
    little = padded_message(values, "mono16", padding=0, big_endian=False)
    assert bytes(big.data[:2]) == b"\x01\x02" and bytes(little.data[:2]) == b"\x02\x01"
    for msg in (big, little):
        np.testing.assert_array_equal(image_to_numpy(msg), values)


@pytest.mark.parametrize(
    "data", [bytes(range(12)), bytearray(range(12)), memoryview(bytes(range(12))), list(range(12))]
)
def test_data_types_accepted(data: object) -> None:
    msg = Image(height=2, width=2, encoding="rgb8", step=6)
    msg.data = array.array("B", range(12))
    expected = image_to_numpy(msg)
    duck = type("Duck", (), {})()  # any object with the right attributes will do
    for name in ("height", "width", "encoding", "is_bigendian", "step"):
        setattr(duck, name, getattr(msg, name))
    duck.data = data
    np.testing.assert_array_equal(image_to_numpy(duck), expected)
    np.testing.assert_array_equal(expected.reshape(-1), np.arange(12))


def test_rclpy_array_data() -> None:
    # What a subscriber receives: data as array.array('B'), set without a copy through the setter.
    msg = Image(height=1, width=2, encoding="bgr8", step=6)
    msg.data = array.array("B", [1, 2, 3, 4, 5, 6])
    assert isinstance(msg.data, array.array)
    np.testing.assert_array_equal(image_to_rgb(msg), [[[3, 2, 1], [6, 5, 4]]])


def good_message() -> Image:
    return numpy_to_image(np.zeros((3, 4, 3), np.uint8))  # step 12, 36 bytes


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        (
            "encoding",
            "yuv422",
            ["Image.encoding='yuv422'", "supported: bgr8, bgra8, mono16, mono8, rgb8, rgba8"],
        ),
        ("encoding", "", ["Image.encoding=''"]),
        ("step", 10, ["Image.step=10", "smaller than one row", "12"]),
        ("step", 0, ["Image.step=0"]),
        ("width", 0, ["Image.width=0"]),
        ("height", 0, ["Image.height=0"]),
        ("data", b"\x00" * 35, ["Image.data has 35 bytes", "36"]),
        ("data", b"", ["Image.data has 0 bytes"]),
        ("data", [0, 256] * 18, ["Image.data"]),
        ("data", [0.5] * 36, ["Image.data"]),
    ],
)
def test_malformed_image_raises(field: str, value: object, expected: list[str]) -> None:
    msg = good_message()
    if field == "data":
        msg = Image(height=msg.height, width=msg.width, encoding=msg.encoding, step=msg.step)
        object.__setattr__(msg, "_data", value)  # bypass the setter, which would reject floats itself
    else:
        setattr(msg, field, value)
    with pytest.raises(ImageConversionError) as caught:
        image_to_numpy(msg)
    for text in expected:
        assert text in str(caught.value)
    with pytest.raises(ImageConversionError):
        image_to_rgb(msg)


def test_missing_field_raises() -> None:
    with pytest.raises(ImageConversionError, match="'step'"):
        image_to_numpy(type("NoStep", (), {"encoding": "rgb8", "height": 1, "width": 1})())


def test_module_imports_neither_sensor_msgs_nor_torch() -> None:
    code = (
        "import sys, conla_ros.ros.image_conversions; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sensor_msgs', 'torch', 'rclpy')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_error_is_a_value_error() -> None:
    assert issubclass(ImageConversionError, ValueError)


@pytest.mark.parametrize(
    ("array_", "encoding", "expected"),
    [
        (np.zeros((2, 2, 3), np.uint8), "yuv422", "'yuv422'"),
        (np.zeros((2, 2, 3), np.float32), "rgb8", "float32"),
        (np.zeros((2, 2), np.uint8), "mono16", "uint16"),
        (np.zeros((2, 2, 3), np.uint16), "rgb8", "uint16"),
        (np.zeros((2, 2, 4), np.uint8), "rgb8", "(2, 2, 4)"),
        (np.zeros((2, 2), np.uint8), "rgb8", "(2, 2)"),
        (np.zeros((2, 2, 3), np.uint8), "mono8", "(2, 2, 3)"),
        (np.zeros((0, 2, 3), np.uint8), "rgb8", "(0, 2, 3)"),
    ],
)
def test_numpy_to_image_rejects_bad_arrays(array_: np.ndarray, encoding: str, expected: str) -> None:
    with pytest.raises(ImageConversionError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        numpy_to_image(array_, encoding)


def test_numpy_to_image_accepts_views_and_foreign_byte_order() -> None:
    rgb = random_pixels(np.random.default_rng(7), "rgb8", 6, 8)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(rgb[::2, ::-1])), rgb[::2, ::-1])
    mono = random_pixels(np.random.default_rng(8), "mono16")
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(mono.astype(">u2"), "mono16")), mono)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(mono[:, :, None], "mono16")), mono)


def test_numpy_to_image_fills_a_vga_frame() -> None:
    # Speed of this path is measured by `conla bench ros`, not asserted here.
    rgb = np.arange(480 * 640 * 3, dtype=np.uint32).astype(np.uint8).reshape(480, 640, 3)
    msg = numpy_to_image(rgb)
    assert len(msg.data) == 640 * 480 * 3
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    encoding=st.sampled_from(sorted(LAYOUT)),
    padding=st.integers(0, 16),
    big_endian=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_round_trip_with_padding(
    height: int, width: int, encoding: str, padding: int, big_endian: bool, seed: int
) -> None:
    pixels = random_pixels(np.random.default_rng(seed), encoding, height, width)
    msg = padded_message(pixels, encoding, padding, big_endian)
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)
    np.testing.assert_array_equal(image_to_rgb(msg), expected_rgb(pixels, encoding))
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(pixels, encoding)), pixels)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    encoding=st.sampled_from(sorted(LAYOUT)),
    padding=st.integers(0, 16),
    data=st.data(),
)
def test_property_truncated_data_raises(
    height: int, width: int, encoding: str, padding: int, data: st.DataObject
) -> None:
    pixels = random_pixels(np.random.default_rng(0), encoding, height, width)
    msg = padded_message(pixels, encoding, padding)
    size = len(msg.data)
    msg.data = msg.data[: data.draw(st.integers(0, size - 1), label="kept bytes")]
    for convert in (image_to_numpy, image_to_rgb):
        with pytest.raises(ImageConversionError, match=r"Image\.data has"):
            convert(msg)


def gradient(height: int = 48, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    channels = [x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height - 2)]
    return np.stack(channels, axis=2).astype(np.uint8)


def test_png_round_trip_is_exact() -> None:
    rgb = random_pixels(np.random.default_rng(9), "rgb8", 17, 23)
    msg = numpy_to_compressed(rgb, "png", frame_id="cam")
    assert isinstance(msg, CompressedImage)
    assert msg.format == "rgb8; png compressed bgr8" and msg.header.frame_id == "cam"
    assert bytes(msg.data[:8]) == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)


def test_jpeg_round_trip_is_close() -> None:
    rgb = gradient()
    msg = numpy_to_compressed(rgb, stamp=Time(sec=1))
    assert msg.format == "rgb8; jpeg compressed bgr8" and msg.header.stamp.sec == 1
    assert bytes(msg.data[:2]) == b"\xff\xd8"
    back = compressed_to_rgb(msg)
    assert back.shape == rgb.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb.astype(int)).mean() < 8
    # Channels not swapped: the red ramp runs along x.
    assert back[:, -1, 0].mean() > 200 and back[:, 0, 0].mean() < 50


@pytest.mark.parametrize(
    "fmt", ["jpeg", "png", "jpg", "PNG", "rgb8; jpeg compressed bgr8", "bgr8; png compressed "]
)
def test_compressed_format_strings(fmt: str) -> None:
    rgb = gradient(8, 8)
    kind = "png" if "png" in fmt.lower() else "jpeg"
    msg = numpy_to_compressed(rgb, kind)
    msg.format = fmt
    assert compressed_to_rgb(msg).shape == (8, 8, 3)


@pytest.mark.parametrize("fmt", ["tiff", "", "16UC1; compressedDepth png", "h264"])
def test_compressed_bad_format_raises(fmt: str) -> None:
    msg = numpy_to_compressed(gradient(8, 8), "png")
    msg.format = fmt
    with pytest.raises(ImageConversionError, match=r"CompressedImage\.format=") as caught:
        compressed_to_rgb(msg)
    assert repr(fmt) in str(caught.value)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50])
def test_compressed_garbage_raises(data: bytes) -> None:
    msg = CompressedImage(format="png", data=data)
    with pytest.raises(ImageConversionError, match=r"CompressedImage\.data could not be decoded"):
        compressed_to_rgb(msg)


@pytest.mark.parametrize(
    ("array_", "fmt"),
    [
        (np.zeros((4, 4), np.uint8), "png"),
        (np.zeros((4, 4, 3), np.float32), "png"),
        (np.zeros((4, 4, 3), np.uint8), "tiff"),
    ],
)
def test_numpy_to_compressed_rejects(array_: np.ndarray, fmt: str) -> None:
    with pytest.raises(ImageConversionError):
        numpy_to_compressed(array_, fmt)
