"""The policy's observation: proprioception plus a window of future reference frames.

Everything is expressed in the root body's own frame, so the network sees the same numbers
wherever the rat stands and whichever way it faces. No MuJoCo and no ROS in here: the policy
node, the inline runner and the trainer all build observations with `build_observation`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vrat_ros.kinematics import quat_conj
from vrat_ros.kinematics import quat_mul
from vrat_ros.kinematics import quat_to_mat


def observation_layout(n_joints: int, n_frames: int) -> list[dict]:
    """Returns the ordered segments of the observation vector: [{'name', 'size'}, ...]."""
    layout = [
        {'name': 'root_height_m', 'size': 1},
        {'name': 'gravity_in_root', 'size': 3},
        {'name': 'joint_pos_rad', 'size': n_joints},
        {'name': 'joint_vel_rad_s', 'size': n_joints},
        {'name': 'root_linvel_in_root_m_s', 'size': 3},
        {'name': 'root_angvel_in_root_rad_s', 'size': 3},
    ]
    for k in range(1, n_frames + 1):
        layout += [
            {'name': f'ref{k}_root_pos_err_in_root_m', 'size': 3},
            {'name': f'ref{k}_root_rot_rel_wxyz', 'size': 4},
            {'name': f'ref{k}_joint_pos_err_rad', 'size': n_joints},
        ]
    return layout


def observation_size(n_joints: int, n_frames: int) -> int:
    return sum(s['size'] for s in observation_layout(n_joints, n_frames))


def build_observation(
    joint_pos: npt.ArrayLike,
    joint_vel: npt.ArrayLike,
    root_pos: npt.ArrayLike,
    root_quat: npt.ArrayLike,
    root_linvel_body: npt.ArrayLike,
    root_angvel_body: npt.ArrayLike,
    ref_root_pos: npt.ArrayLike,
    ref_root_quat: npt.ArrayLike,
    ref_joint_pos: npt.ArrayLike,
) -> np.ndarray:
    """Builds one observation vector (float32) in `observation_layout` order.

    Args:
        joint_pos: (J,) joint angles (rad), in the contract's joint order.
        joint_vel: (J,) joint velocities (rad/s).
        root_pos: (3,) root position in the world (m).
        root_quat: (4,) root orientation (w, x, y, z), world from root.
        root_linvel_body: (3,) root linear velocity in the root frame (m/s).
        root_angvel_body: (3,) root angular velocity in the root frame (rad/s).
        ref_root_pos: (K, 3) reference root positions of the next K frames (m, world).
        ref_root_quat: (K, 4) reference root orientations (w, x, y, z).
        ref_joint_pos: (K, J) reference joint angles (rad).

    Returns:
        (observation_size(J, K),) float32 vector.
    """
    root_quat = np.asarray(root_quat, dtype=np.float64)
    rot = quat_to_mat(root_quat)  # world from root
    ref_root_pos = np.atleast_2d(np.asarray(ref_root_pos, dtype=np.float64))
    ref_root_quat = np.atleast_2d(np.asarray(ref_root_quat, dtype=np.float64))
    ref_joint_pos = np.atleast_2d(np.asarray(ref_joint_pos, dtype=np.float64))
    joint_pos = np.asarray(joint_pos, dtype=np.float64)

    pos_err = (ref_root_pos - np.asarray(root_pos, dtype=np.float64)) @ rot  # = R^T (p_ref - p)
    rel_rot = quat_mul(quat_conj(root_quat)[None, :], ref_root_quat)
    rel_rot = np.where(rel_rot[:, :1] < 0, -rel_rot, rel_rot)  # one sign for q and -q
    joint_err = ref_joint_pos - joint_pos[None, :]
    per_frame = np.concatenate([pos_err, rel_rot, joint_err], axis=1).reshape(-1)

    return np.concatenate([
        [float(np.asarray(root_pos)[2])],
        rot.T @ np.array([0.0, 0.0, -1.0]),
        joint_pos,
        np.asarray(joint_vel, dtype=np.float64),
        np.asarray(root_linvel_body, dtype=np.float64),
        np.asarray(root_angvel_body, dtype=np.float64),
        per_frame,
    ]).astype(np.float32)
