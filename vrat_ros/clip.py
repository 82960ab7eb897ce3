"""Reference clips: joint-angle trajectories of the rat with their frame rate and provenance.

A clip file is a NumPy .npz archive (loaded with allow_pickle=False, so it never runs code):
  qpos         (T, nq) float64  root position (m), root quaternion (w, x, y, z), hinge angles (rad)
  fps          ()      float64  frames per second of the source
  joint_names  (nq-7,) str      hinge names in qpos order (matched by name against the body)
  body_scale   ()      float64  the body scale the clip was fitted for
  meta_json    ()      str      provenance: source file, format, licence, import parameters
and optionally keypoints (T, K, 3) float64 in metres with keypoint_names (K,) str.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np
import numpy.typing as npt

from vrat_ros.errors import ClipError

# Frame rates outside [MIN_FPS, MAX_FPS] are refused: no motion capture runs that fast, and
# finite differences at absurd rates (an --fps typo such as 1e308) overflow to inf
# velocities; at tiny ones (5e-324) a clip lasts forever.
MIN_FPS = 0.001
MAX_FPS = 100_000.0


def check_fps(value, what: str = 'clip fps') -> float:
    """Returns `value` as a float frame rate (Hz), or raises ClipError naming `what`.

    A number, or an array holding exactly one real number; bools and anything outside
    [MIN_FPS, MAX_FPS] are refused.
    """
    fps = None
    if not isinstance(value, (bool, np.bool_)):
        try:
            arr = np.asarray(value)
            if arr.size == 1 and arr.dtype.kind in 'iuf':
                fps = float(arr.reshape(()))
        except (TypeError, ValueError, OverflowError):
            fps = None
    if fps is None or not (np.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise ClipError(f'{what} should be a number >= {MIN_FPS:g} and <= {MAX_FPS:g} '
                        f'(frames per second): got {value!r}')
    return fps


_REQUIRED = ('qpos', 'fps', 'joint_names', 'body_scale', 'meta_json')


def quat_normalize(q: np.ndarray) -> np.ndarray:
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions (w, x, y, z), shortest path."""
    q0 = quat_normalize(np.asarray(q0, dtype=np.float64))
    q1 = quat_normalize(np.asarray(q1, dtype=np.float64))
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 1.0 - 1e-10:  # (nearly) the same rotation: avoid dividing by sin(0)
        return quat_normalize(q0 + s * (q1 - q0))
    theta = np.arccos(dot)
    return (np.sin((1.0 - s) * theta) * q0 + np.sin(s * theta) * q1) / np.sin(theta)


def atomic_write(path: str, write_fn) -> None:
    """Writes a file through `write_fn(tmp_path)` then renames it, so no half file is left.

    A symbolic link is followed (its target is replaced, the link kept); an existing path
    that is not a regular file (a device such as /dev/full, a FIFO) is refused, since the
    rename would replace it.

    Raises:
        OSError: `path` exists and is not a regular file.
    """
    path = os.path.realpath(path)
    if os.path.exists(path) and not os.path.isfile(path):
        raise OSError(f"'{path}' exists and is not a regular file; give a file path")
    directory = os.path.dirname(path) or '.'
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-', suffix=os.path.basename(path))
    os.close(fd)
    try:
        write_fn(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def file_sha256(path: str) -> str:
    """Returns the SHA-256 hex digest of a file's bytes (provenance of clips, policies, runs)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass
class Clip:
    """A reference motion for the rat, indexed by time."""

    qpos: np.ndarray
    fps: float
    joint_names: list[str]
    body_scale: float
    meta: dict
    keypoints: np.ndarray | None = None
    keypoint_names: list[str] | None = None

    def __post_init__(self):
        self.qpos = np.array(self.qpos, dtype=np.float64)  # a copy: normalised below
        if self.qpos.ndim != 2 or self.qpos.shape[0] < 2:
            raise ClipError(f'clip qpos should be (T >= 2, nq): got shape {self.qpos.shape}')
        if self.qpos.shape[1] != 7 + len(self.joint_names):
            raise ClipError(
                f'clip qpos width {self.qpos.shape[1]} does not match 7 root values + '
                f'{len(self.joint_names)} joint names')
        if not np.all(np.isfinite(self.qpos)):
            raise ClipError('clip qpos has non-finite values')
        self.fps = check_fps(self.fps)
        self.joint_names = [str(n) for n in self.joint_names]
        self.qpos[:, 3:7] = quat_normalize(self.qpos[:, 3:7])
        self._frame_qvel = None  # per-frame velocities, computed on first use

    @property
    def n_frames(self) -> int:
        return int(self.qpos.shape[0])

    @property
    def duration_s(self) -> float:
        """Time of the last frame (s); frame i sits at i / fps."""
        return (self.n_frames - 1) / self.fps

    def frame_position(self, t: float) -> float:
        """Returns the fractional frame index for time `t` (s), clamped to the clip."""
        return float(np.clip(t * self.fps, 0.0, self.n_frames - 1))

    def sample(self, t: float) -> np.ndarray:
        """Returns qpos (nq,) at time `t` (s): linear in positions and angles, slerp in rotation.

        Past the end, the last frame is held.
        """
        x = self.frame_position(t)
        i0 = int(np.floor(x))
        i1 = min(i0 + 1, self.n_frames - 1)
        s = x - i0
        q0, q1 = self.qpos[i0], self.qpos[i1]
        out = (1.0 - s) * q0 + s * q1
        out[3:7] = quat_slerp(q0[3:7], q1[3:7], s)
        return out

    def window(self, t: float, n_frames: int, dt: float) -> np.ndarray:
        """Returns (n_frames, nq) samples at t, t + dt, ..., t + (n_frames - 1) dt."""
        return np.stack([self.sample(t + k * dt) for k in range(n_frames)])

    def velocity(self, t: float, dt: float = 1e-3) -> np.ndarray:
        """Returns qvel (nq - 1,) at time t by central differences.

        The root angular rate is in the root body's frame, as MuJoCo's free-joint qvel[3:6].
        """
        from vrat_ros.kinematics import qpos_difference  # local: kinematics imports numpy only
        lo, hi = max(t - dt, 0.0), min(t + dt, self.duration_s)
        if hi <= lo:
            return np.zeros(self.qpos.shape[1] - 1)
        return qpos_difference(self.sample(lo), self.sample(hi)) / (hi - lo)

    def frame_velocities(self) -> np.ndarray:
        """Returns qvel (T, nq - 1) at every frame, computed once for the whole clip.

        Central differences between the neighbouring frames (one-sided at the two ends);
        the root angular rate is in the root body's frame, as in `velocity`. The array is
        cached: do not change `qpos` in place afterwards.
        """
        if self._frame_qvel is None:
            from vrat_ros.kinematics import quat_conj
            from vrat_ros.kinematics import quat_mul
            from vrat_ros.kinematics import quat_to_rotvec
            i = np.arange(self.n_frames)
            lo, hi = np.maximum(i - 1, 0), np.minimum(i + 1, self.n_frames - 1)
            q0, q1 = self.qpos[lo], self.qpos[hi]
            rot = quat_to_rotvec(quat_mul(quat_conj(q0[:, 3:7]), q1[:, 3:7]))
            diff = np.concatenate([q1[:, :3] - q0[:, :3], rot, q1[:, 7:] - q0[:, 7:]], axis=1)
            self._frame_qvel = diff * (self.fps / (hi - lo))[:, None]
        return self._frame_qvel

    def states(self, times: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Returns qpos (n, nq) and qvel (n, nq - 1) at `times` (s), for many times at once.

        qpos equals `sample` at each time. qvel interpolates `frame_velocities` linearly,
        which is cheaper than `velocity` but smoother: within a frame interval it blends the
        two frames' central differences instead of taking the interval's own slope.
        """
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
        x = np.clip(times * self.fps, 0.0, self.n_frames - 1)
        i0 = np.floor(x).astype(np.int64)
        i1 = np.minimum(i0 + 1, self.n_frames - 1)
        s = (x - i0)[:, None]
        q0, q1 = self.qpos[i0], self.qpos[i1]
        qpos = (1.0 - s) * q0 + s * q1
        for j in range(len(times)):  # the same slerp as `sample`, so the values match it
            qpos[j, 3:7] = quat_slerp(q0[j, 3:7], q1[j, 3:7], float(s[j, 0]))
        v = self.frame_velocities()
        return qpos, (1.0 - s) * v[i0] + s * v[i1]

    def save(self, path: str) -> None:
        """Writes the clip atomically as .npz (see the module docstring for the layout)."""
        arrays = {
            'qpos': self.qpos, 'fps': np.float64(self.fps),
            'joint_names': np.array(self.joint_names, dtype=str),
            'body_scale': np.float64(self.body_scale),
            'meta_json': np.array(json.dumps(self.meta, sort_keys=True)),
        }
        if self.keypoints is not None:
            arrays['keypoints'] = np.asarray(self.keypoints, dtype=np.float64)
            arrays['keypoint_names'] = np.array(self.keypoint_names, dtype=str)

        def write(tmp):
            with open(tmp, 'wb') as f:
                np.savez_compressed(f, **arrays)
        atomic_write(path, write)

    @classmethod
    def load(cls, path: str) -> 'Clip':
        """Reads a clip written by `save`.

        Raises:
            ClipError: the file is missing, not an .npz clip, or its arrays are inconsistent.
        """
        if os.path.isdir(path):
            raise ClipError(f"clip path '{path}' is a folder, not a clip file (.npz)")
        if not os.path.isfile(path):
            raise ClipError(f"clip file '{path}' does not exist")
        if not zipfile.is_zipfile(path):
            raise ClipError(f"'{path}' is not a vrat clip: not an .npz archive")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in _REQUIRED if k not in z.files]
                if missing:
                    raise ClipError(f"'{path}' is not a vrat clip: missing arrays {missing}")
                data = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise ClipError(f"'{path}' is not a readable vrat clip (.npz): {exc}") from exc
        try:
            meta = json.loads(str(data['meta_json']))
        except json.JSONDecodeError as exc:
            raise ClipError(f"'{path}': meta_json is not valid JSON: {exc}") from exc
        return cls(
            qpos=data['qpos'], fps=check_fps(data['fps'], f"'{path}': the stored fps"),
            joint_names=[str(n) for n in data['joint_names']],
            body_scale=float(data['body_scale']), meta=meta,
            keypoints=data.get('keypoints'),
            keypoint_names=(None if 'keypoint_names' not in data
                            else [str(n) for n in data['keypoint_names']]))

    def reorder_to(self, hinge_names: list[str]) -> 'Clip':
        """Returns a copy whose hinge columns follow `hinge_names` (matched by name).

        Raises:
            ClipError: a hinge of the body is missing from the clip.
        """
        index = {n: i for i, n in enumerate(self.joint_names)}
        missing = [n for n in hinge_names if n not in index]
        if missing:
            raise ClipError(
                f'clip lacks {len(missing)} joints of the body, e.g. {missing[:5]}')
        cols = [0, 1, 2, 3, 4, 5, 6] + [7 + index[n] for n in hinge_names]
        return dataclasses.replace(self, qpos=self.qpos[:, cols], joint_names=list(hinge_names))


def clip_from_arrays(qpos: npt.ArrayLike, fps: float, joint_names: list[str],
                     body_scale: float, meta: dict) -> Clip:
    """Convenience constructor used by importers and tests."""
    return Clip(qpos=np.asarray(qpos), fps=fps, joint_names=joint_names,
                body_scale=body_scale, meta=meta)
