"""What a client needs to reset `sim_arm_node` to a (task, seed): service names and request messages.

A reset is two calls, served in order by the node's single-threaded executor: set the reset
parameters atomically (`rcl_interfaces/srv/SetParametersAtomically` on
`/<node>/set_parameters_atomically`: the node refuses an unknown task or a negative seed with a
reason), then `std_srvs/srv/Trigger` on `/<node>/reset`, whose reply carries the new episode
status as JSON. From the shell:

    ros2 param set /sim_arm_node task push && ros2 param set /sim_arm_node seed 1000003
    ros2 service call /sim_arm_node/reset std_srvs/srv/Trigger
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.srv import SetParametersAtomically
from rclpy.parameter import Parameter

__all__ = ["DEFAULT_NODE", "reset_service", "set_parameters_request", "set_parameters_service"]

DEFAULT_NODE = "/sim_arm_node"


def reset_service(node: str = DEFAULT_NODE) -> str:
    """The reset service of the sim arm node named `node` (fully qualified)."""
    return f"{node.rstrip('/')}/reset"


def set_parameters_service(node: str = DEFAULT_NODE) -> str:
    """The atomic set-parameters service of the sim arm node named `node`."""
    return f"{node.rstrip('/')}/set_parameters_atomically"


def set_parameters_request(**values: Any) -> SetParametersAtomically.Request:
    """A request setting the given reset parameters (task=..., seed=..., max_steps=..., instruction=...)."""
    request = SetParametersAtomically.Request()
    request.parameters = [Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]
    return request
