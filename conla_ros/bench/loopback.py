"""A camera image round trip over ROS 2 on this machine: a check that DDS, the message types and
our conversions work together, and a measure of what image transport costs.

A publisher process sends a deterministic test pattern; the subscriber (this process) converts
each frame back to numpy, compares it with the pattern pixel for pixel, and runs the model's
preprocessing on it. Used by `conla demo`, `conla bench ros` and the integration tests.

    python -m conla_ros.bench.loopback publish --count 50 --rate 30   # the publisher side alone
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from conla_ros.core.preprocessing import ImagePreprocessing, preprocess_image
from conla_ros.ros.image_conversions import image_to_rgb, numpy_to_image

DEFAULT_TOPIC = "/conla_loopback/image_raw"
FRAME_ID_PREFIX = "loopback_camera/"  # the frame index travels in header.frame_id


def pattern_frame(index: int, height: int, width: int) -> np.ndarray:
    """Frame `index` of a deterministic moving colour pattern, (H, W, 3) uint8 RGB."""
    rows = np.arange(height, dtype=np.int64)[:, None]
    cols = np.arange(width, dtype=np.int64)[None, :]
    red = (cols * 7 + index * 5) % 256
    green = (rows * 11 + index * 3) % 256
    blue = (rows * cols + index) % 256
    return np.stack(np.broadcast_arrays(red, green, blue), axis=-1).astype(np.uint8)


def frame_index(frame_id: str) -> int | None:
    """The test-pattern index carried in a loopback frame id, or None for other frames."""
    if not frame_id.startswith(FRAME_ID_PREFIX):
        return None
    suffix = frame_id[len(FRAME_ID_PREFIX):]
    return int(suffix) if suffix.isdigit() else None


def publish_test_pattern(topic: str, count: int, rate_hz: float, height: int, width: int,
                         encoding: str = "rgb8", wait_subscribers: int = 1,
                         timeout_s: float = 30.0) -> int:
    """Publish `count` pattern frames once `wait_subscribers` subscriptions have matched.

    Returns 0 on success, 2 if no subscriber matched within `timeout_s`. Waits for matched
    subscriptions rather than sleeping: DDS discovery on loopback sometimes takes seconds.
    """
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("conla_loopback_publisher")
    # Reliable, so a best-effort camera subscriber and a reliable one can both match.
    publisher = node.create_publisher(Image, topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    try:
        deadline = time.monotonic() + timeout_s
        while publisher.get_subscription_count() < wait_subscribers:
            if time.monotonic() > deadline:
                node.get_logger().error(f"no subscriber on {topic} after {timeout_s:.0f} s")
                return 2
            time.sleep(0.02)
        period = 1.0 / rate_hz
        next_time = time.monotonic()
        for index in range(count):
            pixels = pattern_frame(index, height, width)
            if encoding == "bgr8":
                pixels = pixels[..., ::-1]
            msg = numpy_to_image(pixels, encoding, stamp=node.get_clock().now().to_msg(),
                                 frame_id=f"{FRAME_ID_PREFIX}{index}")
            publisher.publish(msg)
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
        # Linger until the subscriber leaves, so reliable frames still in flight are delivered.
        linger_until = time.monotonic() + 5.0
        while publisher.get_subscription_count() > 0 and time.monotonic() < linger_until:
            time.sleep(0.02)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def start_publisher_process(topic: str, count: int, rate_hz: float, height: int, width: int,
                            encoding: str = "rgb8") -> subprocess.Popen:
    """Start `publish_test_pattern` in a separate Python process (same environment)."""
    command = [sys.executable, "-m", "conla_ros.bench.loopback", "publish", "--topic", topic,
               "--count", str(count), "--rate", str(rate_hz), "--height", str(height),
               "--width", str(width), "--encoding", encoding]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@dataclass(frozen=True)
class LoopbackReport:
    """What one loopback run measured."""

    sent: int
    received: int
    exact: int  # frames whose pixels matched the pattern exactly
    height: int
    width: int
    discovery_s: float  # from start until the first frame arrived
    latency_ms_p50: float  # header stamp -> received in this process
    latency_ms_p99: float
    convert_ms_mean: float  # Image -> RGB numpy
    preprocess_ms_mean: float  # RGB numpy -> model input

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        return [
            f"frames: {self.received}/{self.sent} received, {self.exact} pixel-exact "
            f"({self.width}x{self.height} rgb8)",
            f"discovery + first frame: {self.discovery_s:.2f} s",
            f"transport latency: p50 {self.latency_ms_p50:.2f} ms, p99 {self.latency_ms_p99:.2f} ms",
            f"Image -> numpy: {self.convert_ms_mean:.3f} ms/frame; "
            f"preprocessing: {self.preprocess_ms_mean:.3f} ms/frame",
        ]


def measure_loopback(count: int = 60, rate_hz: float = 30.0, height: int = 480, width: int = 640,
                     topic: str = DEFAULT_TOPIC, timeout_s: float = 60.0,
                     preprocessing: ImagePreprocessing | None = None) -> LoopbackReport:
    """Run a publisher process and receive, check, convert and preprocess its frames here."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from conla_ros.ros.qos import CAMERA_QOS

    preprocessing = preprocessing or ImagePreprocessing()
    latencies: list[float] = []
    convert_times: list[float] = []
    preprocess_times: list[float] = []
    exact = 0
    first_frame_at: float | None = None

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("conla_loopback_subscriber", context=context)

    def on_image(msg: Image) -> None:
        nonlocal exact, first_frame_at
        now_ns = node.get_clock().now().nanoseconds
        if first_frame_at is None:
            first_frame_at = time.monotonic()
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latencies.append((now_ns - stamp_ns) / 1e6)
        t0 = time.perf_counter()
        rgb = image_to_rgb(msg)
        t1 = time.perf_counter()
        preprocess_image(rgb, preprocessing)
        t2 = time.perf_counter()
        convert_times.append(t1 - t0)
        preprocess_times.append(t2 - t1)
        index = frame_index(msg.header.frame_id)
        if index is not None and np.array_equal(rgb, pattern_frame(index, height, width)):
            exact += 1

    node.create_subscription(Image, topic, on_image, CAMERA_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    started = time.monotonic()
    publisher = start_publisher_process(topic, count, rate_hz, height, width)
    try:
        deadline = started + timeout_s
        while len(latencies) < count and time.monotonic() < deadline and publisher.poll() is None:
            executor.spin_once(timeout_sec=0.05)
        # The publisher may have exited with frames still queued here.
        drain_until = time.monotonic() + 0.5
        while len(latencies) < count and time.monotonic() < drain_until:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        try:
            output, _ = publisher.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            publisher.kill()
            output, _ = publisher.communicate()
    if not latencies:
        raise RuntimeError(f"no frame arrived on {topic} within {timeout_s:.0f} s; "
                           f"publisher said: {output.strip() or '(nothing)'}")

    def mean_ms(values: Sequence[float]) -> float:
        return float(np.mean(values) * 1e3)

    return LoopbackReport(
        sent=count, received=len(latencies), exact=exact, height=height, width=width,
        discovery_s=(first_frame_at or started) - started,
        latency_ms_p50=float(np.percentile(latencies, 50)),
        latency_ms_p99=float(np.percentile(latencies, 99)),
        convert_ms_mean=mean_ms(convert_times), preprocess_ms_mean=mean_ms(preprocess_times),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m conla_ros.bench.loopback publish ...`: the publisher side of the round trip."""
    parser = argparse.ArgumentParser(prog="python -m conla_ros.bench.loopback")
    sub = parser.add_subparsers(dest="role", required=True)
    pub = sub.add_parser("publish", help="publish the test pattern once a subscriber matched")
    pub.add_argument("--topic", default=DEFAULT_TOPIC)
    pub.add_argument("--count", type=int, default=60)
    pub.add_argument("--rate", type=float, default=30.0, help="frames per second")
    pub.add_argument("--height", type=int, default=480)
    pub.add_argument("--width", type=int, default=640)
    pub.add_argument("--encoding", choices=("rgb8", "bgr8"), default="rgb8")
    pub.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a subscriber")
    args = parser.parse_args(argv)
    return publish_test_pattern(args.topic, args.count, args.rate, args.height, args.width,
                                args.encoding, timeout_s=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
