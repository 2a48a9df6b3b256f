"""Pure-Python install of sam3d_ros (the messages come from the colcon build).

In a ROS workspace, ``colcon build`` uses CMakeLists.txt (ament_cmake) and installs the
modules into the generated ``sam3d_ros`` package. This file serves ``pip install -e .``
for the ``sam3d-ros`` command outside a workspace.
"""

from setuptools import find_packages, setup

setup(
    name="sam3d_ros",
    version="0.1.0",
    description="Amodal 3D shape, pose and collision shapes for masked objects in RGB-D frames",
    packages=find_packages(include=["sam3d_ros", "sam3d_ros.*"]),
    package_data={"sam3d_ros": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "scipy",
        "scikit-image",
        "trimesh",
        "tqdm",
        "pyyaml",
        "pillow",
        "tqdm",
        "rosbags",
        "threadpoolctl",
    ],
    extras_require={
        "onnx": ["onnxruntime"],
        "torch": ["torch"],
        "collision": ["coacd", "vhacdx", "fast-simplification"],
        "generate": ["pybullet"],
    },
    entry_points={"console_scripts": ["sam3d-ros = sam3d_ros.cli:main"]},
)
