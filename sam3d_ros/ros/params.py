"""Declare the node's parameters from :data:`sam3d_ros.core.config.PARAMETERS` (once, with
descriptors and ranges) and load them into the frozen NodeConfig (the node's part and, in
its ``pipeline``, the core's PipelineConfig)."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.node import Node

from sam3d_ros.core.config import PARAMETERS, NodeConfig, ParamSpec, node_config_from_mapping

_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """ROS parameter descriptor (type, description, range, read-only) of a spec."""
    desc = ParameterDescriptor(
        name=spec.name, type=_TYPES[spec.type], description=spec.description, read_only=spec.read_only
    )
    if spec.choices:
        desc.additional_constraints = f"one of {list(spec.choices)}"
    if spec.type is float and spec.min is not None and spec.max is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max))]
    elif spec.type is int and spec.min is not None and spec.max is not None:
        desc.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=0)]
    return desc


def declare_parameters(node: Node) -> None:
    """Declare every parameter with its default and descriptor."""
    for spec in PARAMETERS:
        if not node.has_parameter(spec.name):
            node.declare_parameter(spec.name, spec.default, descriptor(spec))


def parameter_values(node: Node) -> dict[str, Any]:
    """Current values of all declared parameters."""
    return {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}


def load_config(node: Node) -> NodeConfig:
    """Validated frozen config (both parts) from the node's parameters (raises ConfigError)."""
    return node_config_from_mapping(parameter_values(node))
