"""Meta-World stand-in for the robot: the world, its two visual domains, and data generation.

Importing any module of this package runs this file first, so this is the one place that picks
MuJoCo's GL backend: it must be set before the first `import mujoco` (or `import metaworld`) in
the process, and headless machines need EGL. An explicit MUJOCO_GL (osmesa, glfw) wins.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
