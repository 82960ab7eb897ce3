"""Inline rollouts: a controller drives the simulated rat (or a robot) along a clip, without ROS.

This is the same physics and the same controller code the nodes use, called in one loop,
so its numbers are the reference the ROS pipeline is compared against. The body is the rat's
`RatBody` or any `vrat_ros.robots.Robot`; a robot's commands go through its command
interface exactly as in its sim node (`Robot.set_command`, then `Robot.step`, which closes a
position robot's PD loop at every physics step).
"""

from __future__ import annotations

import dataclasses
import time

import mujoco
import numpy as np

from vrat_ros import rat_constants as rc
from vrat_ros.clip import Clip
from vrat_ros.controllers import Controller
from vrat_ros.rat_model import RatBody
from vrat_ros.robots import Robot
from vrat_ros.tracking import frame_failure
from vrat_ros.tracking import tracking_metrics


@dataclasses.dataclass
class RolloutResult:
    """What one inline run produced. T counts control steps, including the initial state.

    Attributes:
        controller: the controller's name.
        times: (T,) clip times of the recorded states (s).
        qpos: (T, nq) simulated poses.
        ref_qpos: (T, nq) reference poses at `times`.
        torques: (T - 1, nu) commands of the controller: torques (N m, before clamping), or
            joint targets (rad, m) for a robot with the 'position' interface.
        n_saturated: actuator-steps whose torque was clamped to the force limit (for a
            position robot: actuators its PD law clamped in at least one physics step of a
            control step, counted per control step, as the sim node counts them).
        wall_time_s: wall-clock time of the loop (s).
        n_steps_planned: control steps the run was asked for.
        diverged: the state became non-finite or MuJoCo flagged unstable accelerations,
            and the run stopped early.
        diverged_at_step: index of the control step that diverged, or None.
        metrics: `tracking_metrics` of qpos against ref_qpos (over n_steps_planned + 1 frames).
    """

    controller: str
    times: np.ndarray
    qpos: np.ndarray
    ref_qpos: np.ndarray
    torques: np.ndarray
    n_saturated: int
    wall_time_s: float
    n_steps_planned: int
    diverged: bool
    diverged_at_step: int | None
    metrics: dict

    @property
    def saturation_fraction(self) -> float:
        """Share of actuator-steps that were clamped."""
        return self.n_saturated / max(self.torques.size, 1)

    def summary(self) -> dict:
        """Returns a JSON-friendly summary (metrics, timing, saturation)."""
        sim_s = float(self.times[-1] - self.times[0])
        return {
            'controller': self.controller,
            'start_time_s': float(self.times[0]),
            'sim_time_s': sim_s,
            'wall_time_s': self.wall_time_s,
            'real_time_factor': sim_s / self.wall_time_s if self.wall_time_s > 0 else None,
            'saturation_fraction': self.saturation_fraction,
            'diverged': self.diverged,
            'diverged_at_step': self.diverged_at_step,
            **self.metrics,
        }


def _unstable(data: mujoco.MjData) -> bool:
    """True when MuJoCo flagged bad accelerations (it then silently resets the state)."""
    return data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number > 0


def default_control_rate_hz(body: RatBody | Robot) -> float:
    """The body's control rate (Hz): a robot file's `timing`, else the rat's constant."""
    if isinstance(body, Robot):
        return float(body.spec.control_rate_hz)
    return rc.CONTROL_RATE_HZ


def _apply(body: RatBody | Robot, command: np.ndarray, n_sub: int) -> int:
    """Applies one command for `n_sub` physics steps; returns the saturation count."""
    if isinstance(body, Robot):
        clamped = body.set_command(command)  # torques: clamped here; targets: by the PD law
        return clamped + body.step(n_sub)
    clamped = body.set_ctrl_from_torque(command)
    body.step(n_sub)
    return clamped


def run_inline(
    body: RatBody | Robot,
    clip: Clip,
    controller: Controller,
    seconds: float | None = None,
    start_time_s: float = 0.0,
    control_rate_hz: float | None = None,
    progress: bool = False,
    stop_on_failure: bool = False,
) -> RolloutResult:
    """Runs `controller` on `body` along `clip` and scores the result.

    The body starts at the clip's state at `start_time_s` (qpos from `clip.sample`, qvel
    from `clip.velocity`). Each control step asks the controller for a command, applies it
    and advances the physics by 1 / control_rate_hz: the rat's torques (and an effort
    robot's) are clamped to the force limits; a position robot's joint targets go through
    its PD law before every physics step.

    Args:
        body: the rat (`RatBody`) or a `vrat_ros.robots.Robot`; it is reset, and holds the
            final state afterwards.
        clip: the reference; its joints are matched to the body's by name.
        controller: any `Controller`.
        seconds: how long to run (s); None runs to the end of the clip.
        start_time_s: clip time of the first state (s).
        control_rate_hz: control rate; the physics timestep must divide its period. None:
            the body's (`default_control_rate_hz`: 50 Hz for the rat).
        progress: show a tqdm bar.
        stop_on_failure: end the run at the first state that is not tracked (kept as the
            last frame). The metrics' tracked fraction and first failure stay those of the
            full run (they count the frames asked for); the errors then average over the
            frames up to the failure only. `vrat eval`, which scores the tracked frames
            alone, uses it to skip work whose result it throws away.

    Returns:
        The `RolloutResult`.

    Raises:
        ValueError: bad times or rate.
        ClipError: the clip lacks joints of the body.
    """
    body_rate = default_control_rate_hz(body)
    if control_rate_hz is None:
        control_rate_hz = body_rate
    ok = isinstance(control_rate_hz, (int, float, np.floating, np.integer))
    if not (ok and not isinstance(control_rate_hz, bool) and np.isfinite(control_rate_hz)
            and control_rate_hz > 0):
        raise ValueError(f'control_rate_hz should be a positive number: got {control_rate_hz!r}')
    # A policy runs at the rate it was trained for: refuse a body that steps at another one.
    policy_rate = getattr(getattr(controller, 'policy', None), 'control_rate_hz', None)
    if policy_rate is not None and abs(float(policy_rate) - control_rate_hz) > 1e-9:
        raise ValueError(f'the policy was trained at {float(policy_rate):g} Hz but the body '
                         f'is controlled at {control_rate_hz:g} Hz; use a policy trained '
                         'for this rate or a robot file with its rate')
    if (getattr(controller, 'runs_at_body_rate', False)
            and abs(control_rate_hz - body_rate) > 1e-9):
        raise ValueError(f"the '{controller.name}' controller plans at the body's own "
                         f'{body_rate!r} Hz, not at {float(control_rate_hz)!r} Hz')
    if list(clip.joint_names) != list(body.hinge_names):
        clip = clip.reorder_to(body.hinge_names)  # joints matched by name; ClipError if missing
    if not 0.0 <= start_time_s < clip.duration_s:
        raise ValueError(
            f'start_time_s should be in [0, {clip.duration_s:.3f}) s: got {start_time_s}')
    n_sub = int(round(1.0 / (control_rate_hz * body.timestep)))
    if n_sub < 1 or abs(n_sub * body.timestep * control_rate_hz - 1.0) > 1e-6:
        raise ValueError(
            f'control period 1/{control_rate_hz} Hz is not a multiple of the physics '
            f'timestep {body.timestep} s')
    dt = n_sub * body.timestep
    if seconds is None:
        seconds = clip.duration_s - start_time_s
    if not (np.isfinite(seconds) and seconds > 0):
        raise ValueError(f'seconds should be a positive number: got {seconds}')
    n_steps = int(np.floor(seconds / dt + 1e-9))

    body.reset(clip.sample(start_time_s), clip.velocity(start_time_s), time=start_time_s)
    controller.reset(body, clip, start_time_s)
    qpos = [body.data.qpos.copy()]
    torques = []
    n_saturated = 0
    diverged_at = None

    scratch = mujoco.MjData(body.model) if stop_on_failure else None  # for frame_failure
    steps = range(n_steps)
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc=f'{controller.name} rollout', unit='step')
    start = time.perf_counter()
    for k in steps:
        t = start_time_s + k * dt
        tau = np.asarray(controller.torques(body, t), dtype=np.float64)
        if not np.all(np.isfinite(tau)):
            diverged_at = k
            break
        torques.append(tau)
        n_saturated += _apply(body, tau, n_sub)
        if _unstable(body.data) or not body.state_is_finite():
            diverged_at = k
            break
        qpos.append(body.data.qpos.copy())
        if stop_on_failure and frame_failure(body, qpos[-1],
                                             clip.sample(start_time_s + (k + 1) * dt),
                                             scratch):
            break
    wall = time.perf_counter() - start

    qpos = np.array(qpos)
    times = start_time_s + dt * np.arange(len(qpos))
    ref = np.stack([clip.sample(t) for t in times])
    metrics = tracking_metrics(body, qpos, ref, n_expected=n_steps + 1)
    return RolloutResult(
        controller=controller.name, times=times, qpos=qpos, ref_qpos=ref,
        torques=np.array(torques).reshape(-1, body.nu), n_saturated=n_saturated,
        wall_time_s=wall, n_steps_planned=n_steps, diverged=diverged_at is not None,
        diverged_at_step=diverged_at, metrics=metrics)
