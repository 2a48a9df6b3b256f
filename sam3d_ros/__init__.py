"""sam3d_ros: amodal 3D shape, pose and collision shapes for masked objects in RGB-D frames.

Sub-packages:

- ``sam3d_ros.core``: pure numpy logic (no ROS imports).
- ``sam3d_ros.backends``: shape/layout estimators behind one interface.
- ``sam3d_ros.ros``: the ROS 2 node, synchronizer and message conversions.
- ``sam3d_ros.msg``: generated message classes (after ``colcon build``).
"""

from pkgutil import extend_path

# The colcon build generates ``sam3d_ros.msg`` in the install tree, while the pure Python
# modules may be imported from the source tree (editable install): merge both locations.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
