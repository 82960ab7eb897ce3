"""Left-right mirror images of reference clips: more training motion from the same recordings.

A body that is symmetric about its own x-z plane (the rat: x forward, y to its left, z up)
can perform the mirror image of anything it can perform, and the physics (gravity along z,
a flat floor) is symmetric too. Mirroring a clip therefore gives a new, equally feasible
reference: a rat that turns left becomes one that turns right, a left-paw-first gait a
right-paw-first one.

The mirror is found from the model itself, not from joint names: at the model's reference
pose (qpos0), in the frame of the root body (the free joint's), every hinge must have a mate
whose anchor is its reflection through the x-z plane and whose axis is its reflected axis
up to sign. A hinge on the midline (a spine
bend) is its own mate. Because an axis of rotation reflects as a pseudo-vector (a mirror
turns a rotation about a into one about -M a, M = diag(1, -1, 1)), a mate whose axis equals
-M a takes the same angle and one whose axis equals M a the opposite angle. On the rat the
left and right limbs are built as mirror images (same angle), and the midline bend and twist
joints flip sign, while every extend joint keeps it.

The free root mirrors as position (x, -y, z) and quaternion (w, -x, y, -z).
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from vrat_ros.clip import Clip
from vrat_ros.errors import ClipError

_REFLECT = np.array([1.0, -1.0, 1.0])
# Anchors of mates must agree within this distance (m) and axes within this cosine.
_ANCHOR_TOL_M = 1e-4
_AXIS_COS = 0.9999


@dataclasses.dataclass(frozen=True)
class MirrorMap:
    """How to mirror the hinge angles of a body, in the order of `hinge_names`.

    mirrored[i] = signs[i] * original[mates[i]].
    """

    hinge_names: tuple[str, ...]
    mates: np.ndarray   # (n,) int: index of each hinge's mirror image
    signs: np.ndarray   # (n,) +1.0 or -1.0

    def mirror_qpos(self, qpos: np.ndarray) -> np.ndarray:
        """(..., 7 + n) free-root qpos rows to their mirror images."""
        qpos = np.asarray(qpos, dtype=np.float64)
        out = np.empty_like(qpos)
        out[..., 0:3] = qpos[..., 0:3] * _REFLECT
        out[..., 3:7] = qpos[..., 3:7] * np.array([1.0, -1.0, 1.0, -1.0])
        out[..., 7:] = self.signs * qpos[..., 7:][..., self.mates]
        return out


def mirror_map(model: mujoco.MjModel, hinge_names: list[str]) -> MirrorMap:
    """Finds each hinge's mirror image in `model` (see the module docstring).

    Args:
        model: a model with a free root and hinge joints, symmetric about its root body's
            x-z plane at qpos0.
        hinge_names: the hinges to map, in the order the clips use.

    Raises:
        ClipError: a hinge is missing, has no mirror image (the body is not symmetric),
            or its mirror image is not among `hinge_names`.
    """
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    # Anchors and axes in the root body's frame, so a root placed off the world's x-z plane
    # (or turned) at qpos0 does not matter.
    free = np.flatnonzero(model.jnt_type == mujoco.mjtJoint.mjJNT_FREE)
    root = int(model.jnt_bodyid[free[0]]) if free.size else 0
    rot = data.xmat[root].reshape(3, 3)
    anchors = (data.xanchor - data.xpos[root]) @ rot
    axes = data.xaxis @ rot
    hinge = [j for j in range(model.njnt) if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE]
    ids = {}
    for name in hinge_names:
        j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if j < 0 or model.jnt_type[j] != mujoco.mjtJoint.mjJNT_HINGE:
            raise ClipError(f"cannot mirror: '{name}' is not a hinge joint of the body")
        ids[name] = j
    position = {name: i for i, name in enumerate(hinge_names)}
    mates, signs = [], []
    for name in hinge_names:
        j = ids[name]
        axis = -axes[j] * _REFLECT  # a rotation axis reflects as a pseudo-vector
        cos = axes[hinge] @ axis
        near = np.linalg.norm(anchors[hinge] - anchors[j] * _REFLECT, axis=1) < _ANCHOR_TOL_M
        found = [(k, float(c)) for k, c, ok in zip(hinge, cos, near & (np.abs(cos) > _AXIS_COS))
                 if ok]
        if len(found) != 1:
            what = 'no hinge mirrors' if not found else f'{len(found)} hinges mirror'
            raise ClipError(f"cannot mirror: {what} '{name}' (the body is not symmetric about "
                            'its x-z plane)')
        k, cos = found[0]
        mate = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, k)
        if mate not in position:
            raise ClipError(f"cannot mirror: '{name}' mirrors '{mate}', which the clip lacks")
        mates.append(position[mate])
        signs.append(1.0 if cos > 0 else -1.0)
    mates = np.array(mates, dtype=np.int64)
    if not np.array_equal(mates[mates], np.arange(len(mates))):  # geometry guarantees it
        raise ClipError('cannot mirror: the mirror images of the hinges do not pair up')
    return MirrorMap(tuple(hinge_names), mates, np.array(signs))


def mirror_clip(clip: Clip, model: mujoco.MjModel) -> Clip:
    """The mirror image of `clip` on the body of `model` (same joints, frames and rate).

    Keypoints are left out: which keypoint mirrors which depends on the marker set. The
    meta keeps the source's provenance and says whether the result is mirrored.
    """
    mapping = mirror_map(model, clip.joint_names)
    meta = dict(clip.meta)
    meta['mirrored'] = not meta.get('mirrored', False)  # twice gives the source back
    return Clip(qpos=mapping.mirror_qpos(clip.qpos), fps=clip.fps,
                joint_names=list(clip.joint_names), body_scale=clip.body_scale, meta=meta)
