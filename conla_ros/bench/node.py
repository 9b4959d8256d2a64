"""`conla bench node`: the policy node under a camera stream, measured from outside (issue 6, point 8).

    conla bench node --model models/NAME [--seconds 60] [--rate 30] [--size 640x480] [--json]
    python -m conla_ros.bench.node --model ...        (the same, before `conla` lists it)

Starts policy_node as its own process (autostart, the output mode that fits the model), publishes
an instruction and camera frames at `--rate` Hz for `--seconds` through DDS on loopback, and prints:
image -> command latency p50/p99 (camera stamp to the first command computed from that frame, as
the node measures it: transport + conversion + inference + waiting for the next control tick),
inference latency, achieved control rate, missed and starved ticks, dropped frames, and the node
process's CPU use and RSS at the start and the end of the stream (RSS should stay flat).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `conla bench node`."""
    parser.add_argument("--model", required=True, help="exported model directory (policy.onnx + model.yaml)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the camera stream (default 60)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz (default 30)")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the frames (default 640x480)")
    parser.add_argument("--control-rate", type=float, default=0.0, help="control_rate_hz (default: the model's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime threads of the node (default: the node's own default, 1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def _proc(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) and RSS (MiB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:")) / 1024
    return {"cpu_s": cpu, "rss_mib": rss, "t": time.monotonic()}


def run(args: argparse.Namespace) -> int:
    """Stream frames to a policy_node process and print what it achieved."""
    import numpy as np

    from conla_ros.core.model_spec import load_model_spec
    from conla_ros.ros.dds import use_large_image_profile

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    spec = load_model_spec(args.model)
    output = "ee_twist" if spec.action_space.kind == "ee_delta" else "joint_commands"
    transport = use_large_image_profile()  # this process and the node's (inherited)

    import rclpy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from conla_ros.episodes import topics as T
    from conla_ros.ros.image_conversions import numpy_to_image
    from conla_ros.ros.policy_diagnostics import PolicyDiagnostics
    from conla_ros.ros.qos import CAMERA_QOS, INSTRUCTION_QOS

    command = [sys.executable, "-m", "conla_ros.nodes.policy_node", "--ros-args", "-p", f"model_dir:={args.model}",
               "-p", "autostart:=true", "-p", f"output:={output}", "-p", f"control_rate_hz:={float(args.control_rate)}",
               "-p", "stale_image_timeout:=1.0"]
    if args.threads is not None:
        command += ["-p", f"threads:={args.threads}"]
    node_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    client = rclpy.create_node("conla_bench_node", context=context)
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    diagnostics = PolicyDiagnostics(client).reports
    camera = client.create_publisher(Image, T.CAMERA.name, CAMERA_QOS)
    instruction = client.create_publisher(String, T.INSTRUCTION.name, INSTRUCTION_QOS)
    # A model with proprioception (or joint-space output) waits for /joint_states, as on a robot:
    # publish them beside every frame, at rest, like an arm driver would.
    joints = list(dict.fromkeys([*(spec.proprio.names if spec.proprio is not None else ()),
                                 *(spec.action_space.names if output == "joint_commands" else ())]))
    joint_states = client.create_publisher(JointState, T.JOINT_STATES.name, CAMERA_QOS) if joints else None
    try:
        deadline = time.monotonic() + 60
        while camera.get_subscription_count() < 1 or not diagnostics:
            if node_process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"policy_node did not come up: {node_process.stderr.read()[-2000:]}")
            executor.spin_once(timeout_sec=0.05)
        instruction.publish(String(data="open the drawer"))
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(8)]
        period = 1.0 / args.rate
        start = end = None
        sent = 0
        t0 = time.monotonic()
        next_frame = t0
        warmup = 2.0
        while True:
            now = time.monotonic()
            if start is None and now - t0 >= warmup:
                start = _proc(node_process.pid)
            if now - t0 >= warmup + args.seconds:
                end = _proc(node_process.pid)
                break
            if now >= next_frame:
                stamp = client.get_clock().now().to_msg()
                if joint_states is not None:
                    msg = JointState(name=joints, position=[0.0] * len(joints))
                    msg.header.stamp = stamp
                    joint_states.publish(msg)
                camera.publish(numpy_to_image(frames[sent % len(frames)], "rgb8", stamp=stamp))
                sent += 1
                next_frame += period
            executor.spin_once(timeout_sec=max(0.0, min(next_frame - time.monotonic(), 0.01)))
        seen_while_streaming = len(diagnostics)  # later reports would count the ticks after the stream ends
    finally:
        node_process.send_signal(2)
        try:
            node_process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            node_process.kill()
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown(context=context)
    final = diagnostics[seen_while_streaming - 1]  # the last report (1 Hz) while frames were flowing
    span = end["t"] - start["t"]
    report: dict[str, Any] = {
        "model": spec.name, "provider": final.get("provider"), "frames_sent": sent, "frame_size": f"{width}x{height}",
        "camera_rate_hz": args.rate, "seconds": args.seconds, "transport": transport,
        "image_to_command_p50_ms": final.get("image_to_command_p50_ms"),
        "image_to_command_p99_ms": final.get("image_to_command_p99_ms"),
        "inference_p50_ms": final.get("inference_p50_ms"), "inference_p99_ms": final.get("inference_p99_ms"),
        "frame_delay_p50_ms": final.get("frame_delay_p50_ms"), "frame_delay_p99_ms": final.get("frame_delay_p99_ms"),
        "control_rate_hz": final.get("control_rate_hz"), "control_rate_target_hz": final.get("control_rate_target_hz"),
        "missed_ticks": final.get("missed_ticks"), "starved_ticks": final.get("starved_ticks"),
        "frames_received": final.get("frames_received"), "dropped_frames": final.get("dropped_frames"),
        "commands": final.get("commands"), "state": final.get("state"),
        "cpu_percent": round(100 * (end["cpu_s"] - start["cpu_s"]) / span, 1),
        "rss_start_mib": round(start["rss_mib"], 1), "rss_end_mib": round(end["rss_mib"], 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"policy_node under a {report['frame_size']} camera at {args.rate:g} Hz for {args.seconds:g} s "
              f"({spec.name} on {report['provider']}; {transport})")
        rows = [("image -> command p50 / p99", f"{report['image_to_command_p50_ms']} / "
                 f"{report['image_to_command_p99_ms']} ms"),
                ("inference p50 / p99", f"{report['inference_p50_ms']} / {report['inference_p99_ms']} ms"),
                ("control rate achieved / target", f"{report['control_rate_hz']} / "
                 f"{report['control_rate_target_hz']} Hz"),
                ("missed / starved ticks", f"{report['missed_ticks']} / {report['starved_ticks']}"),
                ("frames sent / received / dropped", f"{sent} / {report['frames_received']} / "
                 f"{report['dropped_frames']}"),
                ("commands", str(report["commands"])),
                ("node CPU", f"{report['cpu_percent']} % of one core"),
                ("node RSS start / end", f"{report['rss_start_mib']} / {report['rss_end_mib']} MiB")]
        width_ = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"  {name:<{width_}}  {value}")
    return 0 if report["state"] == "running" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conla bench node", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
