"""Fits the rat body to 3-D keypoints (DANNCE .mat, ndx-pose .nwb) and builds reference clips.

The fit is inverse kinematics frame by frame: each keypoint is a marker on one body of the
model (a body name and an offset in that body's frame, from a marker-set YAML file), and a
damped Gauss-Newton (Levenberg-Marquardt) solver moves the free root and the non-tail hinges
so that the markers land on the keypoints. Each frame starts from the previous frame's pose
and is pulled gently towards it, so the result is smooth; joint limits are enforced; a soft
penalty keeps the body's collision geoms above the floor (z = 0). The tail is not observed
by any rat23 keypoint and stays straight (all tail hinges 0), as in published STAC fits.

Gaps and bad labels: keypoints that fail the marker set's label checks are dropped first;
after the fit, joints whose keypoints are all missing are interpolated across the gap, and
the poses can be low-passed (`FitOptions.fill_gaps`, `FitOptions.smooth_s`).

Known shortcoming: by default the fit is kinematic only. It knows the floor but not balance or
support, so where no paw is observed (the Rat7M markers) it can return poses that this body
cannot hold: from most Rat7M frames, even held still, the simulated rat falls within 0.5 s under
any of the shipped controllers, while every DANNCE frame tried is held (`pose_holdability`
measures this). `FitOptions.support_weight` (`vrat import --support-weight`) adds soft support
costs (paws on the floor, centre of mass over them) that make most such poses holdable, at
the price of a larger keypoint residual; see `KeypointFitter`.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import os
import time
from collections.abc import Callable, Sequence

import mujoco
import numpy as np
import numpy.typing as npt
import scipy.io
import scipy.spatial
import yaml

from vrat_ros import rat_constants as rc
from vrat_ros.clip import Clip
from vrat_ros.clip import check_fps
from vrat_ros.errors import ClipError
from vrat_ros.rat_model import RatBody

_LOG = logging.getLogger(__name__)

# The DANNCE rat23 skeleton in its canonical order (the order of `pred`'s last axis).
RAT23_KEYPOINTS = (
    'Snout', 'EarL', 'EarR', 'SpineF', 'SpineM', 'SpineL', 'TailBase',
    'ShoulderL', 'ElbowL', 'WristL', 'HandL', 'ShoulderR', 'ElbowR', 'WristR', 'HandR',
    'HipL', 'KneeL', 'AnkleL', 'FootL', 'HipR', 'KneeR', 'AnkleR', 'FootR',
)

# Metres per unit of each supported length unit.
UNITS_TO_M = {'m': 1.0, 'cm': 0.01, 'mm': 0.001}

# Frame rate assumed when a file stores none (the downstream rat tools use 50 Hz).
DEFAULT_FPS = 50.0
# Longest pose smoothing accepted (s): a Gaussian this wide already erases a rat's strides,
# and a longer one (or one longer than the clip) only flattens the clip, at a cost that
# grows with the width (1e6 s ran for ever, 1e9 s ran out of memory).
MAX_SMOOTH_S = 1.0

_HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'
# What SciPy's MAT reader raises on damaged or foreign files (it has no single error type).
_MAT_READ_ERRORS = (scipy.io.matlab.MatReadError, ValueError, OSError, TypeError,
                    NotImplementedError, EOFError, IndexError, KeyError, AttributeError)
_FORMATS = ('auto', 'mat', 'nwb')
# The median spacing between keypoints of a rat is a few centimetres: above this many file
# units it cannot be metres, below it it cannot be millimetres.
_UNIT_GUESS_THRESHOLD = 1.0

# Geom types whose lowest point the floor penalty can compute (plain ints: numpy arrays do
# not compare equal to MuJoCo's enum objects).
_GEOM_SPHERE = int(mujoco.mjtGeom.mjGEOM_SPHERE)
_GEOM_CAPSULE = int(mujoco.mjtGeom.mjGEOM_CAPSULE)
_GEOM_ELLIPSOID = int(mujoco.mjtGeom.mjGEOM_ELLIPSOID)
_GEOM_BOX = int(mujoco.mjtGeom.mjGEOM_BOX)
_FLOOR_GEOM_TYPES = (_GEOM_SPHERE, _GEOM_CAPSULE, _GEOM_ELLIPSOID, _GEOM_BOX)

# The paws of the body for `FitOptions.support_weight`: (paw, limb root). A paw is the named
# body (its origin is the wrist or ankle) and every body below it (fingers, toes); its limb
# runs from the limb root (its origin is the shoulder or hip joint) down to it.
PAW_LIMBS = (('hand_L', 'upper_arm_L'), ('hand_R', 'upper_arm_R'),
             ('foot_L', 'upper_leg_L'), ('foot_R', 'upper_leg_R'))


# ---------------------------------------------------------------------------------------------
# Readers


def _check_readable(path: str) -> None:
    if not os.path.isfile(path):
        raise ClipError(f"keypoint file '{path}' does not exist")


def _is_hdf5(path: str) -> bool:
    with open(path, 'rb') as f:
        head = f.read(520)
    # HDF5 puts its signature at offset 0, or at 512 when the file has a user block (MAT v7.3).
    return head[:8] == _HDF5_SIGNATURE or head[512:520] == _HDF5_SIGNATURE


def _pred_to_tk3(pred: np.ndarray, path: str, expected_k: int | None) -> np.ndarray:
    """Returns DANNCE `pred` (T, 3, K) as (T, K, 3) float64, or raises ClipError."""
    if pred.ndim != 3 or not np.issubdtype(pred.dtype, np.number):
        raise ClipError(
            f"'{path}': `pred` should be a numeric (frames, 3, keypoints) array: got "
            f'shape {pred.shape}, dtype {pred.dtype}')
    if pred.shape[1] == 3:
        xyz = pred.transpose(0, 2, 1)
    elif pred.shape[2] == 3:  # some exports store (frames, keypoints, 3)
        xyz = pred
    else:
        raise ClipError(
            f"'{path}': `pred` should have shape (frames, 3, keypoints): got {pred.shape}")
    if expected_k is not None and xyz.shape[1] != expected_k:
        raise ClipError(
            f"'{path}': `pred` has {xyz.shape[1]} keypoints but {expected_k} names were given "
            '(the file stores no names; the default is the 23 rat23 keypoints)')
    if xyz.shape[0] < 1:
        raise ClipError(f"'{path}': `pred` has no frames")
    return np.ascontiguousarray(xyz, dtype=np.float64)


def read_keypoints_mat(
    path: str, names: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Reads 3-D keypoints from a DANNCE-style MATLAB file (variable `pred`).

    Only `pred` is read, so files whose other variables are damaged or truncated (as in some
    raw DANNCE outputs) still load. MATLAB v5 files are read with SciPy and v7.3 (HDF5)
    files with h5py.

    Args:
        path: the .mat file.
        names: keypoint names in `pred`'s keypoint order; the file stores none, so the
            default is the canonical rat23 order (`RAT23_KEYPOINTS`).

    Returns:
        xyz: (T, K, 3) float64 keypoint positions in the file's units (DANNCE: mm); NaN
            marks a missing keypoint.
        names: (K,) keypoint names.

    Raises:
        ClipError: the file is missing, is not a MAT file, has no `pred`, or `pred` does not
            have shape (T, 3, K) with K matching `names`.
    """
    _check_readable(path)
    names = list(RAT23_KEYPOINTS if names is None else names)
    if _is_hdf5(path):
        import h5py
        try:
            with h5py.File(path, 'r') as f:
                if 'pred' not in f:
                    hint = (' (this looks like NWB: use the NWB reader)'
                            if 'processing' in f else '')
                    raise ClipError(
                        f"'{path}' (MAT v7.3 / HDF5) has no variable `pred`: found "
                        f'{sorted(f.keys())}{hint}')
                # MATLAB stores arrays column-major, so h5py sees the axes reversed.
                pred = np.asarray(f['pred'][()]).T
        except OSError as exc:
            raise ClipError(f"'{path}' is not a readable MAT v7.3 file: {exc}") from exc
    else:
        try:
            contents = scipy.io.loadmat(path, variable_names=['pred'])
        except _MAT_READ_ERRORS as exc:
            raise ClipError(
                f"'{path}' is not a readable MATLAB .mat file with a `pred` variable: "
                f'{type(exc).__name__}: {exc}') from exc
        if 'pred' not in contents:
            try:
                found = [v[0] for v in scipy.io.whosmat(path)]
            except _MAT_READ_ERRORS:
                found = []
            raise ClipError(
                f"'{path}' has no variable `pred` (DANNCE keypoints, frames x 3 x keypoints): "
                f'found {found}')
        pred = np.asarray(contents['pred'])
    return _pred_to_tk3(pred, path, len(names)), names


def _find_pose_estimation(f) -> tuple[str, object]:
    """Returns (name, group) of the first ndx-pose PoseEstimation group in an NWB file."""
    found: list[tuple[str, object]] = []

    def visit(name, obj):
        if obj.attrs.get('neurodata_type') in ('PoseEstimation', b'PoseEstimation'):
            found.append((name, obj))
    f.visititems(visit)
    if not found:
        raise KeyError('no ndx-pose PoseEstimation group')
    return found[0]


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_keypoints_nwb(
    path: str, return_confidence: bool = False,
) -> tuple[np.ndarray, list[str]] | tuple[np.ndarray, list[str], np.ndarray]:
    """Reads 3-D keypoints from an NWB file with an ndx-pose PoseEstimation (plain h5py).

    Keypoint order follows the PoseEstimation `nodes` when present (ndx-pose 0.1), else the
    order of the PoseEstimationSeries groups. NOTE: the series' `unit` attribute is ignored;
    files converted from DANNCE say 'pixels' for what are 3-D millimetres.

    Args:
        path: the .nwb file.
        return_confidence: also return the per-keypoint confidence (NaN where absent).

    Returns:
        xyz: (T, K, 3) float64 keypoint positions in the file's units; NaN marks a missing
            keypoint.
        names: (K,) keypoint names.
        confidence: (T, K) float64, only if `return_confidence`.

    Raises:
        ClipError: the file is missing, not HDF5, has no PoseEstimation, or its series are not
            (T, 3) arrays of one common length.
    """
    import h5py

    _check_readable(path)
    try:
        f = h5py.File(path, 'r')
    except OSError as exc:
        raise ClipError(f"'{path}' is not a readable NWB (HDF5) file: {exc}") from exc
    with f:
        try:
            pe_name, pe = _find_pose_estimation(f)
        except KeyError as exc:
            raise ClipError(
                f"'{path}' holds no ndx-pose PoseEstimation group (expected e.g. "
                'processing/behavior/PoseEstimation)') from exc
        series = [k for k in pe.keys()
                  if _decode(pe[k].attrs.get('neurodata_type', '')) == 'PoseEstimationSeries']
        if 'nodes' in pe:
            names = [_decode(n) for n in pe['nodes'][()]]
            missing = [n for n in names if n not in pe]
            if missing:
                raise ClipError(
                    f"'{path}': {pe_name} lists nodes without a series group: {missing}")
        else:
            names = series
        if not names:
            raise ClipError(f"'{path}': {pe_name} has no keypoint series")
        columns, confidence = [], []
        for n in names:
            data = np.asarray(pe[n]['data'][()], dtype=np.float64)
            if data.ndim != 2 or data.shape[1] != 3:
                raise ClipError(
                    f"'{path}': series '{n}' should hold (frames, 3) positions: got "
                    f'{data.shape}')
            columns.append(data)
            if 'confidence' in pe[n]:
                confidence.append(np.asarray(pe[n]['confidence'][()], dtype=np.float64))
            else:
                confidence.append(np.full(len(data), np.nan))
    lengths = {len(c) for c in columns}
    if len(lengths) != 1:
        raise ClipError(f"'{path}': keypoint series differ in length: {sorted(lengths)}")
    xyz = np.stack(columns, axis=1)
    if return_confidence:
        return xyz, names, np.stack(confidence, axis=1)
    return xyz, names


def detect_format(path: str) -> str:
    """Returns 'mat' or 'nwb' for a keypoint file, judged by its extension.

    Raises:
        ClipError: the extension is neither .mat nor .nwb.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext == '.mat':
        return 'mat'
    if ext == '.nwb':
        return 'nwb'
    raise ClipError(
        f"cannot tell the format of '{path}' from its extension '{ext}': expected .mat "
        "(DANNCE `pred`) or .nwb (ndx-pose); pass fmt='mat' or fmt='nwb'")


def read_keypoints(path: str, fmt: str = 'auto') -> tuple[np.ndarray, list[str], str]:
    """Reads keypoints with the reader for `fmt` ('auto', 'mat' or 'nwb').

    Returns:
        xyz: (T, K, 3) float64 in file units; names: (K,) keypoint names; the format used.
    """
    if fmt not in _FORMATS:
        raise ValueError(f"fmt should be one of {_FORMATS}: got '{fmt}'")
    if fmt == 'auto':
        fmt = detect_format(path)
    if fmt == 'mat':
        xyz, names = read_keypoints_mat(path)
    else:
        xyz, names = read_keypoints_nwb(path)
    return xyz, names, fmt


# ---------------------------------------------------------------------------------------------
# Units


def median_keypoint_spacing(xyz: npt.ArrayLike, max_frames: int = 200) -> float:
    """Returns the median distance between distinct keypoints of a frame (file units).

    Args:
        xyz: (T, K, 3) keypoints; NaN entries are ignored.
        max_frames: at most this many evenly spaced frames are used.

    Raises:
        ValueError: fewer than two keypoints are present in every frame looked at.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(f'keypoints should have shape (T, K, 3): got {xyz.shape}')
    frames = xyz[np.linspace(0, len(xyz) - 1, min(len(xyz), max_frames)).astype(int)]
    upper = np.triu_indices(xyz.shape[1], k=1)
    dist = np.linalg.norm(frames[:, :, None] - frames[:, None], axis=-1)[:, upper[0], upper[1]]
    dist = dist[np.isfinite(dist) & (dist > 0)]
    if dist.size == 0:
        raise ValueError('no two distinct keypoints are present in the same frame')
    return float(np.median(dist))


def guess_units(xyz: npt.ArrayLike) -> str:
    """Guesses whether rat keypoints are in metres or millimetres from their spacing.

    A rat's keypoints lie some 10-100 mm apart, so a median spacing above 1 file unit means
    millimetres and one below means metres. Centimetres are never guessed; say so explicitly.

    Args:
        xyz: (T, K, 3) keypoints in unknown units.

    Returns:
        'mm' or 'm'.
    """
    return 'mm' if median_keypoint_spacing(xyz) > _UNIT_GUESS_THRESHOLD else 'm'


def resolve_units(xyz: npt.ArrayLike, units: str = 'auto') -> tuple[str, bool]:
    """Returns (units, guessed): `units` itself, or the guess when it is 'auto'.

    Raises:
        ValueError: `units` is not 'auto' or one of `UNITS_TO_M`.
    """
    if units == 'auto':
        return guess_units(xyz), True
    if units not in UNITS_TO_M:
        raise ValueError(f"units should be 'auto' or one of {sorted(UNITS_TO_M)}: got '{units}'")
    return units, False


# ---------------------------------------------------------------------------------------------
# Marker sets


@dataclasses.dataclass(frozen=True)
class MarkerSet:
    """Where each keypoint sits on the body.

    Attributes:
        name: the marker set's name, e.g. 'rat23'.
        body_scale: the body scale the offsets were measured at.
        keypoint_names: (K,) keypoint names.
        bodies: (K,) the body each keypoint is attached to.
        offsets: (K, 3) offsets (m) in each body's local frame, at `body_scale`.
        weights: (K,) relative weights of the keypoints in the fit.
        heading_keypoints: two keypoints (back, front) that give the first frame's heading.
        source: the file it was read from.
        label_checks: (keypoint, own, other) triples: in a frame where `keypoint` lies
            nearer to keypoint `other` than to `own` (a left marker nearer the right
            shoulder), the tracker has most likely given it the wrong label, and it is
            treated as missing (see `reject_mislabelled`).
    """

    name: str
    body_scale: float
    keypoint_names: tuple[str, ...]
    bodies: tuple[str, ...]
    offsets: np.ndarray
    weights: np.ndarray
    heading_keypoints: tuple[str, str] | None = None
    source: str = ''
    label_checks: tuple[tuple[str, str, str], ...] = ()

    def offsets_at(self, scale: float) -> np.ndarray:
        """Returns (K, 3) offsets (m) for a body of scale `scale` (they scale linearly)."""
        return self.offsets * (scale / self.body_scale)


def default_marker_set_path() -> str:
    """Returns the path of the rat23 marker set shipped inside the package."""
    return str(importlib.resources.files('vrat_ros') / 'data' / 'marker_sets' / 'rat23.yaml')


def load_marker_set(path: str | os.PathLike | None = None) -> MarkerSet:
    """Reads a marker-set YAML file (default: the shipped rat23 set).

    Layout: `marker_set` (name), `body_scale`, `units` ('m' or 'mm', for the offsets),
    optional `heading_keypoints: [back, front]`, optional `label_checks: {keypoint: [own,
    other], ...}` (see `MarkerSet.label_checks`), and `keypoints`, a mapping from keypoint
    name to `{body: <body name>, offset: [x, y, z], weight: <optional, default 1>}`.

    Raises:
        ClipError: the file is missing, is not YAML, or an entry is malformed.
    """
    path = default_marker_set_path() if path is None else str(path)
    if not os.path.isfile(path):
        raise ClipError(f"marker set file '{path}' does not exist")
    try:
        with open(path, encoding='utf-8') as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ClipError(f"marker set '{path}' is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get('keypoints'), dict):
        raise ClipError(f"marker set '{path}' should be a mapping with a `keypoints` mapping")
    units = doc.get('units', 'm')
    if units not in UNITS_TO_M:
        raise ClipError(f"marker set '{path}': units should be one of {sorted(UNITS_TO_M)}: "
                        f"got '{units}'")
    scale = doc.get('body_scale', rc.DEFAULT_BODY_SCALE)
    if not isinstance(scale, (int, float)) or not scale > 0:
        raise ClipError(f"marker set '{path}': body_scale should be positive: got {scale!r}")
    names, bodies, offsets, weights = [], [], [], []
    for name, entry in doc['keypoints'].items():
        try:
            offset = np.asarray(entry['offset'], dtype=np.float64).reshape(3)
            body = str(entry['body'])
            weight = float(entry.get('weight', 1.0))
        except (AttributeError, TypeError, KeyError, ValueError) as exc:
            raise ClipError(
                f"marker set '{path}': keypoint '{name}' should be {{body: <name>, offset: "
                f'[x, y, z]}}: got {entry!r}') from exc
        if not np.all(np.isfinite(offset)) or not weight >= 0:
            raise ClipError(f"marker set '{path}': keypoint '{name}' has a non-finite offset "
                            'or a negative weight')
        names.append(str(name))
        bodies.append(body)
        offsets.append(offset * UNITS_TO_M[units])
        weights.append(weight)
    heading = doc.get('heading_keypoints')
    if heading is not None:
        if len(heading) != 2 or any(h not in names for h in heading):
            raise ClipError(f"marker set '{path}': heading_keypoints should name two of its "
                            f'keypoints: got {heading!r}')
        heading = (str(heading[0]), str(heading[1]))
    checks = doc.get('label_checks') or {}
    if not isinstance(checks, dict) or any(
            k not in names or not isinstance(v, (list, tuple)) or len(v) != 2
            or any(r not in names for r in v) for k, v in checks.items()):
        raise ClipError(f"marker set '{path}': label_checks should map keypoints to [own, "
                        f'other], both keypoints of the set: got {checks!r}')
    return MarkerSet(
        name=str(doc.get('marker_set', os.path.splitext(os.path.basename(path))[0])),
        body_scale=float(scale), keypoint_names=tuple(names), bodies=tuple(bodies),
        offsets=np.array(offsets), weights=np.array(weights), heading_keypoints=heading,
        source=path,
        label_checks=tuple((str(k), str(v[0]), str(v[1])) for k, v in checks.items()))


def reject_mislabelled(xyz: npt.ArrayLike, names: Sequence[str],
                       marker_set: MarkerSet) -> tuple[np.ndarray, dict[str, int]]:
    """Marks keypoints missing (NaN) in frames where they fail their label check.

    A keypoint with a check (keypoint, own, other) is dropped from a frame where it lies
    nearer to `other` than to `own`; frames where either reference is missing are kept.
    All checks look at the input positions, so the order of the checks does not matter.

    Args:
        xyz: (T, K, 3) keypoints; NaN = missing.
        names: (K,) their names.
        marker_set: the set whose `label_checks` apply (names it lacks are skipped).

    Returns:
        xyz: (T, K, 3) a copy with the rejected keypoints set to NaN.
        rejected: {keypoint: number of frames rejected} for the checks that dropped any.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    out = xyz.copy()
    index = {str(n): i for i, n in enumerate(names)}
    rejected = {}
    for key, own, other in marker_set.label_checks:
        if not all(n in index for n in (key, own, other)):
            continue
        point = xyz[:, index[key]]
        to_own = np.linalg.norm(point - xyz[:, index[own]], axis=1)
        to_other = np.linalg.norm(point - xyz[:, index[other]], axis=1)
        bad = to_other < to_own  # False wherever a distance is NaN
        out[bad, index[key]] = np.nan
        if bad.any():
            rejected[key] = int(bad.sum())
    return out, rejected


# ---------------------------------------------------------------------------------------------
# Inverse kinematics


@dataclasses.dataclass
class FitOptions:
    """Settings of the per-frame solver. Residuals are measured in mm.

    Attributes:
        iterations: Gauss-Newton iterations per frame (fewer when converged).
        first_frame_iterations: iterations for the first frame, which starts from a rough
            guess (root placed on the spine keypoints, hinges at 0).
        tolerance: stop when an accepted step lowers the cost by less than this fraction.
        smooth_weight: pull towards the previous frame, mm^2 per rad^2 of hinge or root
            rotation change.
        root_translation_weight: the same for the root position, mm^2 per mm^2 of change.
        posture_weight: pull of every hinge towards 0 (a neutral pose), mm^2 per rad^2; it
            settles joints that no keypoint constrains (toes, fingers, jaw).
        floor_weight: weight of the squared depth (mm^2) of collision geoms below z = 0.
        damping: initial Levenberg-Marquardt damping (mm^2 per unit step^2).
        fail_residual_mm: a frame whose mean keypoint residual exceeds this is flagged failed.
        min_keypoints: a frame with fewer usable keypoints holds the previous pose and is
            flagged failed.
        fill_gaps: after the fit, a hinge whose every downstream keypoint (on its body or
            below it in the tree) is missing in a frame is interpolated in joint space between
            the nearest frames that observe it (held at the ends of the clip). Without this,
            the solver holds such a joint while its markers are gone and it snaps when they
            return (about 1 rad in one frame for Rat7M arms). Frames with fewer than
            `min_keypoints` keypoints still hold the pose before them.
        smooth_s: standard deviation (s) of a zero-phase Gaussian low-pass applied to the
            fitted poses (root position, root rotation, hinges) after gap filling; 0 is off.
            Needs the frame rate (`KeypointFitter.fit(..., fps=)`); at most MAX_SMOOTH_S
            (1 s) and no longer than the clip.
        support_weight: weight (mm^2 per mm^2) of the physical-support terms, 0 (default) is
            off. For every paw (`PAW_LIMBS`) that no present keypoint observes in a frame and
            whose limb can reach the floor, the sole (both ends of every capsule of the hand
            and fingers, foot and toes) is pulled down to the floor, and the whole body's
            centre of mass is pulled horizontally into the support polygon of the paws on the
            floor. Meant for marker sets without paw markers (Rat7M); see `KeypointFitter`
            ("Physical support").
        gait: step the paws instead of sliding them (`vrat import --gait`; needs
            `support_weight` > 0 and a marker set with a `gait` entry): each paw's stance and
            swing are read from the speed of a marker on its limb; a standing paw stays where
            it landed, a swinging one is lifted off the floor and leaves the support polygon.
            See `marker_sets.GaitFitter`.
    """

    iterations: int = 12
    first_frame_iterations: int = 200
    tolerance: float = 1e-4
    smooth_weight: float = 100.0
    root_translation_weight: float = 1.0
    posture_weight: float = 0.5
    floor_weight: float = 10.0
    damping: float = 1.0
    fail_residual_mm: float = 20.0
    min_keypoints: int = 6
    fill_gaps: bool = True
    smooth_s: float = 0.0
    support_weight: float = 0.0
    gait: bool = False

    def to_dict(self) -> dict:
        """Returns the settings as a JSON-friendly dict (for a clip's provenance)."""
        return dataclasses.asdict(self)


def _support_points_down(
    types: np.ndarray, size: np.ndarray, xpos: np.ndarray, xmat: np.ndarray,
) -> np.ndarray:
    """Returns (G, 3) the lowest world point of each geom (sphere, capsule, ellipsoid, box)."""
    rot = xmat.reshape(-1, 3, 3)
    down_local = -rot[:, 2, :]  # world -z expressed in each geom's frame
    local = np.zeros_like(xpos)
    sphere = types == _GEOM_SPHERE
    capsule = types == _GEOM_CAPSULE
    ellipsoid = types == _GEOM_ELLIPSOID
    box = types == _GEOM_BOX
    round_ = sphere | capsule
    local[round_] = size[round_, :1] * down_local[round_]
    local[capsule, 2] += np.where(down_local[capsule, 2] >= 0, 1.0, -1.0) * size[capsule, 1]
    if np.any(ellipsoid):
        s, u = size[ellipsoid], down_local[ellipsoid]
        norm = np.linalg.norm(s * u, axis=1, keepdims=True)
        local[ellipsoid] = s * s * u / np.maximum(norm, 1e-12)
    local[box] = size[box] * np.where(down_local[box] >= 0, 1.0, -1.0)
    return xpos + np.einsum('gij,gj->gi', rot, local)


def _floor_geoms(model: mujoco.MjModel, body_names: Sequence[str]) -> np.ndarray:
    """Returns the geoms the fit keeps above the floor: every colliding non-tail geom."""
    return np.array([
        g for g in range(model.ngeom)
        if model.geom_bodyid[g] > 1 and (model.geom_contype[g] or model.geom_conaffinity[g])
        and not body_names[model.geom_bodyid[g]].startswith(rc.TAIL_BODY_PREFIX)
        and int(model.geom_type[g]) in _FLOOR_GEOM_TYPES
    ], dtype=int)


def _is_below(model: mujoco.MjModel, body: int, top: int) -> bool:
    """Whether `body` is `top` or lies below it in the kinematic tree."""
    while body > top:
        body = int(model.body_parentid[body])
    return body == top


def _geom_extent(geom_type: int, size: np.ndarray) -> float:
    """Returns the largest distance (m) from a geom's centre to its surface."""
    if geom_type == _GEOM_CAPSULE:
        return float(size[0] + size[1])
    if geom_type == _GEOM_BOX:
        return float(np.linalg.norm(size))
    if geom_type == _GEOM_ELLIPSOID:
        return float(np.max(size))
    return float(size[0])


def _nearest_on_support(point: np.ndarray, support: np.ndarray
                        ) -> tuple[float, np.ndarray, int, int, float]:
    """Returns how far a 2-D point lies outside the convex hull of 2-D support points.

    Args:
        point: (2,) the point (the centre of mass, projected on the floor).
        support: (S, 2) support points, S >= 1.

    Returns:
        distance: 0 inside the hull (or on it), else the distance to it.
        normal: (2,) unit vector from the nearest hull point towards `point` (zeros inside).
        i, j, s: the nearest hull point is (1 - s) support[i] + s support[j].
    """
    if len(support) >= 3:
        try:
            hull = scipy.spatial.ConvexHull(support)
        except scipy.spatial.QhullError:  # collinear or repeated points: no area
            pass
        else:
            if np.all(hull.equations[:, :2] @ point + hull.equations[:, 2] <= 0.0):
                return 0.0, np.zeros(2), 0, 0, 0.0
    # Outside: the nearest hull point lies on a segment between two support points.
    best = (np.inf, np.zeros(2), 0, 0, 0.0)
    for i in range(len(support)):
        for j in range(i, len(support)):
            edge = support[j] - support[i]
            length2 = float(edge @ edge)
            t = 0.0 if length2 == 0.0 else float(np.clip((point - support[i]) @ edge / length2,
                                                         0.0, 1.0))
            gap = point - (support[i] + t * edge)
            dist = float(np.linalg.norm(gap))
            if dist < best[0]:
                best = (dist, gap / dist if dist > 0 else np.zeros(2), i, j, t)
    return best


@dataclasses.dataclass(frozen=True)
class _Paw:
    """One paw of the body, for the physical-support terms of the fit."""

    name: str
    limb_root: int  # body id of the limb's top; its origin is the shoulder or hip joint
    geoms: np.ndarray  # rows of `floor_geoms` on the paw's bodies
    markers: np.ndarray  # used markers on the paw's bodies
    reach: float  # the limb's length (m), from the limb root's origin to the paw's surface


class KeypointFitter:
    """Per-frame inverse kinematics of the rat body onto keypoints of one marker set.

    Physical support (`FitOptions.support_weight` > 0): marker sets without paw markers
    (Rat7M) leave the paws to the posture prior, so fitted poses often have a paw hanging in
    the air, the hind feet on tiptoe under a hip held higher than the legs can hold, and the
    centre of mass outside the paws (measured: the PD controller cannot hold 14 of 15 such
    poses for 1 s, and holds every DANNCE pose, whose paws are observed). Two soft costs, in
    the same mm^2 as the keypoints and weighted by `support_weight`, then join the fit in
    each frame:

    - Paw contact: a paw (`PAW_LIMBS`: hand or foot and the bodies below it) that no present
      keypoint observes, on a limb whose root (shoulder or hip joint) is no higher above the
      floor than the limb is long when stretched (`_Paw.reach`, from the model's body
      offsets and geoms), is put on the floor: the lowest point of both ends of each of its
      capsules (the lowest point of other geoms) is pulled down to z = 0. Rats stand
      plantigrade, so the whole sole is pulled, heel included, not only the tip; that is
      what lowers a hip held higher than the legs can hold (fitted Rat7M hind feet stand on
      tiptoe with the ankle some 30 mm up, and the ankle gives way under PD). A paw on a
      limb that cannot reach the floor (a forepaw in a rear) is left in the air.
    - Balance: while any paw is pulled, the horizontal distance of the whole body's centre of
      mass outside the convex hull of the lowest points of the paws on the floor (the pulled
      ones, and observed ones within `paw_contact_m` of it) is pulled to zero, so that the
      weight rests on the paws.

    Known shortcomings: whether a paw is pulled is decided afresh at every solver iterate, so
    the cost jumps where a wrist or ankle crosses its reach (the solver only takes steps that
    lower the cost, so it stays stable); the support polygon has no safety margin; the
    torques needed to hold the pose are not checked (the legs' strength enters only through
    the plantigrade stance).
    """

    def __init__(self, marker_set: MarkerSet, keypoint_names: Sequence[str],
                 scale: float = rc.DEFAULT_BODY_SCALE, options: FitOptions | None = None):
        """Builds the body and the marker model.

        Args:
            marker_set: where each keypoint sits on the body.
            keypoint_names: (K,) names of the keypoints that will be passed to `fit`; names
                the marker set lacks are ignored (their residual is NaN).
            scale: body scale; the marker offsets are rescaled to it.
            options: solver settings.

        Raises:
            ClipError: no keypoint name is in the marker set, or the marker set names a body
                the model lacks.
        """
        self.options = FitOptions() if options is None else options
        self.rejected = {}  # keypoints dropped by the label checks of the last `fit`
        self.body = RatBody(scale=scale)
        self.scale = float(scale)
        self.marker_set = marker_set
        self.keypoint_names = [str(n) for n in keypoint_names]
        m = self.model = self.body.model
        self.data = mujoco.MjData(m)

        # Keypoints used in the fit: columns of the input that the marker set knows.
        index = {n: i for i, n in enumerate(marker_set.keypoint_names)}
        self.used = np.array([i for i, n in enumerate(self.keypoint_names) if n in index],
                             dtype=int)
        if self.used.size == 0:
            raise ClipError(
                f"none of the keypoints {self.keypoint_names[:8]} is in marker set "
                f"'{marker_set.name}' ({list(marker_set.keypoint_names)[:8]}, ...)")
        ignored = [n for n in self.keypoint_names if n not in index]
        if ignored:
            _LOG.warning('keypoints not in marker set %s are ignored: %s', marker_set.name,
                         ignored)
        rows = [index[self.keypoint_names[i]] for i in self.used]
        missing = sorted({marker_set.bodies[r] for r in rows} - set(self.body.body_names))
        if missing:
            raise ClipError(f"marker set '{marker_set.name}' names bodies the rat lacks: "
                            f'{missing}')
        self.marker_body = np.array([self.body.body_names.index(marker_set.bodies[r])
                                     for r in rows])
        self.marker_offset = marker_set.offsets_at(self.scale)[rows]
        self.marker_sqrt_w = np.sqrt(marker_set.weights[rows])

        # Free variables in velocity space: the root's 6 and every non-tail hinge.
        hinges = [j for j in range(1, m.njnt) if not self.body.hinge_names[j - 1].startswith(
            rc.TAIL_JOINT_PREFIX)]
        self.dofs = np.concatenate([np.arange(6), m.jnt_dofadr[hinges]]).astype(int)
        self.hinge_qadr = m.jnt_qposadr[hinges].astype(int)
        limited = m.jnt_limited[hinges].astype(bool)
        self.hinge_lo = np.where(limited, m.jnt_range[hinges, 0], -np.inf)
        self.hinge_hi = np.where(limited, m.jnt_range[hinges, 1], np.inf)

        # Scaled variables: root translation in mm, rotations in rad.
        self.var_scale = np.ones(self.dofs.size)
        self.var_scale[:3] = 1e-3  # metres per variable unit
        opt = self.options
        self.smooth_w = np.full(self.dofs.size, opt.smooth_weight)
        self.smooth_w[:3] = opt.root_translation_weight
        self.posture_w = np.concatenate([np.zeros(6), np.full(len(hinges), opt.posture_weight)])
        # For each free hinge, the used markers it moves: those on its body or below it.
        self.hinge_markers = []
        for j in hinges:
            top = int(m.jnt_bodyid[j])
            below = [k for k, b in enumerate(self.marker_body) if _is_below(m, int(b), top)]
            self.hinge_markers.append(np.array(below, dtype=int))

        self.floor_geoms = _floor_geoms(m, self.body.body_names)
        self._jacp = np.zeros((3, m.nv))
        self._jacp_b = np.zeros((3, m.nv))
        self._diff = np.zeros(m.nv)
        self._step = np.zeros(m.nv)
        self.paws, self.paw_contact_m = self._build_paws()
        self.support_sqrt_w = float(np.sqrt(max(opt.support_weight, 0.0)))

    def _build_paws(self) -> tuple[list[_Paw], float]:
        """Returns the paws (of `PAW_LIMBS`, those the model has) and the contact distance.

        A limb's stretched length is the sum of the offsets of the bodies from its root down
        to the paw plus the paw's farthest surface point from the wrist or ankle (in the
        rest pose). The contact distance (m), within which an observed paw counts as standing
        on the floor, is the largest radius of a paw geom.
        """
        m, names = self.model, self.body.body_names
        rest = mujoco.MjData(m)
        rest.qpos[:] = self.body.default_qpos()
        mujoco.mj_kinematics(m, rest)
        geom_body = m.geom_bodyid[self.floor_geoms]
        paws, thickness = [], 0.0
        for paw_name, limb_name in PAW_LIMBS:
            if paw_name not in names or limb_name not in names:
                continue
            root, limb_root = names.index(paw_name), names.index(limb_name)
            subtree = [b for b in range(m.nbody) if _is_below(m, b, root)]
            rows = np.flatnonzero(np.isin(geom_body, subtree))
            if rows.size == 0:
                continue
            length, b = 0.0, root
            while b != limb_root and b > 0:
                length += float(np.linalg.norm(m.body_pos[b]))
                b = int(m.body_parentid[b])
            if b != limb_root:
                continue  # the limb root is not above the paw in this model
            geoms = self.floor_geoms[rows]
            length += max(float(np.linalg.norm(rest.geom_xpos[g] - rest.xpos[root]))
                          + _geom_extent(int(m.geom_type[g]), m.geom_size[g]) for g in geoms)
            thickness = max([thickness] + [float(m.geom_size[g, 0]) for g in geoms])
            markers = np.flatnonzero(np.isin(self.marker_body, subtree))
            paws.append(_Paw(paw_name, limb_root, rows, markers, length))
        return paws, thickness

    def _paw_points(self, paw: _Paw) -> tuple[np.ndarray, np.ndarray]:
        """Returns the sole of a paw: (P, 3) points and (P,) the body each is on.

        Both ends of each capsule (the lowest point of each end sphere) and the lowest point
        of each other geom, at the current kinematics.
        """
        m, d = self.model, self.data
        geoms = self.floor_geoms[paw.geoms]
        points = [self._floor_points_of(geoms)]
        bodies = [m.geom_bodyid[geoms]]
        caps = geoms[m.geom_type[geoms] == _GEOM_CAPSULE]
        if caps.size:
            axis = d.geom_xmat[caps].reshape(-1, 3, 3)[:, :, 2] * m.geom_size[caps, 1:2]
            radius = np.zeros((caps.size, 3))
            radius[:, 2] = m.geom_size[caps, 0]
            points = [d.geom_xpos[caps] + axis - radius, d.geom_xpos[caps] - axis - radius]
            bodies = [m.geom_bodyid[caps]] * 2
            others = geoms[m.geom_type[geoms] != _GEOM_CAPSULE]
            if others.size:
                points.append(self._floor_points_of(others))
                bodies.append(m.geom_bodyid[others])
        return np.concatenate(points), np.concatenate(bodies).astype(int)

    # -- kinematics -------------------------------------------------------------------------

    def _forward(self, qpos: np.ndarray) -> None:
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)

    def marker_positions(self, qpos: npt.ArrayLike | None = None) -> np.ndarray:
        """Returns (K_used, 3) world marker positions (m) for `qpos` (or the current state)."""
        if qpos is not None:
            self._forward(np.asarray(qpos, dtype=np.float64))
        d = self.data
        rot = d.xmat[self.marker_body].reshape(-1, 3, 3)
        return d.xpos[self.marker_body] + np.einsum('kij,kj->ki', rot, self.marker_offset)

    def _floor_points(self) -> np.ndarray:
        return self._floor_points_of(self.floor_geoms)

    def _floor_points_of(self, g: np.ndarray) -> np.ndarray:
        m, d = self.model, self.data
        return _support_points_down(m.geom_type[g], m.geom_size[g], d.geom_xpos[g],
                                    d.geom_xmat[g])

    def _support_paws(self) -> list[_Paw]:
        """Returns the paws the support terms consider (a gait fit leaves out swinging ones)."""
        return self.paws

    def _support(self, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
        """Evaluates the physical-support terms at the current kinematics.

        Needs `mj_kinematics` and `mj_comPos` done for the pose.

        Args:
            valid: (K_used,) bool, the keypoints present in the frame.

        Returns:
            points: (P, 3) sole points of the paws that are pulled or support the body.
            bodies: (P,) the body each point is on.
            pulled: (P,) bool, points pulled down to the floor (above it, on a pulled paw).
            balance: `_nearest_on_support` of the centre of mass over `points` (distance 0
                when no paw is pulled or no point supports the body).
        """
        points, bodies, pulled, any_pulled = [], [], [], False
        for paw in self._support_paws():
            sole, on = self._paw_points(paw)
            observed = bool(paw.markers.size) and bool(np.any(valid[paw.markers]))
            if not observed and self.data.xpos[paw.limb_root, 2] <= paw.reach:
                any_pulled = True
                pulled.append(sole[:, 2] > 0.0)
            elif np.min(sole[:, 2]) <= self.paw_contact_m:
                pulled.append(np.zeros(len(sole), dtype=bool))
            else:
                continue
            points.append(sole)
            bodies.append(on)
        no_balance = (0.0, np.zeros(2), 0, 0, 0.0)
        if not points:
            return np.zeros((0, 3)), np.zeros(0, int), np.zeros(0, bool), no_balance
        points, bodies, pulled = (np.concatenate(points), np.concatenate(bodies),
                                  np.concatenate(pulled))
        balance = no_balance
        if any_pulled:
            balance = _nearest_on_support(self.data.subtree_com[1, :2], points[:, :2])
        return points, bodies, pulled, balance

    def _support_acts(self, valid: np.ndarray) -> bool:
        """Whether the support terms pull a paw in this frame, at the last computed pose.

        That is, some paw has no present marker and its limb can reach the floor (see
        `_support`); where every paw is observed, `support_weight` changes nothing.
        """
        for paw in self._support_paws():
            observed = bool(paw.markers.size) and bool(np.any(valid[paw.markers]))
            if not observed and self.data.xpos[paw.limb_root, 2] <= paw.reach:
                return True
        return False

    def _velocity_diff(self, qpos_from: np.ndarray, qpos_to: np.ndarray) -> np.ndarray:
        """Returns qpos_to - qpos_from in scaled free variables (mm, rad)."""
        mujoco.mj_differentiatePos(self.model, self._diff, 1.0, qpos_from, qpos_to)
        return self._diff[self.dofs] / self.var_scale

    def _cost(self, qpos: np.ndarray, target: np.ndarray, valid: np.ndarray,
              qpos_prev: np.ndarray | None) -> float:
        """Returns the objective (mm^2) at `qpos`."""
        self._forward(qpos)
        res = (self.marker_positions() - target) * 1e3
        cost = float(np.sum((res[valid] * self.marker_sqrt_w[valid, None]) ** 2))
        depth = np.minimum(self._floor_points()[:, 2], 0.0) * 1e3
        cost += self.options.floor_weight * float(depth @ depth)
        if qpos_prev is not None:
            diff = self._velocity_diff(qpos_prev, qpos)
            cost += float(np.sum(self.smooth_w * diff * diff))
        hinge = qpos[self.hinge_qadr]
        cost += float(np.sum(self.posture_w[6:] * hinge * hinge))
        if self.support_sqrt_w > 0.0:  # the kinematics above are still those of `qpos`
            mujoco.mj_comPos(self.model, self.data)
            points, _, pulled, balance = self._support(valid)
            heights = points[pulled, 2] * 1e3
            cost += self.support_sqrt_w ** 2 * (float(heights @ heights)
                                                + (balance[0] * 1e3) ** 2)
        return cost

    def _linearise(self, qpos: np.ndarray, target: np.ndarray,
                   valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns the stacked residual (M,) in mm and its Jacobian (M, n_free)."""
        m, d = self.model, self.data
        self._forward(qpos)
        mujoco.mj_comPos(m, d)  # mj_jac needs cdof and subtree_com
        cols = self.dofs
        col_scale = self.var_scale * 1e3  # mm of marker motion per scaled variable unit
        points = self.marker_positions()
        rows_r, rows_j = [], []
        for k in np.flatnonzero(valid):
            mujoco.mj_jac(m, d, self._jacp, None, points[k], int(self.marker_body[k]))
            w = self.marker_sqrt_w[k]
            rows_r.append((points[k] - target[k]) * 1e3 * w)
            rows_j.append(self._jacp[:, cols] * col_scale * w)
        low = self._floor_points()
        below = np.flatnonzero(low[:, 2] < 0.0)
        sqrt_fw = np.sqrt(self.options.floor_weight)
        for g in below:
            body = int(m.geom_bodyid[self.floor_geoms[g]])
            mujoco.mj_jac(m, d, self._jacp, None, low[g], body)
            rows_r.append(np.array([low[g, 2] * 1e3 * sqrt_fw]))
            rows_j.append(self._jacp[2:3, cols] * col_scale * sqrt_fw)
        if self.support_sqrt_w > 0.0:
            self._support_rows(valid, rows_r, rows_j)
        return np.concatenate(rows_r), np.concatenate(rows_j)

    def _support_rows(self, valid: np.ndarray, rows_r: list, rows_j: list) -> None:
        """Appends the physical-support residuals (mm) and their Jacobian rows."""
        m, d = self.model, self.data
        cols, col_scale, w = self.dofs, self.var_scale * 1e3, self.support_sqrt_w
        points, bodies, pulled, (dist, normal, i, j, t) = self._support(valid)
        for k in np.flatnonzero(pulled):
            mujoco.mj_jac(m, d, self._jacp, None, points[k], int(bodies[k]))
            rows_r.append(np.array([points[k, 2] * 1e3 * w]))
            rows_j.append(self._jacp[2:3, cols] * col_scale * w)
        if dist > 0.0:
            # d(dist) = normal . (d com - d nearest hull point), both horizontal.
            mujoco.mj_jacSubtreeCom(m, d, self._jacp, 1)
            jac = self._jacp[:2].copy()
            for k, share in ((i, 1.0 - t), (j, t)):
                if share > 0.0:
                    mujoco.mj_jac(m, d, self._jacp_b, None, points[k], int(bodies[k]))
                    jac -= share * self._jacp_b[:2]
            rows_r.append(np.array([dist * 1e3 * w]))
            rows_j.append((normal @ jac)[None, cols] * col_scale * w)

    # -- solver -----------------------------------------------------------------------------

    def _apply_step(self, qpos: np.ndarray, step: np.ndarray) -> np.ndarray:
        """Returns qpos moved by `step` (scaled free variables), clipped to the joint limits."""
        self._step[:] = 0.0
        self._step[self.dofs] = step * self.var_scale
        out = qpos.copy()
        mujoco.mj_integratePos(self.model, out, self._step, 1.0)
        out[self.hinge_qadr] = np.clip(out[self.hinge_qadr], self.hinge_lo, self.hinge_hi)
        return out

    def solve_frame(self, target: np.ndarray, valid: np.ndarray, qpos_init: np.ndarray,
                    qpos_prev: np.ndarray | None, iterations: int) -> np.ndarray:
        """Minimises the objective for one frame from `qpos_init`.

        Args:
            target: (K_used, 3) keypoint positions (m); rows where `valid` is False are unused.
            valid: (K_used,) bool mask of present keypoints.
            qpos_init: (nq,) starting pose.
            qpos_prev: (nq,) pose the smoothness term pulls towards, or None.
            iterations: maximum Gauss-Newton iterations.

        Returns:
            (nq,) fitted pose, within the joint limits.
        """
        opt = self.options
        qpos = qpos_init.copy()
        qpos[self.hinge_qadr] = np.clip(qpos[self.hinge_qadr], self.hinge_lo, self.hinge_hi)
        cost = self._cost(qpos, target, valid, qpos_prev)
        mu = opt.damping
        n = self.dofs.size
        reg_w = self.smooth_w if qpos_prev is not None else np.zeros(n)
        for _ in range(iterations):
            r, jac = self._linearise(qpos, target, valid)
            grad = jac.T @ r
            hess = jac.T @ jac
            if qpos_prev is not None:
                grad += reg_w * self._velocity_diff(qpos_prev, qpos)
            hinge = qpos[self.hinge_qadr]
            grad[6:] += self.posture_w[6:] * hinge
            diag = reg_w + self.posture_w
            improved = False
            for _attempt in range(6):
                active = np.ones(n, dtype=bool)
                step = self._solve(hess, grad, diag, mu, active)
                # Hinges at a limit that the step pushes outwards are frozen and the step redone.
                at_lo = (hinge <= self.hinge_lo + 1e-9) & (step[6:] < 0)
                at_hi = (hinge >= self.hinge_hi - 1e-9) & (step[6:] > 0)
                blocked = np.concatenate([np.zeros(6, bool), at_lo | at_hi])
                if blocked.any():
                    active &= ~blocked
                    step = self._solve(hess, grad, diag, mu, active)
                candidate = self._apply_step(qpos, step)
                new_cost = self._cost(candidate, target, valid, qpos_prev)
                if new_cost < cost:
                    improved = True
                    break
                mu *= 4.0
            if not improved:
                break
            gain = (cost - new_cost) / max(cost, 1e-12)
            qpos, cost = candidate, new_cost
            mu = max(mu / 3.0, 1e-6)
            if gain < opt.tolerance:
                break
        return qpos

    @staticmethod
    def _solve(hess: np.ndarray, grad: np.ndarray, diag: np.ndarray, mu: float,
               active: np.ndarray) -> np.ndarray:
        step = np.zeros(grad.size)
        idx = np.flatnonzero(active)
        h = hess[np.ix_(idx, idx)] + np.diag(diag[idx] + mu)
        try:
            step[idx] = -np.linalg.solve(h, grad[idx])
        except np.linalg.LinAlgError:
            step[idx] = -grad[idx] / (np.diag(h) + 1e-9)
        return step

    def _mean_error_mm(self, qpos: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
        """Returns the mean marker-to-keypoint distance (mm) over the valid keypoints."""
        if not np.all(np.isfinite(qpos)):
            return float('nan')
        dist = np.linalg.norm(self.marker_positions(qpos)[valid] - target[valid], axis=1)
        return float(np.mean(dist)) * 1e3

    def initial_pose(self, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Returns a rough first pose: hinges 0, root turned and moved onto the keypoints.

        The heading is the horizontal direction between the marker set's heading keypoints
        (SpineL towards SpineF for rat23) when both are present; the position puts the mean of
        the present markers on the mean of their keypoints.
        """
        qpos = self.body.default_qpos()
        names = [self.keypoint_names[i] for i in self.used]
        heading = self.marker_set.heading_keypoints
        yaw = 0.0
        if heading is not None and all(h in names for h in heading):
            back, front = (names.index(h) for h in heading)
            if valid[back] and valid[front]:
                model = self.marker_positions(qpos)
                d_data = target[front] - target[back]
                d_model = model[front] - model[back]
                yaw = (np.arctan2(d_data[1], d_data[0]) - np.arctan2(d_model[1], d_model[0]))
        qpos[3:7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        model = self.marker_positions(qpos)
        qpos[:3] += np.mean(target[valid] - model[valid], axis=0)
        return qpos

    def fill_unobserved(self, qpos: npt.ArrayLike, seen: npt.ArrayLike) -> np.ndarray:
        """Interpolates each hinge across the frames in which none of its markers is seen.

        A hinge is observed in a frame when at least one used marker on its body or below it
        was present there. Runs of frames in which it is not are replaced by a straight line
        in joint space between the observed frames on either side (the nearest observed value
        at the clip's ends). Hinges that no marker observes (toes, fingers) are left as they
        are. Changing an unobserved hinge moves no present marker, so the fit of the present
        keypoints is unchanged.

        Args:
            qpos: (T, nq) fitted poses.
            seen: (T, K_used) bool, markers present in each frame's fit.

        Returns:
            (T, nq) poses.
        """
        out = np.array(qpos, dtype=np.float64, copy=True)
        seen = np.asarray(seen, dtype=bool)
        frames = np.arange(len(out))
        for adr, markers in zip(self.hinge_qadr, self.hinge_markers):
            if markers.size == 0:
                continue
            observed = np.any(seen[:, markers], axis=1)
            if observed.all() or not observed.any():
                continue
            known = frames[observed]
            out[~observed, adr] = np.interp(frames[~observed], known, out[known, adr])
        return out

    # Hooks for fitters that carry state from frame to frame (`marker_sets.GaitFitter`).

    def _begin_fit(self, xyz: np.ndarray, fps: float | None) -> None:
        """Called once before the first frame with the checked keypoints (m) and rate."""

    def _begin_frame(self, t: int) -> None:
        """Called before frame `t` is solved (it may be solved twice: warm, then cold)."""

    def _end_frame(self, qpos: np.ndarray) -> None:
        """Called with the pose kept for the frame just solved (not for skipped frames)."""

    def fit(self, xyz_m: npt.ArrayLike,
            progress: bool | Callable[[int, int], None] = False,
            fps: float | None = None,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fits every frame in order, each warm-started from the one before.

        Keypoints that fail the marker set's label checks are dropped first
        (`reject_mislabelled`; counts in `self.rejected`). After the fit, as `options` ask,
        hinges are interpolated across marker gaps
        (`fill_unobserved`) and the poses are low-pass filtered (`smooth_poses`); residuals
        and failed frames describe the final poses.

        Args:
            xyz_m: (T, K, 3) keypoints in metres, in `keypoint_names` order; NaN = missing.
            progress: True for a tqdm bar (if tqdm is installed), or a callback
                `fn(frames_done, frames_total)`.
            fps: frame rate of the keypoints (Hz); needed when `options.smooth_s` > 0.

        Returns:
            qpos: (T, nq) fitted poses.
            residual_mm: (T, K) distance from each keypoint to its marker (mm); NaN where the
                keypoint is missing or not in the marker set.
            failed: (T,) True where the frame had too few keypoints (the previous pose is
                held) or its mean residual exceeds `options.fail_residual_mm`.
        """
        xyz = np.asarray(xyz_m, dtype=np.float64)
        if xyz.ndim != 3 or xyz.shape[1:] != (len(self.keypoint_names), 3):
            raise ValueError(f'keypoints should have shape (T, {len(self.keypoint_names)}, 3): '
                             f'got {xyz.shape}')
        xyz, self.rejected = reject_mislabelled(xyz, self.keypoint_names, self.marker_set)
        self.support_frames = 0  # frames where a support term acted (support_weight > 0)
        self._begin_fit(xyz, fps)
        n_frames = xyz.shape[0]
        opt = self.options
        qpos_all = np.zeros((n_frames, self.model.nq))
        residual = np.full((n_frames, len(self.keypoint_names)), np.nan)
        failed = np.zeros(n_frames, dtype=bool)
        if opt.smooth_s > 0 and not (fps is not None and np.isfinite(fps) and fps > 0):
            raise ValueError(f'smoothing over {opt.smooth_s} s needs the frame rate: got '
                             f'fps={fps}')
        if opt.smooth_s > 0:
            duration = (n_frames - 1) / float(fps)
            if not opt.smooth_s <= min(MAX_SMOOTH_S, duration):
                raise ValueError(
                    f'smoothing over {opt.smooth_s:g} s is too long: it should be at most '
                    f'{MAX_SMOOTH_S:g} s and no longer than the clip ({duration:.3g} s)')
        tick = _progress_callback(progress, n_frames)
        prev = None
        first_fitted = None
        seen = np.zeros((n_frames, self.used.size), dtype=bool)
        too_few = np.zeros(n_frames, dtype=bool)
        for t in range(n_frames):
            self._begin_frame(t)
            target = xyz[t, self.used]
            valid = np.all(np.isfinite(target), axis=1)
            if valid.sum() < opt.min_keypoints:
                failed[t] = too_few[t] = True
                qpos_all[t] = prev if prev is not None else self.body.default_qpos()
                tick(t + 1)
                continue
            # Missing keypoints stay NaN: every use below selects the `valid` rows only.
            if prev is not None:
                qpos = self.solve_frame(target, valid, prev, prev, opt.iterations)
                error = self._mean_error_mm(qpos, target, valid)
            if prev is None or not error <= opt.fail_residual_mm:
                # First frame, or the warm start went astray: start afresh from the keypoints.
                cold = self.solve_frame(target, valid, self.initial_pose(target, valid), None,
                                        opt.first_frame_iterations)
                cold_error = self._mean_error_mm(cold, target, valid)
                if prev is None or not error <= cold_error:
                    qpos, error = cold, cold_error
            if not np.isfinite(error):
                failed[t] = too_few[t] = True
                qpos_all[t] = prev if prev is not None else self.body.default_qpos()
                tick(t + 1)
                continue
            dist = np.linalg.norm(self.marker_positions(qpos) - target, axis=1) * 1e3
            if self.support_sqrt_w > 0.0 and self._support_acts(valid):
                self.support_frames += 1
            residual[t, self.used[valid]] = dist[valid]
            qpos_all[t] = qpos
            seen[t] = valid
            failed[t] = error > opt.fail_residual_mm
            self._end_frame(qpos)
            prev = qpos
            first_fitted = t if first_fitted is None else first_fitted
            tick(t + 1)
        if first_fitted:  # frames before the first fitted one hold its pose
            qpos_all[:first_fitted] = qpos_all[first_fitted]
        if first_fitted is None or not (opt.fill_gaps or opt.smooth_s > 0):
            return qpos_all, residual, failed
        if opt.fill_gaps:
            qpos_all = self.fill_unobserved(qpos_all, seen)
            # Frames with too few keypoints still hold the pose before them, as documented.
            for t in np.flatnonzero(too_few):
                qpos_all[t] = qpos_all[t - 1] if t > 0 else qpos_all[first_fitted]
        if opt.smooth_s > 0:
            qpos_all = smooth_poses(qpos_all, opt.smooth_s * float(fps), self.hinge_qadr,
                                    self.hinge_lo, self.hinge_hi)
        # Residuals and failures of the poses actually returned.
        for t in np.flatnonzero(seen.any(axis=1)):
            valid = seen[t]
            target = xyz[t, self.used]
            dist = np.linalg.norm(self.marker_positions(qpos_all[t]) - target, axis=1) * 1e3
            residual[t, self.used[valid]] = dist[valid]
            failed[t] = not float(np.mean(dist[valid])) <= opt.fail_residual_mm
        failed |= too_few
        return qpos_all, residual, failed


def smooth_poses(qpos: npt.ArrayLike, sigma_frames: float, hinge_qadr: npt.ArrayLike,
                 lo: npt.ArrayLike, hi: npt.ArrayLike) -> np.ndarray:
    """Low-passes poses with a zero-phase Gaussian (edges: the end frames repeated).

    Root position and the hinges at `hinge_qadr` are filtered directly (hinges then clipped
    to [lo, hi]); the root quaternion is filtered per component after aligning each frame's
    sign with the previous one, then renormalised. Other columns (the tail) are kept.

    Args:
        qpos: (T, nq) poses with a free root in columns 0-6 (w, x, y, z quaternion).
        sigma_frames: standard deviation of the Gaussian, in frames.
        hinge_qadr: qpos columns of the hinges to filter.
        lo, hi: their joint limits (inf where unlimited).

    Returns:
        (T, nq) filtered poses.
    """
    from scipy.ndimage import gaussian_filter1d
    out = np.array(qpos, dtype=np.float64, copy=True)
    if sigma_frames <= 0 or len(out) < 2:
        return out
    cols = np.asarray(hinge_qadr, dtype=int)
    out[:, :3] = gaussian_filter1d(out[:, :3], sigma_frames, axis=0, mode='nearest')
    out[:, cols] = np.clip(gaussian_filter1d(out[:, cols], sigma_frames, axis=0,
                                             mode='nearest'), lo, hi)
    quat = out[:, 3:7].copy()
    for t in range(1, len(quat)):
        if quat[t] @ quat[t - 1] < 0:
            quat[t] = -quat[t]
    quat = gaussian_filter1d(quat, sigma_frames, axis=0, mode='nearest')
    out[:, 3:7] = quat / np.linalg.norm(quat, axis=1, keepdims=True)
    return out


def _progress_callback(progress: bool | Callable[[int, int], None],
                       total: int) -> Callable[[int], None]:
    if callable(progress):
        return lambda done: progress(done, total)
    if progress:
        try:
            from tqdm import tqdm
        except ImportError:
            _LOG.info('tqdm is not installed; fitting %d frames without a progress bar', total)
        else:
            bar = tqdm(total=total, unit='frame', desc='keypoint fit')

            def tick(done: int) -> None:
                bar.update(done - bar.n)
                if done == total:
                    bar.close()
            return tick
    return lambda done: None


def fit_keypoints(
    xyz_m: npt.ArrayLike,
    names: Sequence[str],
    marker_set: MarkerSet | None = None,
    scale: float = rc.DEFAULT_BODY_SCALE,
    options: FitOptions | None = None,
    progress: bool | Callable[[int, int], None] = False,
    fps: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fits the rat body to keypoints frame by frame (see `KeypointFitter.fit`).

    Args:
        xyz_m: (T, K, 3) keypoints in metres, world frame with z up and the floor at z = 0;
            NaN marks a missing keypoint (it is left out of that frame's fit).
        names: (K,) keypoint names, matched by name against the marker set.
        marker_set: defaults to the shipped rat23 set.
        scale: body scale of the rat.
        options: solver settings.
        progress: True for a progress bar, or a callback `fn(frames_done, frames_total)`.
        fps: frame rate of the keypoints (Hz); needed when `options.smooth_s` > 0.

    Returns:
        qpos: (T, 74) poses: root position (m), root quaternion (w, x, y, z), hinges (rad).
        residual_mm: (T, K) keypoint-to-marker distances (mm), NaN where not fitted.
        failed: (T,) bool, frames that could not be fitted well.
    """
    _refuse_gait(options)
    marker_set = load_marker_set() if marker_set is None else marker_set
    fitter = KeypointFitter(marker_set, names, scale=scale, options=options)
    return fitter.fit(xyz_m, progress=progress, fps=fps)


def _refuse_gait(options: FitOptions | None) -> None:
    """Raises ValueError for `FitOptions.gait`, which only the marker-set fitter honours."""
    if options is not None and options.gait:
        raise ValueError('FitOptions.gait is honoured by vrat_ros.importers.import_clip and '
                         'marker_sets.make_fitter (vrat import --gait), not by this plain fit')


def fit_keypoint_file(
    path: str,
    fmt: str = 'auto',
    fps: float | None = None,
    units: str = 'auto',
    scale: float = rc.DEFAULT_BODY_SCALE,
    marker_set: MarkerSet | str | None = None,
    options: FitOptions | None = None,
    meta: dict | None = None,
    progress: bool | Callable[[int, int], None] = False,
) -> tuple[Clip, dict]:
    """Reads a keypoint file and fits the rat to it, giving a reference clip.

    Args:
        path: a DANNCE .mat (`pred`) or ndx-pose .nwb file.
        fmt: 'auto' (by extension), 'mat' or 'nwb'.
        fps: frame rate of the recording (Hz). None: the files store no trustworthy rate, so
            `DEFAULT_FPS` (50) is assumed and the clip's meta says so.
        units: 'auto' (guessed from the keypoint spacing), 'mm', 'cm' or 'm'.
        scale: body scale of the rat.
        marker_set: a MarkerSet, a path to a marker-set YAML, or None for rat23.
        options: solver settings.
        meta: extra provenance (title, licence, ...) merged into the clip's meta.
        progress: True for a progress bar, or a callback `fn(frames_done, frames_total)`.

    Returns:
        clip: the fitted clip; it keeps the keypoints (m) and records its provenance in meta.
        report: frames, fps, duration_s, residual_mm_mean, residual_mm_p95, failed_frames
            (frame indices), units_assumed, fit_seconds.

    Raises:
        ClipError: the file cannot be read, or fewer than 2 frames were found.
    """
    if fps is not None:
        fps = check_fps(fps, 'fps')
    if isinstance(marker_set, (str, os.PathLike)):
        marker_set = load_marker_set(str(marker_set))
    elif marker_set is None:
        marker_set = load_marker_set()
    options = FitOptions() if options is None else options
    _refuse_gait(options)

    xyz, names, fmt_used = read_keypoints(str(path), fmt)
    if xyz.shape[0] < 2:
        raise ClipError(f"'{path}' holds {xyz.shape[0]} frame(s); a clip needs at least 2")
    units_used, units_guessed = resolve_units(xyz, units)
    xyz_m = xyz * UNITS_TO_M[units_used]
    fps_used = DEFAULT_FPS if fps is None else float(fps)

    start = time.perf_counter()
    fitter = KeypointFitter(marker_set, names, scale=scale, options=options)
    qpos, residual, failed = fitter.fit(xyz_m, progress=progress, fps=fps_used)
    seconds = time.perf_counter() - start

    finite = residual[np.isfinite(residual)]
    report = {
        'frames': int(qpos.shape[0]),
        'fps': fps_used,
        'duration_s': (qpos.shape[0] - 1) / fps_used,
        'residual_mm_mean': float(np.mean(finite)) if finite.size else float('nan'),
        'residual_mm_p95': float(np.percentile(finite, 95)) if finite.size else float('nan'),
        'failed_frames': [int(i) for i in np.flatnonzero(failed)],
        'units_assumed': units_used,
        'fit_seconds': round(seconds, 2),
    }
    clip_meta = {
        'source_file': os.path.basename(str(path)),
        'source_format': fmt_used,
        'fps': fps_used,
        'fps_assumed': fps is None,
        'units': units_used,
        'units_guessed': units_guessed,
        'body_scale': float(scale),
        'marker_set': marker_set.name,
        'marker_set_body_scale': marker_set.body_scale,
        'fitter': 'vrat_ros.keypoint_fit',
        'fit_options': options.to_dict(),
        'fit_residual_mm_mean': report['residual_mm_mean'],
        'fit_residual_mm_p95': report['residual_mm_p95'],
        'fit_failed_frames': report['failed_frames'],
        'tail': 'not observed; tail hinges held at 0',
    }
    clip_meta.update(meta or {})
    clip = Clip(qpos=qpos, fps=fps_used, joint_names=list(fitter.body.hinge_names),
                body_scale=float(scale), meta=clip_meta, keypoints=xyz_m,
                keypoint_names=list(names))
    return clip, report


# ---------------------------------------------------------------------------------------------
# Physical check of fitted poses

# How long a pose must be held (s) to count as supportable: a body that cannot hold a pose
# has clearly fallen (torso down, root or joints far off) well within this.
HOLD_SECONDS = 1.0


def pose_holdability(clip: Clip, frames: Sequence[int] | None = None, n_frames: int = 20,
                     seconds: float = HOLD_SECONDS, controller: str = 'pd',
                     body: RatBody | None = None) -> dict:
    """Measures whether the body can hold single poses of a clip still.

    For each chosen frame the rat starts at rest in that pose and `controller` (built by
    `vrat_ros.evaluate.make_controller`, so 'pd' is the shipped inertia-scaled PD) tracks a
    constant clip of that one pose for `seconds` with `vrat_ros.rollout.run_inline`. A pose
    is held when every control step of the run passes the "tracked" test of
    `vrat_ros.tracking` (the test `vrat eval` uses). A pose that cannot be held is one no
    controller can be expected to track at that instant.

    Args:
        clip: the clip (any joint order; the tail is taken as it is).
        frames: frame indices to test; None picks `n_frames` evenly spaced ones (first and
            last included).
        n_frames: how many frames to pick when `frames` is None.
        seconds: how long each pose must be held (s).
        controller: 'pd' or 'zero' ('policy' needs a policy and is not offered here).
        body: a RatBody at the clip's scale to reuse; None builds one.

    Returns:
        {'frames': tested frame indices, 'held': (n,) bool per frame, 'held_fraction': share
        held, 'failure_time_s': per frame the time of the first failing step (None if held),
        'failure_reason': per frame the tracking test's reason (None if held)}.
    """
    from vrat_ros.evaluate import make_controller
    from vrat_ros.rollout import run_inline

    if controller not in ('pd', 'zero'):
        raise ValueError(f"controller should be 'pd' or 'zero': got '{controller}'")
    if not (np.isfinite(seconds) and seconds > 0):
        raise ValueError(f'seconds should be positive: got {seconds}')
    body = RatBody(scale=clip.body_scale) if body is None else body
    if list(clip.joint_names) != list(body.hinge_names):
        clip = clip.reorder_to(body.hinge_names)
    if frames is None:
        frames = np.unique(np.round(np.linspace(0, clip.n_frames - 1, n_frames)).astype(int))
    frames = [int(f) for f in frames]
    held, fail_t, reasons = [], [], []
    for f in frames:
        # Two copies of the pose, `seconds` apart: a constant reference with zero velocity.
        still = Clip(qpos=np.stack([clip.qpos[f], clip.qpos[f]]), fps=1.0 / seconds,
                     joint_names=list(body.hinge_names), body_scale=clip.body_scale, meta={})
        result = run_inline(body, still, make_controller(controller), seconds=seconds)
        first = result.metrics['first_failure_frame']
        held.append(first is None)
        last = len(result.times) - 1  # a run that diverged fails one frame past its end
        fail_t.append(None if first is None else float(result.times[min(first, last)]))
        reasons.append(result.metrics['failure_reason'])
    return {'frames': frames, 'held': held,
            'held_fraction': float(np.mean(held)) if held else float('nan'),
            'failure_time_s': fail_t, 'failure_reason': reasons}


# A paw counts as on the floor when the lowest point of its geoms is this close to it (m).
PAW_CONTACT_M = 0.005
# paw_slip's carried ratio uses the frame pairs where the root moves at least this fast (m/s).
ROOT_MOVING_M_S = 0.05


def paw_slip(clip: Clip, contact_m: float = PAW_CONTACT_M,
             body: RatBody | None = None) -> dict:
    """Measures how fast a clip's paws slide while they are on the floor.

    A real paw that carries weight does not slide, so a reference whose paws do cannot be
    followed by a body with friction: its joints may be tracked while its root is left
    behind. For each paw of `PAW_LIMBS` (the hand or foot and the bodies below it), a pair of
    consecutive frames counts as contact when the lowest point of the paw's collision geoms
    is within `contact_m` of the floor in both; the slip is then the horizontal speed of the
    paw's own body origin (the wrist or ankle) between them.

    The carried ratio says whether that slide is the body dragging its paws along: over the
    contact pairs in which the root moves horizontally at `ROOT_MOVING_M_S` or faster (a
    root that only rises or falls does not count), the mean of the paw's
    velocity along the root's direction of travel divided by the root's speed. A planted
    paw gives 0 (the body moves over it, as in real walking); a paw carried along with the
    root gives 1; a paw swept forward while still on the floor gives more.

    Args:
        clip: a rat clip (any joint order), at its own frame rate.
        contact_m: height of a paw's lowest point (m) under which it is on the floor.
        body: a RatBody at the clip's scale to reuse; None builds one.

    Returns:
        {'paws': {paw: {'contact_fraction': share of frame pairs in contact,
        'slip_mm_s_median', 'slip_mm_s_p90': over those pairs (None without contact),
        'carried_ratio': see above (None without a contact pair with the root moving)}},
        'slip_mm_s_median': over the contact pairs of all paws (None without contact),
        'carried_ratio': over those pairs of all paws (None without any),
        'root_speed_mm_s_median': the root's horizontal speed, for scale}.
    """
    number = isinstance(contact_m, (int, float, np.floating, np.integer))
    if not (number and np.isfinite(contact_m) and contact_m >= 0):
        raise ValueError(f'contact_m should be a number >= 0: got {contact_m!r}')
    body = RatBody(scale=clip.body_scale) if body is None else body
    if abs(body.scale - float(clip.body_scale)) > 1e-9:
        raise ValueError(f'the body has scale {body.scale:g} but the clip was made for '
                         f'{float(clip.body_scale):g}')
    if list(clip.joint_names) != list(body.hinge_names):
        clip = clip.reorder_to(body.hinge_names)
    m = body.model
    data = mujoco.MjData(m)
    names = body.body_names
    floor = _floor_geoms(m, names)
    paws = []
    for paw_name, _ in PAW_LIMBS:
        if paw_name not in names:
            continue
        paw = names.index(paw_name)
        below = [b for b in range(m.nbody) if _is_below(m, b, paw)]
        geoms = floor[np.isin(m.geom_bodyid[floor], below)]
        if geoms.size:
            paws.append((paw_name, paw, geoms))
    n = clip.qpos.shape[0]
    low = np.zeros((n, len(paws)))
    xy = np.zeros((n, len(paws), 2))
    for t in range(n):
        data.qpos[:] = clip.qpos[t]
        mujoco.mj_kinematics(m, data)
        for i, (_, paw, geoms) in enumerate(paws):
            points = _support_points_down(m.geom_type[geoms], m.geom_size[geoms],
                                          data.geom_xpos[geoms], data.geom_xmat[geoms])
            low[t, i] = np.min(points[:, 2])
            xy[t, i] = data.xpos[paw, :2]
    fps = float(clip.fps)
    on = low <= contact_m
    contact = on[:-1] & on[1:]
    paw_vel = np.diff(xy, axis=0) * fps                      # (n - 1, paws, 2) m/s
    speed = np.linalg.norm(paw_vel, axis=2) * 1e3
    root_vel = np.diff(clip.qpos[:, :2], axis=0) * fps       # (n - 1, 2) m/s
    root_speed = np.linalg.norm(root_vel, axis=1)
    moving = root_speed >= ROOT_MOVING_M_S
    # Each paw's velocity along the root's direction of travel, over the root's speed:
    # (v_paw . v_root) / |v_root|^2.
    carried = (np.einsum('tpk,tk->tp', paw_vel, root_vel)
               / np.maximum(root_speed, 1e-12)[:, None] ** 2)
    out, pooled, pooled_carried = {}, [], []
    for i, (paw_name, _, _) in enumerate(paws):
        s = speed[contact[:, i], i]
        c = carried[contact[:, i] & moving, i]
        pooled.append(s)
        pooled_carried.append(c)
        out[paw_name] = {
            'contact_fraction': float(np.mean(contact[:, i])) if n > 1 else 0.0,
            'slip_mm_s_median': float(np.median(s)) if s.size else None,
            'slip_mm_s_p90': float(np.percentile(s, 90)) if s.size else None,
            'carried_ratio': float(np.mean(c)) if c.size else None,
        }
    pooled = np.concatenate(pooled) if pooled else np.zeros(0)
    pooled_carried = np.concatenate(pooled_carried) if pooled_carried else np.zeros(0)
    return {'paws': out,
            'slip_mm_s_median': float(np.median(pooled)) if pooled.size else None,
            'carried_ratio': float(np.mean(pooled_carried)) if pooled_carried.size else None,
            'root_speed_mm_s_median': (float(np.median(root_speed)) * 1e3
                                       if root_speed.size else 0.0)}
