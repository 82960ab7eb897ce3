"""Sampling model-predictive control of a position robot: the expert its policy learns from.

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

Why it exists: following the reference joint angles alone (the 'pd' controller) does not
move the trunk where the reference goes, because nothing feeds back the trunk's error; the
sampled plans do, through contact physics. `vrat train` can learn from it (the opt-in
`expert` setting, config/train_mpc_expert.json, with its own settings: cold start, fixed
noise). Imitating it alone gave policies no better than PD; its episodes are the start of the
shipped quadruped policy, which RL fine-tuning then finishes (see vrat_ros/train.py).
Known shortcomings: only the 'position' interface; the model is the simulation itself
(perfect, unlike a real robot); a control step costs samples x horizon x substeps physics
steps (about 60 ms with the defaults on one core for the quadruped), far from real time.
"""

from __future__ import annotations

import copy
import dataclasses

import mujoco
from mujoco import rollout as mj_rollout
import numpy as np
import numpy.typing as npt

from vrat_ros.clip import Clip
from vrat_ros.controllers import Controller
from vrat_ros.controllers import ControllerError
from vrat_ros.robots import Robot

_STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS
# Largest sample count, horizon, knot count, thread count and iteration count accepted.
_MAX_COUNT = 4096


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
            if value > _MAX_COUNT:  # the rollouts' memory grows with samples x horizon
                raise ValueError(f'MPC setting {name} should be at most {_MAX_COUNT}: got {value}')
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
    """The planner on one robot: `plan(reference)` from the robot's current state."""

    def __init__(self, robot: Robot, settings: MPCSettings | None = None):
        self.robot = robot
        self.settings = settings or MPCSettings()
        self.model = pd_rollout_model(robot)
        self._datas = [mujoco.MjData(self.model) for _ in range(self.settings.threads)]
        self._basis = _interpolation(self.settings.horizon_steps, self.settings.knots)
        self._state = np.empty(mujoco.mj_stateSize(self.model, _STATE))
        w = dict(self.settings.weights)
        self._w = (w['root_xy'], w['root_z'], w['orientation'], w['joints'])
        self.reset()

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
                    + wj * np.sum((states[..., 7:] - reference[None, :, 7:]) ** 2, axis=-1))
        total = per_step.sum(axis=1)
        return np.where(np.isfinite(total), total, np.inf)

    def plan(self, reference: npt.ArrayLike) -> np.ndarray:
        """Returns the (nu,) joint targets for the next control step.

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
        base = reference[:, robot.actuator_qposadr]
        plan = self._plan if s.warm_start else np.zeros_like(self._plan)
        if s.fixed_noise:
            self._rng = np.random.default_rng(self._seed)
        for _ in range(s.iterations):
            plan = self._improve(plan, base, reference)
        self._plan = np.vstack([plan[1:], plan[-1:]])
        return base[0] + plan[0]

    def _improve(self, plan: np.ndarray, base: np.ndarray, reference: np.ndarray
                 ) -> np.ndarray:
        """One sampling round about `plan` (offsets, (H, nu)); returns the averaged plan."""
        s, robot = self.settings, self.robot
        noise = self._rng.standard_normal((s.samples, s.knots, robot.nu)) * s.noise_rad
        offsets = plan[None] + np.einsum('hk,nku->nhu', self._basis, noise)
        offsets[0] = plan
        offsets[1] = 0.0
        controls = np.repeat(base[None] + offsets, robot.n_substeps, axis=1)
        states, _ = mj_rollout.rollout(self.model, self._datas, self._state[None], controls,
                                       persistent_pool=True)
        n = robot.n_substeps
        qpos = states[:, n - 1::n, 1:1 + robot.nq]  # the pose at the end of each control step
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
    """`SamplingMPC` as a controller of `vrat eval` and `vrat render` (position robots only)."""

    name = 'mpc'

    def __init__(self, settings: MPCSettings | None = None, seed: int = 0):
        self.settings = settings or MPCSettings()
        self.seed = seed
        self._mpc = None

    def reset(self, body: Robot, clip: Clip, t0: float) -> None:
        if not isinstance(body, Robot):
            raise ControllerError("the 'mpc' controller drives robots with the 'position' "
                                  'interface, not the rat')
        if list(clip.joint_names) != list(body.hinge_names):
            clip = clip.reorder_to(body.hinge_names)
        self._clip = clip
        if self._mpc is None or self._mpc.robot is not body:
            self._mpc = SamplingMPC(body, self.settings)
        self._mpc.reset(self.seed)
        self._dt = body.spec.control_dt

    def torques(self, body: Robot, t: float) -> np.ndarray:
        times = t + self._dt * np.arange(1, self.settings.horizon_steps + 1)
        reference, _ = self._clip.states(np.minimum(times, self._clip.duration_s))
        return self._mpc.plan(reference)
