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

#: Defaults of the stamp gate (parameters stamp_jump_threshold, max_stamp_ahead): a frame
#: further than this from the last accepted stamp is a jump, held until a second frame
#: confirms it (s) ...
STAMP_JUMP_THRESHOLD_S: Final[float] = 2.0
#: ... and a frame stamped further than this ahead of the receiver's clock is skipped (s).
STAMP_MAX_AHEAD_OF_CLOCK_S: Final[float] = 1.0
#: A slow stream's stamp-jump threshold is this many times its median frame interval over
#: the last STREAM_PERIOD_WINDOW accepted frames (when that exceeds STAMP_JUMP_THRESHOLD_S).
STREAM_PERIOD_FACTOR: Final[float] = 3.0
STREAM_PERIOD_WINDOW: Final[int] = 8

#: An object whose mask comes within this many pixels of the image border is cut by it
#: (``cut_by_border``): its shape beyond the border is unknown.
BORDER_CUT_MARGIN_PX: Final[int] = 2

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
#: Meshing: an observed point supports a surface component when it lies within this many
#: voxels of one of the component's vertices (the iso-surface through a voxel holding
#: measured surface lies within about one voxel of the points) ...
MESH_COMPONENT_SUPPORT_VOXELS: Final[float] = 1.5
#: ... and a component is kept when it holds at least this share of the observed points.
MESH_COMPONENT_MIN_SUPPORT: Final[float] = 0.1
#: ... or, when at least MESH_COMPONENT_KEEP_OVERLAP of its vertices lie on the surface the
#: track kept in the previous frame (within the support distance), this smaller share
#: (hysteresis against components flickering in and out of a track's mesh).
MESH_COMPONENT_KEEP_SUPPORT: Final[float] = 0.005
MESH_COMPONENT_KEEP_OVERLAP: Final[float] = 0.5

# --- geometric reconstruction core (observation, support plane, completion, meshing) -------

#: Keep the eroded mask only if it retains at least this fraction of the original mask.
EROSION_MIN_KEEP_FRACTION: Final[float] = 0.25

#: At most this many points per object are kept (regular pixel-stride decimation).
MAX_OBSERVATION_POINTS: Final[int] = 12_000


#: Points further than this many robust standard deviations (1.4826 * MAD) from the
#: object's median depth are dropped.
OUTLIER_MAD_K: Final[float] = 5.0

#: ... but the depth band kept around the median is never narrower than this (m).
OUTLIER_MIN_DEPTH_BAND: Final[float] = 0.03

#: Other objects' pixels within this many pixels of a mask are occluder candidates.
OCCLUDER_DILATION_PX: Final[int] = 8

#: An occluder pixel must be closer than the object's median depth by this much (m).
OCCLUDER_DEPTH_MARGIN: Final[float] = 0.01

#: At most this many background points are used to fit the support plane.
PLANE_MAX_SAMPLE_POINTS: Final[int] = 20_000

#: RANSAC scores its hypotheses on at most this many of those points (evenly spread);
#: the least-squares refits then use all of them.
PLANE_RANSAC_SCORE_POINTS: Final[int] = 4_000

#: Depth noise measured on the support plane: residuals within this distance of the plane
#: (m) count; rays more grazing than this cosine to the normal are taken at it.
PLANE_NOISE_WINDOW_M: Final[float] = 0.05
PLANE_NOISE_MIN_COS: Final[float] = 0.2

#: Object points closer than this to the support plane are treated as the plane (m).
PLANE_CONTACT_TOL: Final[float] = 0.004
#: Without a support plane, "up" is the camera's -y axis (optical frame).
CAMERA_UP: Final[tuple[float, float, float]] = (0.0, -1.0, 0.0)
#: Below this ratio of horizontal to total camera-object distance the view is treated as
#: top-down (no horizontal viewing direction; the footprint is fully visible).
TOP_DOWN_RATIO: Final[float] = 0.1
#: Robust observed extents in the network's encoding cube (part of the trained model's input
#: contract: changing them needs retraining).
ENCODING_EXTENT_PERCENTILES: Final[tuple[float, float]] = (1.0, 99.0)
#: Robust footprint extents of the geometric completion (wider than the encoding's: the
#: completion extrudes from them, so a trimmed extent loses real surface).
COMPLETION_EXTENT_PERCENTILES: Final[tuple[float, float]] = (0.5, 99.5)

#: Number of candidate symmetry centres tried by the geometric completion.
MIRROR_CANDIDATES: Final[int] = 16

#: The symmetry axis is the deepest candidate whose reflected observed surface lands in
#: observed free space for at most (best candidate's fraction + this slack).
MIRROR_FREE_FRACTION_SLACK: Final[float] = 0.025

#: Free-space carving: a voxel is empty when the observed depth is beyond the voxel centre
#: by more than max(CARVE_MIN_MARGIN, CARVE_MARGIN_VOXELS * voxel_size) (m).
CARVE_MIN_MARGIN: Final[float] = 0.0005
CARVE_MARGIN_VOXELS: Final[float] = 0.0

#: Gaussian smoothing of the completed occupancy, in voxels.
SMOOTH_SIGMA_VOXELS: Final[float] = 0.6

#: Number of observed points at which the geometric completion's point-count confidence
#: saturates.
CONFIDENCE_FULL_POINTS: Final[int] = 500

#: Grids with more voxels than this along an axis are refused (object far too large).
MAX_GRID_DIM: Final[int] = 400

# --- collision shapes, decomposition, tracking, fusion, MoveIt ------------------------------

#: Names accepted in the ``collision_shapes`` parameter (comma-separated, several at once).
COLLISION_SHAPE_KINDS: Final[tuple[str, ...]] = ("hull", "decomposition", "primitive", "simplified")

#: A mesh vertex counts as inside a convex part when it is at most this far outside every
#: face plane (m); vertices further out are added to the nearest part (conservative fix-up).
DECOMPOSITION_CONTAINMENT_TOL: Final[float] = 1e-6

#: Decomposition jobs are refused for meshes with more faces than this (the frame path
#: decimates before submitting).
DECOMPOSITION_MAX_INPUT_FACES: Final[int] = 20_000

#: Seconds to wait for a decomposition worker process to exit when it is shut down.
DECOMPOSITION_SHUTDOWN_TIMEOUT_S: Final[float] = 5.0

#: A tracked object's published frame keeps the track's previous x axis (up to a sign, or
#: a quarter turn about z) when that choice is as good as the footprint convention: the
#: long side is x unless the footprint's sides differ by at most this fraction of the
#: longer one, where the previous x wins (a near-square footprint's long side is noise).
OBJECT_FRAME_SQUARE_TOL: Final[float] = 0.1

#: Weight of the 3D bounding-box overlap (1 - IoU) in the track association cost.
TRACK_IOU_WEIGHT: Final[float] = 0.5

#: Cost bonus (subtracted) when a detection carries the mask label of the track.
TRACK_LABEL_BONUS: Final[float] = 0.5

#: Cost of leaving a detection unmatched (it starts a new track): above the cost of any
#: allowed pairing (at most 1 + TRACK_IOU_WEIGHT), so a detection with a track in reach
#: starts a new one only when taking that track would force a costlier assignment on the
#: others, e.g. an object pushed beyond the gate must not take its neighbour's track.
TRACK_NEW_COST: Final[float] = 1.0 + TRACK_IOU_WEIGHT + 0.01

#: Fusion: the projective truncation band is max(this, FUSION_TRUNCATION_VOXELS * voxel) (m).
FUSION_MIN_TRUNCATION: Final[float] = 0.006
FUSION_TRUNCATION_VOXELS: Final[float] = 2.0

#: Fusion: extra voxels of margin around a track's grid when it is (re)allocated.
FUSION_GRID_MARGIN_VOXELS: Final[int] = 4

#: Fusion: a track's grid grows to cover new shapes up to this many times the voxels of its
#: first allocation (an object turning on the table needs up to 2x: its box's footprint
#: seen at 45 degrees); a measured surface that needs more restarts the volume (moved, or
#: pose drift); a guess that needs more is kept to the grid.
FUSION_MAX_GROWTH: Final[float] = 2.5

#: Fusion: an object moved when more than this fraction of its observed surface points
#: lands in space that earlier frames saw as free in two consecutive frames, or more than
#: FUSION_MOVED_SURE_FRACTION (the majority) in one (the evidence is then reset). A single
#: frame between the two is often noise on an object with few points: a structured-light band
#: of misregistered pixels moves a third of a 45-point object into seen-free space for one
#: frame (:meth:`sam3d_ros.core.fusion.TrackVolume.moved`).
FUSION_MOVED_FREE_FRACTION: Final[float] = 0.25
FUSION_MOVED_SURE_FRACTION: Final[float] = 0.5
#: Fusion: a frame above FUSION_MOVED_FREE_FRACTION also tells a motion alone when more than
#: this fraction (nearly all) of its observed points lies off the volume's measured surface
#: (no surface observation in their voxel or its 26 neighbours): a rigid push takes every
#: point of the object off the surface it had, even when little of the new surface lies in
#: seen-free space (a small object pushed towards the camera); depth noise and a band of
#: misregistered edge pixels move only part of it (a 45-point kinect_v1 padlock of the churn
#: scenes read 0.64 after three frames; "the majority", 0.5, restarted it)
#: (:meth:`sam3d_ros.core.fusion.TrackVolume.off_surface_fraction`).
FUSION_MOVED_OFF_SURFACE_FRACTION: Final[float] = 0.9

#: Fusion: a voxel counts as "seen free" for motion detection below this fused occupancy.
FUSION_FREE_LEVEL: Final[float] = 0.2

#: Fusion: motion test tolerance along the viewing ray, max(m, voxels, sigmas of the
#: depth noise at the point's range): a point counts as moved only when it lies in
#: seen-free space this far behind it too.
FUSION_MOVED_TOL_M: Final[float] = 0.01
FUSION_MOVED_TOL_VOXELS: Final[float] = 2.0
FUSION_MOVED_TOL_SIGMAS: Final[float] = 3.0

#: Fusion: the truncation band is at least this many sigmas of the depth noise measured
#: on the support plane at the measured depth (a band narrower than the noise carves the
#: object's inside: a measurement beyond a voxel just inside the surface says "free"),
#: and at most FUSION_MAX_TRUNCATION (m).
FUSION_TRUNCATION_SIGMAS: Final[float] = 3.0
FUSION_MAX_TRUNCATION: Final[float] = 0.08

#: Fusion without a camera pose (no tf): the background depth is compared with the
#: reference frame's on a lattice of this stride (px); the camera moved when more than
#: FUSION_STATIC_MOVED_FRACTION of at least FUSION_STATIC_MIN_PIXELS lattice pixels changed
#: by more than max(FUSION_STATIC_TOL_M, FUSION_MOVED_TOL_SIGMAS sigmas of the noise).
FUSION_STATIC_STRIDE_PX: Final[int] = 8
#: ... and a pixel changed only when it differs from the reference at every pixel within
#: this many pixels (a depth edge shifted by a misregistration is no motion).
FUSION_STATIC_SHIFT_PX: Final[int] = 3
FUSION_STATIC_MIN_PIXELS: Final[int] = 100
FUSION_STATIC_TOL_M: Final[float] = 0.01
FUSION_STATIC_MOVED_FRACTION: Final[float] = 0.1

#: Fusion: weight of the mean network guess against the observations of a voxel (each
#: observation weighs up to 1): the guess's share is w / (n + w) after n observations, so
#: where the camera measured, the measurement wins at once, and the guess only breaks ties
#: and fills what was never seen. Measured on orbits and static cameras of the cluttered
#: world (seeds 1-2, docs/benchmarks.md): w = 0.5 and 2 gave shapes 1-12 % worse than
#: w -> 0 from the second view on.
FUSION_GUESS_WEIGHT: Final[float] = 0.05
#: Fusion: until the camera's viewing directions onto a track span at least this angle
#: (degrees, from the first view), its fused shape is the pixel-weighted mean of its
#: single-frame shapes (each already carved by its frame's free space and later snapped to
#: its depth): views from one viewpoint measure the same surface again, and the projective
#: evidence of one viewpoint is coarser than the single-frame carving and snapping (seeds
#: 41-43, docs/benchmarks.md). The observations are integrated all along (the motion test
#: reads them, and they count once the views spread).
FUSION_MIN_VIEW_SPREAD_DEG: Final[float] = 5.0

#: Collision geometry versions: default of ``shape_change_min_distance`` (m), the mean
#: surface displacement (hull volume change over hull area) a new version needs besides the
#: relative volume change. Under the depth noise of the supported sensors at working range
#: (measured points lie ~4 mm from the true surface on the cluttered val split; the carving
#: margin REFINE_CARVE_MIN_MARGIN_M is 4 mm): re-measuring the same surface moves a hull by
#: about that much, so a smaller mean change is no evidence of another shape.
SHAPE_CHANGE_MIN_DISTANCE: Final[float] = 0.003

#: MoveIt: seconds between checks for new subscribers on the planning-scene topic.
MOVEIT_SUBSCRIBER_CHECK_PERIOD_S: Final[float] = 0.5

#: Surface refinement (core/refine.py): free-space evidence is the nearest depth within
#: this many pixels of a voxel centre's projection (min filter radius).
FREE_SPACE_FILTER_PX: Final[int] = 1
#: ... voxels below this occupancy are not tested (nothing to carve).
CARVE_MIN_OCCUPANCY: Final[float] = 0.05
#: ... a voxel is seen-free when its centre lies this many voxels (at least
#: REFINE_CARVE_MIN_MARGIN_M, metres: sensor noise) in front of that depth.
REFINE_CARVE_MARGIN_VOXELS: Final[float] = 1.0
REFINE_CARVE_MIN_MARGIN_M: Final[float] = 0.004
#: ... measured depth is averaged over this radius (pixels) of the object's trusted pixels
#: before vertices snap onto it; a pixel needs this many trusted pixels in its window.
SNAP_SMOOTHING_PX: Final[int] = 1
SNAP_MIN_NEIGHBOURS: Final[int] = 5
#: ... vertices within this many voxels of the measured depth snap fully (partly up to
#: twice that).
SNAP_BAND_VOXELS: Final[float] = 1.0
#: refine.fill_observed: occupancy given to a voxel that holds measured surface of the
#: object and joins its predicted shape (above any iso-level, so the surface is kept).
OBSERVED_FILL_OCCUPANCY: Final[float] = 1.0
#: ... only from points whose axial depth noise (measured on the support plane) is at most
#: this many voxels: noisier points would add bumps the prediction rightly smoothed over.
OBSERVED_FILL_MAX_SIGMA_VOXELS: Final[float] = 0.5
#: ... only vertices whose normal faces the camera by more than this cosine snap.
SNAP_MIN_FACING_COS: Final[float] = 0.1

# --- local support (core/support.py) ---------------------------------------------------
#: The lowest observed points of an object are this percentile of their heights.
SUPPORT_LOW_PERCENTILE: Final[float] = 2.0
#: An object whose lowest observed points lie at most this high stands on the plane (m).
SUPPORT_ON_PLANE_HEIGHT: Final[float] = 0.012
#: Width of the ring around an object's mask searched for supporting neighbours (px).
SUPPORT_RING_PX: Final[int] = 4
#: A neighbour's point within this distance of the object's nearest point touches it (m).
SUPPORT_CONTACT_DIST: Final[float] = 0.015
#: Contacts count only in the object's bottom band: this high above its lowest point (m).
SUPPORT_BOTTOM_BAND: Final[float] = 0.02
#: A supporting neighbour's contact point may be at most this much higher than the
#: object's (m): it lies under the object, not beside it higher up.
SUPPORT_ABOVE_TOL: Final[float] = 0.005
#: A support's observed footprint (convex, in the plane) must contain the object's centre
#: within this margin (m): a neighbour merely in front of the object's bottom does not.
SUPPORT_FOOTPRINT_MARGIN: Final[float] = 0.01
#: Contact pixels a neighbour needs to count as the support.
SUPPORT_MIN_CONTACTS: Final[int] = 6
#: A stacked object's shape is cut this far below its support's contact height (m): the
#: contact height is the support's top surface, measured with the sensor's noise.
SUPPORT_CUT_TOL: Final[float] = 0.006
#: A cut that leaves no voxel above this occupancy is not applied.
SUPPORT_KEEP_OCCUPANCY: Final[float] = 0.5
