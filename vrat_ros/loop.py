"""The closed ROS loop in one process: reference, policy and a lockstep sim on one executor.

`run_ros_loop` is what `vrat run` uses. Messages go through ROS topics exactly as with three
processes, but the lockstep sim makes the run deterministic, so its trajectory can be compared
with the inline rollout (`vrat_ros.rollout`), which needs no ROS.

With `activations_path`, each command's observation, reference window, action and hidden
activations are taken from the policy node in this process (`PolicyNode.on_step`) and written
to HDF5 at the end (`vrat_ros.activations`). `lesions` perturb the network's hidden layers
for the whole run (`vrat_ros.introspection`).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time

import numpy as np

from vrat_ros.clip import Clip
from vrat_ros.policy import read_contract
from vrat_ros.policy import root_joint
from vrat_ros.ros_messages import seconds_to_ns
from vrat_ros.ros_messages import stamp_to_ns

_RUN_IDS = itertools.count()


@dataclasses.dataclass
class RosLoopResult:
    """What one ROS loop run recorded. T counts control steps, including the initial state.

    Attributes:
        times: (T,) clip times of the recorded states (s).
        qpos: (T, nq) sim poses rebuilt from joint_states and odom (matched by name).
        ref_qpos: (T, nq) reference poses at `times` (clip.sample, body hinge order).
        torques: (T - 1, nu) commands the sim received on policy/effort (torques, N m) or
            policy/position (joint targets, for a position robot), in body actuator order.
        n_saturated: actuator-steps whose torque the sim clamped to the force limit.
        rejected_commands: commands the sim rejected.
        sim_seconds: simulated time covered (s).
        wall_seconds: wall time from the initial state to the last (s); start-up excluded.
        halted: the sim stopped early because the physics diverged.
        activations_path: the activation recording written, or None.
        lesions: the lesions applied, {layer: {field: value}}.
    """

    times: np.ndarray
    qpos: np.ndarray
    ref_qpos: np.ndarray
    torques: np.ndarray
    n_saturated: int
    rejected_commands: int
    sim_seconds: float
    wall_seconds: float
    halted: bool
    activations_path: str | None = None
    lesions: dict = dataclasses.field(default_factory=dict)

    @property
    def n_control_steps(self) -> int:
        return int(self.torques.shape[0])

    @property
    def steps_per_second(self) -> float:
        """Control steps per wall second."""
        return self.n_control_steps / self.wall_seconds if self.wall_seconds > 0 else 0.0


class _Recorder:
    """Keeps the last joint state, odometry and command of each stamp, by name."""

    def __init__(self, node, hinge_names: list[str], actuator_names: list[str],
                 command_topic: str = 'policy/effort', command_field: str = 'effort'):
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import JointState
        self._hinges = list(hinge_names)
        self._actuators = list(actuator_names)
        self.joints = {}
        self.roots = {}
        self.torques = {}
        self._field = command_field
        node.create_subscription(JointState, 'joint_states', self._on_joint_state, 50)
        node.create_subscription(Odometry, 'odom', self._on_odom, 50)
        node.create_subscription(JointState, command_topic, self._on_effort, 50)

    @staticmethod
    def _by_name(names, values, wanted: list[str]) -> np.ndarray:
        index = {n: i for i, n in enumerate(names)}
        return np.array([values[index[n]] for n in wanted], dtype=np.float64)

    def _on_joint_state(self, msg) -> None:
        self.joints[stamp_to_ns(msg.header.stamp)] = self._by_name(
            msg.name, msg.position, self._hinges)

    def _on_odom(self, msg) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        self.roots[stamp_to_ns(msg.header.stamp)] = np.array([p.x, p.y, p.z, q.w, q.x, q.y, q.z])

    def _on_effort(self, msg) -> None:
        self.torques[stamp_to_ns(msg.header.stamp)] = self._by_name(
            msg.name, getattr(msg, self._field), self._actuators)

    def has_state(self, stamp_ns: int) -> bool:
        return stamp_ns in self.joints and stamp_ns in self.roots

    def qpos(self, stamp_ns: int) -> np.ndarray:
        return np.concatenate([self.roots[stamp_ns], self.joints[stamp_ns]])


def run_ros_loop(
    clip_path: str,
    policy_path: str,
    seconds: float | None = None,
    start_time_s: float = 0.0,
    body_scale: float | None = None,
    progress: bool = False,
    domain_id: int | None = None,
    stall_timeout_s: float = 30.0,
    namespace: str | None = None,
    record_path: str | None = None,
    activations_path: str | None = None,
    lesions: dict | None = None,
    lesion_seed: int = 0,
    publish_activations: bool = False,
    robot: str = 'rat',
) -> RosLoopResult:
    """Run reference, policy and a lockstep sim in this process until the run's end.

    The nodes get their own rclpy Context (so this can run many times in one process) and a
    namespace of their own, /clock included, so that other ROS graphs in the same domain are
    neither heard nor disturbed.

    Args:
        clip_path: reference clip (.npz).
        policy_path: ONNX policy with a vrat contract; its control rate and reference window
            configure the sim and the reference node.
        seconds: sim time to run (s); None runs to the end of the clip. It is cut at the clip's
            end and rounded down to whole control periods.
        start_time_s: clip time of the initial state (s).
        body_scale: length scale of the body; None keeps the robot file's (0.9 for the rat).
        progress: show a tqdm progress bar.
        domain_id: ROS domain id; None takes ROS_DOMAIN_ID from the environment.
        stall_timeout_s: give up when no new state arrives for this long (wall s).
        namespace: ROS namespace of the nodes and their topics; None picks a private one.
            `vrat run` passes '/', so the run can be watched and recorded on plain topics.
        record_path: also write every topic of the run to this MCAP file (needs `mcap`).
        activations_path: also write the policy's per-step inputs, outputs and hidden
            activations to this HDF5 file (needs h5py); written only if the run succeeds.
        lesions: perturb hidden layers, {layer: {'silence': [units], 'clamp': [units],
            'clamp_value': x, 'noise': [units], 'noise_std': s}} (`introspection`).
        lesion_seed: seed of the noise lesions.
        publish_activations: the policy node also publishes ~/observation and
            ~/activations/<layer> on each step.
        robot: the body, a robot name in config/robots or a robot YAML path (`robots.py`);
            its command interface must be the policy's.

    Returns:
        The `RosLoopResult`.

    Raises:
        ValueError: bad times, or a lesion names an unknown layer, field or unit.
        RuntimeError: the loop stalled.
        VratError: the clip or the policy cannot be loaded.
    """
    import rclpy
    from rclpy.context import Context
    from vrat_ros.node_main import events_executor
    from rclpy.parameter import Parameter

    from vrat_ros.introspection import LayerLesion
    from vrat_ros.introspection import lesions_to_parameters
    from vrat_ros.policy_node import PolicyNode
    from vrat_ros.reference_node import ReferenceNode
    from vrat_ros.sim_node import RatSimNode

    # Timing of the run, from the policy's contract and the clip.
    contract = read_contract(policy_path)
    rate_hz = float(contract['control_rate_hz'])
    clip = Clip.load(clip_path)
    if not 0.0 <= start_time_s < clip.duration_s:
        raise ValueError(
            f'start_time_s should be in [0, {clip.duration_s:.3f}) s: got {start_time_s}')
    available_s = clip.duration_s - start_time_s
    seconds = available_s if seconds is None else min(float(seconds), available_s)
    if not seconds > 0.0:
        raise ValueError(f'seconds should be positive: got {seconds}')
    from vrat_ros.robots import load_robot_spec
    robot_rate = float(load_robot_spec(robot).control_rate_hz)
    if abs(robot_rate - rate_hz) > 1e-9:
        raise ValueError(f"the policy was trained at {rate_hz:g} Hz but robot "
                         f"'{robot}' is controlled at {robot_rate:g} Hz (its file's timing); "
                         'use a policy trained for this rate or a robot file with its rate')
    n_steps = int(np.floor(seconds * rate_hz + 1e-9))
    if n_steps < 1:
        raise ValueError(f'seconds should cover at least one control period '
                         f'({1.0 / rate_hz:g} s at {rate_hz:g} Hz): got {seconds:g}')
    period_ns = seconds_to_ns(1.0 / rate_hz)
    unknown = [layer for layer in (lesions or {}) if layer not in contract['layers']]
    if unknown:
        raise ValueError(f"lesions name layers {unknown} that the policy lacks; its layers "
                         f"are {contract['layers']}")
    lesion_parameters = lesions_to_parameters(lesions)  # checks fields; the node checks units
    applied_lesions = {layer: (lesion if isinstance(lesion, LayerLesion)
                               else LayerLesion.from_dict(lesion)).to_dict()
                       for layer, lesion in (lesions or {}).items()}

    # The nodes, in a context and namespace of their own.
    context = Context()
    rclpy.init(context=context, args=[], domain_id=domain_id)
    if namespace is None:
        namespace = f'/vrat_loop_{os.getpid()}_{next(_RUN_IDS)}'
    clock_topic = f'{namespace.rstrip("/")}/clock'
    nodes = []
    mcap = None

    def make(cls, **parameters):
        # No parameter services: nobody reconfigures these nodes, and every entity in the
        # executor's wait set costs time on each of the ~10 waits per control step.
        node = cls(context=context, namespace=namespace, start_parameter_services=False,
                   cli_args=['--ros-args', '-r', f'/clock:={clock_topic}'],
                   parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        nodes.append(node)
        return node

    bar = executor = None
    try:
        scale = {} if body_scale is None else {'body_scale': float(body_scale)}
        sim = make(RatSimNode, robot=str(robot), mode='lockstep', control_rate_hz=rate_hz,
                   clip_file=clip_path, start_time_s=start_time_s, publish_clock=True,
                   **scale)
        if sim.command_interface != contract['command_interface']:
            raise ValueError(
                f"robot '{sim.robot_spec.name}' takes {sim.command_interface} commands; the "
                f"policy's contract gives {contract['command_interface']} commands")
        reference = make(
            ReferenceNode, clip_file=clip_path, start_time_s=start_time_s,
            control_rate_hz=rate_hz, window_frames=int(contract['reference']['frames']),
            window_dt_s=float(contract['reference']['dt_s']),
            root_joint=root_joint(contract), use_sim_time=True)
        policy = make(PolicyNode, policy_file=policy_path, use_sim_time=True,
                      publish_activations=publish_activations, lesion_seed=int(lesion_seed),
                      **lesion_parameters)
        steps = {}
        if activations_path is not None:
            policy.on_step = lambda step: steps.__setitem__(step.stamp_ns, step)
        recorder_node = rclpy.create_node('recorder', context=context, namespace=namespace,
                                          start_parameter_services=False)
        nodes.append(recorder_node)
        recorder = _Recorder(recorder_node, sim.body.hinge_names, sim.body.actuator_names,
                             sim.command_topic, sim.command_interface)
        if record_path is not None:
            from vrat_ros.recorder import McapRecorder
            mcap = McapRecorder(recorder_node, record_path, discovery_period_s=0.05)
        # Callbacks dispatched in C++: about 1.3x the steps/s of the Python executor.
        executor = events_executor(context)
        for node in nodes:
            executor.add_node(node)
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=n_steps, desc='ROS loop', unit='step')

        # Start as soon as every link is matched, rather than at the sim's next republish.
        extra = int(mcap is not None)  # the MCAP recorder subscribes to every topic too
        links = ((sim.joint_state_pub, 2 + extra), (sim.odom_pub, 2 + extra),
                 (sim.clock_pub, 1 + extra), (reference.joint_pub, 1 + extra),
                 (reference.root_pub, 1 + extra), (policy.effort_pub, 2 + extra))
        deadline = time.monotonic() + stall_timeout_s
        while ((any(pub.get_subscription_count() < n for pub, n in links)
                or reference.clock_sub.get_publisher_count() < 1)
               and time.monotonic() < deadline):
            executor.spin_once(timeout_sec=0.01)
        sim.publish_now()

        # Spin until the last state is recorded (or the sim halts, or nothing moves).
        stamps = [k * period_ns for k in range(n_steps + 1)]

        def recorded(k: int) -> bool:  # state k and the command that led to it
            return recorder.has_state(stamps[k]) and (k == 0 or stamps[k - 1] in recorder.torques)

        done = 0
        start = None
        last_progress = time.monotonic()
        drain = 20  # after a halt, a few more spins collect what is already on its way
        while done <= n_steps and drain > 0:
            executor.spin_once(timeout_sec=0.05 if not sim.halted else 0.01)
            drain -= int(sim.halted)
            before = done
            while done <= n_steps and recorded(done):
                done += 1
            if done > before:
                last_progress = time.monotonic()
                if start is None:
                    start = time.perf_counter()  # the initial state: stepping starts
                if bar is not None:
                    bar.update(max(done - 1, 0) - bar.n)
            elif time.monotonic() - last_progress > stall_timeout_s:
                raise RuntimeError(
                    f'ROS loop stalled at sim time {sim.time_ns * 1e-9:.3f} s: no new state '
                    f'for {stall_timeout_s} s ({len(recorder.torques)} commands received)')
        wall = time.perf_counter() - start if start is not None else 0.0
        for _ in range(10 if mcap is not None else 0):  # let the recorder hear the last step
            executor.spin_once(timeout_sec=0.01)
        n_saturated, rejected, halted = sim.n_saturated, sim.rejected_commands, sim.halted
        if done == 0:
            raise RuntimeError('the sim halted before its initial state was recorded')
    finally:
        if bar is not None:
            bar.close()
        if mcap is not None:
            mcap.close()
        if executor is not None:
            executor.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=context)

    # Rebuild the arrays from what the recorder heard.
    kept = stamps[:done]
    qpos = np.stack([recorder.qpos(s) for s in kept])
    torques = np.array([recorder.torques[s] for s in kept[:-1]]).reshape(-1, sim.body.nu)
    times = start_time_s + np.array(kept) * 1e-9
    body_clip = clip.reorder_to(sim.body.hinge_names)
    ref_qpos = np.stack([body_clip.sample(t) for t in times])
    if activations_path is not None:
        _write_activations(activations_path, steps, kept[:-1], qpos, sim.body.hinge_names,
                           clip=clip, clip_path=clip_path, policy_path=policy_path,
                           contract=contract, start_time_s=start_time_s, parameters={
                               'seconds': seconds, 'start_time_s': start_time_s,
                               'body_scale': sim.body.scale, 'control_rate_hz': rate_hz,
                               'n_control_steps': len(kept) - 1, 'halted': bool(halted),
                               'lesions': applied_lesions, 'lesion_seed': int(lesion_seed)})
    return RosLoopResult(
        times=times, qpos=qpos, ref_qpos=ref_qpos, torques=torques, n_saturated=n_saturated,
        rejected_commands=rejected, sim_seconds=(done - 1) * period_ns * 1e-9,
        wall_seconds=wall, halted=halted, activations_path=activations_path,
        lesions=applied_lesions)


def _write_activations(path: str, steps: dict, stamps: list[int], qpos: np.ndarray,
                       hinge_names: list[str], **kwargs) -> None:
    """Writes the policy steps of the commands the sim applied (one per state but the last)."""
    from vrat_ros.activations import write_activations
    missing = [s for s in stamps if s not in steps]
    if missing:
        raise RuntimeError(f'{len(missing)} commands have no recorded policy step, the first '
                           f'at {missing[0] * 1e-9:.3f} s')
    write_activations(path, [steps[s] for s in stamps], qpos=qpos[:len(stamps)],
                      hinge_names=hinge_names, **kwargs)
