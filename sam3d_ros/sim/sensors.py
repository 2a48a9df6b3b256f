"""Depth-sensor profiles: physical models of RGB-D cameras for synthetic frames (pure numpy/scipy).

Each profile (:data:`SENSOR_PROFILES`, :func:`sensor_profile`) is one :class:`SensorProfile`
holding the colour-camera intrinsics of the real device and the parameters of one of three
depth models, each applied by :func:`simulate_depth` to a clean depth image rendered from the
colour camera:

``active_stereo`` (Intel RealSense D435 / D455)
    Depth from matching the left and right IR imagers (baseline ``b``), helped by a projected
    dot pattern. Background pixels that the second imager cannot see behind a foreground edge
    are invalid: a band on the ``shadow_side`` of every foreground edge, ``f b (1/z_fg -
    1/z_bg)`` pixels wide, plus the border band that lies outside the second imager's field
    of view. Axial noise is the disparity error of the matcher turned into depth,
    ``sigma_z = z^2 * subpixel / (f_depth * b)`` (Intel "Depth camera tuning" white paper),
    spatially correlated over the matching window (white noise low-pass filtered with two
    box passes). Edge pixels are jittered laterally by about a pixel and partly dropped.
    Output quantised to 1 mm (16UC1 in millimetres).

``tof`` (Azure Kinect, NFOV unbinned)
    Amplitude-modulated continuous-wave time of flight. Per-pixel (uncorrelated) axial noise
    ``sigma_z = sigma_base + sigma_slope * z``, a systematic offset ``bias_m``; at depth
    discontinuities mixed ("flying") pixels between foreground and background depth or
    invalidated pixels; multipath: a slight overestimate in concave corners; dropouts where
    the IR return is weak (albedo proxy: linearised rgb luminance, times the cosine of the
    incidence angle, over ``z^2``), on grazing surfaces (incidence angle from the normals of
    the clean depth) and on specular highlights. Output quantised to 1 mm.

``structured_light`` (Kinect v1 / Asus Xtion, PrimeSense PS1080)
    Depth from the disparity of a projected speckle pattern between projector and IR camera
    (baseline ``b``, IR focal ``f``): disparity noise (correlated over the 9x9 matching
    window), then quantisation of the disparity to ``1/8`` px, so depth comes in steps
    ``dz = z^2 q / (f b)``; a projector shadow band beside foreground edges (same geometry as
    the stereo band); edges snapped to a coarse block lattice (block median, like the 9x9
    correlation window); a depth bias of a few mm; the whole depth image misregistered to the
    colour image by a few pixels; 1 mm output quantisation.

All profiles: invalid outside ``[min_range_m, max_range_m]`` and outside the depth imager's
field of view ``depth_fov_deg`` (where the colour camera sees wider, e.g. the Azure Kinect
NFOV at 720p), random single-pixel dropouts and a few small holes. Every random draw comes from the ``numpy.random.Generator`` handed in,
so a seed gives identical output. :func:`simulate_color` applies exposure/gain, white-balance
tint, vignetting, a slight blur and shot + read noise typical of each colour camera.

Geometry: images are in the colour camera's pixels (u right, v down, REP 103 optical frame),
depth is along the optical axis in metres, NaN = no measurement. The rendered depth is taken
from the colour viewpoint; the offset between the colour camera and the depth imager is not
modelled apart from the structured-light misregistration. Sources of the numbers are listed in
``docs/sensors.md`` and on each profile constant below.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sam3d_ros.core.camera import CameraIntrinsics

logger = logging.getLogger(__name__)

SensorKind = Literal["active_stereo", "tof", "structured_light"]
SENSOR_KINDS: Final[tuple[str, ...]] = ("active_stereo", "tof", "structured_light")
#: Image sizes (width, height) a profile may list as native.
SUPPORTED_RESOLUTIONS: Final[tuple[tuple[int, int], ...]] = ((640, 480), (1280, 720))
#: Relative focal-length jitter of :func:`draw_intrinsics` (uniform +-), and fy/fx jitter.
FOCAL_JITTER: Final = 0.03
ASPECT_JITTER: Final = 0.005
#: Principal-point jitter of :func:`draw_intrinsics`, a fraction of the image size (uniform +-).
PRINCIPAL_JITTER: Final = 0.015
#: Output depth step of every profile (16UC1 depth in millimetres), m.
MM_QUANTISATION_M: Final = 0.001
#: sRGB <-> linear conversion: gamma of the approximation and the size of the inverse LUT.
SRGB_GAMMA: Final = 2.2
LINEAR_LUT_SIZE: Final = 4096
#: ToF saturation proxy: rgb luminance (0-255) at or above which a surface facing the camera
#: (cos incidence above the second value) is a specular highlight.
SATURATION_LUMA: Final = 252.0
SATURATION_MIN_COS: Final = 0.9
#: Luminance weights (Rec. 601) for the albedo proxy.
LUMA_WEIGHTS: Final = (0.299, 0.587, 0.114)


class SensorError(ValueError):
    """Raised for an unknown sensor profile or inputs a sensor model cannot use."""


@dataclass(frozen=True)
class SensorProfile:
    """One RGB-D device: colour intrinsics and the parameters of its depth and colour model.

    Parameters a model does not use are 0 (see the module docstring for which kind uses
    what). Units are in the names: ``_m`` metres, ``_px`` pixels of the NATIVE depth image
    (focal ``depth_focal_px``) unless stated otherwise, ``_prob`` probabilities per pixel.

    Attributes:
        name: profile name (one of :data:`SENSOR_PROFILES`).
        kind: ``"active_stereo"``, ``"tof"`` or ``"structured_light"``.
        resolutions: native colour image sizes (width, height), a subset of
            :data:`SUPPORTED_RESOLUTIONS`.
        focal_px: colour-camera focal length (px) at each entry of ``resolutions``.
        min_range_m, max_range_m: valid depth range (m); outside it the pixel is invalid.
        depth_focal_px: focal length (px) of the native depth image; turns disparity errors
            into metres and native-pixel sizes into output pixels.
        depth_fov_deg: (horizontal, vertical) field of view of the depth imager (deg); colour
            pixels outside it have no depth (cameras taken as co-located).
        baseline_m: stereo baseline (IR left-right, or projector-IR camera), m.
        shadow_side: side of a foreground edge where the occlusion band falls, -1 = towards -u
            (second imager / projector at +x), +1 = towards +u, 0 = no band.
        subpixel_px: RMS disparity error of the stereo matcher (px at ``depth_focal_px``).
        noise_corr_px: box size (native px) of the two box passes that correlate the axial
            noise; 0 = white noise.
        disparity_noise_px: structured light: RMS disparity noise before quantisation (px).
        disparity_step_px: structured light: disparity quantisation step (px).
        sigma_base_m, sigma_slope: ToF axial noise ``sigma_base_m + sigma_slope * z`` (m, m/m).
        bias_m: systematic depth offset added everywhere (m, + = farther).
        edge_jump_rel: a neighbour depth jump above ``edge_jump_rel * z`` is a discontinuity.
        edge_jitter_px: RMS lateral displacement of edge pixels (output px).
        edge_dropout_prob: active stereo: probability that an edge pixel is invalid.
        flying_prob: ToF: probability that an edge pixel becomes a fg/bg mixture.
        edge_invalid_prob: ToF: probability that an edge pixel is invalidated.
        multipath_gain: ToF: overestimate per metre of concavity ``z - mean_window(z)``.
        multipath_cap_m: ToF: largest multipath overestimate (m).
        multipath_window_px: ToF: window (native px) over which concavity is measured.
        dark_signal_50: ToF: IR return ``albedo * cos(theta) / z^2`` (albedo in [0, 1], z in
            m) at which half of the pixels drop out.
        dark_exponent: ToF: steepness of that dropout curve ``1 / (1 + (s / s50)^k)``.
        grazing_deg: ToF: incidence angles (deg) where the grazing dropout starts and where
            it is total (linear in between).
        saturation_prob: ToF: dropout probability on specular highlights (proxy: rgb
            luminance >= :data:`SATURATION_LUMA` on a surface facing the camera).
        misregistration_px: structured light: (min, max) length (output px) of the shift
            between depth and colour image, drawn per call with a random direction.
        edge_block_px: structured light: block size (native px) of the edge lattice.
        dropout_prob: random single-pixel dropout probability.
        hole_rate: mean (Poisson) number of small holes per image.
        hole_radius_px: (min, max) hole radius in pixels at 640 px image width.
        exposure_sigma: colour: log-normal sigma of the exposure/gain per frame.
        wb_sigma: colour: sigma of the red/blue white-balance gains relative to green.
        shot_noise: colour: shot-noise variance per unit linear signal at unit gain.
        read_noise: colour: read-noise sigma (linear units, 1 = white).
        blur_sigma_px: colour: Gaussian blur sigma (output px at 640 px width).
        vignetting: colour: relative fall-off at the image corner (``1 - v r^2``).
    """

    name: str
    kind: SensorKind
    resolutions: tuple[tuple[int, int], ...]
    focal_px: tuple[float, ...]
    min_range_m: float
    max_range_m: float
    depth_focal_px: float
    depth_fov_deg: tuple[float, float] = (180.0, 180.0)
    baseline_m: float = 0.0
    shadow_side: int = 0
    subpixel_px: float = 0.0
    noise_corr_px: float = 0.0
    disparity_noise_px: float = 0.0
    disparity_step_px: float = 0.0
    sigma_base_m: float = 0.0
    sigma_slope: float = 0.0
    bias_m: float = 0.0
    edge_jump_rel: float = 0.02
    edge_jitter_px: float = 0.0
    edge_dropout_prob: float = 0.0
    flying_prob: float = 0.0
    edge_invalid_prob: float = 0.0
    multipath_gain: float = 0.0
    multipath_cap_m: float = 0.0
    multipath_window_px: int = 0
    dark_signal_50: float = 0.0
    dark_exponent: float = 2.0
    grazing_deg: tuple[float, float] = (90.0, 90.0)
    saturation_prob: float = 0.0
    misregistration_px: tuple[float, float] = (0.0, 0.0)
    edge_block_px: int = 0
    dropout_prob: float = 0.0
    hole_rate: float = 0.0
    hole_radius_px: tuple[int, int] = (1, 3)
    exposure_sigma: float = 0.0
    wb_sigma: float = 0.0
    shot_noise: float = 0.0
    read_noise: float = 0.0
    blur_sigma_px: float = 0.0
    vignetting: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SENSOR_KINDS:
            raise SensorError(f"profile {self.name!r}: kind must be one of {SENSOR_KINDS}, got {self.kind!r}")
        if not self.resolutions or len(self.resolutions) != len(self.focal_px):
            raise SensorError(
                f"profile {self.name!r}: need one focal length per resolution, got "
                f"{self.resolutions!r} and {self.focal_px!r}"
            )
        for res in self.resolutions:
            if res not in SUPPORTED_RESOLUTIONS:
                raise SensorError(f"profile {self.name!r}: resolution {res!r} not in {SUPPORTED_RESOLUTIONS}")
        if not all(f > 0.0 for f in self.focal_px) or self.depth_focal_px <= 0.0:
            raise SensorError(f"profile {self.name!r}: focal lengths must be > 0")
        if not 0.0 < self.min_range_m < self.max_range_m:
            raise SensorError(
                f"profile {self.name!r}: need 0 < min_range_m < max_range_m, got "
                f"{self.min_range_m}, {self.max_range_m}"
            )
        if self.kind in ("active_stereo", "structured_light") and self.baseline_m <= 0.0:
            raise SensorError(f"profile {self.name!r}: a triangulating sensor needs baseline_m > 0")
        if self.shadow_side not in (-1, 0, 1):
            raise SensorError(f"profile {self.name!r}: shadow_side must be -1, 0 or 1")
        for field_name in (
            "edge_dropout_prob",
            "flying_prob",
            "edge_invalid_prob",
            "saturation_prob",
            "dropout_prob",
        ):
            p = float(getattr(self, field_name))
            if not 0.0 <= p <= 1.0:
                raise SensorError(f"profile {self.name!r}: {field_name} must be in [0, 1], got {p}")
        if self.flying_prob + self.edge_invalid_prob > 1.0:
            raise SensorError(f"profile {self.name!r}: flying_prob + edge_invalid_prob must be <= 1")

    def axial_sigma_m(self, z: NDArray[np.floating] | float) -> NDArray[np.float64]:
        """Model RMS axial error (m) at depth ``z`` (m) on a fronto-parallel surface.

        Active stereo: ``z^2 subpixel / (f_depth b)``; ToF: ``sigma_base + sigma_slope z``;
        structured light: ``z^2 sqrt(sigma_d^2 + q^2 / 12) / (f_depth b)`` (noise plus the
        disparity quantisation). The 1 mm output step is not included.
        """
        zz = np.asarray(z, dtype=np.float64)
        if self.kind == "active_stereo":
            return zz**2 * self.subpixel_px / (self.depth_focal_px * self.baseline_m)
        if self.kind == "tof":
            return self.sigma_base_m + self.sigma_slope * zz
        sd = math.hypot(self.disparity_noise_px, self.disparity_step_px / math.sqrt(12.0))
        return zz**2 * sd / (self.depth_focal_px * self.baseline_m)

    def disparity_depth_step_m(self, z: NDArray[np.floating] | float) -> NDArray[np.float64]:
        """Structured light: depth step (m) of one disparity quantum at ``z`` (m),
        ``z^2 q / (f b)``; 0 for the other kinds."""
        zz = np.asarray(z, dtype=np.float64)
        if self.kind != "structured_light":
            return np.zeros_like(zz)
        return zz**2 * self.disparity_step_px / (self.depth_focal_px * self.baseline_m)


# --------------------------------------------------------------------------------------------
# Profiles. Sources (full references in docs/sensors.md):
#   [D400]  Intel RealSense D400 Series Product Family Datasheet (rev. 2019-2023): baselines
#           50 / 95 mm, depth FOV 87 x 58 deg, RGB FOV (D435 69 x 42 deg, D455 90 x 65 deg),
#           min-Z, RMS error <= 2 % at 2 m (D435) / at 4 m (D455).
#   [TUNE]  Grunnet-Jepsen, Tong, "Best-Known-Methods for Tuning Intel RealSense D400 Depth
#           Cameras" ("Depth camera tuning" white paper): RMS = z^2 * subpixel / (f * b).
#   [AHN]   Ahn et al. 2019, "Analysis and Noise Modeling of the Intel RealSense D435 for
#           Mobile Robots"; [CARF] Carfagni et al. 2019, "Metrological and critical
#           characterization of the Intel D415 stereo depth camera".
#   [AZ]    Microsoft Azure Kinect DK hardware specification: NFOV unbinned 640x576, 0.5-3.86 m,
#           random error <= 17 mm, systematic error < 11 mm + 0.1 % of distance.
#   [TOL]   Tölgyessy et al. 2021, "Evaluation of the Azure Kinect and its comparison to
#           Kinect V1 and Kinect V2" (Sensors 21(2):413): precision, reflectivity of 18
#           materials, multipath and flying pixels.
#   [KHO]   Khoshelham & Elberink 2012, "Accuracy and resolution of Kinect depth data for
#           indoor mapping applications": random error ~ z^2, ~4 cm at 5 m, depth resolution
#           ~7 cm at 5 m.
#   [SMI]   Smisek, Jancosek, Pajdla 2011, "3D with Kinect": IR/depth offset of a few pixels.
#   [KON]   Konolige & Mihelich, ROS kinect_calibration technical notes: IR focal ~580 px,
#           baseline 7.5 cm, disparity in 1/8 px, 9x9 correlation window.
# --------------------------------------------------------------------------------------------

#: Depth-imager focal of the D400 stereo pair at the 848x480 depth stream: HFOV 87 deg
#: [D400], f = 424 / tan(43.5 deg).
D400_DEPTH_FOCAL_PX: Final = 424.0 / math.tan(math.radians(43.5))
#: Stereo matcher RMS subpixel error (px at 848x480). 0.2 px puts the D435 at 1.8 % of z at
#: 2 m and the D455 at 1.9 % at 4 m: the datasheet RMS bounds [D400]; [TUNE] quotes ~0.05-0.1 px
#: on well-textured targets, so this is the conservative (cluttered-scene) end.
D400_SUBPIXEL_PX: Final = 0.2

REALSENSE_D435: Final = SensorProfile(
    name="realsense_d435",
    kind="active_stereo",
    # RGB OV2740, 1920x1080 at HFOV 69.4 deg -> fx 1386; 1280x720 = 2/3 of it, 640x480 = 4:3
    # crop scaled by 4/9 [D400].
    resolutions=((640, 480), (1280, 720)),
    focal_px=(615.0, 920.0),
    min_range_m=0.28,  # min-Z at 1280x720 [D400]
    max_range_m=10.0,
    depth_focal_px=D400_DEPTH_FOCAL_PX,
    depth_fov_deg=(87.0, 58.0),  # [D400]; wider than the D435 colour FOV
    baseline_m=0.050,  # [D400]
    shadow_side=-1,  # right imager at +x of the left (depth origin) imager: band left of objects
    subpixel_px=D400_SUBPIXEL_PX,
    noise_corr_px=3.0,  # matching window correlation, few px [TUNE]
    edge_jump_rel=0.02,
    edge_jitter_px=0.7,
    edge_dropout_prob=0.25,
    dropout_prob=0.002,
    hole_rate=3.0,
    hole_radius_px=(1, 4),
    exposure_sigma=0.12,
    wb_sigma=0.04,
    shot_noise=0.0015,  # small 1.4 um rolling-shutter pixels: visibly noisy
    read_noise=0.004,
    blur_sigma_px=0.6,
    vignetting=0.25,
)

REALSENSE_D455: Final = replace(
    REALSENSE_D435,
    name="realsense_d455",
    # RGB OV9782 global shutter 1280x800 at HFOV 90 deg -> fx ~640; 1280x720 is a crop. Its
    # 640x480 mode (fx ~385) is left out: below the focal range the generator draws.
    resolutions=((1280, 720),),
    focal_px=(640.0,),
    min_range_m=0.52,  # min-Z at 1280x720 [D400]
    max_range_m=10.0,
    baseline_m=0.095,  # [D400]
    shot_noise=0.0008,  # 3 um global-shutter pixels: cleaner than the D435 colour
    read_noise=0.003,
    blur_sigma_px=0.5,
    vignetting=0.35,  # wide 90 deg lens
)

AZURE_KINECT: Final = SensorProfile(
    name="azure_kinect",
    kind="tof",
    # RGB OV12A10, 1280x720 at HFOV 90 deg; calibrated units report fx ~605-615 [AZ].
    resolutions=((1280, 720),),
    focal_px=(610.0,),
    min_range_m=0.5,  # NFOV unbinned operating range [AZ]
    max_range_m=3.86,
    depth_focal_px=504.0,  # NFOV unbinned 640x576 calibration
    depth_fov_deg=(75.0, 65.0),  # NFOV [AZ]: narrower than the 90 deg colour, side margins
    sigma_base_m=0.0010,  # 1.3-2.5 mm at 0.6-3 m: inside the <= 17 mm spec [AZ] that [TOL] confirm
    sigma_slope=0.0005,
    bias_m=0.003,  # within the < 11 mm + 0.1 % systematic spec [AZ]; sign: farther
    edge_jump_rel=0.02,
    flying_prob=0.35,  # mixed fg/bg pixels along edges [TOL]
    edge_invalid_prob=0.35,  # the depth engine invalidates ambiguous edge pixels
    multipath_gain=0.5,
    multipath_cap_m=0.008,  # a few mm in concave corners [TOL]
    multipath_window_px=15,
    dark_signal_50=0.0015,  # dark, low-reflectivity materials drop out [TOL]
    dark_exponent=2.0,
    grazing_deg=(75.0, 88.0),
    saturation_prob=0.5,
    dropout_prob=0.001,
    hole_rate=2.0,
    hole_radius_px=(1, 3),
    exposure_sigma=0.08,
    wb_sigma=0.03,
    shot_noise=0.001,
    read_noise=0.003,
    blur_sigma_px=0.5,
    vignetting=0.3,
)

KINECT_V1: Final = SensorProfile(
    name="kinect_v1",
    kind="structured_light",
    # RGB 640x480 at HFOV ~62 deg -> fx ~525 (the ROS/OpenNI default); the 1280x1024 colour
    # mode has twice the focal, cropped here to 1280x720.
    resolutions=((640, 480), (1280, 720)),
    focal_px=(525.0, 1050.0),
    min_range_m=0.8,  # default (non-near) mode
    max_range_m=4.0,
    depth_focal_px=580.0,  # IR camera [KON]
    depth_fov_deg=(57.0, 43.0),  # depth FOV of the Kinect v1 (Microsoft spec)
    baseline_m=0.075,  # projector - IR camera [KON], [KHO]
    shadow_side=-1,  # projector at +x of the IR camera (seen from the sensor): band left of objects
    noise_corr_px=4.0,  # 9x9 correlation window [KON]
    disparity_noise_px=0.06,  # with the 1/8 px step: 4 cm RMS at 5 m [KHO]
    disparity_step_px=1.0 / 8.0,  # [KON], [KHO]
    bias_m=0.004,  # few mm systematic offsets after calibration [KHO], [SMI]
    edge_jump_rel=0.02,
    misregistration_px=(1.0, 4.0),  # few px IR/depth/colour offset [SMI], [KON]
    edge_block_px=9,  # 9x9 correlation window [KON]
    dropout_prob=0.003,
    hole_rate=4.0,
    hole_radius_px=(1, 4),
    exposure_sigma=0.15,
    wb_sigma=0.06,
    shot_noise=0.003,  # cheap Bayer webcam sensor: noisy, soft
    read_noise=0.006,
    blur_sigma_px=0.9,
    vignetting=0.3,
)

ASUS_XTION: Final = replace(
    KINECT_V1,
    name="asus_xtion",
    # Xtion Pro Live: same PrimeSense PS1080 depth, HFOV 58 deg -> fx ~570 at 640x480 (OpenNI
    # default 570.3); range 0.8-3.5 m.
    resolutions=((640, 480),),
    focal_px=(570.0,),
    max_range_m=3.5,
    depth_focal_px=570.0,
    depth_fov_deg=(58.0, 45.0),  # Xtion Pro Live spec
    exposure_sigma=0.12,
    wb_sigma=0.05,
    blur_sigma_px=0.8,
)

_PROFILES: Final[dict[str, SensorProfile]] = {
    p.name: p for p in (REALSENSE_D435, REALSENSE_D455, AZURE_KINECT, KINECT_V1, ASUS_XTION)
}
#: Names of the available profiles.
SENSOR_PROFILES: Final[tuple[str, ...]] = tuple(_PROFILES)


def sensor_profile(name: str) -> SensorProfile:
    """The profile called ``name``.

    Raises:
        SensorError: unknown name (the message lists the valid ones).
    """
    try:
        return _PROFILES[name]
    except KeyError as err:
        raise SensorError(f"unknown sensor profile {name!r}; valid: {', '.join(SENSOR_PROFILES)}") from err


def draw_intrinsics(
    profile: SensorProfile, rng: np.random.Generator, width: int, height: int
) -> CameraIntrinsics:
    """Colour intrinsics of ``profile`` at ``width`` x ``height`` with per-unit jitter.

    The native resolution with the nearest aspect ratio gives the focal length; a non-native
    size is a resize of it that covers the image (scale ``max(W / w0, H / h0)``, i.e. resize
    then centre crop). The focal length is jittered by +-:data:`FOCAL_JITTER` (fy/fx by
    +-:data:`ASPECT_JITTER`), the principal point by +-:data:`PRINCIPAL_JITTER` of the size
    around the image centre.
    """
    if width <= 0 or height <= 0:
        raise SensorError(f"image size must be > 0, got {width}x{height}")
    aspect = width / height
    best = min(
        range(len(profile.resolutions)),
        key=lambda i: (
            abs(math.log(profile.resolutions[i][0] / profile.resolutions[i][1] / aspect)),
            abs(math.log(profile.resolutions[i][0] / width)),
        ),
    )
    w0, h0 = profile.resolutions[best]
    scale = max(width / w0, height / h0)
    f = profile.focal_px[best] * scale * float(rng.uniform(1.0 - FOCAL_JITTER, 1.0 + FOCAL_JITTER))
    fy = f * float(rng.uniform(1.0 - ASPECT_JITTER, 1.0 + ASPECT_JITTER))
    cx = (width - 1) / 2.0 + float(rng.uniform(-PRINCIPAL_JITTER, PRINCIPAL_JITTER)) * width
    cy = (height - 1) / 2.0 + float(rng.uniform(-PRINCIPAL_JITTER, PRINCIPAL_JITTER)) * height
    return CameraIntrinsics(width=int(width), height=int(height), fx=f, fy=fy, cx=cx, cy=cy)


# --------------------------------------------------------------------------------------------
# building blocks (all on (H, W) float32 arrays, NaN = no surface)
# --------------------------------------------------------------------------------------------


def _correlated_noise(rng: np.random.Generator, shape: tuple[int, int], box_px: int) -> NDArray[np.float32]:
    """Unit-variance Gaussian noise, low-pass filtered by two box passes of ``box_px``."""
    white = rng.standard_normal(shape, dtype=np.float32)
    if box_px < 2:
        return white
    smooth = ndimage.uniform_filter(
        ndimage.uniform_filter(white, box_px, mode="reflect"), box_px, mode="reflect"
    )
    tri = np.convolve(np.full(box_px, 1.0 / box_px), np.full(box_px, 1.0 / box_px))
    gain = 1.0 / float(np.sum(tri**2))  # 2-D variance is (sum tri^2)^2
    return (smooth * np.float32(gain)).astype(np.float32, copy=False)


def _discontinuities(d: NDArray[np.float32], rel: float) -> NDArray[np.bool_]:
    """Pixels with a 4-neighbour whose depth differs by more than ``rel`` times the nearer one,
    or a valid pixel next to no surface."""
    h, w = d.shape
    edge = np.zeros((h, w), dtype=bool)
    with np.errstate(invalid="ignore"):
        for a, b in ((d[:, 1:], d[:, :-1]), (d[1:, :], d[:-1, :])):
            diff = np.abs(a - b)
            jump = (diff > rel * np.fmin(a, b)) | (np.isnan(a) != np.isnan(b))
            if a.shape[1] != w:  # horizontal pairs
                edge[:, 1:] |= jump
                edge[:, :-1] |= jump
            else:
                edge[1:, :] |= jump
                edge[:-1, :] |= jump
    return edge & np.isfinite(d)


def _dilate(mask: NDArray[np.bool_], radius: int) -> NDArray[np.bool_]:
    """Square dilation of a mask by ``radius`` px."""
    if radius <= 0:
        return mask
    return ndimage.maximum_filter(mask.view(np.uint8), size=2 * radius + 1, mode="constant") > 0


def _occlusion_band(d: NDArray[np.float32], f_px: float, baseline_m: float, side: int) -> NDArray[np.bool_]:
    """Pixels the second view (camera or projector ``baseline_m`` away along ``-side * x``)
    cannot see because a nearer surface hides them.

    With disparity ``D = f b / z`` (output px; no surface = infinitely far, D = 0) a pixel maps
    to ``x2 = u - D`` in the second view; it is hidden when a pixel to its right maps at or left
    of it (reverse running minimum along the row), which is the band ``f b (1/z_fg - 1/z_bg)``
    wide on the -u side of a foreground edge (mirrored for ``side = +1``).
    """
    if side == 0:
        return np.zeros(d.shape, dtype=bool)
    dd = d if side < 0 else d[:, ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = np.where(np.isfinite(dd), np.float32(f_px * baseline_m) / dd, np.float32(0.0))
    u = np.arange(dd.shape[1], dtype=np.float32)
    x2 = u[None, :] - disp
    # minimum of x2 over the pixels strictly to the right
    run_min = np.minimum.accumulate(x2[:, ::-1], axis=1)[:, ::-1]
    right_min = np.full_like(x2, np.inf)
    right_min[:, :-1] = run_min[:, 1:]
    hidden = (right_min <= x2) & np.isfinite(dd)
    return hidden if side < 0 else hidden[:, ::-1]


def _outside_depth_fov(
    d: NDArray[np.float32], k: CameraIntrinsics, p: SensorProfile, second_view: bool
) -> NDArray[np.bool_]:
    """Pixels of the colour image outside the depth imager's field of view ``depth_fov_deg``
    (both cameras taken at the colour centre) and, with ``second_view``, outside the field of
    view of the second stereo imager ``baseline_m`` away along ``-shadow_side * x``: a ray at
    ``tan(a) = (u - cx) / fx`` and depth z is seen by it when ``tan(a) + side * b / z`` is
    within ``+-tan(hfov / 2)`` (the border band ``f b / z`` wide on the -u side for side -1)."""
    h, w = d.shape
    th = math.tan(math.radians(min(p.depth_fov_deg[0], 179.0) / 2.0))
    tv = math.tan(math.radians(min(p.depth_fov_deg[1], 179.0) / 2.0))
    tx = ((np.arange(w, dtype=np.float32) - k.cx) / k.fx)[None, :]
    ty = ((np.arange(h, dtype=np.float32) - k.cy) / k.fy)[:, None]
    out = (np.abs(tx) > th) | (np.abs(ty) > tv)
    if second_view and p.shadow_side != 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            t2 = tx + np.float32(p.shadow_side * p.baseline_m) / d
        out = out | (np.isfinite(d) & (np.abs(t2) > th))
    return out


def _edge_jitter(
    d: NDArray[np.float32], edge: NDArray[np.bool_], sigma_px: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Edge pixels take the depth of a neighbour ~N(0, sigma_px) px away (lateral jitter)."""
    vv, uu = np.nonzero(edge)
    if vv.size == 0 or sigma_px <= 0.0:
        return d
    h, w = d.shape
    dv = np.clip(np.rint(rng.normal(0.0, sigma_px, vv.size)), -2, 2).astype(np.intp)
    du = np.clip(np.rint(rng.normal(0.0, sigma_px, vv.size)), -2, 2).astype(np.intp)
    out = d.copy()
    out[vv, uu] = d[np.clip(vv + dv, 0, h - 1), np.clip(uu + du, 0, w - 1)]
    return out


def _holes(
    shape: tuple[int, int], rng: np.random.Generator, rate: float, radius_px: tuple[int, int], scale: float
) -> NDArray[np.bool_]:
    """A Poisson(``rate``) number of discs (radius drawn in ``radius_px`` times ``scale``)."""
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    n = int(rng.poisson(rate)) if rate > 0.0 else 0
    if n == 0:
        return mask
    cy = rng.integers(0, h, n)
    cx = rng.integers(0, w, n)
    rad = np.maximum(1, np.rint(rng.integers(radius_px[0], radius_px[1] + 1, n) * scale)).astype(int)
    for y0, x0, r in zip(cy, cx, rad, strict=True):
        y_lo, y_hi, x_lo, x_hi = max(0, y0 - r), min(h, y0 + r + 1), max(0, x0 - r), min(w, x0 + r + 1)
        yy, xx = np.ogrid[y_lo:y_hi, x_lo:x_hi]
        mask[y_lo:y_hi, x_lo:x_hi] |= (yy - y0) ** 2 + (xx - x0) ** 2 <= r * r
    return mask


def _incidence_cos(d: NDArray[np.float32], k: CameraIntrinsics) -> NDArray[np.float32]:
    """Cosine of the angle between the viewing ray and the surface normal of the depth image.

    For ``P = z r`` with ``r = ((u - cx) / fx, (v - cy) / fy, 1)`` the normal is proportional
    to ``(-z_u fx, -z_v fy, z_u rx fx + z_v ry fy + z)`` and ``n . r = z`` (z_u, z_v: central
    differences in px). NaN where the depth or its neighbours are missing.
    """
    h, w = d.shape
    z_v, z_u = np.gradient(d)
    rx = ((np.arange(w, dtype=np.float32) - k.cx) / k.fx)[None, :]
    ry = ((np.arange(h, dtype=np.float32) - k.cy) / k.fy)[:, None]
    nx = -z_u * np.float32(k.fx)
    ny = -z_v * np.float32(k.fy)
    nz = -nx * rx - ny * ry + d
    norm_n = np.sqrt(nx * nx + ny * ny + nz * nz)
    norm_r = np.sqrt(rx * rx + ry * ry + 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.abs(d) / (norm_n * norm_r)).astype(np.float32, copy=False)


def _nan_box_mean(d: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Mean of the valid depths in a ``size`` x ``size`` window (NaN where none)."""
    valid = np.isfinite(d)
    num = ndimage.uniform_filter(np.where(valid, d, np.float32(0.0)), size, mode="nearest")
    den = ndimage.uniform_filter(valid.astype(np.float32), size, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-6, num / den, np.float32(np.nan)).astype(np.float32, copy=False)


def _block_median(d: NDArray[np.float32], block: int, oy: int, ox: int) -> NDArray[np.float32]:
    """Median of the valid depths of each ``block`` x ``block`` cell of a lattice offset by
    (oy, ox); returns the (ceil(H/block)+1, ceil(W/block)+1) cell medians (NaN: empty cell)."""
    h, w = d.shape
    hb, wb = (h + oy) // block + 1, (w + ox) // block + 1
    pad = np.full((hb * block, wb * block), np.nan, dtype=np.float32)
    pad[oy : oy + h, ox : ox + w] = d
    cells = pad.reshape(hb, block, wb, block).transpose(0, 2, 1, 3).reshape(hb, wb, block * block)
    cells = np.sort(cells, axis=2)  # NaN last
    n = np.sum(np.isfinite(cells), axis=2)
    idx = np.maximum((n - 1) // 2, 0)
    med = np.take_along_axis(cells, idx[..., None], axis=2)[..., 0]
    return np.where(n > 0, med, np.float32(np.nan)).astype(np.float32, copy=False)


def _shift(d: NDArray[np.float32], dx: int, dy: int) -> NDArray[np.float32]:
    """``out[v, u] = d[v - dy, u - dx]`` (content moves by +dx, +dy), NaN where uncovered."""
    h, w = d.shape
    out = np.full_like(d, np.nan)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = d[ys, xs]
    return out


def _native_to_output(profile: SensorProfile, k: CameraIntrinsics, px: float) -> int:
    """A size in native depth pixels expressed in output pixels (rounded, >= 1)."""
    return max(1, round(px * k.fx / profile.depth_focal_px))


def _luminance(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Rec. 601 luminance of an (H, W, 3) uint8 image, 0-255 float32."""
    wr, wg, wb = LUMA_WEIGHTS
    f = rgb.astype(np.float32)
    return (wr * f[..., 0] + wg * f[..., 1] + wb * f[..., 2]).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# the three depth models
# --------------------------------------------------------------------------------------------


def _active_stereo(
    d: NDArray[np.float32], k: CameraIntrinsics, rng: np.random.Generator, p: SensorProfile
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Depth and invalid mask of the active-stereo model (before range check and dropouts)."""
    edge = _discontinuities(d, p.edge_jump_rel)
    near_edge = _dilate(edge, 1)
    d = _edge_jitter(d, near_edge, p.edge_jitter_px, rng)
    invalid = _occlusion_band(d, k.fx, p.baseline_m, p.shadow_side)
    invalid |= _outside_depth_fov(d, k, p, second_view=True)
    box = _native_to_output(p, k, p.noise_corr_px) if p.noise_corr_px > 0 else 1
    noise = _correlated_noise(rng, d.shape, box)
    scale = np.float32(p.subpixel_px / (p.depth_focal_px * p.baseline_m))
    d = d + d * d * scale * noise
    invalid |= near_edge & (rng.random(d.shape, dtype=np.float32) < p.edge_dropout_prob)
    return d, invalid


def _tof(
    d: NDArray[np.float32],
    rgb: NDArray[np.uint8],
    k: CameraIntrinsics,
    rng: np.random.Generator,
    p: SensorProfile,
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Depth and invalid mask of the time-of-flight model (before range check and dropouts)."""
    h, w = d.shape
    valid = np.isfinite(d)
    edge = _discontinuities(d, p.edge_jump_rel)
    out = d.copy()
    # multipath: overestimate where the surface is concave (z above its local mean), away from
    # discontinuities (a foreground edge is occlusion, not a corner)
    if p.multipath_gain > 0.0 and p.multipath_window_px > 0:
        win = _native_to_output(p, k, p.multipath_window_px) | 1
        concave = d - _nan_box_mean(d, win)
        far_from_edge = ~_dilate(edge, win // 2)
        mp = np.clip(concave * np.float32(p.multipath_gain), 0.0, p.multipath_cap_m)
        out = np.where(far_from_edge & valid, out + mp, out).astype(np.float32, copy=False)
    # axial noise (per pixel, uncorrelated) and the systematic offset
    sigma = np.float32(p.sigma_base_m) + np.float32(p.sigma_slope) * d
    out = out + sigma * rng.standard_normal((h, w), dtype=np.float32) + np.float32(p.bias_m)
    # flying pixels / invalidation along discontinuities: mix of the 3x3 nearest and farthest
    u = rng.random((h, w), dtype=np.float32)
    invalid = edge & (u < p.edge_invalid_prob)
    fly = edge & (u >= p.edge_invalid_prob) & (u < p.edge_invalid_prob + p.flying_prob)
    if np.any(fly):
        vv, uu = np.nonzero(fly)
        filled_lo = np.where(valid, d, np.float32(np.inf))
        filled_hi = np.where(valid, d, np.float32(-np.inf))
        lo = ndimage.minimum_filter(filled_lo, size=3, mode="nearest")[vv, uu]
        hi = ndimage.maximum_filter(filled_hi, size=3, mode="nearest")[vv, uu]
        a = rng.random(vv.size, dtype=np.float32)
        mixed = np.where(np.isfinite(hi) & np.isfinite(lo), a * lo + (1.0 - a) * hi, np.nan)
        out[vv, uu] = mixed + np.float32(p.bias_m)
    # weak IR return: dark albedo, incidence angle, distance; grazing surfaces; saturation
    cos_t = _incidence_cos(d, k)
    cos_t = np.where(edge | ~np.isfinite(cos_t), np.float32(1.0), cos_t)
    lum = _luminance(rgb)
    albedo = _SRGB_TO_LINEAR[np.clip(lum + 0.5, 0, 255).astype(np.uint8)]
    with np.errstate(invalid="ignore", divide="ignore"):
        signal = albedo * cos_t / (d * d)
        p_drop = 1.0 / (1.0 + (signal / np.float32(p.dark_signal_50)) ** p.dark_exponent)
    g0, g1 = (math.cos(math.radians(a_deg)) for a_deg in p.grazing_deg)
    if g0 > g1:
        p_drop = np.maximum(p_drop, np.clip((g0 - cos_t) / (g0 - g1), 0.0, 1.0))
    if p.saturation_prob > 0.0:  # specular highlight facing the co-located illuminator
        glare = (lum >= SATURATION_LUMA) & (cos_t > SATURATION_MIN_COS)
        p_drop = np.where(glare, np.maximum(p_drop, np.float32(p.saturation_prob)), p_drop)
    invalid |= rng.random((h, w), dtype=np.float32) < p_drop
    invalid |= _outside_depth_fov(d, k, p, second_view=False)
    return out, invalid


def _structured_light(
    d: NDArray[np.float32],
    k: CameraIntrinsics,
    rng: np.random.Generator,
    p: SensorProfile,
    misregistration: tuple[int, int] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.bool_], tuple[int, int]]:
    """Depth, invalid mask and misregistration (dx, dy) of the structured-light model (the
    drawn one, or ``misregistration`` when given: the draw is made either way)."""
    h, w = d.shape
    edge = _discontinuities(d, p.edge_jump_rel)
    invalid = _occlusion_band(d, k.fx, p.baseline_m, p.shadow_side)
    invalid |= _outside_depth_fov(d, k, p, second_view=False)
    # edges snapped to a coarse block lattice (block median in the band around discontinuities)
    if p.edge_block_px > 0:
        block = max(2, _native_to_output(p, k, p.edge_block_px))
        oy, ox = (int(v) for v in rng.integers(0, block, 2))
        med = _block_median(d, block, oy, ox)
        band = _dilate(edge, block // 2)
        vv, uu = np.nonzero(band)
        snapped = med[(vv + oy) // block, (uu + ox) // block]
        d = d.copy()
        d[vv, uu] = snapped
    # disparity: noise correlated over the matching window, then 1/8 px quantisation
    fb = np.float32(p.depth_focal_px * p.baseline_m)
    box = _native_to_output(p, k, p.noise_corr_px) if p.noise_corr_px > 0 else 1
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = fb / d + np.float32(p.disparity_noise_px) * _correlated_noise(rng, (h, w), box)
        q = np.float32(p.disparity_step_px)
        disp = np.rint(disp / q) * q
        out = np.where(disp > 0, fb / disp, np.float32(np.nan)) + np.float32(p.bias_m)
    # misregistration of the depth image relative to colour (drawn either way, so the
    # rest of the random stream does not depend on whether it is given)
    shift = draw_misregistration(rng, p)
    if misregistration is not None:
        shift = misregistration
    return out.astype(np.float32, copy=False), invalid, shift


def draw_misregistration(rng: np.random.Generator, profile: SensorProfile) -> tuple[int, int]:
    """One device's depth-to-colour misregistration (dx, dy) px, drawn as
    :func:`simulate_depth` draws it per call ((0, 0) for a profile without one): a
    calibration error, the same in every frame of one camera."""
    lo, hi = profile.misregistration_px
    length = float(rng.uniform(lo, hi))
    angle = float(rng.uniform(-math.pi, math.pi))
    return round(length * math.cos(angle)), round(length * math.sin(angle))


_SRGB_TO_LINEAR: Final[NDArray[np.float32]] = (
    (np.arange(256, dtype=np.float64) / 255.0) ** SRGB_GAMMA
).astype(np.float32)
_LINEAR_TO_SRGB: Final[NDArray[np.uint8]] = np.clip(
    np.rint(255.0 * np.linspace(0.0, 1.0, LINEAR_LUT_SIZE) ** (1.0 / SRGB_GAMMA)), 0, 255
).astype(np.uint8)


def _check_inputs(depth_clean: NDArray[np.floating], rgb: NDArray[np.uint8], k: CameraIntrinsics) -> None:
    if depth_clean.ndim != 2:
        raise SensorError(f"depth must be (H, W), got shape {depth_clean.shape}")
    h, w = depth_clean.shape
    if rgb.shape != (h, w, 3):
        raise SensorError(f"rgb must be ({h}, {w}, 3) like the depth, got {rgb.shape}")
    if (k.width, k.height) != (w, h):
        raise SensorError(f"intrinsics are {k.width}x{k.height}, images are {w}x{h}")


def simulate_depth(
    depth_clean: NDArray[np.floating],
    rgb: NDArray[np.uint8],
    k: CameraIntrinsics,
    rng: np.random.Generator,
    profile: SensorProfile,
    misregistration: tuple[int, int] | None = None,
) -> NDArray[np.float32]:
    """What ``profile``'s depth camera would report for a clean depth image.

    Args:
        depth_clean: (H, W) depth along the optical axis in metres, colour camera frame; NaN
            (or <= 0) where there is no surface.
        rgb: (H, W, 3) uint8 colour image of the same view (albedo proxy for the ToF model).
        k: colour intrinsics of both images (width/height must match).
        rng: source of every random draw.
        profile: the sensor (:func:`sensor_profile`).
        misregistration: structured light: the device's fixed shift (dx, dy) px
            (:func:`draw_misregistration`; frames of one camera); None: drawn per call (a
            new device per frame, as for independent dataset frames).

    Returns:
        (H, W) float32 depth in metres on a 1 mm grid, NaN where the sensor reports nothing.

    Raises:
        SensorError: shapes do not match each other or ``k``.
    """
    _check_inputs(depth_clean, rgb, k)
    d = np.asarray(depth_clean, dtype=np.float32).copy()
    with np.errstate(invalid="ignore"):
        d[~(d > 0)] = np.nan
    h, w = d.shape
    shift = (0, 0)
    if profile.kind == "active_stereo":
        out, invalid = _active_stereo(d, k, rng, profile)
    elif profile.kind == "tof":
        out, invalid = _tof(d, rgb, k, rng, profile)
    else:
        out, invalid, shift = _structured_light(d, k, rng, profile, misregistration)
    if profile.dropout_prob > 0.0:
        invalid |= rng.random((h, w), dtype=np.float32) < profile.dropout_prob
    invalid |= _holes((h, w), rng, profile.hole_rate, profile.hole_radius_px, w / 640.0)
    out = np.rint(out / np.float32(MM_QUANTISATION_M)) * np.float32(MM_QUANTISATION_M)
    with np.errstate(invalid="ignore"):
        invalid |= ~((out >= np.float32(profile.min_range_m)) & (out <= np.float32(profile.max_range_m)))
    out = np.where(invalid, np.float32(np.nan), out)
    if shift != (0, 0):
        out = _shift(out.astype(np.float32, copy=False), shift[0], shift[1])
        logger.debug("%s: depth misregistered by (%d, %d) px", profile.name, shift[0], shift[1])
    return out.astype(np.float32, copy=False)


def simulate_color(
    rgb: NDArray[np.uint8], rng: np.random.Generator, profile: SensorProfile
) -> NDArray[np.uint8]:
    """What ``profile``'s colour camera would deliver for a rendered image.

    In linear light (sRGB approximated by gamma :data:`SRGB_GAMMA`): a per-frame exposure
    gain ``exp(N(0, exposure_sigma))``, red/blue white-balance gains ``1 + N(0, wb_sigma)``,
    vignetting ``1 - v r^2`` (r = 1 at the corners), a Gaussian blur of ``blur_sigma_px``
    (scaled with the width / 640), then shot + read noise with variance
    ``shot_noise * gain * x + read_noise^2``; back to sRGB through a lookup table.

    Args:
        rgb: (H, W, 3) uint8 rendered colour image.
        rng: source of every random draw.
        profile: the sensor (:func:`sensor_profile`).

    Returns:
        (H, W, 3) uint8 image.
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise SensorError(f"rgb must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
    h, w, _ = img.shape
    lin = _SRGB_TO_LINEAR[img]
    gain = float(np.exp(rng.normal(0.0, profile.exposure_sigma))) if profile.exposure_sigma > 0 else 1.0
    wb = np.ones(3, dtype=np.float32)
    if profile.wb_sigma > 0:
        wb[[0, 2]] = 1.0 + rng.normal(0.0, profile.wb_sigma, 2)
    yy = ((np.arange(h, dtype=np.float32) - (h - 1) / 2.0) / ((h - 1) / 2.0 or 1.0)) ** 2
    xx = ((np.arange(w, dtype=np.float32) - (w - 1) / 2.0) / ((w - 1) / 2.0 or 1.0)) ** 2
    vig = 1.0 - np.float32(profile.vignetting) * (yy[:, None] + xx[None, :]) / 2.0
    lin = lin * (np.float32(gain) * wb)[None, None, :] * vig[..., None]
    sigma_blur = profile.blur_sigma_px * w / 640.0
    if sigma_blur > 0.05:
        lin = ndimage.gaussian_filter(lin, sigma=(sigma_blur, sigma_blur, 0.0), truncate=2.5)
    if profile.shot_noise > 0 or profile.read_noise > 0:
        var = np.float32(profile.shot_noise * gain) * np.maximum(lin, 0.0) + np.float32(profile.read_noise**2)
        lin = lin + np.sqrt(var) * rng.standard_normal(lin.shape, dtype=np.float32)
    idx = np.clip(lin * (LINEAR_LUT_SIZE - 1) + 0.5, 0, LINEAR_LUT_SIZE - 1).astype(np.intp)
    return _LINEAR_TO_SRGB[idx]
