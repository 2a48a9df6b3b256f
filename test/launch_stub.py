"""A tiny stand-in for ``launch`` / ``launch_ros`` (not installable from PyPI), enough to
evaluate ``launch/sam3d.launch.py`` the way upstream ``ros2 launch`` does: launch arguments
take their command-line value or their default, ``OpaqueFunction`` runs with the context,
conditions pick the nodes, and a node's ``parameters`` become, in order, ``--params-file``
arguments (a dict is written to a YAML file under ``/**``, its values evaluated as YAML, as
``launch_ros.utilities.evaluate_parameters`` does).

Only public, documented behaviour of launch 3.x / launch_ros 0.2x is reproduced here.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml


class Context:
    def __init__(self, share_dir: Path, cli: dict[str, str]) -> None:
        self.share_dir = share_dir
        self.launch_configurations: dict[str, str] = dict(cli)


class Substitution:
    def perform(self, context: Context) -> str:
        raise NotImplementedError


def perform(value: Any, context: Context) -> str:
    if isinstance(value, Substitution):
        return value.perform(context)
    if isinstance(value, (list, tuple)):
        return "".join(perform(v, context) for v in value)
    return str(value)


class LaunchConfiguration(Substitution):
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: Context) -> str:
        return context.launch_configurations[self.name]


class PathJoinSubstitution(Substitution):
    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts

    def perform(self, context: Context) -> str:
        return str(Path(*(perform(p, context) for p in self.parts)))


class FindPackageShare(Substitution):
    def __init__(self, package: str) -> None:
        self.package = package

    def perform(self, context: Context) -> str:
        return str(context.share_dir)


class DeclareLaunchArgument:
    def __init__(self, name: str, default_value: Any = None, description: str = "", **_: Any) -> None:
        self.name, self.default_value, self.description = name, default_value, description

    def visit(self, context: Context) -> list[Any]:
        if self.name not in context.launch_configurations:
            if self.default_value is None:
                raise KeyError(f"launch argument {self.name!r} is required")
            context.launch_configurations[self.name] = perform(self.default_value, context)
        return []


class OpaqueFunction:
    def __init__(self, function: Any, args: Any = None, kwargs: Any = None) -> None:
        self.function, self.args, self.kwargs = function, args or [], kwargs or {}

    def visit(self, context: Context) -> list[Any]:
        return list(self.function(context, *self.args, **self.kwargs) or [])


class _Condition:
    def __init__(self, predicate: Any) -> None:
        self.predicate = predicate

    def _value(self, context: Context) -> bool:
        text = perform(self.predicate, context).strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise ValueError(f"condition {text!r} is not a boolean")


class IfCondition(_Condition):
    def evaluate(self, context: Context) -> bool:
        return self._value(context)


class UnlessCondition(_Condition):
    def evaluate(self, context: Context) -> bool:
        return not self._value(context)


class LifecycleNode:
    def __init__(self, *, condition: Any = None, **kwargs: Any) -> None:
        self.condition = condition
        self.kwargs = kwargs

    def visit(self, context: Context) -> list[Any]:
        return []


class LaunchDescription:
    def __init__(self, entities: list[Any]) -> None:
        self.entities = list(entities)


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


@contextmanager
def stub_modules() -> Iterator[None]:
    """``launch`` and ``launch_ros`` stand-ins in ``sys.modules`` for the duration."""
    mods = {
        "launch": _module("launch", LaunchDescription=LaunchDescription),
        "launch.actions": _module(
            "launch.actions", DeclareLaunchArgument=DeclareLaunchArgument, OpaqueFunction=OpaqueFunction
        ),
        "launch.conditions": _module(
            "launch.conditions", IfCondition=IfCondition, UnlessCondition=UnlessCondition
        ),
        "launch.substitutions": _module(
            "launch.substitutions",
            LaunchConfiguration=LaunchConfiguration,
            PathJoinSubstitution=PathJoinSubstitution,
        ),
        "launch_ros": _module("launch_ros"),
        "launch_ros.actions": _module("launch_ros.actions", LifecycleNode=LifecycleNode),
        "launch_ros.substitutions": _module("launch_ros.substitutions", FindPackageShare=FindPackageShare),
    }
    saved = {name: sys.modules.get(name) for name in mods}
    sys.modules.update(mods)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def load_launch_file(path: Path) -> types.ModuleType:
    """Import a launch file against the stand-ins."""
    with stub_modules():
        spec = importlib.util.spec_from_file_location(f"_launch_{path.stem.replace('.', '_')}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def launched_nodes(
    module: types.ModuleType, cli: dict[str, str], share_dir: Path
) -> tuple[list[Any], Context]:
    """The nodes ``ros2 launch`` would start for the command-line arguments ``cli``."""
    context = Context(share_dir, cli)
    pending = list(module.generate_launch_description().entities)
    nodes = []
    while pending:
        entity = pending.pop(0)
        if isinstance(entity, LifecycleNode):
            if entity.condition is None or entity.condition.evaluate(context):
                nodes.append(entity)
        else:
            pending[:0] = entity.visit(context)
    return nodes, context


def parameter_files(node: LifecycleNode, context: Context, tmp_dir: Path) -> list[str]:
    """The node's ``parameters`` as the ordered ``--params-file`` paths launch_ros passes."""
    paths = []
    for i, entry in enumerate(node.kwargs.get("parameters", [])):
        if isinstance(entry, dict):
            values = {}
            for name, value in entry.items():
                values[name] = (
                    yaml.safe_load(perform(value, context)) if not isinstance(value, bool) else value
                )
            path = tmp_dir / f"launch_params_{i}.yaml"
            path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
            paths.append(str(path))
        else:
            paths.append(perform(entry, context))
    return paths
