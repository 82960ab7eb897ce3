"""Controllers that turn a body's state and a reference clip into actuator commands.

Every controller has the same two calls: `reset(body, clip, t0)` once before a run, then
`torques(body, t)` at each control step, where t is the clip time (s) of the body's current
state. The result is (nu,) commands in the body's actuator order: torques in N m for the rat
(`RatBody`) and for robots with the 'effort' interface, joint targets (rad, m) for robots
with the 'position' interface (`vrat_ros.robots.Robot`; the name `torques` is older than
those). What each controller does on a robot:
  zero    effort: no torque. position: the standing pose's joint angles as targets, which
          is what a trained position policy commands for a zero action (its action_offset).
  pd      position: the reference joint angles of the next control step as targets (the
          robot's own PD loop at physics rate tracks them). effort: kp (q_ref - q) +
          kd (qd_ref - qd) with the robot file's `pd` gains; refused without them. (The rat
          keeps its inertia-scaled PD on actuator lengths.)
  policy  any vrat ONNX policy whose contract fits the body: joints and actuators matched
          by name, the same command interface and root joint.
"""

from __future__ import annotations

import mujoco
import numpy as np
import numpy.typing as npt

from vrat_ros import rat_constants as rc
from vrat_ros.clip import Clip
from vrat_ros.errors import VratError
from vrat_ros.kinematics import quat_to_mat
from vrat_ros.observation import build_observation
from vrat_ros.observation import observation_size
from vrat_ros.rat_model import RatBody
from vrat_ros.robots import Robot
from vrat_ros.robots import RobotSpecError

# The best stable PD on the default 20 s clip, from a sweep of wn 100-250 rad/s and zeta 0-1
# started at 0, 5, 10 and 15 s: wn 225, zeta 0. At 240 and above some starts fall over. The
# joints' own damping already damps the loop; a D term adds nothing measurable at wn 225 and
# destabilises the 50 Hz loop at higher gains.
DEFAULT_PD_WN_RAD_S = 225.0
DEFAULT_PD_ZETA = 0.0


class ControllerError(VratError, ValueError):
    """A controller cannot drive this body (no PD gains, a policy made for another body)."""


def _is_position_robot(body) -> bool:
    return isinstance(body, Robot) and body.command_interface == 'position'


def observation_from_state(
    qpos: npt.ArrayLike,
    qvel: npt.ArrayLike,
    ref_window: npt.ArrayLike,
    joint_idx: npt.ArrayLike,
) -> np.ndarray:
    """Builds the policy observation from a MuJoCo state and a reference window.

    Args:
        qpos: (nq,) current pose: root position (m), root quaternion (w, x, y, z), hinges (rad).
        qvel: (nv,) current velocity: root linear velocity (m/s, world), root angular
            velocity (rad/s, root frame), hinge velocities (rad/s).
        ref_window: (K, nq) reference poses of the next K control steps.
        joint_idx: (J,) hinge indices (into the 67 hinges) the observation reads.

    Returns:
        (observation_size(J, K),) float32 observation.
    """
    qpos = np.asarray(qpos, dtype=np.float64)
    qvel = np.asarray(qvel, dtype=np.float64)
    ref = np.atleast_2d(np.asarray(ref_window, dtype=np.float64))
    idx = np.asarray(joint_idx)
    rot = quat_to_mat(qpos[3:7])  # world from root
    return build_observation(
        joint_pos=qpos[7 + idx], joint_vel=qvel[6 + idx],
        root_pos=qpos[:3], root_quat=qpos[3:7],
        root_linvel_body=rot.T @ qvel[:3], root_angvel_body=qvel[3:6],
        ref_root_pos=ref[:, :3], ref_root_quat=ref[:, 3:7], ref_joint_pos=ref[:, 7 + idx])


class Controller:
    """Interface of all controllers; see the module docstring."""

    name = 'controller'

    def reset(self, body: RatBody, clip: Clip, t0: float) -> None:
        """Prepares a run of `clip` on `body` that starts at clip time `t0` (s)."""
        self._clip = clip

    def torques(self, body: RatBody, t: float) -> np.ndarray:
        """Returns (nu,) actuator torques (N m) for the body's current state at clip time t."""
        raise NotImplementedError


class ZeroController(Controller):
    """The zero action: no torque, or, on a position robot, the targets of its standing pose.

    On the rat and on effort robots this is the passive body under gravity and contacts. A
    position robot has no passive command (its sim zeroes the torque only without any
    command); a position policy's zero action is its action_offset, the standing pose's
    joint angles (`Robot.stand_targets`), so that is what 'zero' holds there.
    """

    name = 'zero'

    def torques(self, body: RatBody | Robot, t: float) -> np.ndarray:
        if _is_position_robot(body):
            try:
                return body.stand_targets()
            except RobotSpecError as exc:
                raise ControllerError(str(exc)) from None
        return np.zeros(body.nu)


class ActuatorKinematics:
    """Linear map from hinge state to actuator lengths and velocities.

    Every rat actuator drives either one hinge or a fixed tendon (a weighted sum of hinges),
    so actuator length = A q_hinges and actuator velocity = A qdot_hinges. The map is read
    from MuJoCo's transmission at construction and checked against it.
    """

    def __init__(self, body: RatBody, qpos: npt.ArrayLike | None = None):
        model = body.model
        data = mujoco.MjData(model)
        data.qpos[:] = body.default_qpos() if qpos is None else np.asarray(qpos)
        mujoco.mj_forward(model, data)
        moment = np.zeros((model.nu, model.nv))
        mujoco.mju_sparse2dense(
            moment, data.actuator_moment, data.moment_rownnz, data.moment_rowadr,
            data.moment_colind)
        if np.any(moment[:, :6] != 0.0):
            raise ValueError('an actuator acts on the free root joint; expected hinges only')
        self.matrix = moment[:, 6:]  # (nu, n_hinges)
        predicted = self.matrix @ data.qpos[7:]
        if not np.allclose(predicted, data.actuator_length, atol=1e-9):
            raise ValueError('actuator lengths are not linear in the hinge angles')

    def lengths(self, qpos: np.ndarray) -> np.ndarray:
        """(nu,) actuator lengths (rad) for a (nq,) pose."""
        return self.matrix @ qpos[7:]

    def velocities(self, qvel: np.ndarray) -> np.ndarray:
        """(nu,) actuator velocities (rad/s) for a (nv,) velocity."""
        return self.matrix @ qvel[6:]


def effective_inertia(body: RatBody, qpos: npt.ArrayLike) -> np.ndarray:
    """Returns (nu,) inertia each actuator sees at `qpos`: 1 / diag(J M^-1 J^T) (kg m^2)."""
    model = body.model
    data = mujoco.MjData(model)
    data.qpos[:] = np.asarray(qpos, dtype=np.float64)
    mujoco.mj_forward(model, data)
    moment = np.zeros((model.nu, model.nv))
    mujoco.mju_sparse2dense(
        moment, data.actuator_moment, data.moment_rownnz, data.moment_rowadr,
        data.moment_colind)
    mass = np.zeros((model.nv, model.nv))
    mujoco.mj_fullM(model, data, mass)
    m_inv_jt = np.linalg.solve(mass, moment.T)  # (nv, nu)
    inv_inertia = np.einsum('an,na->a', moment, m_inv_jt)
    return 1.0 / inv_inertia


def pd_gains(body: RatBody, qpos: npt.ArrayLike, wn_rad_s: float,
             zeta: float) -> tuple[np.ndarray, np.ndarray]:
    """Returns per-actuator PD gains (kp in ctrl/rad, kd in ctrl s/rad) scaled by inertia.

    kp = wn^2 I / fmax and kd = 2 zeta wn I / fmax, with I from `effective_inertia` at
    `qpos` and fmax the actuator's force at ctrl = 1.
    """
    inertia_over_f = effective_inertia(body, qpos) / body.actuator_gain
    return wn_rad_s ** 2 * inertia_over_f, 2.0 * zeta * wn_rad_s * inertia_over_f


class PDController(Controller):
    """Per-actuator PD control toward the reference, with inertia-scaled gains.

    For actuator a with effective inertia I_a and force limit fmax_a the command is
    ctrl = kp (L_ref - L) + kd (Ldot_ref - Ldot) with kp = wn^2 I_a / fmax_a and
    kd = 2 zeta wn I_a / fmax_a, where L is the hinge angle or the fixed-tendon length.
    Uniform gains are unstable on this body because the inertias differ by orders of
    magnitude. The reference is taken `lead_s` ahead of the current time.

    On a `vrat_ros.robots.Robot` it is the robot's own PD instead (see the module
    docstring): `wn_rad_s`, `zeta` and `inertia_qpos` are not used there.

    Args:
        wn_rad_s: closed-loop natural frequency (rad/s).
        zeta: damping ratio.
        lead_s: how far ahead of the state the target is sampled (s); None uses one
            control period (1 / CONTROL_RATE_HZ for the rat, the robot file's for a robot).
        inertia_qpos: (nq,) pose at which the inertias are computed; None uses the clip's
            first frame.
    """

    name = 'pd'

    def __init__(self, wn_rad_s: float = DEFAULT_PD_WN_RAD_S, zeta: float = DEFAULT_PD_ZETA,
                 lead_s: float | None = None, inertia_qpos: npt.ArrayLike | None = None):
        if not (np.isfinite(wn_rad_s) and wn_rad_s > 0 and np.isfinite(zeta) and zeta >= 0):
            raise ValueError(
                f'wn_rad_s should be > 0 and zeta >= 0: got {wn_rad_s} and {zeta}')
        self.wn_rad_s = float(wn_rad_s)
        self.zeta = float(zeta)
        self.lead_s = 1.0 / rc.CONTROL_RATE_HZ if lead_s is None else float(lead_s)
        self._lead_given = lead_s is not None
        self._robot = None  # on a Robot: {'lead_s', 'qpos_adr', 'dof_adr', 'kp', 'kd'}
        self._inertia_qpos = None if inertia_qpos is None else np.asarray(inertia_qpos)
        self.kp = None
        self.kd = None

    def reset(self, body: RatBody | Robot, clip: Clip, t0: float) -> None:
        self._clip = clip
        if isinstance(body, Robot):
            self._reset_robot(body)
            return
        self._robot = None
        pose = clip.qpos[0] if self._inertia_qpos is None else self._inertia_qpos
        self.kin = ActuatorKinematics(body, pose)
        self.kp, self.kd = pd_gains(body, pose, self.wn_rad_s, self.zeta)
        self._gain = body.actuator_gain

    def _reset_robot(self, robot: Robot) -> None:
        spec = robot.spec
        if np.any(robot.actuator_qposadr < 0):
            raise ControllerError(f"the 'pd' controller needs one joint per actuator; robot "
                                  f"'{spec.name}' has actuators on tendons or sites")
        kp = kd = None
        if spec.command_interface == 'effort':
            try:
                kp, kd = robot.pd_gains()
            except RobotSpecError as exc:
                raise ControllerError(f"the 'pd' controller on a robot that takes torques "
                                      f'uses its PD gains: {exc}') from None
        self._robot = {'lead_s': self.lead_s if self._lead_given else spec.control_dt,
                       'qpos_adr': robot.actuator_qposadr, 'dof_adr': robot.actuator_dofadr,
                       'kp': kp, 'kd': kd}

    def _robot_command(self, robot: Robot, t: float) -> np.ndarray:
        r = self._robot
        target_t = t + r['lead_s']
        ref = self._clip.sample(target_t)[r['qpos_adr']]
        if r['kp'] is None:  # position: the reference angles are the targets
            return ref
        ref_vel = self._clip.velocity(target_t)[r['dof_adr']]
        return (r['kp'] * (ref - robot.data.qpos[r['qpos_adr']])
                + r['kd'] * (ref_vel - robot.data.qvel[r['dof_adr']]))

    def command(self, qpos: np.ndarray, qvel: np.ndarray, ref_qpos: np.ndarray,
                ref_qvel: np.ndarray) -> np.ndarray:
        """Returns the (nu,) unclipped command (ctrl units) for a state and a target state."""
        err = self.kin.lengths(ref_qpos) - self.kin.lengths(qpos)
        err_dot = self.kin.velocities(ref_qvel) - self.kin.velocities(qvel)
        return self.kp * err + self.kd * err_dot

    def torques(self, body: RatBody | Robot, t: float) -> np.ndarray:
        if isinstance(body, Robot) and self._robot is not None:
            return self._robot_command(body, t)
        if self.kp is None:
            raise RuntimeError('PDController.reset must be called before torques')
        target_t = t + self.lead_s
        ctrl = self.command(body.data.qpos, body.data.qvel, self._clip.sample(target_t),
                            self._clip.velocity(target_t))
        return ctrl * self._gain


class PolicyController(Controller):
    """Runs an inverse-dynamics policy: observation from the state and the next K frames.

    The policy's joints and actuators are matched to the body's by name, never by order; its
    command interface and root joint must be the body's (a robot's, or the rat's 'effort'
    and 'root').

    Args:
        policy: path of a vrat ONNX policy, or any object with `torques(observation)` and
            the attributes `joint_names`, `reference_frames` and `reference_dt` (such as
            `OnnxPolicy`).
    """

    name = 'policy'

    def __init__(self, policy):
        if isinstance(policy, str):
            from vrat_ros.policy import OnnxPolicy  # onnxruntime only when it is needed
            policy = OnnxPolicy(policy)
        self.policy = policy
        self._joint_idx = None
        self._actuator_order = None

    def reset(self, body: RatBody | Robot, clip: Clip, t0: float) -> None:
        self._clip = clip
        if isinstance(body, Robot):
            what, interface, root = (f"robot '{body.spec.name}'", body.command_interface,
                                     body.spec.root_joint)
        else:
            what, interface, root = 'the rat', rc.COMMAND_INTERFACE, rc.ROOT_JOINT
        policy_interface = getattr(self.policy, 'command_interface', rc.COMMAND_INTERFACE)
        if policy_interface != interface:
            raise ControllerError(f'the policy gives {policy_interface} commands; {what} takes '
                                  f'{interface} commands')
        policy_root = getattr(self.policy, 'root_joint', rc.ROOT_JOINT)
        if policy_root != root:
            raise ControllerError(f"the policy's root joint is {policy_root!r}; {what}'s is "
                                  f'{root!r}')
        index = {n: i for i, n in enumerate(body.hinge_names)}
        missing = [n for n in self.policy.joint_names if n not in index]
        if missing:
            raise ControllerError(f'policy joints missing from {what}: {missing}')
        self._joint_idx = np.array([index[n] for n in self.policy.joint_names])
        expected = observation_size(len(self._joint_idx), self.policy.reference_frames)
        size = getattr(self.policy, 'observation_size', expected)
        if size != expected:
            raise ControllerError(
                f'policy observation size {size} does not match {expected} for '
                f'{len(self._joint_idx)} joints and {self.policy.reference_frames} frames')
        actuators = list(getattr(self.policy, 'actuator_names', body.actuator_names))
        if sorted(actuators) != sorted(body.actuator_names) or len(set(actuators)) != len(
                actuators):
            unknown = [n for n in actuators if n not in body.actuator_names]
            lacking = [n for n in body.actuator_names if n not in actuators]
            raise ControllerError(f'policy actuators differ from those of {what}: unknown '
                                  f'{unknown[:5]}, missing {lacking[:5]}')
        # Commands come in the policy's actuator order; the body takes its own.
        order = [actuators.index(n) for n in body.actuator_names]
        self._actuator_order = None if order == list(range(len(order))) else np.array(order)

    def observation(self, body: RatBody | Robot, t: float) -> np.ndarray:
        """Returns the observation for the body's current state at clip time t."""
        dt = self.policy.reference_dt
        window = self._clip.window(t + dt, self.policy.reference_frames, dt)
        return observation_from_state(body.data.qpos, body.data.qvel, window, self._joint_idx)

    def torques(self, body: RatBody | Robot, t: float) -> np.ndarray:
        if self._joint_idx is None:
            raise RuntimeError('PolicyController.reset must be called before torques')
        command = np.asarray(self.policy.torques(self.observation(body, t)), dtype=np.float64)
        return command if self._actuator_order is None else command[self._actuator_order]
