"""sam3d_ros: amodal 3D shape, pose and collision shapes for masked objects in RGB-D frames.

Sub-packages, in layer order (each imports only itself and those above it; ``learning`` may
also import ``sim``; test/test_layers.py checks it):

- ``sam3d_ros.core``: pure numpy logic (no ROS imports).
- ``sam3d_ros.backends``: shape/layout estimators behind one interface (and the torch network).
- ``sam3d_ros.learning``: training data, training, export and evaluation of the network.
- ``sam3d_ros.sim``: synthetic scenes, sensor noise, the dataset format.
- ``sam3d_ros.stream``: the frame path without rclpy (conversions, synchroniser).
- ``sam3d_ros.ros``: the ROS 2 node, message builders, MoveIt and tf2.
- ``sam3d_ros.tools``: offline replay, report and the ``sam3d-ros`` commands.
- ``sam3d_ros.msg``: generated message classes (after ``colcon build``).
"""

from pkgutil import extend_path

# The colcon build generates ``sam3d_ros.msg`` in the install tree, while the pure Python
# modules may be imported from the source tree (editable install): merge both locations.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
