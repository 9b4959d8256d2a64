"""sensor_msgs/Image and sensor_msgs/CompressedImage <-> numpy, without cv_bridge.

cv_bridge from PyPI does not work with numpy 2, so this module does the little we need itself.
The message-reading functions only read attributes (height, width, encoding, is_bigendian, step,
data; format and data for CompressedImage), so they work on real rclpy messages and on any object
shaped like one. sensor_msgs is imported only where a message is built.

Every malformed message raises ImageConversionError, whose text names the field and its value.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CompressedImage, Image

__all__ = [
    "SUPPORTED_COMPRESSIONS",
    "SUPPORTED_ENCODINGS",
    "ImageConversionError",
    "compressed_to_rgb",
    "image_to_numpy",
    "image_to_rgb",
    "numpy_to_compressed",
    "numpy_to_image",
]


class ImageConversionError(ValueError):
    """A message (or array) that cannot be converted; the text names the field and the bad value."""


# encoding -> (channels, bytes per channel)
_LAYOUTS: dict[str, tuple[int, int]] = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
}
SUPPORTED_ENCODINGS: frozenset[str] = frozenset(_LAYOUTS)

# Which channels, in which order, make RGB out of a colour encoding.
_RGB_CHANNELS: dict[str, slice] = {
    "rgb8": slice(0, 3),
    "rgba8": slice(0, 3),
    "bgr8": slice(2, None, -1),
    "bgra8": slice(2, None, -1),
}

# compression name in CompressedImage.format -> file extension cv2.imencode understands
_EXTENSIONS: dict[str, str] = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}
SUPPORTED_COMPRESSIONS: frozenset[str] = frozenset(_EXTENSIONS)


def _field(msg: Any, kind: str, name: str) -> Any:
    try:
        return getattr(msg, name)
    except AttributeError:
        raise ImageConversionError(f"{kind} has no field {name!r} (got a {type(msg).__name__})") from None


def _positive(msg: Any, name: str) -> int:
    value = _field(msg, "Image", name)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0 or number != value:
        raise ImageConversionError(f"Image.{name}={value!r} must be a positive integer")
    return number


def _as_bytes(data: Any, kind: str) -> np.ndarray:
    """msg.data as a flat uint8 array, a view (no copy) when data has the buffer protocol."""
    try:
        # rclpy stores uint8[] as array.array('B'); bytes, bytearray and memoryview also land here.
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        pass
    values = np.asarray(data)  # a list of ints, say
    in_range = values.size == 0 or (values.dtype.kind in "iu" and values.min() >= 0 and values.max() <= 255)
    if values.ndim != 1 or not in_range:
        raise ImageConversionError(
            f"{kind}.data must be bytes or a sequence of ints in 0..255, got {type(data).__name__}"
        )
    return values.astype(np.uint8)


def _rows(msg: Any) -> tuple[np.ndarray, str, int, bool]:
    """Validate msg; return its pixel rows as a (height, row bytes) uint8 view of msg.data (padding cut
    off, may alias the message), the encoding, the width and whether 16-bit samples are big-endian."""
    encoding = _field(msg, "Image", "encoding")
    if encoding not in _LAYOUTS:
        supported = ", ".join(sorted(_LAYOUTS))
        raise ImageConversionError(f"Image.encoding={encoding!r} is not supported; supported: {supported}")
    channels, depth = _LAYOUTS[encoding]
    height, width, step = _positive(msg, "height"), _positive(msg, "width"), _positive(msg, "step")
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ImageConversionError(
            f"Image.step={step} is smaller than one row "
            f"(width {width} × {channels * depth} bytes = {row_bytes})"
        )
    data = _as_bytes(_field(msg, "Image", "data"), "Image")
    if data.size < step * height:
        raise ImageConversionError(
            f"Image.data has {data.size} bytes, expected at least step × height = {step * height}"
        )
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    return rows, encoding, width, bool(_field(msg, "Image", "is_bigendian"))


def image_to_numpy(msg: Image) -> np.ndarray:
    """The pixels of a sensor_msgs/Image in its own encoding, as a fresh array (never aliases msg).

    Shape (H, W, C) for colour encodings, (H, W) for mono8/mono16; dtype uint8, or native-endian
    uint16 for mono16 (is_bigendian is honoured). Row padding (step > row bytes) is dropped.
    Raises ImageConversionError for a malformed message.
    """
    rows, encoding, width, big_endian = _rows(msg)
    channels, depth = _LAYOUTS[encoding]
    # One copy either way; for mono16 it also swaps the bytes into native order where needed.
    pixels = rows.view(">u2" if big_endian else "<u2").astype(np.uint16) if depth == 2 else rows.copy()
    shape = (rows.shape[0], width) if channels == 1 else (rows.shape[0], width, channels)
    return pixels.reshape(shape)


def image_to_rgb(msg: Image) -> np.ndarray:
    """A sensor_msgs/Image as a fresh (H, W, 3) uint8 RGB array, whatever its encoding.

    bgr is swapped to rgb, alpha is dropped, mono is replicated into three channels and mono16 is
    scaled to 8 bits (value >> 8). Raises ImageConversionError for a malformed message.
    """
    rows, encoding, width, big_endian = _rows(msg)
    if encoding == "mono16":
        # value >> 8 is the high byte of each sample: take it straight from the raw bytes.
        rows = rows[:, (0 if big_endian else 1) :: 2]
    if _LAYOUTS[encoding][0] == 1:
        return np.repeat(rows[:, :, np.newaxis], 3, axis=2)
    pixels = rows.reshape(rows.shape[0], width, -1)
    return pixels[:, :, _RGB_CHANNELS[encoding]].copy()  # copy: C-contiguous and not aliasing msg


def numpy_to_image(
    array: np.ndarray, encoding: str = "rgb8", *, stamp: Time | None = None, frame_id: str = ""
) -> Image:
    """Build a sensor_msgs/Image (no row padding, native byte order) from an array in `encoding`.

    `array` is (H, W, C) uint8 for colour encodings, (H, W) or (H, W, 1) for mono8 (uint8) and
    mono16 (uint16, any byte order). Raises ImageConversionError (a ValueError) when the encoding
    is unknown or the shape or dtype does not fit it.
    """
    from sensor_msgs.msg import Image

    if encoding not in _LAYOUTS:
        supported = ", ".join(sorted(_LAYOUTS))
        raise ImageConversionError(f"encoding={encoding!r} is not supported; supported: {supported}")
    channels, depth = _LAYOUTS[encoding]
    array = np.asarray(array)
    dtype = np.dtype(np.uint8 if depth == 1 else np.uint16)
    if array.dtype.kind != "u" or array.dtype.itemsize != depth:
        raise ImageConversionError(f"encoding {encoding!r} needs a {dtype} array, got dtype {array.dtype}")
    if channels == 1 and array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    expected = (2,) if channels == 1 else (3, channels)
    if (array.ndim, *array.shape[2:]) != expected or 0 in array.shape:
        wanted = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ImageConversionError(
            f"encoding {encoding!r} needs a non-empty array of shape {wanted}, got shape {array.shape}"
        )
    pixels = np.ascontiguousarray(array, dtype=dtype)  # dtype is native-endian: swaps '>u2' input
    height, width = pixels.shape[:2]
    msg = Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(sys.byteorder == "big"),
        step=width * channels * depth,
    )
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    _fill_data(msg, pixels)
    return msg


def _fill_data(msg: Any, pixels: np.ndarray) -> None:
    # A new message's data is an empty array.array('B'): appending the bytes to it is one memcpy
    # (~0.1 ms for 640×480×3). Assigning bytes or an ndarray to msg.data instead copies again, or
    # walks every byte in Python when ROS_PYTHON_CHECK_FIELDS=1 or the array is an ndarray (20-40 ms).
    msg.data.frombytes(memoryview(pixels).cast("B"))


def _compression(fmt: str) -> str:
    # image_transport writes '<encoding>; <jpeg|png> compressed <encoding>'; others write just 'jpeg'.
    words = fmt.split(";")[-1].split()
    return words[0].lower() if words else ""


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg or png) into a (H, W, 3) uint8 RGB array.

    Accepts formats like 'jpeg', 'png', 'rgb8; jpeg compressed bgr8'. Grey or 16-bit pngs come back
    as 8-bit RGB. Raises ImageConversionError for an unsupported format or undecodable data.
    """
    fmt = _field(msg, "CompressedImage", "format")
    if not isinstance(fmt, str) or _compression(fmt) not in _EXTENSIONS:
        raise ImageConversionError(
            f"CompressedImage.format={fmt!r} is not supported; supported: jpeg, png "
            "(alone or as '<encoding>; <jpeg|png> compressed <encoding>')"
        )
    data = _as_bytes(_field(msg, "CompressedImage", "data"), "CompressedImage")
    bgr = None
    if data.size:  # cv2.imdecode asserts on an empty buffer
        try:
            bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        except cv2.error:
            bgr = None
    if bgr is None:
        raise ImageConversionError(
            f"CompressedImage.data could not be decoded ({data.size} bytes, format={fmt!r})"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def numpy_to_compressed(
    array_rgb: np.ndarray, fmt: str = "jpeg", *, stamp: Time | None = None, frame_id: str = ""
) -> CompressedImage:
    """Encode a (H, W, 3) uint8 RGB array as a sensor_msgs/CompressedImage ('jpeg' or 'png').

    The format field follows image_transport: 'rgb8; jpeg compressed bgr8'. Raises
    ImageConversionError for an unknown fmt or an array of the wrong shape or dtype.
    """
    from sensor_msgs.msg import CompressedImage

    if fmt not in _EXTENSIONS:
        supported = ", ".join(sorted(_EXTENSIONS))
        raise ImageConversionError(f"fmt={fmt!r} is not supported; supported: {supported}")
    array_rgb = np.asarray(array_rgb)
    if array_rgb.dtype != np.uint8 or array_rgb.ndim != 3 or array_rgb.shape[2] != 3 or 0 in array_rgb.shape:
        raise ImageConversionError(
            f"numpy_to_compressed needs a non-empty (H, W, 3) uint8 array, "
            f"got shape {array_rgb.shape} dtype {array_rgb.dtype}"
        )
    ok, encoded = cv2.imencode(_EXTENSIONS[fmt], cv2.cvtColor(array_rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - cv2 fails only without the codec
        raise ImageConversionError(f"cv2.imencode could not encode a {array_rgb.shape} image as {fmt}")
    name = "jpeg" if fmt == "jpg" else fmt
    msg = CompressedImage(format=f"rgb8; {name} compressed bgr8")
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    _fill_data(msg, encoded)
    return msg
