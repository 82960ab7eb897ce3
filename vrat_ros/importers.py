"""Imports real rat motion as reference clips, and keeps a library of imported clips.

Formats, recognised by content (magic bytes and variable names), not by file name:
  stac    joint angles of the rat: a STAC pickle (a dict with `qpos` (T, 74)) or an HDF5 file
          with a `qpos` (T, 74) dataset (track-mjx layout); checked against the body, kept as is.
  dannce  DANNCE predictions: a MATLAB file with `pred` (T, 3, K), mm.
  nwb     NWB with an ndx-pose PoseEstimation: one (T, 3) series per keypoint.
  rat7m   Rat7M motion capture: a MATLAB file with `data_3d` (T, 3 K), mm; an all-zero (x, y, z)
          triple is a missing marker.
  npz     keypoints in a NumPy archive: `keypoint_names` (K,) and `keypoints` or
          `groundtruth_pos_3d` (T, K, 3), NaN = missing; optional `fps`.
Keypoint input is fitted to the body by per-frame inverse kinematics (`keypoint_fit`) with a
marker set (a YAML mapping of keypoints to bodies, see `marker_sets`).

Files are never unpickled freely: pickles go through an allow-list that admits only NumPy
array reconstruction (and a stand-in for jax arrays); anything else is refused unrun.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime
import logging
import os
import pickle
import struct
import time
from collections.abc import Callable, Sequence

import h5py
import numpy as np
import numpy.typing as npt
import scipy.io
import yaml

from vrat_ros import __version__
from vrat_ros import keypoint_fit as kf
from vrat_ros import marker_sets
from vrat_ros import rat_constants as rc
from vrat_ros import resources
from vrat_ros.clip import check_fps
from vrat_ros.clip import Clip
from vrat_ros.clip import file_sha256
from vrat_ros.errors import ClipError
from vrat_ros.rat_model import RatBody

try:  # NumPy >= 2 moved the array internals to numpy._core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray

_LOG = logging.getLogger(__name__)

FORMATS = ('auto', 'stac', 'dannce', 'nwb', 'rat7m', 'npz')
_DESCRIPTION = {
    'stac': 'STAC joint-angle file (a pickle or HDF5 file holding `qpos` of width 74)',
    'dannce': 'DANNCE MATLAB file with a `pred` variable (frames x 3 x keypoints)',
    'nwb': 'NWB (HDF5) file with an ndx-pose PoseEstimation group',
    'rat7m': 'Rat7M MATLAB file with a `data_3d` variable (frames x 3 markers)',
    'npz': 'NumPy .npz with `keypoint_names` and `keypoints` or `groundtruth_pos_3d`',
}
KEYPOINT_FORMATS = ('dannce', 'nwb', 'rat7m', 'npz')

# The Rat7M marker order of `data_3d` (the file stores no names).
RAT7M_MARKERS = (
    'HeadF', 'HeadB', 'HeadL', 'SpineF', 'SpineM', 'SpineL', 'Offset1', 'Offset2',
    'HipL', 'HipR', 'ElbowL', 'ArmL', 'ShoulderL', 'ShoulderR', 'ElbowR', 'ArmR',
    'KneeR', 'KneeL', 'ShinL', 'ShinR',
)
# Frame rates used when a file stores none, with the reason given in the clip's meta.
_ASSUMED_FPS = {
    'rat7m': (30.0, 'Rat7M files store no frame rate; 30 Hz is inferred (sample ids step by '
                    '10 on the 300 Hz capture clock)'),
}
_DEFAULT_ASSUMED_FPS = (kf.DEFAULT_FPS, 'the file stores no frame rate; 50 Hz is assumed, as '
                                        'in stac-mjx and track-mjx')
# A rat's keypoints lie roughly 10-100 mm apart; a median spacing outside these bounds (m)
# means the stated units are wrong.
_PLAUSIBLE_SPACING_M = (0.002, 0.5)
# qpos layout checks: unit root quaternions, hinges within their ranges.
_QUAT_NORM_TOLERANCE = 0.05
_HINGE_RANGE_SLACK_RAD = 0.05
_MAX_FRACTION_OUTSIDE_RANGE = 0.05

_HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'
_MAT5_TEXT = b'MATLAB 5.0 MAT-file'
_ZIP_SIGNATURE = b'PK\x03\x04'
_HDF5_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)


# ---------------------------------------------------------------------------------------------
# Format detection


def _has_pose_estimation(f: h5py.File) -> bool:
    found = []

    def visit(_name, obj):
        if kf._decode(obj.attrs.get('neurodata_type', '')) == 'PoseEstimation':
            found.append(True)
            return True
        return None
    f.visititems(visit)
    return bool(found)


def sniff_format(path: str) -> tuple[str | None, str]:
    """Tells the format of a file from its content.

    Args:
        path: the file.

    Returns:
        fmt: one of `FORMATS` (not 'auto'), or None when no supported format matches.
        what: a short description of what the file looks like, for error messages.
    """
    with open(path, 'rb') as f:
        head = f.read(1024)
    if not head:
        return None, 'an empty file'
    if head[:8] == _HDF5_SIGNATURE or head[512:520] == _HDF5_SIGNATURE:
        try:
            f = h5py.File(path, 'r')
        except OSError as exc:
            return None, f'a damaged or truncated HDF5 file ({exc})'
        with f:
            keys = sorted(f.keys())
            if 'qpos' in f:
                return 'stac', 'an HDF5 file with a `qpos` dataset'
            if 'pred' in f:
                return 'dannce', 'a MATLAB v7.3 (HDF5) file with `pred`'
            if 'data_3d' in f:
                return 'rat7m', 'a MATLAB v7.3 (HDF5) file with `data_3d`'
            if _has_pose_estimation(f):
                return 'nwb', 'an NWB file with an ndx-pose PoseEstimation'
        return None, f'an HDF5 file with top-level entries {keys[:10]}'
    if head.startswith(_MAT5_TEXT):
        try:
            variables = [v[0] for v in scipy.io.whosmat(path)]
        except kf._MAT_READ_ERRORS as exc:
            return None, f'a damaged MATLAB v5 file ({type(exc).__name__}: {exc})'
        if 'pred' in variables:
            return 'dannce', 'a MATLAB v5 file with `pred`'
        if 'data_3d' in variables:
            return 'rat7m', 'a MATLAB v5 file with `data_3d`'
        return None, f'a MATLAB v5 file with variables {variables[:10]}'
    if head[:4] == _ZIP_SIGNATURE:
        try:
            with np.load(path, allow_pickle=False) as z:
                files = list(z.files)
        except (OSError, ValueError) as exc:
            return None, f'a damaged zip/.npz archive ({exc})'
        if 'keypoint_names' in files and ('keypoints' in files
                                          or 'groundtruth_pos_3d' in files):
            return 'npz', 'a keypoint .npz archive'
        if 'qpos' in files and 'meta_json' in files:
            return None, 'a vrat clip already (load it with Clip.load)'
        return None, f'a .npz archive with arrays {files[:10]}'
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        return 'stac', 'a Python pickle'
    return None, f'none of the supported formats (it starts with {head[:16]!r})'


def _check_format(path: str, fmt: str) -> str:
    """Returns the format to read `path` with, or raises ClipError if the content disagrees."""
    if fmt not in FORMATS:
        raise ValueError(f'format should be one of {FORMATS}: got {fmt!r}')
    found, what = sniff_format(path)
    if fmt == 'auto':
        if found is None:
            raise ClipError(
                f"cannot import '{path}': it is {what}; expected one of: "
                + '; '.join(f'{k}: {v}' for k, v in _DESCRIPTION.items()))
        return found
    if found != fmt:
        raise ClipError(f"'{path}' is not a {_DESCRIPTION[fmt]}: it is {what}")
    return fmt


def mat5_truncation(path: str) -> str | None:
    """Returns a note if a MATLAB v5 file ends inside one of its variables, else None.

    Walks the top-level data elements (8-byte tag: type, byte count) from offset 128.
    """
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        header = f.read(128)
        if len(header) < 128 or not header.startswith(_MAT5_TEXT):
            return None
        endian = '<' if header[126:128] == b'IM' else '>'
        offset, index = 128, 0
        while offset + 8 <= size:
            f.seek(offset)
            dtype, nbytes = struct.unpack(endian + 'II', f.read(8))
            if dtype >> 16:  # small data element: the data sits inside the tag
                offset += 8
            else:
                offset += 8 + nbytes + (-nbytes % 8 if dtype != 15 else 0)
            if offset > size:
                return (f'the file is truncated: element {index} needs {offset} bytes but '
                        f'the file has {size}')
            index += 1
    return None


# ---------------------------------------------------------------------------------------------
# Joint-angle input (STAC)


def _rebuild_jax_array(fn, args, state, *_unused):
    """Stands in for jax's array reconstructor: returns the plain NumPy array instead."""
    if fn is not _multiarray._reconstruct:
        raise _RefusedGlobal('a jax array in the pickle is not built from NumPy data')
    array = fn(*args)
    array.__setstate__(state)
    return array


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle referenced a global outside the allow-list."""


class ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data and NumPy arrays only; every other global is refused unrun.

    jax arrays are rebuilt as NumPy arrays, so files written by jax-based tools (STAC) load
    without jax. Pickles written under NumPy 1 (`numpy.core`) and 2 (`numpy._core`) both load.
    """

    _ALLOWED = {
        ('numpy', 'ndarray'): np.ndarray,
        ('numpy', 'dtype'): np.dtype,
        ('numpy.core.multiarray', '_reconstruct'): _multiarray._reconstruct,
        ('numpy._core.multiarray', '_reconstruct'): _multiarray._reconstruct,
        ('numpy.core.multiarray', 'scalar'): _multiarray.scalar,
        ('numpy._core.multiarray', 'scalar'): _multiarray.scalar,
        ('_codecs', 'encode'): codecs.encode,
        ('jax._src.array', '_reconstruct_array'): _rebuild_jax_array,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedGlobal(
                f'refusing to load {module}.{name}: only NumPy arrays and plain data are '
                'allowed in an imported pickle') from None


def read_stac_pickle(path: str) -> dict:
    """Reads a STAC output pickle without running code from it.

    Returns:
        The pickled dict (arrays as NumPy arrays).

    Raises:
        ClipError: the file is not a pickle, references anything but NumPy data, or is not
            a dict with `qpos`.
    """
    try:
        with open(path, 'rb') as f:
            data = ArrayOnlyUnpickler(f).load()
    except _RefusedGlobal as exc:
        raise ClipError(f"'{path}' cannot be imported safely: {exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, struct.error) as exc:
        raise ClipError(f"'{path}' is not a readable pickle (damaged or truncated): "
                        f'{type(exc).__name__}: {exc}') from exc
    if not isinstance(data, dict) or 'qpos' not in data:
        found = sorted(data)[:10] if isinstance(data, dict) else type(data).__name__
        raise ClipError(f"'{path}' should hold a STAC dict with `qpos`: found {found}")
    return data


def _find_setting(tree, keys: Sequence[str]):
    """Returns the first value stored under one of `keys` anywhere in nested dicts, or None."""
    if isinstance(tree, dict):
        for key in keys:
            if key in tree and isinstance(tree[key], (int, float)) and tree[key] > 0:
                return float(tree[key])
        for value in tree.values():
            found = _find_setting(value, keys)
            if found is not None:
                return found
    return None


_FPS_KEYS = ('fps', 'RENDER_FPS', 'render_fps', 'mocap_hz', 'MOCAP_HZ')
_SCALE_KEYS = ('SCALE_FACTOR', 'scale_factor', 'rescale_factor', 'body_scale')


def read_stac_hdf5(path: str) -> dict:
    """Reads a track-mjx style HDF5 file: `qpos` plus optional `config` (YAML) and attributes.

    Returns:
        A dict with `qpos` and, when present, `names_qpos`, `config` (parsed YAML) and the
        file attributes.
    """
    try:
        with h5py.File(path, 'r') as f:
            out = {'qpos': np.asarray(f['qpos'][()])}
            attrs = {k: v for k, v in f.attrs.items()}
            attrs.update({k: v for k, v in f['qpos'].attrs.items()})
            out['attrs'] = {k: (v.item() if isinstance(v, np.generic) else v)
                            for k, v in attrs.items()}
            if 'names_qpos' in f:
                out['names_qpos'] = [kf._decode(n) for n in f['names_qpos'][()]]
            if 'config' in f:
                raw = f['config'][()]
                out['config'] = yaml.safe_load(kf._decode(raw.item() if isinstance(
                    raw, np.ndarray) else raw))
    except yaml.YAMLError as exc:
        raise ClipError(f"'{path}': the `config` string is not valid YAML: {exc}") from exc
    except _HDF5_READ_ERRORS as exc:
        raise ClipError(f"'{path}' is not a readable HDF5 joint-angle file with `qpos`: "
                        f'{type(exc).__name__}: {exc}') from exc
    return out


def check_qpos(qpos: npt.ArrayLike, path: str, body: RatBody,
               names: Sequence[str] | None = None) -> tuple[np.ndarray, dict]:
    """Checks joint angles against the body and returns them in the body's hinge order.

    Args:
        qpos: (T, W) joint angles from the file.
        path: the file, for messages.
        body: the rat body to check against.
        names: (W,) qpos column names (the 7 root columns may have any name), if the file
            has them; the hinges are then matched by name (a 'walker/' style prefix is
            ignored).

    Returns:
        qpos: (T, nq) float64 in the body's layout.
        info: hinge_values_outside_range (count, with `_HINGE_RANGE_SLACK_RAD` slack) and
            reordered (bool).

    Raises:
        ClipError: the width matches no body, the root quaternion columns are not unit
            quaternions, names do not match, or many hinge values lie outside the ranges.
    """
    qpos = np.asarray(qpos)
    if qpos.ndim != 2 or not np.issubdtype(qpos.dtype, np.number):
        raise ClipError(f"'{path}': qpos should be a numeric (frames, {body.nq}) array: got "
                        f'shape {qpos.shape}, dtype {qpos.dtype}')
    n_hinges = len(body.hinge_names)
    if qpos.shape[1] != body.nq:
        hint = (' (that is the hinges without the free root joint)'
                if qpos.shape[1] == n_hinges else '')
        raise ClipError(
            f"'{path}': qpos width {qpos.shape[1]} matches no body: expected {body.nq} "
            f'(root position 3 + root quaternion w, x, y, z 4 + {n_hinges} rat hinges){hint}')
    if qpos.shape[0] < 2:
        raise ClipError(f"'{path}': qpos has {qpos.shape[0]} frame(s); a clip needs at least 2")
    qpos = qpos.astype(np.float64)
    if not np.all(np.isfinite(qpos)):
        bad = np.flatnonzero(~np.all(np.isfinite(qpos), axis=1))
        raise ClipError(f"'{path}': qpos has non-finite values in {bad.size} frames, e.g. "
                        f'{bad[:5].tolist()}')
    reordered = False
    if names is not None:
        names = [str(n).split('/')[-1] for n in names]
        if len(names) != qpos.shape[1]:
            raise ClipError(f"'{path}': {len(names)} qpos names for {qpos.shape[1]} columns")
        hinges = names[7:]
        if hinges != list(body.hinge_names):
            unknown = sorted(set(hinges) - set(body.hinge_names))
            missing = sorted(set(body.hinge_names) - set(hinges))
            if unknown or missing or len(set(hinges)) != len(hinges):
                raise ClipError(
                    f"'{path}': qpos joint names do not match the rat body: unknown "
                    f'{unknown[:5]}, missing {missing[:5]}')
            index = {n: i for i, n in enumerate(hinges)}
            qpos = qpos[:, list(range(7)) + [7 + index[n] for n in body.hinge_names]]
            reordered = True
    norms = np.linalg.norm(qpos[:, 3:7], axis=1)
    if np.any(np.abs(norms - 1.0) > _QUAT_NORM_TOLERANCE):
        raise ClipError(
            f"'{path}': qpos columns 3:7 should be the root's unit quaternion (w, x, y, z): "
            f'norms range {norms.min():.3g}..{norms.max():.3g}; the layout does not match '
            'root position, root quaternion, hinges')
    m = body.model
    lo, hi = m.jnt_range[1:, 0], m.jnt_range[1:, 1]
    limited = m.jnt_limited[1:].astype(bool)
    hinge = qpos[:, 7:]
    outside = limited & ((hinge < lo - _HINGE_RANGE_SLACK_RAD)
                         | (hinge > hi + _HINGE_RANGE_SLACK_RAD))
    fraction = float(outside.mean())
    if fraction > _MAX_FRACTION_OUTSIDE_RANGE:
        worst = np.argsort(outside.mean(axis=0))[::-1][:3]
        raise ClipError(
            f"'{path}': {fraction:.0%} of the hinge values lie outside the rat's joint ranges "
            f'(at most {_MAX_FRACTION_OUTSIDE_RANGE:.0%} expected), worst '
            f'{[body.hinge_names[i] for i in worst]}; the columns do not follow the body\'s '
            'hinge order')
    return qpos, {'hinge_values_outside_range': int(outside.sum()), 'reordered': reordered}


def _import_qpos(path: str, fps: float | None, scale: float | None) -> tuple[Clip, dict]:
    """Reads a STAC pickle or track-mjx HDF5 file into a clip (no fit)."""
    with open(path, 'rb') as f:
        is_pickle = f.read(1) == b'\x80'
    raw = read_stac_pickle(path) if is_pickle else read_stac_hdf5(path)
    body = RatBody()
    qpos, info = check_qpos(raw['qpos'], path, body, raw.get('names_qpos'))

    settings = {k: v for k, v in raw.items() if not isinstance(v, np.ndarray)}
    file_fps = _find_setting(settings, _FPS_KEYS)
    if fps is not None:
        fps_used, fps_source = float(fps), 'given'
    elif file_fps is not None:
        fps_used = check_fps(file_fps, f"'{path}': the frame rate stored in the file (give "
                                       'the right one with --fps)')
        fps_source = 'stored in the file'
    else:
        fps_used, fps_source = _DEFAULT_ASSUMED_FPS[0], _DEFAULT_ASSUMED_FPS[1]
    file_scale = _find_setting(settings, _SCALE_KEYS)
    if scale is not None:
        body_scale, scale_source = float(scale), 'given'
    elif file_scale is not None:
        body_scale, scale_source = file_scale, 'stored in the file'
    else:
        body_scale, scale_source = rc.DEFAULT_BODY_SCALE, 'default (the file stores none)'

    keypoints, keypoint_names = None, None
    kp, kp_names = raw.get('kp_data'), raw.get('kp_names')
    if isinstance(kp, np.ndarray) and kp_names is not None and len(kp) == len(qpos):
        kp = np.asarray(kp, dtype=np.float64).reshape(len(qpos), -1, 3)
        if kp.shape[1] == len(kp_names):
            keypoints, keypoint_names = kp, [str(n) for n in kp_names]

    meta = {
        'source_format': 'stac',
        'source_container': 'pickle' if is_pickle else 'hdf5',
        'fps': fps_used,
        'fps_assumed': fps is None and file_fps is None,
        'fps_source': fps_source,
        'body_scale': body_scale,
        'body_scale_source': scale_source,
        'hinge_values_outside_range': info['hinge_values_outside_range'],
        'hinges_reordered_by_name': info['reordered'],
    }
    if file_scale is not None and scale is not None and abs(file_scale - scale) > 1e-9:
        meta['body_scale_in_file'] = file_scale
    clip = Clip(qpos=qpos, fps=fps_used, joint_names=list(body.hinge_names),
                body_scale=body_scale, meta=meta, keypoints=keypoints,
                keypoint_names=keypoint_names)
    report = {
        'residual_mm_mean': None, 'residual_mm_p95': None, 'failed_frames': [],
        'units_assumed': 'm (joint angles in rad)', 'fit_seconds': 0.0, 'warnings': [],
        'fps_source': fps_source, 'body_scale': body_scale,
        'hinge_values_outside_range': info['hinge_values_outside_range'],
    }
    return clip, report


# ---------------------------------------------------------------------------------------------
# Keypoint input


@dataclasses.dataclass
class KeypointSource:
    """Keypoints read from a file, before any fit.

    Attributes:
        xyz: (T, K, 3) positions in the file's units; NaN marks a missing keypoint.
        names: (K,) keypoint names.
        fps: the frame rate the file stores, or None; as stored (an .npz may hold anything
            there), so check it with `check_fps` before use.
        fps_source: where `fps` came from.
        warnings: notes about the file (e.g. truncation that did not reach the keypoints).
    """

    xyz: np.ndarray
    names: list[str]
    fps: float | None = None
    fps_source: str = ''
    warnings: list[str] = dataclasses.field(default_factory=list)


def _names_for_unnamed(count: int, path: str, variable: str,
                       marker_set: kf.MarkerSet | None, default: Sequence[str]) -> list[str]:
    """Keypoint names for a file that stores none: the marker set's order, else `default`."""
    if marker_set is not None and len(marker_set.keypoint_names) == count:
        return list(marker_set.keypoint_names)
    if len(default) == count:
        return list(default)
    for name in marker_sets.shipped_marker_set_names():
        shipped = kf.load_marker_set(marker_sets.marker_set_path(name))
        if len(shipped.keypoint_names) == count:
            return list(shipped.keypoint_names)
    raise ClipError(
        f"'{path}': `{variable}` has {count} keypoints and the file stores no names; pass a "
        f'marker set that lists {count} keypoints in the file\'s order')


def _mat_variable_shape(path: str, variable: str) -> tuple[int, ...]:
    try:
        return dict((v[0], v[1]) for v in scipy.io.whosmat(path))[variable]
    except kf._MAT_READ_ERRORS as exc:
        raise ClipError(f"'{path}' is not a readable MATLAB file: {exc}") from exc


def _read_dannce(path: str, marker_set: kf.MarkerSet | None) -> KeypointSource:
    warnings = []
    if kf._is_hdf5(path):
        try:
            with h5py.File(path, 'r') as f:
                shape = tuple(reversed(f['pred'].shape))
        except _HDF5_READ_ERRORS as exc:
            raise ClipError(f"'{path}' is not a readable MAT v7.3 file with `pred`: "
                            f'{exc}') from exc
    else:
        shape = _mat_variable_shape(path, 'pred')
        note = mat5_truncation(path)
        if note:
            warnings.append(f'{note}; only `pred` was read')
    if len(shape) != 3:
        raise ClipError(f"'{path}': `pred` should have shape (frames, 3, keypoints): got "
                        f'{shape}')
    count = shape[2] if shape[1] == 3 else shape[1]
    names = _names_for_unnamed(count, path, 'pred', marker_set, kf.RAT23_KEYPOINTS)
    xyz, names = kf.read_keypoints_mat(path, names)
    return KeypointSource(xyz=xyz, names=names, warnings=warnings)


def _read_rat7m(path: str, marker_set: kf.MarkerSet | None) -> KeypointSource:
    warnings = []
    if kf._is_hdf5(path):
        try:
            with h5py.File(path, 'r') as f:
                flat = np.asarray(f['data_3d'][()]).T
        except _HDF5_READ_ERRORS as exc:
            raise ClipError(f"'{path}' is not a readable MAT v7.3 file with `data_3d`: "
                            f'{exc}') from exc
    else:
        note = mat5_truncation(path)
        if note:
            warnings.append(f'{note}; only `data_3d` was read')
        try:
            flat = scipy.io.loadmat(path, variable_names=['data_3d'])['data_3d']
        except kf._MAT_READ_ERRORS as exc:
            raise ClipError(f"'{path}' is not a readable MATLAB file with `data_3d` "
                            f'(Rat7M markers): {type(exc).__name__}: {exc}') from exc
    flat = np.asarray(flat)
    if flat.ndim != 2 or flat.shape[1] % 3 or not np.issubdtype(flat.dtype, np.number):
        raise ClipError(f"'{path}': `data_3d` should be a numeric (frames, 3 x markers) array: "
                        f'got shape {flat.shape}, dtype {flat.dtype}')
    xyz = flat.astype(np.float64).reshape(len(flat), -1, 3)
    # NOTE: Rat7M stores a missing marker as an all-zero triple; it becomes NaN (masked).
    xyz[np.all(xyz == 0.0, axis=2)] = np.nan
    names = _names_for_unnamed(xyz.shape[1], path, 'data_3d', marker_set, RAT7M_MARKERS)
    return KeypointSource(xyz=xyz, names=names, warnings=warnings)


def _check_timestamps(stamps: np.ndarray, path: str, series: str) -> None:
    """Raises ClipError at the first frame whose timestamp does not exceed the one before."""
    bad = np.flatnonzero(~(np.diff(stamps) > 0))
    if bad.size:
        i = int(bad[0]) + 1
        raise ClipError(
            f"'{path}': the timestamps of {series} are not strictly increasing: frame {i} is "
            f'at {stamps[i]:.6g} s after frame {i - 1} at {stamps[i - 1]:.6g} s '
            f'({bad.size} such steps)')


def _read_nwb(path: str) -> KeypointSource:
    try:
        xyz, names = kf.read_keypoints_nwb(path)
        fps, source = None, ''
        with h5py.File(path, 'r') as f:
            found = []

            def visit(_name, obj):
                if kf._decode(obj.attrs.get('neurodata_type', '')) == 'PoseEstimationSeries':
                    found.append(obj)
                return None
            f.visititems(visit)
            for series in found:
                if 'timestamps' in series:
                    stamps = np.asarray(series['timestamps'][()], dtype=np.float64)
                    _check_timestamps(stamps, path, series.name)
                    if fps is None and stamps.size > 1:
                        fps = 1.0 / float(np.median(np.diff(stamps)))
                        source = 'the file\'s timestamps'
                elif fps is None and 'starting_time' in series:
                    rate = series['starting_time'].attrs.get('rate')
                    if rate is not None and float(rate) > 0:
                        fps, source = float(rate), 'the file\'s sampling rate'
    except _HDF5_READ_ERRORS as exc:
        raise ClipError(f"'{path}' is not a readable NWB file: {type(exc).__name__}: "
                        f'{exc}') from exc
    return KeypointSource(xyz=xyz, names=names, fps=fps, fps_source=source)


def _read_npz(path: str) -> KeypointSource:
    try:
        with np.load(path, allow_pickle=False) as z:
            key = 'keypoints' if 'keypoints' in z.files else 'groundtruth_pos_3d'
            xyz = np.asarray(z[key], dtype=np.float64)
            names = [str(n) for n in z['keypoint_names']]
            # Kept as stored; checked (check_fps) only if used, so --fps can override it.
            fps = z['fps'][()] if 'fps' in z.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise ClipError(f"'{path}' is not a readable keypoint .npz: {exc}") from exc
    if xyz.ndim != 3 or xyz.shape[1:] != (len(names), 3):
        raise ClipError(f"'{path}': `{key}` should have shape (frames, {len(names)}, 3) for "
                        f'{len(names)} keypoint names: got {xyz.shape}')
    return KeypointSource(xyz=xyz, names=names, fps=fps,
                          fps_source='stored in the file' if fps is not None else '')


def read_keypoint_source(path: str, fmt: str,
                         marker_set: kf.MarkerSet | None = None) -> KeypointSource:
    """Reads the keypoints of a DANNCE, NWB, Rat7M or keypoint-npz file (no fit).

    Args:
        path: the file.
        fmt: 'dannce', 'nwb', 'rat7m' or 'npz' (see `sniff_format`).
        marker_set: for files that store no keypoint names, its keypoint order is used when
            it has as many keypoints as the file.

    Raises:
        ClipError: the file cannot be read as `fmt`.
    """
    if fmt == 'dannce':
        return _read_dannce(path, marker_set)
    if fmt == 'rat7m':
        return _read_rat7m(path, marker_set)
    if fmt == 'nwb':
        return _read_nwb(path)
    if fmt == 'npz':
        return _read_npz(path)
    raise ValueError(f'fmt should be one of {KEYPOINT_FORMATS}: got {fmt!r}')


def check_units(xyz: npt.ArrayLike, units: str, path: str) -> tuple[str, bool]:
    """Resolves the length unit of keypoints and refuses units that make no rat.

    Args:
        xyz: (T, K, 3) keypoints in file units.
        units: 'auto' (detect from the keypoint spacing), 'mm', 'cm' or 'm'.
        path: the file, for messages.

    Returns:
        units: the unit used; guessed: True when it was detected rather than given.

    Raises:
        ClipError: in the given unit the keypoints would lie implausibly far apart or close
            together for a rat (e.g. a file in metres read as millimetres).
    """
    try:
        used, guessed = kf.resolve_units(xyz, units)
        spacing = kf.median_keypoint_spacing(xyz)
    except ValueError as exc:
        raise ClipError(f"'{path}': {exc}") from exc
    spacing_m = spacing * kf.UNITS_TO_M[used]
    lo, hi = _PLAUSIBLE_SPACING_M
    if not lo <= spacing_m <= hi:
        likely = kf.guess_units(xyz)
        raise ClipError(
            f"'{path}': read as '{used}', the keypoints lie a median {spacing_m * 1e3:.3g} mm "
            f'apart, but a rat\'s keypoints lie about 10-100 mm apart; the file looks like '
            f"'{likely}' (pass units='{likely}')")
    return used, guessed


def check_keypoint_names(xyz: npt.ArrayLike, names: Sequence[str],
                         marker_set: kf.MarkerSet, path: str,
                         min_keypoints: int) -> list[str]:
    """Compares the keypoints of a file with a marker set, before any fit.

    Args:
        xyz: (T, K, 3) keypoints; NaN marks a missing one.
        names: (K,) keypoint names of the file.
        marker_set: the mapping of keypoints to bodies.
        path: the file, for messages.
        min_keypoints: the fewest mapped keypoints the fit can use (`FitOptions`).

    Returns:
        Warnings: data keypoints the marker set lacks (ignored), marker-set keypoints the
        data lacks, and mapped keypoints missing in every frame.

    Raises:
        ClipError: fewer than `min_keypoints` mapped keypoints are present in at least one
            frame (frames short of keypoints are still flagged failed by the fit).
    """
    xyz = np.asarray(xyz)
    mapped = set(marker_set.keypoint_names)
    unmapped = [n for n in names if n not in mapped]
    lacking = [n for n in marker_set.keypoint_names if n not in set(names)]
    present = np.any(np.all(np.isfinite(xyz), axis=2), axis=0)
    never = [n for n, seen in zip(names, present) if n in mapped and not seen]
    usable = [n for n, seen in zip(names, present) if n in mapped and seen]
    warnings = []
    if unmapped:
        warnings.append(f"keypoints not in marker set '{marker_set.name}' are ignored: "
                        f'{unmapped}')
    if lacking:
        warnings.append(f"marker set '{marker_set.name}' keypoints missing from the data: "
                        f'{lacking}')
    if never:
        warnings.append(f'keypoints missing in every frame: {never}')
    if len(usable) < min_keypoints:
        raise ClipError(
            f"'{path}': only {len(usable)} keypoints {usable} map to marker set "
            f"'{marker_set.name}' and are present; the fit needs at least {min_keypoints}"
            + (f' (ignored: {unmapped})' if unmapped else ''))
    return warnings


def retarget(xyz_m: npt.ArrayLike, factor: float) -> np.ndarray:
    """Scales a recording about its mean ground position and the floor (z = 0).

    Horizontal positions shrink towards the recording's mean x, y and heights towards the
    floor, so a recording of a larger animal fits a smaller body (speeds scale the same way).

    Args:
        xyz_m: (T, K, 3) keypoints (m); NaN stays NaN.
        factor: body size over animal size.

    Returns:
        (T, K, 3) scaled keypoints (m).
    """
    xyz_m = np.asarray(xyz_m, dtype=np.float64)
    centre = np.nanmean(xyz_m[..., :2].reshape(-1, 2), axis=0)
    out = xyz_m * factor
    out[..., :2] += centre * (1.0 - factor)
    return out


def _scale_value(value: float | str | None, name: str) -> float | str | None:
    if value is None or value == 'fit':
        return value
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} should be a positive number or 'fit': got {value!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} should be a positive number or 'fit': got {value!r}")
    return value


def _import_keypoints(
    path: str, fmt: str, fps: float | None, units: str, scale: float | str | None,
    animal_scale: float | str | None, marker_set, frames: tuple[int, int] | None,
    options: kf.FitOptions | None, progress,
) -> tuple[Clip, dict]:
    """Reads keypoints, resolves units, scale and frame rate, and fits the body."""
    given_set = None if marker_set is None else marker_sets.resolve_marker_set(marker_set)
    source = read_keypoint_source(path, fmt, given_set)
    if given_set is None:
        if fmt == 'rat7m':
            default_name = 'rat7m20'
        else:
            default_name = marker_sets.best_marker_set_for(source.names)
        given_set = marker_sets.resolve_marker_set(default_name)
    xyz = source.xyz
    if frames is not None:
        start, stop = frames
        if not 0 <= start < stop <= len(xyz):
            raise ClipError(f"'{path}': frames {start}:{stop} are outside the file's "
                            f'{len(xyz)} frames')
        xyz = xyz[start:stop]
    if len(xyz) < 2:
        if frames is not None:
            raise ClipError(f"frames {frames[0]}:{frames[1]} of '{path}' give {len(xyz)} "
                            'frame; a clip needs at least 2')
        raise ClipError(f"'{path}' holds {len(xyz)} frame(s); a clip needs at least 2")
    options = kf.FitOptions() if options is None else options
    source.warnings.extend(check_keypoint_names(xyz, source.names, given_set, path,
                                                options.min_keypoints))
    units_used, units_guessed = check_units(xyz, units, path)
    xyz_m = xyz * kf.UNITS_TO_M[units_used]

    if fps is not None:
        fps_used, fps_source, fps_assumed = float(fps), 'given', False
    elif source.fps is not None:  # checked before the fit, which may take minutes
        fps_used = check_fps(source.fps, f"'{path}': the frame rate the file gives (give "
                                         'the right one with --fps)')
        fps_source, fps_assumed = source.fps_source, False
    else:
        fps_used, fps_source = _ASSUMED_FPS.get(fmt, _DEFAULT_ASSUMED_FPS)
        fps_assumed = True

    if options.gait:  # a bad gait entry is refused before the scale search and the fit
        marker_sets.checked_gait_settings(given_set, options)
    fitted_scale, scale_scores = None, None
    if scale == 'fit' or animal_scale == 'fit':
        fitted_scale, scale_scores = marker_sets.estimate_body_scale(
            xyz_m, source.names, given_set, options=options, progress=progress)
    body_scale = (fitted_scale if scale == 'fit'
                  else rc.DEFAULT_BODY_SCALE if scale is None else float(scale))
    animal = (body_scale if animal_scale is None
              else fitted_scale if animal_scale == 'fit' else float(animal_scale))
    factor = body_scale / animal
    if abs(factor - 1.0) > 1e-9:
        xyz_m = retarget(xyz_m, factor)

    start_time = time.perf_counter()
    fitter = marker_sets.make_fitter(given_set, source.names, scale=body_scale,
                                     options=options)
    qpos, residual, failed = fitter.fit(xyz_m, progress=progress, fps=fps_used)
    seconds = time.perf_counter() - start_time

    finite = residual[np.isfinite(residual)]
    if len(failed) and np.all(failed):  # nothing worth a clip: refuse before anything is saved
        mean_mm = float(finite.mean()) if finite.size else float('nan')
        raise ClipError(
            f"'{path}': every frame failed to fit ({len(failed)} of {len(failed)}; mean "
            f'keypoint residual {mean_mm:.1f} mm), so no clip was written; check the units, '
            'marker set, scale and smoothing')
    by_keypoint = {}
    for k in fitter.used:
        column = residual[:, k][np.isfinite(residual[:, k])]
        if column.size:
            by_keypoint[source.names[k]] = {
                'mean': round(float(column.mean()), 3),
                'p95': round(float(np.percentile(column, 95)), 3),
                'present_fraction': round(column.size / len(residual), 3)}
    ignored = [n for n in source.names if n not in given_set.keypoint_names]
    report = {
        'residual_mm_mean': float(finite.mean()) if finite.size else None,
        'residual_mm_p95': float(np.percentile(finite, 95)) if finite.size else None,
        'residual_mm_by_keypoint': by_keypoint,
        'failed_frames': [int(i) for i in np.flatnonzero(failed)],
        'units_assumed': units_used,
        'units_detected': units_guessed,
        'fps_source': fps_source,
        'body_scale': body_scale,
        'animal_scale': animal,
        'retarget_factor': factor,
        'fit_seconds': round(seconds, 2),
        'keypoints_ignored': ignored,
        'keypoints_rejected_frames': dict(fitter.rejected),
        'warnings': list(source.warnings),
    }
    if options.support_weight > 0:  # how often the support terms acted (0: no effect)
        report['support_frames'] = int(fitter.support_frames)
    if isinstance(fitter, marker_sets.GaitFitter):
        report['gait'] = fitter.gait_report()
        report['warnings'].extend(fitter.gait_warnings)
    if abs(factor - 1.0) > 1e-9 and finite.size:  # the same fit in the recording's own mm
        report['residual_mm_mean_recording'] = float(finite.mean() / factor)
        report['residual_mm_p95_recording'] = float(np.percentile(finite, 95) / factor)
    if scale_scores is not None:
        report['scale_fit_residual_mm'] = {f'{k:.4g}': round(v, 3)
                                           for k, v in sorted(scale_scores.items())}
    meta = {
        'source_format': fmt,
        'source_frames': None if frames is None else [int(frames[0]), int(frames[1])],
        'fps': fps_used,
        'fps_assumed': fps_assumed,
        'fps_source': fps_source,
        'units': units_used,
        'units_guessed': units_guessed,
        'body_scale': body_scale,
        'body_scale_source': ('fitted' if scale == 'fit'
                              else 'default' if scale is None else 'given'),
        'animal_scale': animal,
        'animal_scale_source': ('same as body' if animal_scale is None
                                else 'fitted' if animal_scale == 'fit' else 'given'),
        'retarget_factor': factor,
        'marker_set': given_set.name,
        'marker_set_file': os.path.basename(given_set.source),
        'marker_set_body_scale': given_set.body_scale,
        'fitter': 'vrat_ros.keypoint_fit',
        'fit_options': options.to_dict(),
        'fit_residual_mm_mean': report['residual_mm_mean'],
        'fit_residual_mm_p95': report['residual_mm_p95'],
        'fit_failed_frames': report['failed_frames'],
        'fit_keypoints_rejected_frames': dict(fitter.rejected),
        'keypoints_note': ('keypoints are in metres, after unit conversion'
                           + (f' and retargeting by {factor:.4g}' if factor != 1.0 else '')),
        'tail': 'not observed; tail hinges held at 0',
    }
    if scale_scores is not None:
        meta['scale_fit_residual_mm'] = report['scale_fit_residual_mm']
    if 'gait' in report:
        meta['gait'] = {'settings': dataclasses.asdict(fitter.settings),
                        'paws': report['gait']}
    contact_bodies, contact_weight = marker_sets.floor_contact_settings(given_set)
    if contact_bodies and contact_weight > 0:
        meta['floor_contact'] = {'bodies': contact_bodies, 'weight': contact_weight}
    clip = Clip(qpos=qpos, fps=fps_used, joint_names=list(fitter.body.hinge_names),
                body_scale=body_scale, meta=meta, keypoints=xyz_m,
                keypoint_names=list(source.names))
    return clip, report


# ---------------------------------------------------------------------------------------------
# Import, resampling and the clip library


def import_clip(
    path: str | os.PathLike,
    fmt: str = 'auto',
    fps: float | None = None,
    units: str = 'auto',
    scale: float | str | None = None,
    animal_scale: float | str | None = None,
    marker_set: kf.MarkerSet | str | os.PathLike | None = None,
    frames: tuple[int, int] | None = None,
    resample: float | None = None,
    out: str | os.PathLike | None = None,
    progress: bool | Callable[[int, int], None] = False,
    options: kf.FitOptions | None = None,
    meta: dict | None = None,
) -> tuple[Clip, dict]:
    """Imports a recording of a real rat as a reference clip for the body.

    Joint-angle input (STAC) is checked against the body and kept as it is; keypoint input
    (DANNCE, NWB, Rat7M, keypoint npz) is fitted by inverse kinematics, frame by frame,
    warm-started from the previous frame, within the joint limits.

    Args:
        path: the file.
        fmt: one of `FORMATS`; 'auto' detects it from the content. A file whose content is
            not the format named raises ClipError.
        fps: frame rate of the recording (Hz); None uses the rate the file stores, else a
            stated assumption (Rat7M 30 Hz, others 50 Hz), recorded in the clip's meta.
        units: keypoint length unit: 'auto' (detected and reported), 'mm', 'cm' or 'm'.
        scale: body scale of the clip (a number, 'fit' to estimate it from the keypoints, or
            None: the file's for joint angles, else 0.9).
        animal_scale: size of the recorded animal on the same scale (a number or 'fit').
            When it differs from `scale`, keypoints are scaled by scale / animal_scale about
            the floor before the fit, so the motion suits the body. None: no scaling.
        marker_set: keypoint-to-body mapping: a MarkerSet, a shipped name ('rat23',
            'rat7m20') or a YAML path; None picks the shipped set that fits the file.
        frames: (start, stop) frame range to import (stop exclusive); None for all.
        resample: if given, the clip is resampled by time to this rate (Hz).
        out: where to save the clip (.npz, written atomically); None saves nothing.
        progress: True for a progress bar on stderr, or a callback `fn(done, total)`.
        options: IK solver settings.
        meta: extra provenance merged into the clip's meta (title, licence, origin ...).

    Returns:
        clip: the imported clip; its meta records the source and the import parameters.
        report: frames, fps, duration_s, residual_mm_mean, residual_mm_p95 (None for joint
            angles), failed_frames, source, format, marker_set, units_assumed, fit_seconds
            and details (per-keypoint residuals, scale, warnings, out).

    Raises:
        ClipError: the file is missing, unreadable, not the format named, or does not fit
            the body, or the frame rate (given or stored) is outside
            [clip.MIN_FPS, clip.MAX_FPS]; nothing is written to `out` then.
        ValueError: another argument is out of range.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ClipError(f"'{path}' does not exist or is not a file")
    if fps is not None:
        fps = check_fps(fps, 'fps')
    if resample is not None and not (np.isfinite(resample) and resample > 0):
        raise ValueError(f'resample should be a positive rate in Hz: got {resample}')
    scale = _scale_value(scale, 'scale')
    animal_scale = _scale_value(animal_scale, 'animal_scale')
    fmt_used = _check_format(path, fmt)

    if fmt_used == 'stac':
        if scale == 'fit' or animal_scale is not None:
            raise ValueError("scale='fit' and animal_scale apply to keypoint input only; "
                             f"'{path}' holds joint angles")
        clip, report = _import_qpos(path, fps, scale)
        if frames is not None:
            start, stop = frames
            if not 0 <= start < stop <= clip.n_frames or stop - start < 2:
                raise ClipError(f"'{path}': frames {start}:{stop} are outside the file's "
                                f'{clip.n_frames} frames (or fewer than 2)')
            clip = _slice_clip(clip, start, stop)
            clip.meta['source_frames'] = [int(start), int(stop)]
        marker_set_name = None
    else:
        clip, report = _import_keypoints(path, fmt_used, fps, units, scale, animal_scale,
                                         marker_set, frames, options, progress)
        marker_set_name = clip.meta['marker_set']

    clip.meta.update({
        'source_file': os.path.basename(path),
        'source_sha256': file_sha256(path),
        'importer': 'vrat_ros.importers',
        'vrat_ros_version': __version__,
        'imported_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
    })
    clip.meta.update(meta or {})
    fitted_frames = clip.n_frames  # the frames the fit saw (failed_frames index these)
    if resample is not None:
        clip = resample_clip(clip, resample)

    report = {
        'frames': clip.n_frames,
        'fitted_frames': fitted_frames,
        'fps': clip.fps,
        'duration_s': clip.duration_s,
        **{k: report[k] for k in ('residual_mm_mean', 'residual_mm_p95', 'failed_frames')},
        'source': os.path.basename(path),
        'format': fmt_used,
        'marker_set': marker_set_name,
        **{k: v for k, v in report.items()
           if k not in ('residual_mm_mean', 'residual_mm_p95', 'failed_frames')},
        'fps_assumed': bool(clip.meta.get('fps_assumed', False)),
        'source_frames': clip.meta.get('source_frames'),
        'resampled_from_fps': clip.meta.get('resampled_from_fps'),
        'out': None,
    }
    if out is not None:
        clip.save(os.fspath(out))
        report['out'] = os.path.abspath(os.fspath(out))
    return clip, report


def _slice_clip(clip: Clip, start: int, stop: int) -> Clip:
    return dataclasses.replace(
        clip, qpos=clip.qpos[start:stop], meta=dict(clip.meta),
        keypoints=None if clip.keypoints is None else clip.keypoints[start:stop])


def resample_clip(clip: Clip, fps: float) -> Clip:
    """Resamples a clip by time: frame j of the result is the source at t = j / fps.

    The root position and the hinge angles are interpolated linearly, the root quaternion by
    slerp (shortest arc); keypoints linearly, NaN where a neighbouring frame is missing.

    Args:
        clip: the source clip.
        fps: the new frame rate (Hz).

    Returns:
        A clip at `fps` covering [0, clip.duration_s]; its meta records the source rate.

    Raises:
        ValueError: `fps` is not positive.
        ClipError: the clip is too short for two frames at `fps`.
    """
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f'fps should be a positive number: got {fps}')
    fps = float(fps)
    count = int(np.floor(clip.duration_s * fps + 1e-9)) + 1
    if count < 2:
        raise ClipError(f'a {clip.duration_s:.3g} s clip gives fewer than 2 frames at {fps} Hz')
    times = np.arange(count) / fps
    qpos = np.stack([clip.sample(t) for t in times])
    keypoints = None
    if clip.keypoints is not None:
        x = np.clip(times * clip.fps, 0.0, clip.n_frames - 1)
        i0 = np.floor(x).astype(int)
        i1 = np.minimum(i0 + 1, clip.n_frames - 1)
        s = (x - i0)[:, None, None]
        a, b = clip.keypoints[i0], clip.keypoints[i1]
        keypoints = np.where(s == 0.0, a, (1.0 - s) * a + s * b)
    meta = dict(clip.meta)
    meta.update({'fps': fps, 'resampled_from_fps': clip.fps,
                 'resampling': 'by time; linear for positions and hinge angles, slerp for '
                               'the root quaternion'})
    return dataclasses.replace(clip, qpos=qpos, fps=fps, meta=meta, keypoints=keypoints)


def clips_dir() -> str:
    """Returns the folder of imported clips (it may not exist yet).

    `$VRAT_CLIPS_DIR` if set, else `$XDG_DATA_HOME/vrat_ros/clips`, else
    `~/.local/share/vrat_ros/clips`.
    """
    if os.environ.get('VRAT_CLIPS_DIR'):
        return os.path.abspath(os.path.expanduser(os.environ['VRAT_CLIPS_DIR']))
    base = os.environ.get('XDG_DATA_HOME') or os.path.join('~', '.local', 'share')
    return os.path.abspath(os.path.join(os.path.expanduser(base), 'vrat_ros', 'clips'))


def library_clip_path(source_path: str, frames: tuple[int, int] | None = None) -> str:
    """Returns the library path an import of `source_path` is saved to by default."""
    stem = os.path.splitext(os.path.basename(source_path))[0]
    if frames is not None:
        stem += f'_{frames[0]}_{frames[1]}'
    return os.path.join(clips_dir(), stem + '.npz')


def _clip_entry(path: str, kind: str) -> dict:
    entry = {'name': os.path.splitext(os.path.basename(path))[0], 'kind': kind,
             'path': os.path.abspath(path)}
    try:
        clip = Clip.load(path)
    except ClipError as exc:
        entry['error'] = str(exc)
        return entry
    meta = clip.meta
    origin = meta.get('origin_repository')
    source = meta.get('source_file', '')
    if origin:
        source = f'{source} ({origin})'
    entry.update({
        'robot': meta.get('robot', 'rat'),  # the body whose joints the clip drives
        'frames': clip.n_frames, 'fps': clip.fps, 'duration_s': round(clip.duration_s, 3),
        'body_scale': clip.body_scale, 'format': meta.get('source_format'),
        'source': source, 'title': meta.get('title', ''),
    })
    return entry


def list_clips(include_imported: bool = True) -> list[dict]:
    """Lists the shipped clips and the imported ones in the library.

    Returns:
        One dict per clip: name, kind ('shipped' or 'imported'), path, robot, frames, fps,
        duration_s, body_scale, format, source, title; an unreadable file gets `error`
        instead of the clip fields.
    """
    entries = []
    folders = [(resources.data_path(*f), 'shipped') for f in resources.SHIPPED_CLIP_FOLDERS]
    if include_imported:
        folders.append((clips_dir(), 'imported'))
    for folder, kind in folders:
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith('.npz') and not name.startswith('.'):
                entries.append(_clip_entry(os.path.join(folder, name), kind))
    return entries
