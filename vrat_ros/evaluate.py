"""`vrat eval`: how well each controller tracks clips it has never seen, from several starts.

Each controller ('policy', 'pd', 'zero') runs on each clip from N start frames spread evenly
over the clip (frame floor(k (n - 1) / N) for k = 0 .. N - 1). One run is an *episode*: it
starts in the clip's state at its start frame and lasts until the first control step whose
state fails the "tracked" test of `vrat_ros.tracking` (the same test `vrat run` uses) or until
the clip ends. Episodes are independent tasks run with `vrat_ros.workers.map_ordered`, so the
numbers do not depend on the number of workers.

Metrics, per clip (its episodes) and overall (all episodes of all clips), per controller:
  tracked_fraction   mean over episodes of L / A, where A is the number of control-step
                     frames from the start frame to the clip end (the initial state
                     included) and L the number of frames before the first failing frame
                     (L = A when no frame fails).
  joint_rmse_rad     RMS angle error over the 43 non-tail hinges and the tracked frames.
  body_pos_error_mm  mean distance between simulated and reference positions of the hands,
                     feet, skull and torso (EVAL_BODIES), over the tracked frames.
  root_pos_error_mm  mean distance between simulated and reference root positions, over the
                     tracked frames.
  action_change_rms  RMS over actuators and consecutive control steps of the change of the
                     normalised action a = clip(torque / max force, -1, 1), over the actions
                     taken from tracked states (a full-scale sign flip every step gives 2).
The errors pool the tracked frames of all episodes (frame 0, the clip's own state, included),
so a controller that falls early is scored on its few good frames: read them together with
tracked_fraction.

`--robot NAME` evaluates on another body (`vrat_ros.robots.Robot`, from config/robots or a
YAML path) instead of the rat: its default clips are the robot file's held-out clips
(`defaults.eval_clips`), its default policy `defaults.policy`, and the controllers are those
of `vrat_ros.controllers` on a robot ('zero' on a position robot holds the standing pose).
What changes in the metrics: the "tracked" test uses the robot file's limits; joint_rmse_rad
runs over all its joints; body_pos_error_mm over its torso and feet (`Robot.tracked_body_ids`);
and for a position robot action_change_rms is the RMS per-step change of the joint targets in
rad (no force limit to normalise by). The settings of the report say so.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time

import numpy as np

from vrat_ros.errors import VratError

CONTROLLERS = ('policy', 'pd', 'zero', 'mpc')
DEFAULT_CONTROLLERS = ('policy', 'pd', 'zero')  # 'mpc' is slow: asked for by name
DEFAULT_STARTS = 5
EVAL_BODIES = ('torso', 'skull', 'hand_L', 'hand_R', 'foot_L', 'foot_R')
METRICS = ('tracked_fraction', 'joint_rmse_rad', 'body_pos_error_mm', 'root_pos_error_mm',
           'action_change_rms')
_TABLE_HEADER = ('| clip | controller | tracked fraction | joint RMSE (rad) | body error (mm) '
                 '| root error (mm) | action change (RMS) | episodes |')


class EvalError(VratError):
    """The evaluation cannot run as asked (bad clips, starts or settings)."""


def make_controller(name: str, policy=None):
    """Returns a fresh controller by name, as `vrat run` and `vrat eval` build them.

    The controllers work on the rat and on robots (see `vrat_ros.controllers`).

    Args:
        name: 'policy', 'pd' (the rat: inertia-scaled PD with the default gains; a robot: the
            reference angles as targets, or its file's PD gains on torques), 'zero' (no
            torque; a position robot: the targets of its standing pose) or 'mpc' (the
            sampling MPC of `vrat_ros.mpc` with its settings for the body: `RAT_SETTINGS`
            on the rat, the `MPCSettings` defaults on a position robot).
        policy: for 'policy', an ONNX path or a loaded `OnnxPolicy`.

    Raises:
        ValueError: unknown name, or 'policy' without a policy.
    """
    from vrat_ros.controllers import PDController
    from vrat_ros.controllers import PolicyController
    from vrat_ros.controllers import ZeroController
    if name == 'zero':
        return ZeroController()
    if name == 'pd':
        return PDController()
    if name == 'policy':
        if policy is None:
            raise ValueError("controller 'policy' needs a policy file")
        return PolicyController(policy)
    if name == 'mpc':
        from vrat_ros.mpc import MPCController
        return MPCController()
    raise ValueError(f"unknown controller '{name}'; known: {', '.join(CONTROLLERS)}")


@dataclasses.dataclass(frozen=True)
class EpisodeTask:
    """Everything that decides one episode's result (so any worker gives the same numbers)."""

    clip_path: str
    controller: str
    policy_path: str | None
    start_frame: int
    robot: str | None = None  # None: the rat (RatBody); else a robot name or YAML path


# Per-process cache of bodies, clips and policies; emptied when a worker starts.
_CACHE: dict = {}


def _reset_cache() -> None:
    _CACHE.clear()


def _cached(key, make):
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def _is_robot(body) -> bool:
    from vrat_ros.robots import Robot
    return isinstance(body, Robot)


def eval_body_ids(body) -> list[int]:
    """The bodies whose position error is scored.

    EVAL_BODIES on the rat; a robot's torso and feet (`Robot.tracked_body_ids`).
    """
    if _is_robot(body):
        return [int(i) for i in body.tracked_body_ids]
    return [body.body_names.index(n) for n in EVAL_BODIES]


def normalised_actions(body, commands) -> np.ndarray:
    """(T', nu) actions whose step changes action_change_rms measures.

    Torques: clip(torque / max force, -1, 1). A position robot's joint targets: the targets
    themselves (rad), as it has no force limit on its command.
    """
    commands = np.asarray(commands, dtype=np.float64).reshape(-1, body.nu)
    if _is_robot(body) and body.command_interface == 'position':
        return commands
    return np.clip(commands / body.actuator_gain, -1.0, 1.0)


def episode_metrics(body, sim_qpos, ref_qpos, torques, n_available: int) -> dict:
    """Scores one episode on its tracked part; see the module docstring for the definitions.

    Args:
        body: the `RatBody` or a `Robot` (forward kinematics, names, limits; its state is
            untouched).
        sim_qpos: (T, nq) simulated states, one per control step, initial state first.
        ref_qpos: (T, nq) reference states at the same times.
        torques: (T', nu) commands given from those states (N m, or joint targets for a
            position robot), T' <= T.
        n_available: A, frames the episode could have had (>= T).

    Returns:
        tracked_fraction, tracked_frames (L), available_frames (A), first_failure_frame,
        failure_reason, the per-episode metric values (None when L = 0) and 'sums':
        the sums and counts that `aggregate` pools over episodes; 'body_error_mm' holds the
        (L,) per-frame mean body error for plots.
    """
    from vrat_ros.tracking import body_distances
    from vrat_ros.tracking import tracking_metrics
    sim = np.asarray(sim_qpos, dtype=np.float64)
    ref = np.asarray(ref_qpos, dtype=np.float64)
    track = tracking_metrics(body, sim, ref, n_expected=n_available)
    first = track['first_failure_frame']
    n_tracked = sim.shape[0] if first is None else int(first)
    sim, ref = sim[:n_tracked], ref[:n_tracked]
    joints = 7 + body.tracked_hinge_idx
    dist_mm = 1e3 * body_distances(body.model, sim, ref, eval_body_ids(body))  # (L, bodies)
    actions = normalised_actions(body, torques)[:n_tracked]
    change = np.diff(actions, axis=0)
    sums = {
        'joint_sq': float(np.sum((sim[:, joints] - ref[:, joints]) ** 2)),
        'joint_n': int(n_tracked * len(joints)),
        'body_mm': float(np.sum(dist_mm)),
        'body_n': int(dist_mm.size),
        'root_mm': float(np.sum(1e3 * np.linalg.norm(sim[:, :3] - ref[:, :3], axis=1))),
        'root_n': int(n_tracked),
        'action_sq': float(np.sum(change ** 2)),
        'action_n': int(change.size),
    }
    return {
        'tracked_fraction': n_tracked / int(n_available),
        'tracked_frames': int(n_tracked),
        'available_frames': int(n_available),
        'first_failure_frame': first,
        'failure_reason': track['failure_reason'],
        **_from_sums(sums),
        'sums': sums,
        'body_error_mm': dist_mm.mean(axis=1) if n_tracked else np.zeros(0),
    }


def _from_sums(sums: dict) -> dict:
    """Metric values (None where nothing was tracked) from pooled sums and counts."""
    def mean(total: str, count: str) -> float | None:
        return sums[total] / sums[count] if sums[count] else None

    joint_ms, action_ms = mean('joint_sq', 'joint_n'), mean('action_sq', 'action_n')
    return {
        'joint_rmse_rad': None if joint_ms is None else math.sqrt(joint_ms),
        'body_pos_error_mm': mean('body_mm', 'body_n'),
        'root_pos_error_mm': mean('root_mm', 'root_n'),
        'action_change_rms': None if action_ms is None else math.sqrt(action_ms),
    }


def aggregate(episodes: list[dict]) -> dict:
    """Pools episodes (from `episode_metrics`) into one set of metrics.

    tracked_fraction is the mean of the episodes' fractions; the errors pool the tracked
    frames (and actions) of all episodes, as the module docstring defines.
    """
    if not episodes:
        raise ValueError('no episodes to aggregate')
    sums = {k: sum(e['sums'][k] for e in episodes) for k in episodes[0]['sums']}
    return {
        'tracked_fraction': float(np.mean([e['tracked_fraction'] for e in episodes])),
        **_from_sums(sums),
        'episodes': len(episodes),
        'tracked_frames': int(sum(e['tracked_frames'] for e in episodes)),
        'available_frames': int(sum(e['available_frames'] for e in episodes)),
    }


def run_episode(task: EpisodeTask) -> dict:
    """Runs one episode (a worker task) and returns `episode_metrics` plus its start time.

    The run stops at its first untracked frame: the metrics score only the frames before
    it, so the rest would change no number (tested).
    """
    from vrat_ros.clip import Clip
    from vrat_ros.rat_model import RatBody
    from vrat_ros.rollout import run_inline
    clip = _cached(('clip', task.clip_path), lambda: Clip.load(task.clip_path))
    if task.robot is not None:
        from vrat_ros.robots import Robot
        body = _cached(('robot', task.robot), lambda: Robot(task.robot))
    else:
        body = _cached(('body', clip.body_scale), lambda: RatBody(scale=clip.body_scale))
    if list(clip.joint_names) != list(body.hinge_names):
        clip = _cached(('clip_ordered', task.clip_path, task.robot),
                       lambda: clip.reorder_to(body.hinge_names))
    policy = None
    if task.controller == 'policy':
        from vrat_ros.policy import OnnxPolicy
        policy = _cached(('policy', task.policy_path), lambda: OnnxPolicy(task.policy_path))
    start_s = task.start_frame / clip.fps
    result = run_inline(body, clip, make_controller(task.controller, policy),
                        start_time_s=start_s, stop_on_failure=True)
    out = episode_metrics(body, result.qpos, result.ref_qpos, result.torques,
                          n_available=result.n_steps_planned + 1)
    out['start_time_s'] = float(start_s)
    return out


def start_frames(n_frames: int, starts: int) -> list[int]:
    """Returns `starts` distinct start frames spread evenly over frames [0, n_frames - 1).

    Raises:
        EvalError: the clip has too few frames for that many starts.
    """
    frames = [int(k * (n_frames - 1) // starts) for k in range(starts)]
    if n_frames < 2 or len(set(frames)) != len(frames):
        raise EvalError(f'{starts} starts need at least {starts + 1} frames; the clip has '
                        f'{n_frames}')
    return frames


def _clip_key(name_or_path: str) -> str:
    base = os.path.basename(name_or_path)
    return base[:-4] if base.endswith('.npz') else base


def _robot_for_eval(robot: str | None):
    """(Robot, the name or path the tasks carry), or (None, None) for the rat."""
    if robot is None:
        return None, None
    from vrat_ros.robots import Robot
    body = Robot(robot)
    # Workers rebuild it: a file by its absolute path, a shipped robot by its name.
    return body, os.path.abspath(robot) if os.path.isfile(robot) else str(robot)


def _check_policy_fits(policy_path: str, body) -> None:
    """Refuses, before any episode, a policy whose contract does not fit the robot."""
    from vrat_ros.controllers import ControllerError
    from vrat_ros.controllers import PolicyController
    try:
        PolicyController(policy_path).reset(body, None, 0.0)
    except ControllerError as exc:
        raise EvalError(f"policy '{policy_path}': {exc}") from None


def _robot_settings(body) -> dict:
    """The settings of a robot's report that differ from the rat's."""
    from vrat_ros.mpc import MPCSettings
    from vrat_ros.tracking import tracking_limits
    spec = body.spec
    bodies = [body.body_names[i] for i in eval_body_ids(body)]
    position = spec.command_interface == 'position'
    return {
        'control_rate_hz': spec.control_rate_hz,
        'body_error_bodies': bodies,
        'pd': ('the reference joint angles of the next control step as position targets '
               "(the robot's PD loop at physics rate)" if position else
               "kp (q_ref - q) + kd (qd_ref - qd) with the robot file's pd gains"),
        'zero': ("the standing pose as position targets (a policy's zero action)"
                 if position else 'no torque'),
        'mpc': ('sampling model-predictive control on the simulation itself (vrat_ros.mpc, '
                'the MPCSettings defaults, listed under mpc_settings)'),
        'mpc_settings': MPCSettings().as_dict(),
        'tracked_threshold': tracking_limits(body),
        'definitions': {
            'joint_rmse_rad': f'RMS angle error over all {len(body.joint_names)} joints',
            'body_pos_error_mm': 'mean distance over ' + ', '.join(bodies),
            'action_change_rms': ('RMS of the per-step change of the joint targets (rad)'
                                  if position else 'RMS of the per-step change of the '
                                  'normalised action clip(torque / max force, -1, 1)')},
    }


def run_eval(clips: list[str], controllers: list[str], policy_path: str | None,
             starts: int = DEFAULT_STARTS, workers: int = 1, progress: bool = False,
             ray_address: str | None = None, robot: str | None = None) -> dict:
    """Evaluates controllers on clips and returns the report (see the module docstring).

    Args:
        clips: clip names (as `vrat clips` lists them) or .npz paths.
        controllers: names from CONTROLLERS.
        policy_path: the ONNX policy ('policy' controller); may be None without it.
        starts: start frames per clip (>= 1).
        workers: worker processes (the numbers do not depend on it).
        progress: show a progress bar on stderr.
        ray_address: None for local processes, else a Ray address (see
            `vrat_ros.workers.map_ordered`); the numbers do not depend on it. Each node
            needs the clip and policy files at the same paths.
        robot: None for the rat, else a robot name or YAML path (`vrat_ros.robots`); the
            report then has a 'robot' entry and the robot's settings.

    Returns:
        {'clips', 'controllers', 'policy', 'overall', 'per_clip', 'episodes', 'settings',
        'run'}; 'series' (per-frame body errors for the plot) is popped by the caller.

    Raises:
        EvalError, ClipError, PolicyLoadError, ValueError: bad input, before any episode runs.
    """
    from vrat_ros import rat_constants as rc
    from vrat_ros import resources
    from vrat_ros.clip import Clip
    from vrat_ros.clip import file_sha256
    from vrat_ros.workers import map_ordered
    from vrat_ros.workers import workers_used

    if int(starts) < 1:
        raise EvalError(f'--starts should be at least 1: got {starts}')
    if int(workers) < 1:
        raise EvalError(f'--workers should be at least 1: got {workers}')
    if not clips:
        raise EvalError('no clips to evaluate')
    controllers = list(dict.fromkeys(controllers))
    for name in controllers:
        if name not in CONTROLLERS:
            raise EvalError(f"unknown controller '{name}'; known: {', '.join(CONTROLLERS)}")
    body, task_robot = _robot_for_eval(robot)
    rate_hz = rc.CONTROL_RATE_HZ if body is None else body.spec.control_rate_hz
    body_name = 'rat' if body is None else body.spec.name
    if body is not None and 'pd' in controllers:  # e.g. an effort robot without pd gains
        from vrat_ros.controllers import ControllerError
        try:
            make_controller('pd').reset(body, None, 0.0)
        except ControllerError as exc:
            raise EvalError(f"controller 'pd': {exc}") from None
    if 'mpc' in controllers and body is not None:  # the rat has its own MPC settings
        from vrat_ros.controllers import ControllerError
        from vrat_ros.mpc import pd_rollout_model
        try:
            pd_rollout_model(body)
        except ControllerError as exc:
            raise EvalError(f"controller 'mpc': {exc}") from None
    policy_info = None
    if 'policy' in controllers:
        from vrat_ros.policy import read_contract
        if policy_path is None or not os.path.isfile(policy_path):
            raise EvalError(f"policy file '{policy_path}' does not exist")
        read_contract(policy_path)  # refuses a file that is not a vrat policy
        if body is not None:
            _check_policy_fits(policy_path, body)
        policy_info = {'path': os.path.abspath(policy_path), 'sha256': file_sha256(policy_path)}

    clip_entries, tasks = [], []
    for name in clips:
        path = resources.resolve_clip_path(name)
        if not os.path.exists(path):
            raise EvalError(f"clip file '{name}' does not exist (see `vrat clips`)")
        clip = Clip.load(path)
        made_for = clip.meta.get('robot') if isinstance(clip.meta, dict) else None
        if made_for is not None and made_for != body_name:
            raise EvalError(f"clip '{name}' was made for robot '{made_for}', not for "
                            f"'{body_name}'" + (' (give --robot)' if body is None else ''))
        if body is not None:
            from vrat_ros.errors import ClipError
            try:
                clip.reorder_to(body.hinge_names)  # every joint of the robot, by name
            except ClipError as exc:
                raise EvalError(f"clip '{name}' does not fit robot '{body_name}': {exc}") from None
        key = _clip_key(name)
        if key in {c['name'] for c in clip_entries}:
            raise EvalError(f"clip '{key}' is given twice")
        try:
            frames = start_frames(clip.n_frames, int(starts))
        except EvalError as exc:
            raise EvalError(f"clip '{key}': {exc}") from None
        if clip.duration_s - frames[-1] / clip.fps < 1.0 / rate_hz - 1e-9:
            raise EvalError(f"clip '{key}': its last start leaves less than one control step")
        clip_entries.append({
            'name': key, 'path': os.path.abspath(path), 'sha256': file_sha256(path),
            'title': clip.meta.get('title', ''), 'frames': clip.n_frames, 'fps': clip.fps,
            'duration_s': clip.duration_s, 'start_frames': frames})
        for controller in controllers:
            for frame in frames:
                tasks.append(EpisodeTask(
                    os.path.abspath(path), controller,
                    policy_info['path'] if controller == 'policy' else None, frame, task_robot))

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(tasks), desc='vrat eval', unit='episode', file=sys.stderr)
    start = time.perf_counter()
    try:
        results = map_ordered(run_episode, tasks, workers=int(workers),
                              initializer=_reset_cache,
                              on_result=None if bar is None else lambda i, r: bar.update(1),
                              ray_address=ray_address)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    used = workers_used(int(workers), len(tasks), ray_address)

    clip_names = [c['name'] for c in clip_entries]
    task_clip = {c['path']: c['name'] for c in clip_entries}
    grouped: dict = {(c, k): [] for c in clip_names for k in controllers}
    episodes, series = [], {}
    for task, result in zip(tasks, results):
        clip_name = task_clip[task.clip_path]
        grouped[(clip_name, task.controller)].append(result)
        episodes.append({
            'clip': clip_name, 'controller': task.controller, 'start_frame': task.start_frame,
            **{k: v for k, v in result.items() if k not in ('sums', 'body_error_mm')}})
        series.setdefault(clip_name, {}).setdefault(task.controller, []).append(
            (result['start_time_s'], result['body_error_mm'],
             result['first_failure_frame'] is not None))
    per_clip = {c: {k: aggregate(grouped[(c, k)]) for k in controllers} for c in clip_names}
    overall = {k: aggregate([r for c in clip_names for r in grouped[(c, k)]])
               for k in controllers}
    from vrat_ros.mpc import RAT_SETTINGS
    report = {
        'clips': clip_entries,
        'controllers': controllers,
        'policy': policy_info,
        'overall': overall,
        'per_clip': per_clip,
        'episodes': episodes,
        'settings': {
            'starts': int(starts),
            'control_rate_hz': rc.CONTROL_RATE_HZ,
            'body_error_bodies': list(EVAL_BODIES),
            'pd': 'inertia-scaled PD, the default gains of vrat_ros.controllers',
            'mpc': ('sampling model-predictive control on the simulation itself (vrat_ros.mpc, '
                    'offsets of the PD targets, RAT_SETTINGS, listed under mpc_settings)'),
            'mpc_settings': RAT_SETTINGS.as_dict(),
            'tracked_threshold': {
                'root_dist_m': rc.TRACK_ROOT_DIST_M,
                'joint_sq_err_rad2': rc.TRACK_JOINT_SQ_ERR_RAD2,
                'torso_z_range_m': list(rc.TRACK_TORSO_Z_RANGE_M)},
            'definitions': {
                'tracked_fraction': 'mean over episodes of (frames before the first failing '
                                    'frame) / (frames from the start to the clip end)',
                'errors': 'pooled over the tracked frames of all episodes (an episode ends '
                          'at its first failing frame)',
                'joint_rmse_rad': 'RMS angle error over the 43 non-tail hinges',
                'body_pos_error_mm': 'mean distance over ' + ', '.join(EVAL_BODIES),
                'root_pos_error_mm': 'mean root position distance',
                'action_change_rms': 'RMS of the per-step change of the normalised action '
                                     'clip(torque / max force, -1, 1)'},
        },
        'run': {'workers': used, 'episodes': len(tasks), 'wall_s': round(wall, 2)},
        'series': series,
    }
    if body is not None:
        robot_settings = _robot_settings(body)
        report['settings']['definitions'].update(robot_settings.pop('definitions'))
        report['settings'].update(robot_settings)
        report['robot'] = {'name': body.spec.name, 'file': os.path.abspath(body.spec.path),
                           'command_interface': body.spec.command_interface}
    return report


def _fmt(value, digits: int) -> str:
    return '–' if value is None else f'{value:.{digits}f}'


def format_table(report: dict) -> str:
    """Returns the markdown table of a report: per clip, then overall, one row per controller."""
    lines = [_TABLE_HEADER, '|' + '---|' * 8]
    rows = [(c, report['per_clip'][c]) for c in report['per_clip']]
    rows.append(('**overall**', report['overall']))
    for clip_name, by_controller in rows:
        for name in report['controllers']:
            m = by_controller[name]
            lines.append(
                f"| {clip_name} | {name} | {_fmt(m['tracked_fraction'], 2)} "
                f"| {_fmt(m['joint_rmse_rad'], 3)} | {_fmt(m['body_pos_error_mm'], 1)} "
                f"| {_fmt(m['root_pos_error_mm'], 1)} | {_fmt(m['action_change_rms'], 3)} "
                f"| {m['episodes']} |")
    return '\n'.join(lines)


def format_markdown(report: dict) -> str:
    """Returns the table with a line on what was run and how the errors are counted."""
    policy = report['policy']
    robot = f"robot {report['robot']['name']}, " if report.get('robot') else ''
    who = robot + (f"policy `{os.path.basename(policy['path'])}` (sha256 "
                   f"{policy['sha256'][:12]}), " if policy else '')
    return (format_table(report) + '\n\n'
            f"{who}{report['settings']['starts']} starts per clip, "
            f"{report['run']['episodes']} episodes in {report['run']['wall_s']:.0f} s on "
            f"{report['run']['workers']} worker(s). Errors over the tracked part of each "
            'episode; body error over ' + ', '.join(report['settings']['body_error_bodies'])
            + '.\n')


def plot_error_over_time(series: dict, out: str, controllers: list[str],
                         control_rate_hz: float | None = None,
                         bodies: list[str] | None = None) -> str:
    """Writes a PNG of body error (mm) against clip time and returns `out`.

    One panel per clip, one colour per controller, one line per episode (its tracked part);
    an x marks the last tracked frame of an episode that lost tracking.

    Args:
        series: {clip: {controller: [(start time, (L,) errors, failed)]}} from `run_eval`.
        out: the PNG file.
        controllers: their order (colours).
        control_rate_hz: the rate of the error samples (default: the rat's).
        bodies: the bodies averaged, for the title (default: the rat's EVAL_BODIES).
    """
    from matplotlib.figure import Figure
    from vrat_ros.clip import atomic_write
    from vrat_ros.rat_constants import CONTROL_RATE_HZ
    rate_hz = CONTROL_RATE_HZ if control_rate_hz is None else float(control_rate_hz)
    clips = list(series)
    fig = Figure(figsize=(10, 3.2 * len(clips) + 0.6), layout='constrained')
    axes = np.atleast_1d(fig.subplots(len(clips), 1, squeeze=False)[:, 0])
    for ax, clip_name in zip(axes, clips):
        for i, name in enumerate(controllers):
            color = f'C{i}'
            for j, (t0, err, failed) in enumerate(series[clip_name].get(name, [])):
                if len(err) == 0:
                    continue
                t = t0 + np.arange(len(err)) / rate_hz
                ax.plot(t, err, color=color, lw=1.0, label=name if j == 0 else None)
                if failed:
                    ax.plot(t[-1], err[-1], 'x', color=color, ms=6)
        ax.set_title(clip_name, fontsize=10)
        ax.set_ylabel('body error (mm)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel('clip time (s)')
    fig.suptitle('Body position error ('
                 + ('hands, feet, skull, torso' if bodies is None else ', '.join(bodies))
                 + ') while tracked; x: tracking lost')

    def write(tmp):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        FigureCanvasAgg(fig)
        fig.savefig(tmp, dpi=100, format='png')
    atomic_write(out, write)
    return out


VIZ_INSTALL = "pip install -e '.[viz]'"


def output_paths(report: str | None, plot: str | None) -> tuple:
    """Returns the (report, table, plot) paths of `vrat eval` (None where nothing is written).

    The table (.md) and, unless `plot` is given, the plot (.png) go beside the report, its
    suffix replaced. Paths are refused before any work when they would overwrite each other.

    Raises:
        EvalError: the report path ends in .md or .png, the plot path does not end in .png,
            or two outputs are the same file.
    """
    if plot is not None and os.path.splitext(plot)[1].lower() != '.png':
        raise EvalError(f"--plot '{plot}' should end in .png (the plot is a PNG image)")
    md = None
    if report is not None:
        base, ext = os.path.splitext(report)
        if ext.lower() in ('.md', '.png'):
            raise EvalError(f"--report '{report}' ends in {ext}, the suffix of the table "
                            '(.md) or plot (.png) written beside it; give e.g. a .json name')
        md = base + '.md'
        if plot is None:
            plot = base + '.png'
    named = [(flag, path) for flag, path in (('--report', report), ('table', md),
                                             ('--plot', plot)) if path is not None]
    seen: dict = {}
    for flag, path in named:
        real = os.path.realpath(path)
        if real in seen:
            raise EvalError(f"{seen[real][0]} '{seen[real][1]}' and {flag} '{path}' are the "
                            'same file; give different names')
        seen[real] = (flag, path)
    return report, md, plot


def check_matplotlib() -> None:
    """Raises EvalError unless matplotlib (the `viz` extra) imports, before any work."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as exc:
        raise EvalError(f'the plot needs matplotlib ({exc}); install it with {VIZ_INSTALL}, '
                        'or leave --report and --plot out') from None


def _cmd_eval(args: argparse.Namespace) -> int:
    from vrat_ros import resources
    from vrat_ros.cli import _check_output_path
    from vrat_ros.cli import _write_json_atomic
    from vrat_ros.clip import atomic_write
    from vrat_ros.workers import default_workers
    from vrat_ros.workers import ray_cluster_cpus
    from vrat_ros.robots import is_rat
    from vrat_ros.robots import load_robot_spec
    robot = None if args.robot is None or is_rat(args.robot) else args.robot
    if robot is None:
        clips = args.clips or list(resources.HELD_OUT_CLIPS)
        policy_path = args.policy or resources.default_policy_path()
    else:
        spec = load_robot_spec(robot)
        clips = args.clips or resources.robot_eval_clips(spec)
        if not clips:
            raise EvalError(f"robot '{spec.name}' names no held-out clips (defaults.eval_clips "
                            f"in '{spec.path}'); give --clips")
        policy_path = args.policy
        if 'policy' in args.controller:
            policy_path = resources.robot_policy_path(
                spec, args.policy, hint=', or leave it out: --controller pd zero')
    report_path, md_path, plot_path = output_paths(args.report, args.plot)
    for path in (report_path, md_path, plot_path):
        _check_output_path(path)
    if plot_path is not None:
        check_matplotlib()
    workers = args.workers
    if workers is None:
        workers = default_workers() if args.ray_address is None else \
            ray_cluster_cpus(args.ray_address)
    report = run_eval(clips, args.controller, policy_path, starts=args.starts,
                      workers=workers, progress=not args.no_progress,
                      ray_address=args.ray_address, robot=robot)
    series = report.pop('series')
    markdown = format_markdown(report)
    print(markdown, end='')
    if report_path is not None:
        # The table and the report first: a plot that fails loses nothing else.
        report['markdown'] = os.path.abspath(md_path)

        def write_md(tmp):
            with open(tmp, 'w') as f:
                f.write(markdown)
        atomic_write(md_path, write_md)
        _write_json_atomic(report_path, report)
    if plot_path is not None:
        settings = report['settings']
        robot_plot = {} if robot is None else {
            'control_rate_hz': settings['control_rate_hz'],
            'bodies': settings['body_error_bodies']}
        report['plot'] = os.path.abspath(
            plot_error_over_time(series, plot_path, report['controllers'], **robot_plot))
        if report_path is not None:
            _write_json_atomic(report_path, report)  # now naming the plot
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `vrat eval` on the `vrat` command's subparsers."""
    p = subparsers.add_parser(
        'eval', help='Run each controller on each clip (default: the held-out clips) from '
                     'several start frames; print a markdown table of tracking metrics and '
                     'optionally write a JSON report and an error-over-time plot.')
    p.add_argument('--robot', metavar='NAME_OR_YAML',
                   help='The body: a robot name in config/robots (e.g. quadruped) or a robot '
                        "YAML path (default: the rat); its file's defaults give the clips "
                        'and the policy.')
    p.add_argument('--clips', nargs='+', metavar='CLIP',
                   help='Clip names from vrat clips or .npz paths (default: the held-out '
                        "split, never used for training; for --robot, the robot file's "
                        'defaults.eval_clips).')
    p.add_argument('--controller', nargs='+', choices=CONTROLLERS,
                   default=list(DEFAULT_CONTROLLERS),
                   help="Controllers to evaluate (default: policy, pd and zero). 'mpc' (the "
                        'rat, or a position robot with joint motors): sampling model-'
                        'predictive control on the simulation itself (vrat_ros/mpc.py), slow: '
                        'about 3 s of compute per simulated second for the quadruped on one '
                        'core, 50 s for the rat on two threads.')
    p.add_argument('--policy', help="ONNX policy; default: the shipped policy (for --robot, "
                                    "the robot file's defaults.policy).")
    p.add_argument('--starts', type=int, default=DEFAULT_STARTS,
                   help=f'Start frames per clip, spread evenly (default {DEFAULT_STARTS}).')
    p.add_argument('--workers', type=int,
                   help='Worker processes, or Ray actors with --ray-address (default: the '
                        'usable cores, or every CPU of the Ray cluster); the numbers do not '
                        'depend on it.')
    p.add_argument('--ray-address', metavar='ADDRESS',
                   help="Run the episodes on Ray: 'local' (a private Ray on this machine) or "
                        "HOST:PORT of a cluster started with 'ray start --head' (needs "
                        "pip install -e '.[scale]' in a vrat_ros checkout; each node needs "
                        'the clip and policy files at the same paths).')
    p.add_argument('--report', metavar='FILE',
                   help='Write the JSON report here, the table beside it (.md) and, unless '
                        '--plot says otherwise, the plot beside it (.png), each with the '
                        "report's suffix replaced; the plot needs matplotlib "
                        f'({VIZ_INSTALL}).')
    p.add_argument('--plot', metavar='FILE.png',
                   help='Write the error-over-time plot (PNG) here; needs matplotlib.')
    p.add_argument('--no-progress', action='store_true', help='Hide the progress bar.')
    p.set_defaults(func=_cmd_eval)
