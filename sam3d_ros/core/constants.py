"""Constants and tolerances used across the package, in one place.

Units: metres, seconds, radians unless the name says otherwise.
"""

from __future__ import annotations

from typing import Final

#: Instance label of background pixels in the mask image.
BACKGROUND_LABEL: Final[int] = 0

#: Default topics (shared by the node, the launch file, the demo and offline tools).
DEFAULT_RGB_TOPIC: Final[str] = "/camera/color/image_raw"
DEFAULT_DEPTH_TOPIC: Final[str] = "/camera/aligned_depth_to_color/image_raw"
DEFAULT_INFO_TOPIC: Final[str] = "/camera/color/camera_info"
DEFAULT_MASK_TOPIC: Final[str] = "/camera/instance_masks"

#: Millimetres per metre, for 16UC1 depth (REP 118).
MM_PER_M: Final[float] = 1000.0

#: Numerical tolerance for "is this a rotation matrix" checks.
ROTATION_ORTHONORMAL_TOL: Final[float] = 1e-6

#: Minimum number of background points for a support-plane estimate.
MIN_PLANE_POINTS: Final[int] = 200

#: Minimum fraction of the background points that must be plane inliers.
MIN_PLANE_INLIER_FRACTION: Final[float] = 0.15

#: Minimum number of valid 3D points needed to reconstruct an object at all.
MIN_OBJECT_POINTS: Final[int] = 20

#: Relative depth jump between neighbouring pixels above which a pixel is a flying pixel.
FLYING_PIXEL_REL_JUMP: Final[float] = 0.03

#: Depth tolerance (m) when deciding whether a mesh point was observed by the camera.
VISIBILITY_DEPTH_TOL: Final[float] = 0.01

#: Voxels of free-space margin kept around an object's occupancy grid (for marching cubes).
GRID_PAD_VOXELS: Final[int] = 2

#: Smallest and largest voxel edge the meshing accepts (m).
MIN_VOXEL_SIZE: Final[float] = 0.001
MAX_VOXEL_SIZE: Final[float] = 0.05
