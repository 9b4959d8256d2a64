"""Node parameter tables: validation of types, ranges, choices and rules, and refused updates."""

from __future__ import annotations

import pytest

from conla_ros.ros.parameters import ParameterError, ParamSpec, check_parameter_update


def test_param_spec_validates_types_ranges_choices_and_rules() -> None:
    rate = ParamSpec("rate", 20.0, "a rate", low=1.0, check=lambda v: None if v != 13.0 else "unlucky")
    assert rate.validate(30) == 30.0  # an integer given for a float parameter is fine
    for value, words in ((0.5, ">= 1.0"), ("fast", "must be a float"), (13.0, "unlucky")):
        with pytest.raises(ParameterError, match=words):
            rate.validate(value)
    mode = ParamSpec("mode", "a", "a mode", choices=("a", "b"))
    with pytest.raises(ParameterError, match="one of: a, b"):
        mode.validate("c")
    assert mode.descriptor().additional_constraints == "one of: a, b"
    assert rate.descriptor().floating_point_range[0].from_value == 1.0
    flag = ParamSpec("flag", True, "a flag")
    with pytest.raises(ParameterError, match="bool"):
        flag.validate(1)


def test_parameter_updates_are_refused_with_the_reason() -> None:
    from rclpy.parameter import Parameter

    specs = (ParamSpec("task", "reach", "a task", choices=("reach", "push"), read_only=False),)
    assert check_parameter_update(specs, [Parameter("task", value="push")]).successful
    refused = check_parameter_update(specs, [Parameter("task", value="jump")])
    assert not refused.successful and "one of: reach, push" in refused.reason
    assert check_parameter_update(specs, [Parameter("use_sim_time", value=True)]).successful
