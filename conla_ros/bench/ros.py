"""`conla bench ros`: what a camera frame costs between the driver and the model input."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `conla bench ros`."""
    parser.add_argument("--frames", type=int, default=120, help="frames to send (default 120)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz (default 30)")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the camera (default 640x480)")
    parser.add_argument("--default-dds", action="store_true",
                        help="keep Fast DDS defaults instead of config/fastdds_large_images.xml")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace) -> int:
    """Publish frames from another process over loopback and print the measured figures."""
    from dataclasses import asdict

    from conla_ros.bench.loopback import measure_loopback
    from conla_ros.ros.dds import use_large_image_profile

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    transport = "Fast DDS defaults" if args.default_dds else use_large_image_profile()
    report = measure_loopback(count=args.frames, rate_hz=args.rate, height=height, width=width)
    if args.json:
        print(json.dumps({**asdict(report), "transport": transport}, indent=2))
    else:
        print("ROS 2 image loopback (publisher in a second process, rclpy subscriber here)")
        print(f"  transport: {transport}")
        for line in report.lines():
            print("  " + line)
    return 0 if report.exact == report.received else 1
