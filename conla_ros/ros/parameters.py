"""Node parameters declared from one table: type, default, description, range or choices, read-only.

Each node module lists its parameters as a tuple of `ParamSpec`; `declare_parameters` declares them
in the node's `__init__` with a `ParameterDescriptor` (so `ros2 param describe` shows the
description, range and choices) and returns their validated values. The same table lets a test
check that a node's YAML file names exactly the parameters the node declares.

Ranges go into the descriptor, so ROS itself refuses an out-of-range `ros2 param set`; choices are
checked here (ROS has no "one of" constraint) and by the node's set-parameters callback
(`check_parameter_update`). A bad value given at start-up raises ParameterError, whose text
names the parameter, the value and what is allowed.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import Executor
from rclpy.node import Node
from rclpy.parameter import Parameter

__all__ = ["ParamSpec", "ParameterError", "check_parameter_update", "declare_parameters", "run_node",
           "spin_until_shutdown"]


class ParameterError(ValueError):
    """A parameter value a node cannot run with; the text names the parameter, the value and the rule."""


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    `default` fixes the type (bool, int, float or str). `low`/`high` bound numbers (inclusive),
    `choices` lists the allowed strings, `check` is a further rule returning an error text or None.
    `read_only` parameters cannot change after start-up (`ros2 param set` is refused).
    """

    name: str
    default: bool | int | float | str
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = True
    check: Callable[[Any], str | None] | None = None

    def descriptor(self) -> ParameterDescriptor:
        """The ROS parameter descriptor: description, constraints, range and read-only flag."""
        descriptor = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only)
        if self.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(self.choices)
        if isinstance(self.default, bool):
            return descriptor
        if isinstance(self.default, int) and (self.low is not None or self.high is not None):
            descriptor.integer_range = [IntegerRange(
                from_value=int(self.low if self.low is not None else -(2**63)),
                to_value=int(self.high if self.high is not None else 2**63 - 1), step=0)]
        elif isinstance(self.default, float) and (self.low is not None or self.high is not None):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(self.low if self.low is not None else -1e308),
                to_value=float(self.high if self.high is not None else 1e308), step=0.0)]
        return descriptor

    def validate(self, value: Any) -> Any:
        """`value` if it obeys this parameter's rules; otherwise ParameterError naming the parameter."""
        kind = type(self.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # `-p rate:=20` arrives as an integer
        if type(value) is not kind:
            raise ParameterError(f"parameter {self.name}={value!r} must be a {kind.__name__}")
        if self.choices and value not in self.choices:
            raise ParameterError(f"parameter {self.name}={value!r} must be one of: {', '.join(self.choices)}")
        if self.low is not None and value < self.low:
            raise ParameterError(f"parameter {self.name}={value!r} must be >= {self.low}")
        if self.high is not None and value > self.high:
            raise ParameterError(f"parameter {self.name}={value!r} must be <= {self.high}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ParameterError(f"parameter {self.name}={value!r}: {problem}")
        return value


def declare_parameters(node: Node, specs: Iterable[ParamSpec]) -> dict[str, Any]:
    """Declare every parameter of `specs` on `node` and return {name: validated value}.

    Raises ParameterError for a value given at start-up (command line or YAML) that breaks a rule.
    """
    values: dict[str, Any] = {}
    for spec in specs:
        try:
            node.declare_parameter(spec.name, spec.default, spec.descriptor())
        except Exception as error:  # rclpy's own range/type exceptions: say which parameter
            raise ParameterError(f"parameter {spec.name}: {error}") from None
        values[spec.name] = spec.validate(node.get_parameter(spec.name).value)
    return values


def check_parameter_update(specs: Sequence[ParamSpec], parameters: Sequence[Parameter]) -> SetParametersResult:
    """A set-parameters callback's answer: refuse (with the reason) any value that breaks its rule."""
    by_name = {spec.name: spec for spec in specs}
    for parameter in parameters:
        spec = by_name.get(parameter.name)
        if spec is None:
            continue  # e.g. use_sim_time: rclpy's own
        try:
            spec.validate(parameter.value)
        except ParameterError as error:
            return SetParametersResult(successful=False, reason=str(error))
    return SetParametersResult(successful=True)


def spin_until_shutdown(executor: Executor) -> None:
    """Spin until Ctrl-C, SIGTERM or shutdown.

    rclpy's signal handler shuts the context down from another thread; when that lands while the
    executor is building its wait set, spin raises an RCLError ("the given context is not valid")
    instead of ExternalShutdownException. With the context gone that is a normal exit; with it
    alive the error is real and propagates.
    """
    from rclpy.executors import ExternalShutdownException

    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if executor.context.ok():
            raise


def run_node(make_node: Callable[[], Node], name: str, argv: list[str] | None = None, *,
             errors: Mapping[type[BaseException], tuple[int, str]] | None = None) -> int:
    """The `main()` of the conla_ros nodes: init, spin until Ctrl-C, SIGTERM or shutdown, clean up; the exit code.

    SIGINT and SIGTERM end the spin through a flag, not an exception and not rclpy's own handler
    (which shuts the context down first): so the node's `before_shutdown()`, when it has one, still
    has a working context to send its last messages on (the policy node's stop command), then
    `destroy_node()` does the rest of the clean-up (close the world, abort a recording) and the
    process exits 0, with no traceback. A signal while the node is starting ends the start-up (exit 0).

    A ParameterError at start-up is printed with the node's name and exits 2; `errors` maps further
    start-up exceptions to (exit code, message prefix), e.g. the policy node's ModelLoadError -> 1.
    """
    import signal

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    try:
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    except ImportError:  # an rclpy without the option: its handler stays, the spin still ends cleanly
        rclpy.init(args=argv if argv is not None else sys.argv)
    stop = threading.Event()
    starting = True

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        if starting:  # interrupt a long start-up (loading a model) at once
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    node: Node | None = None
    code = 0
    try:
        node = make_node()
        starting = False
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and executor.context.ok():
            try:
                executor.spin_once(timeout_sec=0.05)  # the flag is checked at least 20 times a second
            except Exception:
                if executor.context.ok():
                    raise
                break  # shut down from elsewhere (rclpy's handler, a test)
    except KeyboardInterrupt:  # a signal while the node was starting
        pass
    except ParameterError as error:
        print(f"{name}: {error}", file=sys.stderr)
        code = 2
    except Exception as error:
        known = next(((c, prefix) for kind, (c, prefix) in (errors or {}).items() if isinstance(error, kind)), None)
        if known is None:
            raise
        code = known[0]
        print(f"{name}: {known[1]}{error}", file=sys.stderr)
    finally:
        starting = False
        # A second Ctrl-C during the clean-up must not cut it short (the stop message is in it).
        for sig in previous:
            signal.signal(sig, lambda *_: None)
        try:
            if node is not None:
                hook = getattr(node, "before_shutdown", None)
                if hook is not None:
                    hook()
                node.destroy_node()
        finally:
            rclpy.try_shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return code
