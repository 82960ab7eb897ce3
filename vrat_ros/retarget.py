"""Retargeting rat motion onto a legged robot: limb-end and trunk paths, scaled, solved by IK.

The source is a keypoint recording of a real rat (e.g. the 20-marker Rat7M file
demo_indices.mat, read with vrat_ros.importers). A robot file's `retarget` section (see
vrat_ros.robots) names the trunk keypoints and, per limb, a base keypoint (hip or shoulder), an
end keypoint (the most distal marker) and the robot foot it drives. Per source frame:
  trunk   root position = the midpoint of the trunk keypoints, horizontal motion scaled by
          `scale`; height = the robot's standing height plus the scaled rise and fall of the
          rat's trunk (limited); heading from back to front keypoint; pitch = the spine's pitch
          about its median (limited); no roll.
  feet    the end keypoint in the trunk's heading frame, about its mean over the clip, scaled,
          added to the robot foot's standing position; height = the foot radius plus the scaled
          lift of the end keypoint above its stance level (a running low percentile), so feet
          never go below the floor and rest on it in stance.
  scale   robot limb length / rat limb length, both measured as hip (shoulder) height above the
          floor while standing: the rat's from its base keypoints, the robot's from its hip
          bodies in the standing pose. (Rat7M has no paw markers, so hip-to-paw distances
          cannot be measured directly.)
  time    dynamic similarity by default (equal Froude number): robot time = rat time x
          sqrt(scale), so a bigger body steps more slowly.
Gaps in a keypoint are filled by linear interpolation over time (limb ends in the trunk frame);
the fraction filled and the longest gap are written into the clip's metadata.
Then a damped least-squares IK (MuJoCo site/body Jacobians) places the feet with the root held
on its target, keeps the model's equality constraints (e.g. the quadruped's ankle coupling),
stays near the standing pose, and clamps every joint to its range.

The result is a vrat Clip (`vrat_ros.clip`) for the robot, with the foot targets stored as its
keypoints. `track_clip` runs a clip on the robot with PD or zero commands (plain MuJoCo) to
check that it is physically plausible.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import os

import mujoco
import numpy as np
import scipy.ndimage

from vrat_ros import __version__
from vrat_ros.clip import Clip
from vrat_ros.clip import file_sha256
from vrat_ros.errors import ClipError
from vrat_ros.robots import Robot

# demo_indices.mat (Rat7M, 20 markers): windows kept out of every training clip, and the
# training windows around the other walking bouts (frames 265-999 lack most markers).
HELD_OUT_WINDOWS = ((2010, 2310), (2460, 2600))
TRAINING_WINDOWS = ((0, 250), (1180, 1480), (1640, 1740), (2601, 2810))
EVAL_WINDOW = (2010, 2310)
RAT7M_SOURCE = {
    'repository': 'spoonsso/dannce',
    'path': 'demo/markerless_rat/data/demo_indices.mat',
    'commit': 'ba95087c735e439efd7302cfb8b9ef09a4002f04',
    'licence': 'MIT, Copyright (c) 2020 Timothy Dunn; cite Dunn et al., Nature Methods 2021',
}


@dataclasses.dataclass
class RetargetOptions:
    """Settings of `retarget_keypoints`.

    Attributes:
        scale: robot size / rat size; None measures it (`scale_from`).
        scale_from: 'step' (`step_scale`: the robot's foot reach over the rat's foot
            excursion) or 'hip_height' (`limb_scale`).
        time_scale: robot seconds per rat second: 'froude' (sqrt(scale)) or a number.
        out_fps: frame rate of the robot clip.
        source_fps: frame rate of the recording; None takes the file's, else 30 Hz (Rat7M).
        smooth_sigma_frames: Gaussian smoothing of the keypoint paths (source frames).
        yaw_sigma_s: extra Gaussian smoothing of the trunk heading (rat seconds): the rat's
            spine markers swing from side to side with every step, which a rigid trunk cannot.
        max_pitch_rad: limit of the trunk pitch about its median.
        trunk_height_limits: limits of the trunk's rise and fall, as fractions of the robot's
            standing height (below, above).
        stance_window_s: window (rat seconds) of the running stance level of a limb end.
        stance_percentile: the percentile of the limb end's height taken as stance level.
        max_lift_fraction: the highest foot lift, as a fraction of the robot's standing
            height (a rat lifts its forepaws far higher when it rears than a quadruped can).
        plant_feet: hold every robot foot still on the floor while the rat's limb is in stance
            and move it only in swings (`_plan_feet`); False (the default, used for the shipped
            clips) lets the feet follow the scaled marker paths (they slide, and PD on such a
            clip loses the root within seconds).
            NOTE: planting is experimental and not yet better: with it the IK error falls
            (mean 6-9 mm at scale 3.8), but in MuJoCo the swing foot of the quadruped does not
            leave the floor (the body sags 4-8 cm under PD and tips onto the lifted foot), so
            PD still tracks only 7-52 % of a clip.
        swing_speed: a limb end is in swing while its horizontal speed exceeds
            swing_speed[0] + swing_speed[1] x the trunk's speed (rat m/s); slower is stance.
        swing_s: shortest and longest swing of the robot (robot seconds).
        foot_inset_m: the robot's home foothold: its standing foot position moved this far
            towards the hip (the standing pose has the legs near full reach).
        reach_m: a planted foot farther than this from its home (in the trunk frame) steps
            again (a re-step), whatever the rat does; footholds are chosen within it.
        max_swing_feet: re-steps wait while this many feet are already in the air.
        clearance_m: the least foot lift at mid-swing (robot metres).
        sway_m, sway_lead_s: the trunk moves this far away from a foot in the air, starting
            this long before it lifts (`_sway`); the footholds are planned on the unswayed path.
        ik_iterations: Gauss-Newton iterations per frame (warm-started from the last frame).
        posture_weight: pull towards the standing pose (m of foot error per rad).
        equality_weight: weight of the model's equality constraints in the IK.
    """

    scale: float | None = None
    scale_from: str = 'hip_height'
    time_scale: str | float = 'froude'
    out_fps: float = 50.0
    source_fps: float | None = None
    smooth_sigma_frames: float = 1.0
    yaw_sigma_s: float = 0.0
    max_pitch_rad: float = 0.3
    trunk_height_limits: tuple[float, float] = (0.2, 0.1)
    stance_window_s: float = 1.0
    stance_percentile: float = 10.0
    max_lift_fraction: float = 0.25
    plant_feet: bool = False
    swing_speed: tuple[float, float] = (0.08, 0.6)
    swing_s: tuple[float, float] = (0.25, 0.6)
    foot_inset_m: float = 0.0
    reach_m: float = 0.15
    max_swing_feet: int = 1
    clearance_m: float = 0.06
    sway_m: float = 0.1
    sway_lead_s: float = 0.3
    ik_iterations: int = 25
    posture_weight: float = 0.03
    equality_weight: float = 3.0


# ---------------------------------------------------------------------------------------------
# Source keypoints


@dataclasses.dataclass
class Source:
    """A keypoint recording in metres: xyz (T, K, 3), NaN = missing."""

    xyz: np.ndarray
    names: list[str]
    fps: float
    path: str
    fmt: str
    fps_note: str = ''


def read_source(path: str, units: str = 'auto', fps: float | None = None) -> Source:
    """Reads a keypoint recording with vrat_ros's importers (Rat7M, DANNCE, NWB, npz).

    Raises:
        ClipError: the file is missing or not a keypoint recording.
    """
    from vrat_ros import importers
    from vrat_ros import keypoint_fit as kf
    if not os.path.isfile(path):
        raise ClipError(f"source file '{path}' does not exist")
    fmt, what = importers.sniff_format(path)
    if fmt not in importers.KEYPOINT_FORMATS:
        raise ClipError(f"'{path}' is not a keypoint recording: it is {what}")
    src = importers.read_keypoint_source(path, fmt)
    used, _ = importers.check_units(src.xyz, units, path)
    note = ''
    if fps is None:
        if src.fps:
            fps, note = float(src.fps), 'stored in the file'
        else:
            fps, note = 30.0, ('the file stores no frame rate; 30 Hz is inferred for Rat7M '
                               '(sample ids step by 10 on its 300 Hz capture clock)')
    return Source(xyz=np.asarray(src.xyz, dtype=np.float64) * kf.UNITS_TO_M[used],
                  names=list(src.names), fps=float(fps), path=path, fmt=fmt, fps_note=note)


def parse_frames(text: str, n_frames: int) -> tuple[int, int]:
    """Parses 'A:B' (B exclusive; either may be empty) into a checked frame range."""
    parts = str(text).split(':')
    try:
        if len(parts) != 2:
            raise ValueError
        a = int(parts[0]) if parts[0] else 0
        b = int(parts[1]) if parts[1] else n_frames
    except ValueError:
        raise ClipError(f"frames should be 'A:B' (B exclusive), got {text!r}") from None
    if not 0 <= a < b <= n_frames or b - a < 2:
        raise ClipError(f'frames {a}:{b} do not fit a recording of {n_frames} frames')
    return a, b


def _fill_gaps(values: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Linearly interpolates NaN frames of (T, D); returns filled, fraction filled, longest gap.

    Raises:
        ValueError: every frame is missing.
    """
    missing = ~np.all(np.isfinite(values), axis=1)
    if missing.all():
        raise ValueError('missing in every frame')
    t = np.arange(len(values))
    out = values.copy()
    for d in range(values.shape[1]):
        out[missing, d] = np.interp(t[missing], t[~missing], values[~missing, d])
    longest, run = 0, 0
    for m in missing:
        run = run + 1 if m else 0
        longest = max(longest, run)
    return out, float(missing.mean()), int(longest)


def _rot_z(yaw: np.ndarray) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (..., 2, 2)


def limb_scale(robot: Robot, source: Source, frames: tuple[int, int]) -> dict:
    """Returns robot/rat limb-length ratio, with the lengths it came from.

    Both lengths are hip (shoulder) heights above the floor while standing: the rat's is the
    median height of each limb's base keypoint over `frames`, the robot's the height of the
    limb's hip body in its standing pose (`stand`, not `retarget.stand`: the quadruped's
    retarget stance stands 0.31 m taller, and a scale of 13 instead of 8 made rat steps overrun
    its legs, IK foot error 38 mm mean instead of 13 mm on frames 1640-1740).
    """
    a, b = frames
    index = _keypoint_index(robot, source)
    stand = robot.stand_qpos()
    data = mujoco.MjData(robot.model)
    data.qpos[:] = stand
    mujoco.mj_kinematics(robot.model, data)
    rat, bot = {}, {}
    for limb in robot.spec.limbs:
        z = source.xyz[a:b, index[limb.base], 2]
        if not np.any(np.isfinite(z)):
            raise ClipError(f"keypoint '{limb.base}' is missing in every frame {a}:{b}")
        rat[limb.name] = float(np.nanmedian(z))
        bot[limb.name] = float(data.xpos[_hip_body(robot, limb), 2])
    ratio = float(np.mean(list(bot.values())) / np.mean(list(rat.values())))
    return {'scale': ratio, 'rat_limb_m': rat, 'robot_limb_m': bot}


def _hip_body(robot: Robot, limb) -> int:
    m = robot.model
    if limb.hip_body is not None:
        return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, limb.hip_body)
    foot = robot.spec.foot(limb.foot)
    body = (m.site_bodyid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, foot.site)]
            if foot.site is not None else mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY,
                                                            foot.body))
    root = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, robot.spec.root_body)
    while m.body_parentid[body] != root and body != 0:
        body = m.body_parentid[body]
    return int(body)


def _keypoint_index(robot: Robot, source: Source) -> dict[str, int]:
    spec = robot.spec
    if not spec.limbs:
        raise ClipError(f"robot '{spec.name}' ({spec.path}) has no retarget section")
    needed = [spec.trunk['front'], spec.trunk['back']]
    for limb in spec.limbs:
        needed += [limb.base, limb.end]
    lacking = [n for n in dict.fromkeys(needed) if n not in source.names]
    if lacking:
        raise ClipError(f"'{source.path}' lacks keypoints {lacking} that robot "
                        f"'{spec.name}' retargets from (it has {source.names})")
    return {n: source.names.index(n) for n in needed}


# ---------------------------------------------------------------------------------------------
# Trunk and foot targets


def _targets(robot: Robot, source: Source, frames: tuple[int, int], scale: float,
             opts: RetargetOptions) -> tuple[dict, dict]:
    """Returns root and foot targets per source frame, and notes on gaps.

    The feet are the unplanted paths ('want': the scaled limb-end offset in the trunk frame
    about the robot's home foothold), their lift, and the rat's stance (1), swing (0) or
    unknown (NaN: the marker is missing) per frame.
    """
    spec, (a, b) = robot.spec, frames
    index = _keypoint_index(robot, source)
    xyz = source.xyz[a:b]
    notes = {}

    def path(name):
        try:
            filled, frac, gap = _fill_gaps(xyz[:, index[name]])
        except ValueError:
            raise ClipError(f"keypoint '{name}' is missing in every frame {a}:{b} of "
                            f"'{source.path}'") from None
        notes[name] = {'filled_fraction': round(frac, 4), 'longest_gap_frames': gap}
        return filled

    sigma = opts.smooth_sigma_frames

    def smooth(x, s=sigma):
        return scipy.ndimage.gaussian_filter1d(x, s, axis=0, mode='nearest') if s else x

    front, back = smooth(path(spec.trunk['front'])), smooth(path(spec.trunk['back']))
    centre = 0.5 * (front + back)
    heading = front - back
    yaw = np.unwrap(np.arctan2(heading[:, 1], heading[:, 0]))
    yaw = smooth(yaw, opts.yaw_sigma_s * source.fps)
    pitch = np.arctan2(heading[:, 2], np.linalg.norm(heading[:, :2], axis=1))
    pitch = np.clip(pitch - np.median(pitch), -opts.max_pitch_rad, opts.max_pitch_rad)
    rot = _rot_z(yaw)
    trunk_speed = np.linalg.norm(np.gradient(centre[:, :2], axis=0), axis=1) * source.fps

    stand = robot.retarget_stand_qpos()
    stand_z = float(stand[2])
    lo, hi = opts.trunk_height_limits
    rise = np.clip(scale * (centre[:, 2] - np.median(centre[:, 2])), -lo * stand_z, hi * stand_z)
    root_xy = scale * centre[:, :2]
    root = np.column_stack([root_xy, stand_z + rise])

    window = max(3, int(round(opts.stance_window_s * source.fps)) | 1)
    home = _home_feet(robot, opts)
    want, lifts, stances = {}, {}, {}
    for limb in spec.limbs:
        end = xyz[:, index[limb.end]]
        seen = np.all(np.isfinite(end), axis=1)
        offset = np.einsum('tji,tj->ti', rot, end[:, :2] - centre[:, :2])  # R^T (end - c)
        offset = np.where(seen[:, None], offset, np.nan)
        offset, frac, gap = _fill_gaps(np.column_stack([offset, end[:, 2]]))
        notes[limb.end] = {'filled_fraction': round(frac, 4), 'longest_gap_frames': gap}
        offset = smooth(offset)
        stance = scipy.ndimage.percentile_filter(offset[:, 2], opts.stance_percentile,
                                                 size=window, mode='nearest')
        lifts[limb.name] = np.clip(scale * (offset[:, 2] - stance), 0.0,
                                   opts.max_lift_fraction * stand_z)
        rel = home[limb.name] + scale * (offset[:, :2] - offset[:, :2].mean(axis=0))
        want[limb.name] = root_xy + np.einsum('tij,tj->ti', rot, rel)
        stances[limb.name] = _rat_stance(end, seen, trunk_speed, source.fps, opts)
        known = np.isfinite(stances[limb.name])
        notes[limb.end]['rat_stance_fraction'] = round(
            float(np.mean(stances[limb.name][known])) if known.any() else float('nan'), 4)
    return {'root': root, 'yaw': yaw, 'pitch': pitch, 'want': want, 'lift': lifts,
            'stance': stances, 'home': home}, notes


def _home_feet(robot: Robot, opts: RetargetOptions) -> dict[str, np.ndarray]:
    """Each foot's home foothold in the trunk frame (xy): standing, moved in towards its hip."""
    stand = robot.retarget_stand_qpos()
    data = mujoco.MjData(robot.model)
    data.qpos[:] = stand
    mujoco.mj_kinematics(robot.model, data)
    home = {}
    for limb in robot.spec.limbs:
        foot = robot.foot_position(robot.spec.foot(limb.foot), data)[:2] - stand[:2]
        hip = data.xpos[_hip_body(robot, limb), :2] - stand[:2]
        out = foot - hip
        dist = float(np.linalg.norm(out))
        home[limb.name] = foot - (opts.foot_inset_m * out / dist if dist > 1e-9 else 0.0)
    return home


def _rat_stance(end: np.ndarray, seen: np.ndarray, trunk_speed: np.ndarray, fps: float,
                opts: RetargetOptions) -> np.ndarray:
    """Per source frame: 1.0 while the limb end is in stance, 0.0 in swing, NaN if unseen.

    Swing = horizontal speed (central differences of the lightly smoothed marker) above
    swing_speed[0] + swing_speed[1] x the trunk speed. Single-frame swings and single-frame
    stances are removed (marker noise).
    """
    xy = np.where(seen[:, None], end[:, :2], np.nan)
    speed = np.full(len(xy), np.nan)
    if len(xy) >= 3:
        speed[1:-1] = np.linalg.norm(xy[2:] - xy[:-2], axis=1) * fps / 2.0
    limit = opts.swing_speed[0] + opts.swing_speed[1] * trunk_speed
    state = np.where(np.isfinite(speed), (speed <= limit).astype(float), np.nan)
    for value in (0.0, 1.0):  # drop lone frames of either state between the other
        lone = np.flatnonzero(state[1:-1] == value) + 1
        lone = lone[(state[lone - 1] == 1.0 - value) & (state[lone + 1] == 1.0 - value)]
        state[lone] = 1.0 - value
    return state


def step_scale(robot: Robot, source: Source, windows, opts: RetargetOptions | None = None
               ) -> dict:
    """Returns a robot/rat scale from stepping range, with the ranges it came from.

    The rat's: the spread (5th to 95th percentile) of each limb end's fore-aft offset from the
    trunk centre in the trunk's heading frame over `windows` (frames), averaged over the limbs
    (each weighted by its seen frames). The robot's: the diameter 2 x reach_m of the circle in
    which its planted feet stay (`_plan_feet`). So a rat step fills the robot's reach, instead
    of overrunning it as with the hip-height ratio (`limb_scale`).
    """
    opts = opts or RetargetOptions()
    index = _keypoint_index(robot, source)
    spec = robot.spec
    spreads, weights = {}, {}
    for limb in spec.limbs:
        values = []
        for a, b in windows:
            xyz = source.xyz[a:b]
            heading = xyz[:, index[spec.trunk['front']]] - xyz[:, index[spec.trunk['back']]]
            centre = 0.5 * (xyz[:, index[spec.trunk['front']]] + xyz[:, index[spec.trunk['back']]])
            yaw = np.arctan2(heading[:, 1], heading[:, 0])
            rel = xyz[:, index[limb.end], :2] - centre[:, :2]
            values.append(np.cos(yaw) * rel[:, 0] + np.sin(yaw) * rel[:, 1])
        values = np.concatenate(values)
        values = values[np.isfinite(values)]
        if values.size < 10:
            raise ClipError(f"keypoint '{limb.end}' is seen in fewer than 10 frames of {windows}")
        lo, hi = np.percentile(values, [5.0, 95.0])
        spreads[limb.name], weights[limb.name] = float(hi - lo), values.size
    rat = float(np.average(list(spreads.values()), weights=list(weights.values())))
    robot_span = 2.0 * opts.reach_m
    return {'scale': robot_span / rat, 'rat_step_spread_m': {k: round(v, 5)
                                                             for k, v in spreads.items()},
            'rat_step_spread_mean_m': round(rat, 5), 'robot_reach_diameter_m': robot_span}


def _plan_feet(root_xy: np.ndarray, yaw: np.ndarray, want: np.ndarray, lift: np.ndarray,
               stance: np.ndarray, home: np.ndarray, radius: np.ndarray,
               opts: RetargetOptions) -> tuple[np.ndarray, dict]:
    """Plants the feet: footholds held in stance, swings between them (output frames).

    Args:
        root_xy: (T, 2) trunk path; yaw: (T,) heading.
        want: (T, L, 2) unplanted foot paths (scaled rat limb ends about the home footholds).
        lift: (T, L) scaled lift of the rat's limb ends.
        stance: (T, L) the rat's stance (>= 0.5), swing (< 0.5) or unknown (NaN).
        home: (L, 2) home footholds in the trunk frame; radius: (L,) foot radii.
        opts: swing_s, reach_m, max_swing_feet, clearance_m, out_fps.

    A foot lifts when the rat's limb does (stance to swing) and lands when the rat's limb is
    in stance again (the swing held within swing_s). It also lifts, whatever the rat does,
    when its foothold has left the circle reach_m about its home in the trunk frame (a
    re-step: e.g. the trunk turns in place, or the rat's marker is missing), unless
    max_swing_feet feet are already in the air. A new foothold is the unplanted path
    half-way through the coming stance, pulled into the reach circle at touchdown.

    Returns:
        (T, L, 3) foot targets, and counts of rat-timed swings and re-steps per limb.
    """
    n, n_limbs = want.shape[:2]
    fps = opts.out_fps
    min_swing = max(2, int(round(opts.swing_s[0] * fps)))
    max_swing = max(min_swing, int(round(opts.swing_s[1] * fps)))
    hold = want[0].copy()
    swings = [None] * n_limbs  # (start frame, end frame, from xy, to xy)
    counts = {'rat_timed': [0] * n_limbs, 're_step': [0] * n_limbs}
    intervals = []
    feet = np.zeros((n, n_limbs, 3))
    on = stance >= 0.5
    off = stance < 0.5  # NaN is neither

    def local(xy, t):
        c, s = np.cos(yaw[t]), np.sin(yaw[t])
        d = xy - root_xy[t]
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])

    def world(rel, t):
        c, s = np.cos(yaw[t]), np.sin(yaw[t])
        return root_xy[t] + np.array([c * rel[0] - s * rel[1], s * rel[0] + c * rel[1]])

    for t in range(n):
        for j in range(n_limbs):
            if swings[j] is not None and t >= swings[j][1]:
                hold[j] = swings[j][3]
                swings[j] = None
            if swings[j] is not None:
                continue
            rat_lifts = t > 0 and on[t - 1, j] and off[t, j]
            drift = np.linalg.norm(local(hold[j], t) - home[j])
            busy = sum(s is not None for s in swings) >= opts.max_swing_feet
            if not rat_lifts and (drift <= opts.reach_m or busy):
                continue
            if rat_lifts:
                land = t + 1
                while land < n and not on[land, j] and land - t < max_swing:
                    land += 1
                land = min(max(land, t + min_swing), n - 1)
            else:
                land = min(t + min_swing, n - 1)
            if land <= t:
                continue
            counts['rat_timed' if rat_lifts else 're_step'][j] += 1
            intervals.append((j, t, land))
            lifts_again = land + 1
            while lifts_again < n and not (on[lifts_again - 1, j] and off[lifts_again, j]):
                lifts_again += 1
            mid = min(n - 1, (land + lifts_again) // 2, land + max_swing)
            rel = local(want[mid, j], land) - home[j]
            dist = np.linalg.norm(rel)
            if dist > 0.8 * opts.reach_m:
                rel *= 0.8 * opts.reach_m / dist
            swings[j] = (t, land, hold[j].copy(), world(home[j] + rel, land))
        for j in range(n_limbs):
            if swings[j] is None:
                feet[t, j] = [hold[j][0], hold[j][1], radius[j]]
                continue
            t0, t1, start, stop = swings[j]
            s = (t - t0) / (t1 - t0)
            ease = s * s * (3.0 - 2.0 * s)
            up = max(opts.clearance_m * np.sin(np.pi * s), float(lift[t, j]))
            feet[t, j, :2] = start + ease * (stop - start)
            feet[t, j, 2] = radius[j] + up
    return feet, counts, intervals


def _sway(yaw: np.ndarray, intervals, home: np.ndarray, opts: RetargetOptions) -> np.ndarray:
    """(T, 2) world shift of the trunk away from each foot in the air (static balance).

    With four feet at the corners of a rectangle the centre of mass lies on the diagonal
    between the two feet next to a lifted one, so the body tips onto the lifted foot. The trunk
    moves sway_m away from that foot (along its home direction), starting sway_lead_s before
    lift-off and back by sway_lead_s after touchdown; shifts of feet in the air together add,
    then the sum is limited to sway_m and smoothed.
    """
    n = len(yaw)
    shift = np.zeros((n, 2))
    if not opts.sway_m or not intervals:
        return shift
    lead = max(1, int(round(opts.sway_lead_s * opts.out_fps)))
    t = np.arange(n)
    for j, t0, t1 in intervals:
        w = np.clip(np.minimum((t - (t0 - lead)) / lead, ((t1 + lead) - t) / lead), 0.0, 1.0)
        direction = -home[j] / max(float(np.linalg.norm(home[j])), 1e-9)
        shift += w[:, None] * direction
    size = np.linalg.norm(shift, axis=1, keepdims=True)
    shift *= opts.sway_m / np.maximum(size, 1.0)
    shift = scipy.ndimage.gaussian_filter1d(shift, lead / 3.0, axis=0, mode='nearest')
    c, s = np.cos(yaw), np.sin(yaw)
    return np.column_stack([c * shift[:, 0] - s * shift[:, 1], s * shift[:, 0] + c * shift[:, 1]])


def _resample(series: np.ndarray, src_fps: float, time_scale: float, out_fps: float
              ) -> np.ndarray:
    """Linear resampling of (T, ...) from source frames onto the robot's output frames."""
    n = len(series)
    duration = (n - 1) / src_fps * time_scale
    t_out = np.arange(int(np.floor(duration * out_fps + 1e-9)) + 1) / out_fps
    x = t_out / time_scale * src_fps
    flat = series.reshape(n, -1)
    out = np.stack([np.interp(x, np.arange(n), flat[:, d]) for d in range(flat.shape[1])], 1)
    return out.reshape((len(t_out),) + series.shape[1:])


def _root_quat(yaw: float, pitch: float) -> np.ndarray:
    """(w, x, y, z) of a yaw about z, then a nose-up pitch about the new y axis."""
    qz = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
    qy = np.array([np.cos(-pitch / 2), 0.0, np.sin(-pitch / 2), 0.0])
    out = np.empty(4)
    mujoco.mju_mulQuat(out, qz, qy)
    return out


# ---------------------------------------------------------------------------------------------
# Inverse kinematics


class FootIK:
    """Damped least squares for the joints, the root held: feet on targets, within ranges."""

    def __init__(self, robot: Robot, opts: RetargetOptions):
        self.robot, self.opts = robot, opts
        m = self.model = _ik_model(robot.model)
        self.data = mujoco.MjData(m)
        self.dofs = np.arange(6, m.nv)  # the root's 6 dofs come first (checked by robots)
        self.qadr = np.arange(7, m.nq)
        limited = m.jnt_limited[1:].astype(bool)
        self.lo = np.where(limited, m.jnt_range[1:, 0], -np.inf)
        self.hi = np.where(limited, m.jnt_range[1:, 1], np.inf)
        self.stand = robot.retarget_stand_qpos()[7:]
        self.feet = [robot.spec.foot(limb.foot) for limb in robot.spec.limbs]
        self._jac = np.zeros((3, m.nv))

    def _foot_rows(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, d = self.model, self.data
        res, jac = [], []
        for foot, target in zip(self.feet, targets):
            if foot.site is not None:
                sid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, foot.site)
                mujoco.mj_jacSite(m, d, self._jac, None, sid)
                pos = d.site_xpos[sid]
            else:
                bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, foot.body)
                mujoco.mj_jacBody(m, d, self._jac, None, bid)
                pos = d.xpos[bid]
            res.append(pos - target)
            jac.append(self._jac[:, self.dofs].copy())
        return np.concatenate(res), np.concatenate(jac)

    def _equality_rows(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.data
        rows = np.flatnonzero(d.efc_type[:d.nefc] == mujoco.mjtConstraint.mjCNSTR_EQUALITY)
        if rows.size == 0:
            return np.zeros(0), np.zeros((0, len(self.dofs)))
        jac = d.efc_J[:d.nefc * self.model.nv].reshape(d.nefc, self.model.nv)
        return d.efc_pos[rows].copy(), jac[np.ix_(rows, self.dofs)]

    def solve(self, root_qpos: np.ndarray, targets: np.ndarray, q_init: np.ndarray
              ) -> tuple[np.ndarray, float]:
        """Returns joint values and the mean foot error (m) for one frame."""
        m, d, o = self.model, self.data, self.opts
        q = np.clip(q_init.copy(), self.lo, self.hi)
        d.qpos[:7] = root_qpos
        n = len(q)
        for _ in range(o.ik_iterations):
            d.qpos[7:] = q
            mujoco.mj_fwdPosition(m, d)
            r_f, j_f = self._foot_rows(targets)
            r_e, j_e = self._equality_rows()
            r = np.concatenate([r_f, o.equality_weight * r_e, o.posture_weight * (q - self.stand)])
            jac = np.concatenate([j_f, o.equality_weight * j_e, o.posture_weight * np.eye(n)])
            hess = jac.T @ jac + 1e-6 * np.eye(n)
            step = -np.linalg.solve(hess, jac.T @ r)
            step = np.clip(step, -0.3, 0.3)
            q_new = np.clip(q + step, self.lo, self.hi)
            if np.max(np.abs(q_new - q)) < 1e-7:
                q = q_new
                break
            q = q_new
        d.qpos[7:] = q
        mujoco.mj_fwdPosition(m, d)
        r_f, _ = self._foot_rows(targets)
        return q, float(np.mean(np.linalg.norm(r_f.reshape(-1, 3), axis=1)))


def _ik_model(model: mujoco.MjModel) -> mujoco.MjModel:
    """A copy of the model for IK: contacts off, dense constraint Jacobian."""
    out = copy.deepcopy(model)
    out.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONTACT)
    out.opt.jacobian = int(mujoco.mjtJacobian.mjJAC_DENSE)
    return out


# ---------------------------------------------------------------------------------------------
# The whole retarget


def retarget_keypoints(robot: Robot, source: Source, frames: tuple[int, int],
                       opts: RetargetOptions | None = None, scale_info: dict | None = None,
                       progress: bool = False) -> tuple[Clip, dict]:
    """Retargets frames [A, B) of a rat recording onto the robot.

    Args:
        robot: the robot (its file needs a `retarget` section).
        source: the recording (`read_source`).
        frames: (A, B), B exclusive, source frame indices.
        opts: settings; defaults if None.
        scale_info: a `limb_scale` result to use (e.g. measured on training frames only);
            None measures it on `frames` unless `opts.scale` is given.
        progress: show a progress bar.

    Returns:
        The robot clip and a report (scale, timing, gaps, IK errors, joints at limits).
    """
    opts = opts or RetargetOptions()
    if scale_info is None:
        scale_info = _measure_scale(robot, source, [frames], opts)
    scale = float(scale_info['scale'])
    if not np.isfinite(scale) or scale <= 0:
        raise ClipError(f'retarget scale should be a positive number, got {scale}')
    time_scale = np.sqrt(scale) if opts.time_scale == 'froude' else float(opts.time_scale)
    src_fps = float(opts.source_fps or source.fps)

    targets, notes = _targets(robot, source, frames, scale, opts)

    def resample(x):
        return _resample(x, src_fps, time_scale, opts.out_fps)

    root, yaw, pitch = (resample(targets[k]) for k in ('root', 'yaw', 'pitch'))
    limbs = robot.spec.limbs
    want = np.stack([resample(targets['want'][limb.name]) for limb in limbs], axis=1)
    lift = np.stack([resample(targets['lift'][limb.name]) for limb in limbs], axis=1)
    radius = np.array([robot.foot_radius(robot.spec.foot(limb.foot)) for limb in limbs])
    # Start at the origin, facing +x: the clip's own frame, wherever the rat was.
    origin, yaw0 = root[0, :2].copy(), float(yaw[0])
    rot0 = _rot_z(np.array(-yaw0))
    root[:, :2] = (root[:, :2] - origin) @ rot0.T
    want = (want - origin) @ rot0.T
    yaw = yaw - yaw0
    if opts.plant_feet:
        stance = np.stack([resample(targets['stance'][limb.name]) for limb in limbs], axis=1)
        home = np.stack([targets['home'][limb.name] for limb in limbs])
        feet, counts, intervals = _plan_feet(root[:, :2], yaw, want, lift, stance, home,
                                             radius, opts)
        for j, limb in enumerate(limbs):
            notes[limb.end].update({k: int(v[j]) for k, v in counts.items()})
        root[:, :2] += _sway(yaw, intervals, home, opts)
    else:
        feet = np.concatenate([want, (radius + lift)[..., None]], axis=-1)

    ik = FootIK(robot, opts)
    n = len(root)
    qpos = np.zeros((n, robot.nq))
    errors = np.zeros(n)
    q = ik.stand.copy()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, desc=f'retarget {robot.spec.name}', unit='frame')
    for k in range(n):
        qpos[k, :3] = root[k]
        qpos[k, 3:7] = _root_quat(float(yaw[k]), float(pitch[k]))
        q, errors[k] = ik.solve(qpos[k, :7], feet[k], q)
        qpos[k, 7:] = q
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    at_limit = np.sum(np.isclose(qpos[:, 7:], ik.lo, atol=1e-6)
                      | np.isclose(qpos[:, 7:], ik.hi, atol=1e-6), axis=0)
    report = {
        'robot': robot.spec.name,
        'source_frames': [int(frames[0]), int(frames[1])],
        'source_fps': src_fps,
        'scale': round(scale, 6),
        'scale_from': {k: v for k, v in scale_info.items() if k != 'scale'},
        'feet_planted': bool(opts.plant_feet),
        'time_scale': round(float(time_scale), 6),
        'out_fps': opts.out_fps,
        'n_frames': n,
        'duration_s': round((n - 1) / opts.out_fps, 4),
        'root_path_m': round(float(np.sum(np.linalg.norm(np.diff(root[:, :2], axis=0),
                                                         axis=1))), 4),
        'ik_foot_error_mm': {'mean': round(1e3 * float(errors.mean()), 3),
                             'p95': round(1e3 * float(np.percentile(errors, 95)), 3),
                             'max': round(1e3 * float(errors.max()), 3)},
        'frames_at_joint_limit': {robot.joint_names[j]: int(c)
                                  for j, c in enumerate(at_limit) if c},
        'keypoint_gaps': notes,
        'options': {k: v for k, v in dataclasses.asdict(opts).items()},
    }
    meta = {
        'format': 'retarget',
        'robot': robot.spec.name,
        'robot_file': os.path.basename(robot.spec.path),
        'source_file': os.path.basename(source.path),
        'source_sha256': file_sha256(source.path),
        'source_format': source.fmt,
        'source_fps_note': source.fps_note,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'vrat_ros_version': __version__,
        'retarget': report,
    }
    clip = Clip(qpos=qpos, fps=opts.out_fps, joint_names=list(robot.joint_names),
                body_scale=1.0, meta=meta, keypoints=feet,
                keypoint_names=[robot.spec.foot(limb.foot).target
                                for limb in robot.spec.limbs])
    return clip, report


# ---------------------------------------------------------------------------------------------
# Physical check: PD and zero commands on a clip


def track_clip(robot: Robot, clip: Clip, controller: str = 'pd',
               seconds: float | None = None) -> dict:
    """Runs a robot clip in MuJoCo and reports how long and how closely it is tracked.

    Args:
        robot: the robot.
        clip: a clip for it (matched by joint name).
        controller: 'pd' (the reference joint angles as commands: position targets for a
            'position' robot, or torques kp (q_ref - q) - kd dq for an 'effort' robot with pd
            gains) or 'zero' (no torque).
        seconds: how much of the clip to run (default: all).

    Returns:
        tracked_fraction (frames before the first untracked one / all frames), the failure
        reason, mean root error (m) and joint RMSE (rad) over the frames run.
    """
    from vrat_ros.tracking import tracking_failure
    if controller not in ('pd', 'zero'):
        raise ValueError(f"controller should be 'pd' or 'zero', got {controller!r}")
    clip = clip.reorder_to(robot.joint_names)
    spec, m = robot.spec, robot.model
    dt = spec.control_dt
    duration = clip.duration_s if seconds is None else min(seconds, clip.duration_s)
    n = int(np.floor(duration / dt + 1e-9))
    robot.reset(clip.sample(0.0), clip.velocity(0.0))
    act_q = m.jnt_qposadr[m.actuator_trnid[:, 0]] if robot.nu else np.zeros(0, int)
    if controller == 'pd' and spec.command_interface == 'effort':
        if spec.kp is None:
            raise ValueError(f"robot '{spec.name}' has no pd gains for a PD baseline")
    root_err, joint_sq, failed_at, reason = [], [], None, None
    for k in range(n):
        t = (k + 1) * dt
        ref = clip.sample(t)
        if controller == 'zero':
            robot.step_control(None)
        elif spec.command_interface == 'position':
            robot.step_control(ref[act_q])
        else:
            q = robot.data.qpos[act_q]
            qd = robot.data.qvel[m.jnt_dofadr[m.actuator_trnid[:, 0]]]
            robot.step_control(robot.kp * (ref[act_q] - q) - robot.kd * qd)
        if not np.all(np.isfinite(robot.data.qpos)):
            failed_at, reason = k, 'non_finite'
            break
        dist = float(np.linalg.norm(robot.data.qpos[:3] - ref[:3]))
        sq = float(np.sum((robot.data.qpos[7:] - ref[7:]) ** 2))
        root_err.append(dist)
        joint_sq.append(sq)
        why = tracking_failure(dist, sq, float(robot.data.xpos[robot.torso_id, 2]),
                               spec.track_root_dist_m, spec.track_joint_sq_err_rad2,
                               spec.healthy_z_range)
        if why is not None and failed_at is None:
            failed_at, reason = k, why
    tracked = n if failed_at is None else failed_at
    n_joints = len(robot.joint_names)
    return {
        'controller': controller, 'frames': n, 'seconds': round(n * dt, 4),
        'tracked_fraction': round(tracked / max(n, 1), 4),
        'failure': reason,
        'root_error_m': round(float(np.mean(root_err)) if root_err else float('nan'), 4),
        'joint_rmse_rad': round(float(np.sqrt(np.mean(joint_sq) / n_joints))
                                if joint_sq else float('nan'), 4),
    }


# ---------------------------------------------------------------------------------------------
# The shipped set and the command line


def write_split(robot_name: str, source_path: str, out_dir: str,
                training_windows=TRAINING_WINDOWS, eval_window=EVAL_WINDOW,
                held_out=HELD_OUT_WINDOWS, opts: RetargetOptions | None = None,
                progress: bool = False) -> dict:
    """Writes training clips (outside the held-out windows) and one evaluation clip.

    The scale is measured on the training windows only and reused for the evaluation clip.

    Raises:
        ClipError: a training window overlaps a held-out window.
    """
    for a, b in training_windows:
        for ha, hb in held_out:
            if a < hb and ha < b:
                raise ClipError(f'training window {a}:{b} overlaps held-out window {ha}:{hb}')
    robot = Robot(robot_name)
    source = read_source(source_path)
    opts = opts or RetargetOptions()
    scale_info = _measure_scale(robot, source, training_windows, opts)
    scale_info['measured_on_frames'] = [list(w) for w in training_windows]
    written = {}
    jobs = [(f'{robot.spec.name}_train_{a}_{b}.npz', (a, b), 'train')
            for a, b in training_windows]
    jobs.append((f'{robot.spec.name}_eval_{eval_window[0]}_{eval_window[1]}.npz',
                 tuple(eval_window), 'eval'))
    for name, window, role in jobs:
        clip, report = retarget_keypoints(robot, source, window, opts, scale_info, progress)
        clip.meta['role'] = role
        clip.meta['held_out_windows'] = [list(w) for w in held_out]
        clip.meta['source'] = RAT7M_SOURCE if 'demo_indices' in source_path else {}
        path = os.path.join(out_dir, name)
        clip.save(path)
        written[name] = report
    return written


def _measure_scale(robot: Robot, source: Source, windows, opts: RetargetOptions) -> dict:
    """The scale to use: opts.scale if given, else measured over `windows` (frame ranges)."""
    if opts.scale is not None:
        return {'scale': float(opts.scale), 'method': 'given'}
    if opts.scale_from == 'step':
        return {**step_scale(robot, source, windows, opts), 'method': 'step'}
    if opts.scale_from == 'hip_height':
        infos = [limb_scale(robot, source, w) for w in windows]
        weights = np.array([b - a for a, b in windows], dtype=float)
        out = {'scale': float(np.average([i['scale'] for i in infos], weights=weights)),
               'method': 'hip_height'}
        if len(infos) == 1:
            out.update({k: v for k, v in infos[0].items() if k != 'scale'})
        return out
    raise ClipError(f"scale_from should be 'step' or 'hip_height', got {opts.scale_from!r}")


def _cmd_retarget(args: argparse.Namespace) -> int:
    opts = RetargetOptions(out_fps=args.fps, source_fps=args.source_fps, scale=args.scale)
    if args.split:
        written = write_split(args.robot, args.source, args.split, opts=opts,
                              progress=not args.no_progress)
        print(json.dumps({k: {kk: v[kk] for kk in ('scale', 'n_frames', 'ik_foot_error_mm')}
                          for k, v in written.items()}, indent=2))
        return 0
    if not args.out:
        raise ValueError('give --out FILE.npz (or --split DIR)')
    robot = Robot(args.robot)
    source = read_source(args.source, fps=args.source_fps)
    frames = parse_frames(args.frames, len(source.xyz))
    clip, report = retarget_keypoints(robot, source, frames, opts,
                                      progress=not args.no_progress)
    clip.save(args.out)
    if args.baseline:
        report['baselines'] = {c: track_clip(robot, clip, c) for c in ('zero', 'pd')}
    print(json.dumps(report, indent=2))
    return 0


def add_subcommands(sub) -> None:
    """Adds `vrat retarget` to the CLI's subparsers."""
    p = sub.add_parser('retarget', help='Retarget a rat keypoint recording onto a legged robot '
                                        '(config/robots/NAME.yaml or a robot file) as a clip.')
    p.add_argument('--robot', default='quadruped', help='Robot name or robot YAML file.')
    p.add_argument('--source', required=True,
                   help='Keypoint recording (e.g. Rat7M demo_indices.mat).')
    p.add_argument('--frames', default=':', help="Source frames 'A:B' (B exclusive).")
    p.add_argument('--out', help='Output clip (.npz).')
    p.add_argument('--split', metavar='DIR',
                   help='Write the training clips (outside the held-out windows) and the '
                        'evaluation clip of demo_indices.mat into DIR instead.')
    p.add_argument('--scale', type=float, help='Robot/rat scale (default: from limb lengths).')
    p.add_argument('--fps', type=float, default=50.0, help='Clip frame rate (default 50).')
    p.add_argument('--source-fps', type=float,
                   help='Recording frame rate (default: the file\'s, else 30 Hz).')
    p.add_argument('--baseline', action='store_true',
                   help='Also run the clip with zero and PD commands and report tracking.')
    p.add_argument('--no-progress', action='store_true', help='Hide the progress bar.')
    p.set_defaults(func=_cmd_retarget)
