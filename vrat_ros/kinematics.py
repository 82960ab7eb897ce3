"""Quaternion and free-joint helpers in plain NumPy (no MuJoCo, no ROS).

NOTE: MuJoCo orders quaternions (w, x, y, z); ROS messages order them (x, y, z, w).
Every function here takes and returns MuJoCo order unless its name says `ros`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def wxyz_to_xyzw(q: npt.ArrayLike) -> np.ndarray:
    """MuJoCo (w, x, y, z) to ROS (x, y, z, w)."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([q[..., 1:4], q[..., :1]], axis=-1)


def xyzw_to_wxyz(q: npt.ArrayLike) -> np.ndarray:
    """ROS (x, y, z, w) to MuJoCo (w, x, y, z)."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([q[..., 3:4], q[..., :3]], axis=-1)


def quat_conj(q: npt.ArrayLike) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_mul(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """Hamilton product a * b of (w, x, y, z) quaternions (broadcasts over leading axes)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quat_to_mat(q: npt.ArrayLike) -> np.ndarray:
    """(…, 4) unit quaternions (w, x, y, z) to (…, 3, 3) rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], axis=-2)


def quat_to_rotvec(q: npt.ArrayLike) -> np.ndarray:
    """(…, 4) unit quaternions to (…, 3) rotation vectors (axis * angle, angle in [0, pi])."""
    q = np.asarray(q, dtype=np.float64)
    q = np.where(q[..., :1] < 0, -q, q)
    vec = q[..., 1:]
    sin_half = np.linalg.norm(vec, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., :1])
    scale = np.where(sin_half > 1e-12, angle / np.maximum(sin_half, 1e-12), 2.0)
    return vec * scale


def rotvec_to_quat(v: npt.ArrayLike) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = 0.5 * angle
    k = np.where(angle > 1e-12, np.sin(half) / np.maximum(angle, 1e-12), 0.5)
    return np.concatenate([np.cos(half), v * k], axis=-1)


def qpos_difference(qpos0: npt.ArrayLike, qpos1: npt.ArrayLike) -> np.ndarray:
    """Returns the free-joint-aware difference qpos1 - qpos0 as an (nq - 1,) velocity-space vector.

    Root translation is in the world frame; root rotation is the rotation vector of
    q0^-1 * q1, i.e. in the root body's frame, as MuJoCo's free-joint qvel[3:6].
    """
    qpos0 = np.asarray(qpos0, dtype=np.float64)
    qpos1 = np.asarray(qpos1, dtype=np.float64)
    dq = quat_mul(quat_conj(qpos0[3:7]), qpos1[3:7])
    return np.concatenate([qpos1[:3] - qpos0[:3], quat_to_rotvec(dq), qpos1[7:] - qpos0[7:]])
