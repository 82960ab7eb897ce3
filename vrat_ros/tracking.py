"""Tracking metrics: how closely a simulated trajectory follows its reference.

Both trajectories are sampled once per control step. The body (a `RatBody` or a
`vrat_ros.robots.Robot`) says which joints and bodies count (`tracked_hinge_idx`,
`tracked_body_ids`) and, for a robot, its own "tracked" limits (`tracking_limits`). The
rat's tail is left out everywhere: the reference fits keep it straight, so it carries no
information about the animal.
"""

from __future__ import annotations

import mujoco
import numpy as np
import numpy.typing as npt

from vrat_ros import rat_constants as rc
from vrat_ros.rat_model import RatBody

REASON_ROOT = 'root'
REASON_JOINTS = 'joints'
REASON_TORSO_HEIGHT = 'torso_height'
REASON_NON_FINITE = 'non_finite'


def tracking_failure(
    root_dist_m: float,
    joint_sq_err_rad2: float,
    torso_z_m: float,
    root_dist_limit_m: float = rc.TRACK_ROOT_DIST_M,
    joint_sq_err_limit_rad2: float = rc.TRACK_JOINT_SQ_ERR_RAD2,
    torso_z_range_m: tuple[float, float] = rc.TRACK_TORSO_Z_RANGE_M,
) -> str | None:
    """Decides whether one frame is still tracked.

    Args:
        root_dist_m: distance between the simulated and reference root positions (m).
        joint_sq_err_rad2: sum over the non-tail hinges of the squared angle error (rad^2).
        torso_z_m: height of the simulated torso body (m).
        root_dist_limit_m: failure when `root_dist_m` is above this.
        joint_sq_err_limit_rad2: failure when `joint_sq_err_rad2` is above this.
        torso_z_range_m: failure when `torso_z_m` is outside [lo, hi].

    Returns:
        None while tracked; otherwise the reason: 'non_finite', 'root', 'joints' or
        'torso_height' (the first that applies, in this order).
    """
    values = (root_dist_m, joint_sq_err_rad2, torso_z_m)
    if not all(np.isfinite(v) for v in values):
        return REASON_NON_FINITE
    if root_dist_m > root_dist_limit_m:
        return REASON_ROOT
    if joint_sq_err_rad2 > joint_sq_err_limit_rad2:
        return REASON_JOINTS
    if not torso_z_range_m[0] <= torso_z_m <= torso_z_range_m[1]:
        return REASON_TORSO_HEIGHT
    return None


def tracking_limits(body) -> dict:
    """The limits of the "tracked" test for a body, as reports show them.

    A robot (`vrat_ros.robots.Robot`) has its own (`track_*`, from its robot file); a body
    without them (the rat's `RatBody`) gets the rat's constants.

    Returns:
        {'root_dist_m', 'joint_sq_err_rad2', 'torso_z_range_m': [lo, hi]}.
    """
    return {
        'root_dist_m': float(getattr(body, 'track_root_dist_m', rc.TRACK_ROOT_DIST_M)),
        'joint_sq_err_rad2': float(getattr(body, 'track_joint_sq_err_rad2',
                                           rc.TRACK_JOINT_SQ_ERR_RAD2)),
        'torso_z_range_m': [float(v) for v in getattr(body, 'track_torso_z_range_m',
                                                      rc.TRACK_TORSO_Z_RANGE_M)],
    }


def _failure(body, root_dist_m: float, joint_sq_err_rad2: float, torso_z_m: float) -> str | None:
    """`tracking_failure` with the body's own limits (the rat's constants for the rat)."""
    if not hasattr(body, 'track_root_dist_m'):  # the rat: exactly the constants' defaults
        return tracking_failure(root_dist_m, joint_sq_err_rad2, torso_z_m)
    return tracking_failure(root_dist_m, joint_sq_err_rad2, torso_z_m, body.track_root_dist_m,
                            body.track_joint_sq_err_rad2, tuple(body.track_torso_z_range_m))


def directly_actuated_hinges(body: RatBody) -> np.ndarray:
    """Returns indices (into the hinges) of tracked hinges that have a motor of their own.

    On the rat, the other non-tail hinges (spine and neck) move only through fixed tendons
    that share one motor among several joints, so their individual angles are not
    controllable. On a robot they are its passive joints (e.g. the quadruped's ankles).
    """
    model = body.model
    joint_ids = [int(model.actuator_trnid[a, 0]) for a in range(model.nu)
                 if model.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT]
    tracked = set(int(i) for i in body.tracked_hinge_idx)
    return np.array(sorted(j - 1 for j in joint_ids if j - 1 in tracked))


def forward_positions(model: mujoco.MjModel, qpos: npt.ArrayLike,
                      data: mujoco.MjData | None = None) -> np.ndarray:
    """Returns (T, nbody, 3) world body positions (m) for each row of qpos, on scratch data.

    `data`: scratch MjData of `model` to reuse (its qpos is overwritten); None makes one,
    which costs about 1 ms for the rat, more than the kinematics of a few frames.
    """
    qpos = np.asarray(qpos, dtype=np.float64)
    data = mujoco.MjData(model) if data is None else data
    out = np.empty((qpos.shape[0], model.nbody, 3))
    for i, q in enumerate(qpos):
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        out[i] = data.xpos
    return out


def body_distances(model: mujoco.MjModel, sim_qpos: npt.ArrayLike, ref_qpos: npt.ArrayLike,
                   body_ids: npt.ArrayLike) -> np.ndarray:
    """Returns (T, len(body_ids)) distances (m) between simulated and reference body positions."""
    ids = np.asarray(body_ids)
    sim_x = forward_positions(model, sim_qpos)[:, ids]
    return np.linalg.norm(sim_x - forward_positions(model, ref_qpos)[:, ids], axis=-1)


def frame_failure(body: RatBody, sim_qpos: npt.ArrayLike, ref_qpos: npt.ArrayLike,
                  scratch: mujoco.MjData | None = None) -> str | None:
    """Checks one simulated pose against its reference pose.

    Args:
        body: the rat or a robot (its model gives the forward kinematics, its limits the
            test; its state is not touched).
        sim_qpos: (nq,) simulated pose.
        ref_qpos: (nq,) reference pose at the same time.
        scratch: MjData of the body's model to compute the kinematics on, for callers that
            check every control step; None makes one (see `forward_positions`).

    Returns:
        None while tracked, else the reason as in `tracking_failure`.
    """
    sim = np.asarray(sim_qpos, dtype=np.float64).reshape(1, -1)
    ref = np.asarray(ref_qpos, dtype=np.float64).reshape(1, -1)
    if not np.all(np.isfinite(sim)):
        return REASON_NON_FINITE
    joints = 7 + body.tracked_hinge_idx
    torso_z = forward_positions(body.model, sim, scratch)[0, body.torso_id, 2]
    return _failure(
        body, float(np.linalg.norm(sim[0, :3] - ref[0, :3])),
        float(np.sum((sim[0, joints] - ref[0, joints]) ** 2)),
        float(torso_z))


def tracking_metrics(
    body: RatBody,
    sim_qpos: npt.ArrayLike,
    ref_qpos: npt.ArrayLike,
    n_expected: int | None = None,
) -> dict:
    """Compares a simulated trajectory to its reference, frame by frame.

    The error figures average over ALL given frames, including those after the first
    failure; `tracked_fraction` is the share of frames before the first failure.

    Args:
        body: the rat or a robot whose model gives the forward kinematics and whose limits
            decide "tracked" (`tracking_limits`; its state is not touched).
        sim_qpos: (T, nq) simulated poses, one per control step.
        ref_qpos: (T, nq) reference poses at the same times.
        n_expected: frames the run should have had (>= T). A run that stopped early (for
            example because the state became non-finite) fails at frame T with reason
            'non_finite' unless an earlier frame failed.

    Returns:
        A dict with
          joint_rmse_rad: RMS angle error over the tracked hinges (the rat's 43 non-tail
            ones; every joint of a robot) and all frames (rad).
          actuated_joint_rmse_rad: the same over those with a motor of their own (the rat's
            30: spine and neck angles are shared by tendons and cannot all be reached).
          body_pos_error_mm: mean |x_sim - x_ref| over the tracked bodies (the rat's non-tail
            bodies; a robot's torso and feet) and frames (mm).
          root_pos_error_mm: mean root position distance over frames (mm).
          torso_z_mean_m: mean simulated torso height (m).
          tracked_fraction: first failing frame / n_expected (1.0 if none fails).
          first_failure_frame: index of the first failing frame, or None.
          failure_reason: 'root', 'joints', 'torso_height', 'non_finite' or None.
          n_frames: T.

    Raises:
        ValueError: the arrays disagree in shape or do not fit the body.
    """
    sim = np.asarray(sim_qpos, dtype=np.float64)
    ref = np.asarray(ref_qpos, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[1] != body.nq or sim.shape != ref.shape:
        raise ValueError(
            f'sim_qpos and ref_qpos should both be (T, {body.nq}): got {sim.shape} and '
            f'{ref.shape}')
    n_frames = sim.shape[0]
    n_expected = n_frames if n_expected is None else int(n_expected)
    if n_expected < n_frames or n_expected < 1:
        raise ValueError(f'n_expected should be >= T = {n_frames} and >= 1: got {n_expected}')
    if n_frames == 0:
        return {
            'joint_rmse_rad': float('nan'), 'actuated_joint_rmse_rad': float('nan'),
            'body_pos_error_mm': float('nan'),
            'root_pos_error_mm': float('nan'), 'torso_z_mean_m': float('nan'),
            'tracked_fraction': 0.0, 'first_failure_frame': 0,
            'failure_reason': REASON_NON_FINITE, 'n_frames': 0}

    joints = 7 + body.tracked_hinge_idx
    joint_err = sim[:, joints] - ref[:, joints]
    actuated = 7 + directly_actuated_hinges(body)
    sim_x = forward_positions(body.model, sim)
    ref_x = forward_positions(body.model, ref)
    bodies = body.tracked_body_ids
    body_err = np.linalg.norm(sim_x[:, bodies] - ref_x[:, bodies], axis=-1)
    root_dist = np.linalg.norm(sim[:, :3] - ref[:, :3], axis=-1)
    joint_sq = np.sum(joint_err ** 2, axis=1)
    torso_z = sim_x[:, body.torso_id, 2]

    first, reason = None, None
    for i in range(n_frames):
        reason = _failure(body, float(root_dist[i]), float(joint_sq[i]), float(torso_z[i]))
        if reason is not None:
            first = i
            break
    if first is None and n_frames < n_expected:
        first, reason = n_frames, REASON_NON_FINITE

    return {
        'joint_rmse_rad': float(np.sqrt(np.mean(joint_err ** 2))),
        'actuated_joint_rmse_rad': float(np.sqrt(np.mean((sim[:, actuated]
                                                          - ref[:, actuated]) ** 2))),
        'body_pos_error_mm': float(1e3 * np.mean(body_err)),
        'root_pos_error_mm': float(1e3 * np.mean(root_dist)),
        'torso_z_mean_m': float(np.mean(torso_z)),
        'tracked_fraction': 1.0 if first is None else first / n_expected,
        'first_failure_frame': first,
        'failure_reason': reason,
        'n_frames': n_frames,
    }
