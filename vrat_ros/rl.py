"""Reinforcement-learning fine-tuning (PPO) of an imitation policy.

Imitation alone leaves the quadruped's policy no better than PD: it follows the reference
joint angles and loses the trunk, because nothing in its data rewards keeping the trunk on
the reference path (see vrat_ros/train.py). This stage starts from the imitation policy and
improves it on the tracking task itself, the way the published virtual-rodent work trained
its controllers, at the small scale a 2-core machine allows:

  * Environments: `envs` copies of the body, stepped together with `mujoco.rollout` (native
    code, several threads). A position robot's targets go to a model whose motors apply its
    own PD law (`vrat_ros.mpc.pd_rollout_model`); the rat's and an effort robot's action is
    the motor ctrl itself (both tested equal to stepping the body directly). Each episode
    starts at a random control step of a random training clip, in the clip's pose and
    velocity, and ends at the first frame the body's "tracked" test fails (as `vrat eval`
    counts it), at the clip's end or after `max_episode_s`.
  * Reward per control step, 0 on a failed frame: weights['root'] x exp(-(d / root_m)^2) +
    weights['joints'] x exp(-(mean squared joint error) / joints_rad2) +
    weights['motor_joints'] x exp(-(mean squared error of the joints with a motor of their
    own) / motor_joints_rad2) + weights['orientation'] x exp(-(angle / orientation_rad)^2) +
    weights['smooth'] x exp(-(mean squared action change since the last step) /
    smooth_action) + weights['root_velocity'] x exp(-(v / root_velocity_m_s)^2), with d the
    root's distance to the reference root, angle the trunk's rotation away from the
    reference's and v the distance between the root's mean velocity over the control step
    and the reference root's. The smoothness, motor-joint and root-velocity terms are off by
    default (weight 0). The motor-joint term exists for the rat: its mean over all hinges is
    dominated by the spine and neck (tendon-driven, 15-20 degree errors), so a tight
    joints_rad2 would give no signal, and RL on the other terms alone lets the limbs drift
    (measured on the rat's default clip: motor-joint RMSE 0.025 rad after imitation, 0.071
    after 1000 iterations without the term; with it, weight 0.5 as in config/train_rat.json,
    0.028 at the selected iteration 500, and 0.029 at 800 once the mirrored clips were added).
  * PPO: the policy's action is the network's output plus Gaussian noise (a learned standard
    deviation per actuator, starting at `init_std`); a separate value network (on the same
    normalised observation) is trained alone for `value_warmup` iterations first, so the
    first policy updates do not follow a random critic. Clipped surrogate, GAE(lambda),
    truncated episodes bootstrapped from the value of the state they reached.

Every random draw comes from the seed and the iteration number, so a run is deterministic
for a seed and a resumed run equals an uninterrupted one (the environments' states are part
of the checkpoint). The exported policy is the network's mean action.

Known shortcomings: the reward and PPO settings were tuned on the quadruped only (the rat's
root scale should follow its 0.1 m limit: `reward.root_m`); a position robot needs joint
motors without actuator dynamics (`unsupported_reason`); episodes start on the control-step
grid of the clips.
"""

from __future__ import annotations

import mujoco
from mujoco import rollout as mj_rollout
import numpy as np

from vrat_ros.clip import Clip
from vrat_ros.errors import VratError
from vrat_ros.kinematics import quat_conj
from vrat_ros.kinematics import quat_mul
from vrat_ros.tracking import forward_positions

_STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS

# The settings of the 'rl' section of a training configuration; iterations 0 skips the stage.
DEFAULT_RL = {
    'iterations': 0,              # PPO iterations (each: envs x steps_per_iteration steps)
    'envs': 64,                   # environments stepped together
    'steps_per_iteration': 64,    # control steps per environment and iteration
    'epochs': 4,                  # passes over each iteration's data
    'minibatch': 1024,
    # Policy learning rate (small: it starts from imitation). Measured on the rat with 1e-4
    # (config/train_rat.json plus the root-velocity term, stopped at iteration 578 of 1000):
    # held-out 0.35 at its best training-window iteration (400), 0.32 at 575, joint RMSE
    # 0.148-0.166 rad and action change 0.07-0.11, all worse than at 3e-5.
    'lr': 3e-5,
    'value_lr': 1e-3,
    'value_hidden': [256, 256],
    'value_warmup': 10,           # iterations that train only the value network
    'init_std': 0.05,             # initial action noise (action units: 1 = the full range)
    # Or, when set, each actuator's initial noise as this share of its imitation labels'
    # standard deviation: the rat's spine motors use a few percent of their range, so 0.05
    # of the range drowns their commands (measured: the rat's tracking fell; 0.3 of the
    # label std did not harm it).
    'init_std_of_labels': None,
    'gamma': 0.98,
    'lam': 0.95,
    'clip': 0.2,
    'max_grad_norm': 1.0,
    'max_episode_s': 6.0,
    # Episodes end when the root is farther than this (m) from the reference; None: the
    # body's own tracking limit (what `vrat eval` counts, the rat's 0.1 m). A looser limit
    # lets an episode go on after the root falls behind, so the policy can learn to catch up.
    # Measured on the rat (config/train_rat.json plus end_root_m 0.2, 1000 iterations): no
    # gain; held-out tracked fraction 0.35 (0.34 without), larger joint and body errors.
    'end_root_m': None,
    # root_velocity, measured on the rat (config/train_rat.json plus weight 0.5 and
    # root_velocity_m_s 0.1, 1000 iterations, 50 min): training windows tracked 0.70 at the
    # selected iteration 800 (0.64 without the term); held-out 0.37 (0.34 without) with joint
    # RMSE 0.134 rad and body error 39.9 mm (0.130, 38.1): within noise of the shipped
    # policy. The walk is still lost on the root within 0.5 s from 3 of its 5 starts.
    'reward': {'weights': {'root': 0.5, 'joints': 0.3, 'orientation': 0.2, 'smooth': 0.0,
                           'motor_joints': 0.0, 'root_velocity': 0.0},
               'root_m': 0.25, 'joints_rad2': 0.05, 'orientation_rad': 0.5,
               'smooth_action': 0.01, 'motor_joints_rad2': 0.0025,
               'root_velocity_m_s': 0.1},
    'threads': 2,                 # rollout threads
    'eval_every': 100,            # closed-loop evaluation period in iterations
    'checkpoint_every': 25,
    'log_every': 10,
}


def rl_settings(config: dict) -> dict:
    """The 'rl' section of a training configuration with defaults for what it leaves out."""
    section = config.get('rl') or {}
    out = {**DEFAULT_RL, **section}
    out['reward'] = {**DEFAULT_RL['reward'], **(section.get('reward') or {})}
    out['reward']['weights'] = {**DEFAULT_RL['reward']['weights'],
                                **((section.get('reward') or {}).get('weights') or {})}
    return out


# Upper bounds of the count settings: beyond them a run cannot fit this kind of machine.
_MAX_COUNTS = {'iterations': 10 ** 6, 'envs': 4096, 'steps_per_iteration': 10 ** 5,
               'epochs': 1000, 'minibatch': 10 ** 6, 'threads': 256, 'eval_every': 10 ** 6,
               'checkpoint_every': 10 ** 6, 'log_every': 10 ** 6, 'value_warmup': 10 ** 6}
# At most this many samples (envs x steps_per_iteration) per iteration, and this layer size.
_MAX_SAMPLES = 2 ** 20
_MAX_LAYER = 4096


def _number(name: str, value, integer: bool = False, low: float = 0.0,
            low_inclusive: bool = False, high: float | None = None) -> None:
    """Refuses `value` unless it is a finite number (an int if `integer`) within bounds."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        try:
            x = float(value)
        except OverflowError:
            ok = False
        else:
            ok = bool(np.isfinite(x)) and (not integer or x == int(value))
            ok = ok and (x >= low if low_inclusive else x > low)
            ok = ok and (high is None or x <= high)
    if not ok:
        kind = 'an integer' if integer else 'a number'
        span = f"{'>=' if low_inclusive else '>'} {low:g}"
        if high is not None:
            span += f' and <= {high:g}'
        raise ValueError(f"setting 'rl.{name}' should be {kind} {span}: got {value!r}")


def check_settings(cfg: dict) -> None:
    """Raises ValueError naming the first unusable 'rl' setting."""
    for name, high in _MAX_COUNTS.items():
        zero_ok = name in ('iterations', 'value_warmup')
        _number(name, cfg[name], integer=True, low=0 if zero_ok else 1, low_inclusive=True,
                high=high)
    for name, high in (('lr', 1.0), ('value_lr', 1.0), ('max_grad_norm', None)):
        _number(name, cfg[name], high=high)
    _number('init_std', cfg['init_std'], low=1e-4, low_inclusive=True, high=1.0)
    if cfg['init_std_of_labels'] is not None:
        _number('init_std_of_labels', cfg['init_std_of_labels'], low=1e-3, low_inclusive=True,
                high=10.0)
    _number('max_episode_s', cfg['max_episode_s'], low=0.1, low_inclusive=True, high=3600.0)
    for name in ('gamma', 'lam', 'clip'):
        _number(name, cfg[name], high=1.0)
    samples = cfg['envs'] * cfg['steps_per_iteration']
    if not 2 <= samples <= _MAX_SAMPLES:
        raise ValueError(f"settings 'rl.envs' x 'rl.steps_per_iteration' should give 2 to "
                         f'{_MAX_SAMPLES} samples per iteration: got {cfg["envs"]} x '
                         f'{cfg["steps_per_iteration"]}')
    if 0 < cfg['iterations'] <= cfg['value_warmup']:
        raise ValueError(f"setting 'rl.value_warmup' ({cfg['value_warmup']}) should be below "
                         f"'rl.iterations' ({cfg['iterations']}): the policy would never be "
                         'trained')
    hidden = cfg['value_hidden']
    if not (isinstance(hidden, list) and 1 <= len(hidden) <= 8
            and all(isinstance(h, int) and not isinstance(h, bool) and 0 < h <= _MAX_LAYER
                    for h in hidden)):
        raise ValueError(f"setting 'rl.value_hidden' should be a list of 1 to 8 layer sizes "
                         f'from 1 to {_MAX_LAYER}: got {hidden!r}')
    if cfg['end_root_m'] is not None:
        _number('end_root_m', cfg['end_root_m'])
    reward = cfg['reward']
    for name in ('root_m', 'joints_rad2', 'orientation_rad', 'smooth_action',
                 'motor_joints_rad2', 'root_velocity_m_s'):
        _number(f'reward.{name}', reward[name])
    weights = reward['weights']
    if set(weights) != set(DEFAULT_RL['reward']['weights']):
        raise ValueError("setting 'rl.reward.weights' should have exactly the keys "
                         f"{sorted(DEFAULT_RL['reward']['weights'])}: got {sorted(weights)}")
    for name, value in weights.items():  # relative weights; huge ones overflow the critic
        _number(f'reward.weights.{name}', value, low_inclusive=True, high=1000.0)
    if not any(float(v) > 0 for v in weights.values()):
        raise ValueError("setting 'rl.reward.weights' should give at least one term a weight "
                         '> 0: with all at 0 the reward is always 0')


def _angle(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Rotation angle (rad) between rows of unit quaternions."""
    rel = quat_mul(quat_conj(q1), q2)
    return 2.0 * np.arccos(np.minimum(1.0, np.abs(rel[:, 0])))


class RLDivergedError(VratError):
    """PPO produced non-finite numbers; the last checkpoint still holds finite weights."""

    def __init__(self, what: str):
        super().__init__(f'RL fine-tuning diverged at {what}; train again with a lower rl.lr '
                         'or rl.value_lr')


class TrackingEnvs:
    """`envs` copies of a body (the rat or a robot) tracking clips, stepped together.

    State per environment: the MuJoCo state, which clip, the control step in it and the
    steps since the episode began. `observe` gives the policy's observations (the same
    numbers `vrat_ros.controllers.observation_from_state` builds), `step` applies actions.
    """

    def __init__(self, robot, clips: list[Clip], frames: int, joint_idx: np.ndarray,
                 cfg: dict):
        from vrat_ros.rollout import default_control_rate_hz
        from vrat_ros.tracking import directly_actuated_hinges
        from vrat_ros.tracking import tracking_limits
        self.robot = robot
        self.cfg = cfg
        self.position = getattr(robot, 'command_interface', 'effort') == 'position'
        if self.position:
            from vrat_ros.mpc import pd_rollout_model
            from vrat_ros.train import RobotActions
            self.model = pd_rollout_model(robot)
            self.actions = RobotActions(robot)
        else:
            # The rat and effort robots: a policy's action is the motor's ctrl (torque =
            # action x gain, clipped to [-1, 1] as set_ctrl_from_torque/set_command do).
            self.model = robot.model
            self.actions = None
        self.limits = tracking_limits(robot)
        if cfg.get('end_root_m') is not None:
            if float(cfg['end_root_m']) < self.limits['root_dist_m']:
                raise ValueError(f"setting 'rl.end_root_m' ({cfg['end_root_m']:g} m) should be "
                                 f"at least the body's tracking limit "
                                 f"({self.limits['root_dist_m']:g} m): it loosens the "
                                 'episode end, it cannot tighten it')
            self.limits['root_dist_m'] = float(cfg['end_root_m'])
        self.frames = int(frames)
        self.joint_idx = np.asarray(joint_idx)
        self.n = int(cfg['envs'])
        self.dt = 1.0 / default_control_rate_hz(robot)
        self.substeps = int(round(self.dt / self.model.opt.timestep))
        self._datas = [mujoco.MjData(self.model) for _ in range(int(cfg['threads']))]
        self._scratch = mujoco.MjData(self.model)
        self.nstate = mujoco.mj_stateSize(self.model, _STATE)
        nq, nv = robot.nq, robot.nv
        self.nq, self.nv = nq, nv
        # Each clip sampled on the control grid; a window past the end holds the last frame.
        self.lengths = np.array([int(np.floor(c.duration_s / self.dt + 1e-9)) + 1
                                 for c in clips])
        if np.any(self.lengths < 2):
            raise ValueError('RL fine-tuning needs clips of at least two control steps')
        width = int(self.lengths.max()) + self.frames + 1
        self.ref_q = np.zeros((len(clips), width, nq))
        self.ref_v = np.zeros((len(clips), width, nv))
        for i, clip in enumerate(clips):
            times = np.minimum(np.arange(width) * self.dt, clip.duration_s)
            self.ref_q[i], self.ref_v[i] = clip.states(times)
        self.joints = 7 + robot.tracked_hinge_idx
        self.motor_joints = 7 + directly_actuated_hinges(robot)
        # A free joint's qpos[:3] is its body's position: no kinematics needed for that body.
        m = robot.model
        self.torso_is_root = bool(m.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE
                                  and m.jnt_bodyid[0] == robot.torso_id)
        self.max_age = max(1, int(round(cfg['max_episode_s'] / self.dt)))
        self.state = np.zeros((self.n, self.nstate))
        self.clip = np.zeros(self.n, dtype=np.int64)
        self.t = np.zeros(self.n, dtype=np.int64)
        self.age = np.zeros(self.n, dtype=np.int64)
        # The last action of each episode (for the smoothness term); none at its start.
        self.prev = np.zeros((self.n, robot.nu))
        self.has_prev = np.zeros(self.n, dtype=bool)

    # -- episode starts ----------------------------------------------------------------------

    def reset(self, which: np.ndarray, rng: np.random.Generator) -> None:
        """Starts new episodes in environments `which` at random clip steps.

        A start is at least 25 control steps (or half the clip) before the clip's end, so
        that every episode has some reference to track.
        """
        for i in np.asarray(which, dtype=np.int64):
            c = int(rng.integers(len(self.lengths)))
            last = max(1, int(self.lengths[c]) - 1 - min(25, int(self.lengths[c]) // 2))
            self.clip[i], self.t[i], self.age[i] = c, int(rng.integers(0, last)), 0
            self.has_prev[i] = False
            d = self._scratch
            mujoco.mj_resetData(self.model, d)
            d.qpos[:] = self.ref_q[c, self.t[i]]
            d.qvel[:] = self.ref_v[c, self.t[i]]
            mujoco.mj_forward(self.model, d)
            mujoco.mj_getState(self.model, d, self.state[i], _STATE)

    # -- observation and step ----------------------------------------------------------------

    def qpos(self) -> np.ndarray:
        return self.state[:, 1:1 + self.nq]

    def qvel(self) -> np.ndarray:
        return self.state[:, 1 + self.nq:1 + self.nq + self.nv]

    def observe(self) -> np.ndarray:
        from vrat_ros.train import batch_observations
        ahead = self.t[:, None] + 1 + np.arange(self.frames)[None, :]
        ahead = np.minimum(ahead, self.lengths[self.clip][:, None] - 1)
        window = self.ref_q[self.clip[:, None], ahead]
        return batch_observations(self.qpos(), self.qvel(), window, self.joint_idx)

    def _torso_z(self, qpos: np.ndarray) -> np.ndarray:
        if self.torso_is_root:
            return qpos[:, 2]
        return forward_positions(self.model, np.nan_to_num(qpos))[:, self.robot.torso_id, 2]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Applies (envs, nu) actions in [-1, 1] for one control step.

        Returns:
            reward (envs,), failed (envs,) bool (the frame reached is not tracked) and
            truncated (envs,) bool (tracked, but the episode ends: clip end or max length).
        """
        command = np.clip(actions, -1.0, 1.0)
        root_before = self.qpos()[:, :3].copy()
        ref_before = self.ref_q[self.clip, np.minimum(self.t, self.lengths[self.clip] - 1), :3]
        change = np.where(self.has_prev, np.mean((command - self.prev) ** 2, axis=1), 0.0)
        self.prev, self.has_prev = command.copy(), np.ones(self.n, dtype=bool)
        if self.actions is not None:
            command = self.actions.command(command)
        control = np.repeat(command[:, None, :], self.substeps, axis=1)
        states, _ = mj_rollout.rollout(self.model, self._datas, self.state, control)
        self.state = np.array(states[:, -1], dtype=np.float64)
        self.t += 1
        self.age += 1
        q = self.qpos()
        ref = self.ref_q[self.clip, np.minimum(self.t, self.lengths[self.clip] - 1)]
        finite = np.all(np.isfinite(self.state), axis=1)
        with np.errstate(invalid='ignore', over='ignore'):
            dist = np.linalg.norm(q[:, :3] - ref[:, :3], axis=1)
            joint_sq = np.sum((q[:, self.joints] - ref[:, self.joints]) ** 2, axis=1)
            z = self._torso_z(q)
            lo, hi = self.limits['torso_z_range_m']
            failed = (~finite | (dist > self.limits['root_dist_m'])
                      | (joint_sq > self.limits['joint_sq_err_rad2']) | (z < lo) | (z > hi))
            # The root's mean velocity over the step against the reference root's (m/s).
            vel_err = np.linalg.norm((q[:, :3] - root_before) - (ref[:, :3] - ref_before),
                                     axis=1) / self.dt
            reward = self.reward_of(q, ref, change, vel_err)
        reward = np.where(failed, 0.0, np.nan_to_num(reward))
        truncated = ~failed & ((self.age >= self.max_age)
                               | (self.t >= self.lengths[self.clip] - 1))
        return reward, failed, truncated

    def reward_of(self, q: np.ndarray, ref: np.ndarray, change: np.ndarray,
                  root_velocity_error: np.ndarray | None = None) -> np.ndarray:
        """Returns the reward of (envs, nq) positions `q` against reference positions `ref`.

        `change` is each environment's mean squared action change and
        `root_velocity_error` (needed when its weight is not 0) the distance (m/s) between
        the root's mean velocity over the step and the reference root's; failure is not
        considered here (`step` zeroes the reward of failed frames).
        """
        r = self.cfg['reward']
        w = r['weights']
        if root_velocity_error is None:
            if w['root_velocity'] != 0:
                raise ValueError('reward_of needs root_velocity_error when '
                                 "'reward.weights.root_velocity' is not 0")
            root_velocity_error = np.zeros(len(q))
        dist = np.linalg.norm(q[:, :3] - ref[:, :3], axis=1)
        joint_ms = np.mean((q[:, self.joints] - ref[:, self.joints]) ** 2, axis=1)
        motor_ms = (np.mean((q[:, self.motor_joints] - ref[:, self.motor_joints]) ** 2, axis=1)
                    if len(self.motor_joints) else np.zeros(len(q)))
        angle = _angle(np.nan_to_num(q[:, 3:7]), ref[:, 3:7])
        return (w['root'] * np.exp(-(dist / r['root_m']) ** 2)
                + w['joints'] * np.exp(-joint_ms / r['joints_rad2'])
                + w['motor_joints'] * np.exp(-motor_ms / r['motor_joints_rad2'])
                + w['orientation'] * np.exp(-(angle / r['orientation_rad']) ** 2)
                + w['smooth'] * np.exp(-change / r['smooth_action'])
                + w['root_velocity'] * np.exp(-(root_velocity_error
                                                / r['root_velocity_m_s']) ** 2))

    def snapshot(self) -> dict:
        return {'state': self.state.copy(), 'clip': self.clip.copy(), 't': self.t.copy(),
                'age': self.age.copy(), 'prev': self.prev.copy(),
                'has_prev': self.has_prev.copy()}

    def restore(self, snap: dict) -> None:
        self.state = np.asarray(snap['state'], dtype=np.float64).reshape(self.n, self.nstate)
        for name in ('clip', 't', 'age'):
            setattr(self, name, np.asarray(snap[name], dtype=np.int64).reshape(self.n))
        if 'prev' in snap:  # checkpoints from before the smoothness term start afresh
            self.prev = np.asarray(snap['prev'], dtype=np.float64).reshape(self.n, -1)
            self.has_prev = np.asarray(snap['has_prev'], dtype=bool).reshape(self.n)


class PPOFineTuner:
    """PPO on a `TrackingEnvs`, improving `model` (an InverseDynamicsMLP) in place.

    `iterate()` runs one iteration (collect, then update); `state_dict()` and
    `load_state_dict()` hold everything a resumed run needs besides `model` itself.
    """

    def __init__(self, model, envs: TrackingEnvs, cfg: dict, seed: int):
        import torch
        self.torch = torch
        self.model = model
        self.envs = envs
        self.cfg = cfg
        self.seed = int(seed)
        self.iteration = 0
        nu = int(model.act_mean.numel())
        obs_size = int(model.obs_mean.numel())
        if cfg['init_std_of_labels'] is None:
            std = torch.full((nu,), float(cfg['init_std']))
        else:
            std = float(cfg['init_std_of_labels']) * model.act_std.detach().clamp_min(1e-4)
        self.log_std = torch.nn.Parameter(torch.log(std).float())
        sizes = [obs_size] + list(cfg['value_hidden'])
        layers = []
        with torch.random.fork_rng():  # the critic's initial weights, leaving torch's seed be
            torch.manual_seed(self.seed + 7919)
            for a, b in zip(sizes[:-1], sizes[1:]):
                layers += [torch.nn.Linear(a, b), torch.nn.ELU()]
            self.value = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], 1))
        self.policy_opt = torch.optim.Adam(list(model.parameters()) + [self.log_std],
                                           lr=cfg['lr'])
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=cfg['value_lr'])
        envs.reset(np.arange(envs.n), np.random.default_rng([self.seed, 71, 0]))

    def _values(self, obs):
        x = (obs - self.model.obs_mean) / self.model.obs_std
        return self.value(x).squeeze(-1)

    def _log_prob(self, mean, action):
        std = self.torch.exp(self.log_std)
        return (-0.5 * ((action - mean) / std) ** 2 - self.log_std).sum(-1)

    def iterate(self) -> dict:
        """One PPO iteration; returns its statistics.

        'episode_s' is the mean length of the episodes that ended during the iteration, so
        it under-weights long episodes (most of them are still running at its end).
        """
        torch = self.torch
        cfg, envs = self.cfg, self.envs
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
            [self.seed, 72, self.iteration]).generate_state(1)[0]))
        rng = np.random.default_rng([self.seed, 73, self.iteration])
        T, n = int(cfg['steps_per_iteration']), envs.n
        obs_l, act_l, logp_l, rew_l, fail_l, trunc_l, boot_l = [], [], [], [], [], [], []
        lengths = []
        self.model.eval()
        with torch.no_grad():
            for _ in range(T):
                obs = torch.from_numpy(envs.observe())
                mean = self.model(obs)[0]
                noise = torch.randn(mean.shape, generator=gen)
                action = mean + torch.exp(self.log_std) * noise
                if not bool(torch.all(torch.isfinite(action))):
                    raise RLDivergedError(f'iteration {self.iteration + 1}: the policy gave '
                                          'non-finite actions')
                reward, failed, truncated = envs.step(action.numpy().astype(np.float64))
                boot = np.zeros(n)
                if np.any(truncated):
                    boot = np.where(truncated, self._values(
                        torch.from_numpy(envs.observe())).numpy(), 0.0)
                obs_l.append(obs)
                act_l.append(action)
                logp_l.append(self._log_prob(mean, action))
                rew_l.append(reward)
                fail_l.append(failed)
                trunc_l.append(truncated)
                boot_l.append(boot)
                done = np.flatnonzero(failed | truncated)
                lengths += envs.age[done].tolist()
                if len(done):
                    envs.reset(done, rng)
            obs = torch.stack(obs_l)                       # (T, n, D)
            values = self._values(obs).numpy()             # (T, n)
            last = self._values(torch.from_numpy(envs.observe())).numpy()
        rew, fail, trunc, boot = map(np.array, (rew_l, fail_l, trunc_l, boot_l))
        adv = np.zeros((T, n))
        running = np.zeros(n)
        for s in reversed(range(T)):
            following = last if s == T - 1 else values[s + 1]
            following = np.where(fail[s], 0.0, np.where(trunc[s], boot[s], following))
            delta = rew[s] + cfg['gamma'] * following - values[s]
            running = delta + cfg['gamma'] * cfg['lam'] * np.where(fail[s] | trunc[s], 0.0,
                                                                   running)
            adv[s] = running
        returns = torch.from_numpy((adv + values).reshape(-1).astype(np.float32))
        adv_t = torch.from_numpy(adv.reshape(-1).astype(np.float32))
        adv_t = (adv_t - adv_t.mean()) / (adv_t.std() + 1e-8)
        obs_f = obs.reshape(T * n, -1)
        act_f = torch.stack(act_l).reshape(T * n, -1)
        logp_f = torch.stack(logp_l).reshape(-1)
        train_policy = self.iteration >= int(cfg['value_warmup'])
        self.model.train()
        value_losses, policy_losses = [], []
        for _ in range(int(cfg['epochs'])):
            order = torch.randperm(T * n, generator=gen)
            for b in range(0, T * n, int(cfg['minibatch'])):
                idx = order[b:b + int(cfg['minibatch'])]
                v_loss = torch.mean((self._values(obs_f[idx]) - returns[idx]) ** 2)
                self.value_opt.zero_grad(set_to_none=True)
                v_loss.backward()
                self.value_opt.step()
                value_losses.append(float(v_loss.detach()))
                if not np.isfinite(value_losses[-1]):
                    raise RLDivergedError(f'iteration {self.iteration + 1}: a non-finite '
                                          'value loss')
                if not train_policy:
                    continue
                mean = self.model(obs_f[idx])[0]
                ratio = torch.exp(self._log_prob(mean, act_f[idx]) - logp_f[idx])
                a = adv_t[idx]
                p_loss = -torch.mean(torch.minimum(
                    ratio * a, torch.clamp(ratio, 1 - cfg['clip'], 1 + cfg['clip']) * a))
                self.policy_opt.zero_grad(set_to_none=True)
                p_loss.backward()
                torch.nn.utils.clip_grad_norm_(list(self.model.parameters()) + [self.log_std],
                                               cfg['max_grad_norm'])
                self.policy_opt.step()
                policy_losses.append(float(p_loss.detach()))
                if not (np.isfinite(policy_losses[-1])
                        and bool(torch.all(torch.isfinite(self.log_std)))):
                    raise RLDivergedError(f'iteration {self.iteration + 1}: a non-finite '
                                          'loss or noise level')
        self.model.eval()
        self.iteration += 1
        return {'iteration': self.iteration, 'reward': float(rew.mean()),
                'episodes': len(lengths),
                'episode_s': float(np.mean(lengths)) * envs.dt if lengths else None,
                'value_loss': float(np.mean(value_losses)),
                'policy_loss': float(np.mean(policy_losses)) if policy_losses else None,
                'std': float(torch.exp(self.log_std.detach()).mean())}

    def state_dict(self) -> dict:
        snap = self.envs.snapshot()
        return {'iteration': self.iteration, 'log_std': self.log_std.detach().clone(),
                'value': self.value.state_dict(), 'policy_opt': self.policy_opt.state_dict(),
                'value_opt': self.value_opt.state_dict(),
                'envs': {k: self.torch.from_numpy(v) for k, v in snap.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state['iteration'])
        with self.torch.no_grad():
            self.log_std.copy_(state['log_std'])
        self.value.load_state_dict(state['value'])
        self.policy_opt.load_state_dict(state['policy_opt'])
        self.value_opt.load_state_dict(state['value_opt'])
        self.envs.restore({k: v.numpy() for k, v in state['envs'].items()})


def validate_section(section) -> None:
    """Checks the 'rl' section of a training configuration (None: no RL stage).

    Raises:
        ValueError: naming the first unknown or unusable setting.
    """
    if section is None:
        return
    if not isinstance(section, dict):
        raise ValueError(f"setting 'rl' should be null or a mapping of settings: got "
                         f'{section!r}')
    for key in section:
        if key not in DEFAULT_RL:
            raise ValueError(f"unknown training setting '{key}' in 'rl'; known: "
                             f'{sorted(DEFAULT_RL)}')
    reward = section.get('reward', {})
    if not isinstance(reward, dict):
        raise ValueError(f"setting 'rl.reward' should be a mapping of settings: got {reward!r}")
    for key in reward:
        if key not in DEFAULT_RL['reward']:
            raise ValueError(f"unknown training setting '{key}' in 'rl.reward'; known: "
                             f"{sorted(DEFAULT_RL['reward'])}")
    if not isinstance(reward.get('weights', {}), dict):
        raise ValueError("setting 'rl.reward.weights' should be a mapping of settings: got "
                         f"{reward['weights']!r}")
    check_settings(rl_settings({'rl': section}))


def unsupported_reason(body) -> str | None:
    """Why `TrackingEnvs` cannot step `body` (None: it can).

    A position robot needs joint motors without actuator dynamics (its PD law moves into the
    rollout model's actuators); the rat and effort robots always work.
    """
    if getattr(body, 'command_interface', 'effort') != 'position':
        return None
    from vrat_ros.controllers import ControllerError
    from vrat_ros.mpc import pd_rollout_model
    try:
        pd_rollout_model(body)
    except ControllerError as exc:
        return str(exc).replace("the 'mpc' controller", 'RL fine-tuning')
    return None
