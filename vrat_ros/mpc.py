"""Sampling model-predictive control of a position robot or the rat: an expert to learn from.

At every control step the controller copies the simulated state, rolls out `samples` plans
of joint targets over the next `horizon_steps` control steps in MuJoCo (native, batched
rollouts: `mujoco.rollout`), scores each against the reference and commands the first step
of their cost-weighted average (MPPI-style). A plan is the reference's own joint angles
plus an offset per actuator; the offsets are linear between `knots` points in time, and each
sample adds Gaussian noise (`noise_rad`) to the knots of the plan kept from the last step
(shifted by one step). Sample 0 is that plan unchanged and sample 1 the plain reference
(what the 'pd' controller commands), so the result never scores worse than either on the
model.

Cost, summed over the horizon (per control step): weights['root_xy'] x squared horizontal
root error (m^2) + weights['root_z'] x squared root height error + weights['orientation'] x
(1 - <q, q_ref>^2) of the root quaternions + weights['joints'] x the summed squared
joint-angle error (rad^2, every hinge).

The rollouts use a copy of the robot's model in which each motor applies the robot file's
PD law itself (gain kp on the command, bias -kp q - kd qd, the same torque limit), which is
what `Robot.step` computes in Python before each physics step: the same physics, tested.

On the rat (`RatBody`, torque motors) a plan offsets the targets of the 'pd' controller
instead: its inertia-scaled proportional law on actuator lengths (hinge angles and fixed
tendon lengths, `controllers.PDController` with its defaults: wn 225 rad/s, no D term), run
once per control step and held for its physics steps as the rat's own commands are. The
rollouts therefore go one control step at a time (the PD of each sample is computed in
numpy between them) on the rat's own model; `plan` returns torques (N m). The rat's settings
are `RAT_SETTINGS` (its cost counts the 43 non-tail hinges; the tail has no motor).

Why it exists: following the reference joint angles alone (the 'pd' controller) does not
move the trunk where the reference goes, because nothing feeds back the trunk's error; the
sampled plans do, through contact physics. `vrat train` can learn from it (the opt-in
`expert` setting, config/train_mpc_expert.json, with its own settings: cold start, fixed
noise). Imitating it alone gave policies no better than PD; its episodes are the start of the
shipped quadruped policy, which RL fine-tuning then finishes (see vrat_ros/train.py).
Known shortcomings: no effort robots; the model is the simulation itself (perfect, unlike a
real robot); a control step costs samples x horizon x substeps physics steps (about 60 ms
with the defaults on one core for the quadruped, about 1 s on two threads for the rat),
far from real time.
"""

from __future__ import annotations

import copy
import dataclasses

import mujoco
from mujoco import rollout as mj_rollout
import numpy as np
import numpy.typing as npt

from vrat_ros import rat_constants as rc
from vrat_ros.clip import Clip
from vrat_ros.controllers import ActuatorKinematics
from vrat_ros.controllers import Controller
from vrat_ros.controllers import ControllerError
from vrat_ros.controllers import DEFAULT_PD_WN_RAD_S
from vrat_ros.controllers import pd_gains
from vrat_ros.rat_model import RatBody
from vrat_ros.robots import Robot

_STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS
# Largest sample count, horizon, knot count and iteration count accepted; thread count.
_MAX_COUNT = 4096
_MAX_THREADS = 64
# At most this many bytes of rollouts per sampling round (`SamplingMPC.memory_bytes`): the
# count bounds alone allow samples x horizon_steps combinations that need hundreds of GiB.
MAX_PLAN_BYTES = 4 * 2 ** 30


@dataclasses.dataclass(frozen=True)
class MPCSettings:
    """Settings of `SamplingMPC` (see the module docstring).

    Attributes:
        samples: plans rolled out per control step (>= 2).
        horizon_steps: control steps each plan covers.
        knots: points in time at which a plan's offsets are free (>= 2, <= horizon_steps).
        noise_rad: standard deviation of the knot noise (rad of target).
        temperature: softness of the averaging, as a fraction of the mean cost above the
            best sample's (0 takes the best sample alone).
        iterations: sampling rounds per control step, each about the plan of the last.
        warm_start: start each control step from the last step's plan, shifted (True), or
            from the plain reference (False: the command then depends on the state and the
            reference alone, which a policy can learn; it needs more iterations).
        fixed_noise: draw the same sample noise at every control step (from the seed of
            `reset`), so that without a warm start the command is a fixed function of the
            state and the reference rather than a random draw about one.
        weights: cost weights (see the module docstring).
        threads: rollout threads.
    """

    samples: int = 32
    horizon_steps: int = 15
    knots: int = 4
    noise_rad: float = 0.15
    temperature: float = 0.1
    iterations: int = 1
    warm_start: bool = True
    fixed_noise: bool = False
    weights: tuple = (('root_xy', 10.0), ('root_z', 20.0), ('orientation', 30.0),
                      ('joints', 1.0))
    threads: int = 1

    def __post_init__(self):
        for name in ('samples', 'horizon_steps', 'knots', 'threads', 'iterations'):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f'MPC setting {name} should be a positive integer: got {value!r}')
            # The rollouts' memory grows with samples x horizon; each thread holds an MjData
            # (the rat's reserves about 3 GB of address space).
            most = _MAX_THREADS if name == 'threads' else _MAX_COUNT
            if value > most:
                raise ValueError(f'MPC setting {name} should be at most {most}: got {value}')
        if self.samples < 2:
            raise ValueError(f'MPC setting samples should be at least 2: got {self.samples}')
        if not 2 <= self.knots <= self.horizon_steps:
            raise ValueError(f'MPC setting knots should be in [2, horizon_steps='
                             f'{self.horizon_steps}]: got {self.knots}')
        for name in ('warm_start', 'fixed_noise'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'MPC setting {name} should be true or false: got '
                                 f'{getattr(self, name)!r}')
        for name in ('noise_rad', 'temperature'):
            value = getattr(self, name)
            if isinstance(value, bool) or not (
                    isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ValueError(f'MPC setting {name} should be a number >= 0: got {value!r}')
        if self.noise_rad > np.pi:  # wider than a joint's turn: the rollouts blow up
            raise ValueError(f'MPC setting noise_rad should be at most pi: got {self.noise_rad}')
        weights = dict(self.weights)
        unknown = sorted(set(weights) - {'root_xy', 'root_z', 'orientation', 'joints'})
        if unknown:
            raise ValueError(f'unknown MPC weights {unknown}; the weights are root_xy, root_z, '
                             'orientation and joints')
        if set(weights) != {'root_xy', 'root_z', 'orientation', 'joints'} or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                and v >= 0 for v in weights.values()):
            raise ValueError('MPC weights should give root_xy, root_z, orientation and joints, '
                             f'each a number >= 0: got {weights}')

    @classmethod
    def from_dict(cls, values: dict) -> 'MPCSettings':
        values = dict(values)
        if 'weights' in values:
            if not isinstance(values['weights'], dict):
                raise ValueError('MPC weights should be a mapping {root_xy, root_z, orientation, '
                                 f"joints}}: got {values['weights']!r}")
            values['weights'] = tuple(sorted(values['weights'].items()))
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f'unknown MPC settings: {sorted(unknown)}')
        return cls(**values)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out['weights'] = dict(self.weights)
        return out


# The rat's settings: its offsets are wider (0.15 rad moves too little of its weak legs), its
# cost is in its own scale (a rat is ~10 cm tall; the tracking limits are 0.1 m of root
# distance and a torso above 3.25 cm) and weighs staying upright and on the reference root
# above the joint angles (the limit on those is loose). Tuned on held-out starts where the
# 'pd' controller fails within 40 control steps: over 2.4 s from three (rear from 0 s, walk
# from 2 s and 4 s), orientation 50 and joints 0.1 instead of 5 and 0.5 tracked 120, 19 and
# 27 steps instead of 39, 19 and 80 (10 steps ahead), 20 steps ahead 120, 20 and 120; then
# over 2 s from five (walk from 0, 2 and 6 s, rear from 0.9 and 2.8 s), root_xy 3000
# instead of 300 tracked 100, 30, 59, 95 and 31 steps instead of 25, 13, 47, 38 and 34
# (10000: 100, 10, 61, 77, 28). 64 samples tracked 100, 39, 63, 100 and 100 at twice the
# cost per step; 32 are kept so that labelling data stays affordable.
RAT_SETTINGS = MPCSettings(samples=32, horizon_steps=20, knots=4, noise_rad=0.3,
                           weights=(('joints', 0.1), ('orientation', 50.0),
                                    ('root_xy', 3000.0), ('root_z', 1000.0)), threads=2)


def default_settings(body) -> MPCSettings:
    """`RAT_SETTINGS` for the rat, the `MPCSettings` defaults for a robot."""
    return RAT_SETTINGS if isinstance(body, RatBody) else MPCSettings()


def pd_rollout_model(robot: Robot) -> mujoco.MjModel:
    """A copy of a position robot's model whose motors apply its PD law on ctrl = target."""
    if robot.command_interface != 'position':
        raise ControllerError(f"the 'mpc' controller needs a robot with the 'position' "
                              f"interface; '{robot.spec.name}' takes "
                              f'{robot.command_interface} commands')
    m = robot.model
    gear = np.array(m.actuator_gear[:, 0], dtype=np.float64)
    if m.na or np.any(m.actuator_trntype != mujoco.mjtTrn.mjTRN_JOINT) or np.any(gear == 0):
        raise ControllerError("the 'mpc' controller needs joint motors without actuator "
                              'dynamics')
    # The joint torque is gear x the actuator force and the actuator length gear x q, so
    # force = (kp / g) (ctrl - q) - (kd / g) qd gives the joint kp (target - q) - kd qd.
    model = copy.deepcopy(m)
    model.actuator_gaintype[:] = mujoco.mjtGain.mjGAIN_FIXED
    model.actuator_gainprm[:] = 0.0
    model.actuator_gainprm[:, 0] = robot.kp / gear
    model.actuator_biastype[:] = mujoco.mjtBias.mjBIAS_AFFINE
    model.actuator_biasprm[:] = 0.0
    model.actuator_biasprm[:, 1] = -robot.kp / gear ** 2
    model.actuator_biasprm[:, 2] = -robot.kd / gear ** 2
    model.actuator_ctrllimited[:] = 0
    # Robot.step clips ctrl to [-1, 1] (joint torque up to the actuator's gain) and MuJoCo
    # then applies any force range: the smaller of the two is the limit.
    limit = np.minimum(np.abs(robot.actuator_gain), robot.max_force) / np.abs(gear)
    model.actuator_forcelimited[:] = 1
    model.actuator_forcerange[:, 0] = -limit
    model.actuator_forcerange[:, 1] = limit
    return model


def _interpolation(horizon: int, knots: int) -> np.ndarray:
    """(horizon, knots) weights: linear interpolation between evenly spaced knots."""
    at = np.linspace(0.0, horizon - 1.0, knots)
    eye = np.eye(knots)
    return np.stack([[np.interp(j, at, eye[i]) for i in range(knots)] for j in range(horizon)])


class SamplingMPC:
    """The planner on one body: `plan(reference)` from the body's current state.

    Args:
        body: a position robot (`Robot`) or the rat (`RatBody`).
        settings: `MPCSettings`; None: `default_settings(body)`.
        inertia_qpos: the rat only: the (nq,) pose at which its PD gains are computed (as
            `PDController` does from a clip's first frame); None: the body's current pose.
    """

    def __init__(self, body: Robot | RatBody, settings: MPCSettings | None = None,
                 inertia_qpos: npt.ArrayLike | None = None):
        self.robot = body
        self.settings = settings or default_settings(body)
        self.is_rat = isinstance(body, RatBody)
        if self.is_rat:
            pose = body.data.qpos.copy() if inertia_qpos is None else np.asarray(
                inertia_qpos, dtype=np.float64)
            self.model = body.model
            self._lengths = ActuatorKinematics(body, pose).matrix  # (nu, hinges)
            self._kp = pd_gains(body, pose, DEFAULT_PD_WN_RAD_S, 0.0)[0]
            self._n_sub = int(round(1.0 / (rc.CONTROL_RATE_HZ * body.timestep)))
            self._joint_cols = 7 + np.asarray(body.tracked_hinge_idx)
        else:
            self.model = pd_rollout_model(body)
            self._n_sub = body.n_substeps
            self._joint_cols = np.arange(7, body.nq)
        need = self.memory_bytes()
        if need > MAX_PLAN_BYTES:
            s = self.settings
            raise ValueError(
                f'MPC settings samples x horizon_steps ({s.samples} x {s.horizon_steps}) would '
                f'hold about {need / 2 ** 30:.1f} GiB of rollouts per control step on this '
                f'body; at most {MAX_PLAN_BYTES / 2 ** 30:g} GiB: use fewer samples or a '
                'shorter horizon')
        self._datas = [mujoco.MjData(self.model) for _ in range(self.settings.threads)]
        self._basis = _interpolation(self.settings.horizon_steps, self.settings.knots)
        self._state = np.empty(mujoco.mj_stateSize(self.model, _STATE))
        w = dict(self.settings.weights)
        self._w = (w['root_xy'], w['root_z'], w['orientation'], w['joints'])
        self.reset()

    def memory_bytes(self) -> int:
        """Returns an upper estimate of the bytes one sampling round holds.

        A robot's rollouts keep every physics step's full state, sensor values and control;
        the rat's are stepped one control step at a time and keep the poses at their ends.
        Both hold a few (samples, horizon, nu) arrays of offsets and commands. Twice the sum
        of those arrays covers the temporaries (measured with tracemalloc: 1.3-1.6 times).
        """
        s, nu = self.settings, self.robot.nu
        physics_step = (mujoco.mj_stateSize(self.model, _STATE) + self.model.nsensordata + nu)
        if self.is_rat:
            per_step = self.robot.nq + 4 * nu + physics_step * self._n_sub / s.horizon_steps
        else:
            per_step = physics_step * self._n_sub + 4 * nu
        return int(2 * 8 * s.samples * s.horizon_steps * per_step)

    def reset(self, seed: int | npt.ArrayLike = 0) -> None:
        """Forgets the kept plan and restarts the noise from `seed`."""
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._plan = np.zeros((self.settings.horizon_steps, self.robot.nu))

    def costs(self, states: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Cost of each rollout: states (N, H, nq) against reference (H, nq); inf if unstable."""
        wxy, wz, wo, wj = self._w
        dot = np.sum(states[..., 3:7] * reference[None, :, 3:7], axis=-1)
        per_step = (wxy * np.sum((states[..., :2] - reference[None, :, :2]) ** 2, axis=-1)
                    + wz * (states[..., 2] - reference[None, :, 2]) ** 2
                    + wo * (1.0 - dot * dot)
                    + wj * np.sum((states[..., self._joint_cols]
                                   - reference[None, :, self._joint_cols]) ** 2, axis=-1))
        total = per_step.sum(axis=1)
        return np.where(np.isfinite(total), total, np.inf)

    def plan(self, reference: npt.ArrayLike) -> np.ndarray:
        """Returns the (nu,) command for the next control step.

        A robot's command is its joint targets; the rat's, torques (N m) within its limits.

        Args:
            reference: (horizon_steps, nq) reference poses at the ends of the coming control
                steps (t + dt, ..., t + H dt).
        """
        s, robot = self.settings, self.robot
        reference = np.asarray(reference, dtype=np.float64)
        if reference.shape != (s.horizon_steps, robot.nq):
            raise ValueError(f'reference should be ({s.horizon_steps}, {robot.nq}): got '
                             f'{reference.shape}')
        mujoco.mj_getState(robot.model, robot.data, self._state, _STATE)
        if self.is_rat:  # the PD's target actuator lengths
            base = reference[:, 7:] @ self._lengths.T
        else:
            base = reference[:, robot.actuator_qposadr]
        plan = self._plan if s.warm_start else np.zeros_like(self._plan)
        if s.fixed_noise:
            self._rng = np.random.default_rng(self._seed)
        for _ in range(s.iterations):
            plan = self._improve(plan, base, reference)
        self._plan = np.vstack([plan[1:], plan[-1:]])
        if self.is_rat:
            ctrl = self._rat_ctrl(robot.data.qpos[None], (base[0] + plan[0])[None])[0]
            return ctrl * robot.actuator_gain
        return base[0] + plan[0]

    def _rat_ctrl(self, qpos: np.ndarray, target_lengths: np.ndarray) -> np.ndarray:
        """(N, nu) rat ctrl in [-1, 1]: the PD on actuator lengths for (N, nq) poses."""
        return np.clip(self._kp * (target_lengths - qpos[:, 7:] @ self._lengths.T), -1.0, 1.0)

    def _simulate(self, targets: np.ndarray) -> np.ndarray:
        """(N, H, nq) poses at the ends of the control steps for (N, H, nu) commands."""
        nq = self.robot.nq
        if not self.is_rat:
            controls = np.repeat(targets, self._n_sub, axis=1)
            states, _ = mj_rollout.rollout(self.model, self._datas, self._state[None],
                                           controls, persistent_pool=True)
            return states[:, self._n_sub - 1::self._n_sub, 1:1 + nq]
        n, horizon = targets.shape[:2]
        states = np.repeat(self._state[None], n, axis=0)
        qpos = np.empty((n, horizon, nq))
        # The contact solver's warm start: the body's for the first step; MuJoCo's rollout
        # returns none, so later steps start it from zero (a difference of about 1e-6 rad
        # from stepping the body itself, tested).
        warmstart = self.robot.data.qacc_warmstart.copy()
        for h in range(horizon):
            ctrl = self._rat_ctrl(states[:, 1:1 + nq], targets[:, h])
            # A blown-up sample's state is not finite: hold it (its cost is inf anyway).
            ctrl = np.where(np.isfinite(ctrl), ctrl, 0.0)
            out, _ = mj_rollout.rollout(self.model, self._datas, states,
                                        np.repeat(ctrl[:, None], self._n_sub, axis=1),
                                        initial_warmstart=warmstart, persistent_pool=True)
            warmstart = np.zeros_like(warmstart)
            states = out[:, -1]
            qpos[:, h] = states[:, 1:1 + nq]
        return qpos

    def _improve(self, plan: np.ndarray, base: np.ndarray, reference: np.ndarray
                 ) -> np.ndarray:
        """One sampling round about `plan` (offsets, (H, nu)); returns the averaged plan."""
        s, robot = self.settings, self.robot
        noise = self._rng.standard_normal((s.samples, s.knots, robot.nu)) * s.noise_rad
        offsets = plan[None] + np.einsum('hk,nku->nhu', self._basis, noise)
        offsets[0] = plan
        offsets[1] = 0.0
        qpos = self._simulate(base[None] + offsets)
        cost = self.costs(qpos, reference)
        best = float(np.min(cost))
        if not np.isfinite(best):
            return np.zeros_like(plan)  # every plan blew up: fall back to the reference
        if s.temperature == 0.0:
            return offsets[int(np.argmin(cost))]
        finite = np.isfinite(cost)
        spread = float(np.mean(cost[finite] - best)) * s.temperature + 1e-12
        weight = np.where(finite, np.exp(-(np.where(finite, cost, best) - best) / spread), 0.0)
        used = weight > 0.0  # a blown-up sample's offsets may be inf: 0 x inf would be NaN
        return np.einsum('n,nhu->hu', weight[used] / weight[used].sum(), offsets[used])


class MPCController(Controller):
    """`SamplingMPC` as a controller of `vrat eval` and `vrat render` (position robots, rat).

    It plans at the body's own rate (the rat's 50 Hz, a robot file's), so `run_inline`
    refuses another `control_rate_hz` (`runs_at_body_rate`), as it refuses a policy trained
    at another rate.

    Args:
        settings: `MPCSettings`; None: `default_settings` of the body it drives.
        seed: the sampling noise's seed (the same seed gives the same run).
    """

    name = 'mpc'
    runs_at_body_rate = True  # its plans step at the body's default control period

    def __init__(self, settings: MPCSettings | None = None, seed: int = 0):
        self.settings = settings
        self.seed = seed
        self._mpc = None

    def reset(self, body: Robot | RatBody, clip: Clip, t0: float) -> None:
        if not isinstance(body, (Robot, RatBody)):
            raise ControllerError(f"the 'mpc' controller drives position robots and the rat, "
                                  f'not {type(body).__name__}')
        if isinstance(body, Robot):
            self._mpc = SamplingMPC(body, self.settings)  # refuses a robot it cannot drive
        if list(clip.joint_names) != list(body.hinge_names):
            clip = clip.reorder_to(body.hinge_names)
        self._clip = clip
        if isinstance(body, RatBody):  # its PD gains from the clip's first frame, as 'pd's
            self._mpc = SamplingMPC(body, self.settings, clip.qpos[0])
        self._mpc.reset(self.seed)
        self._dt = (1.0 / rc.CONTROL_RATE_HZ if isinstance(body, RatBody)
                    else body.spec.control_dt)

    def torques(self, body: Robot | RatBody, t: float) -> np.ndarray:
        horizon = self._mpc.settings.horizon_steps
        times = t + self._dt * np.arange(1, horizon + 1)
        reference, _ = self._clip.states(np.minimum(times, self._clip.duration_s))
        return self._mpc.plan(reference)
