"""`vrat bench`: how fast the loop runs with and without ROS, measured side by side in one run.

Five measurements, one after the other in this process tree:
  inline         MuJoCo physics and the ONNX policy called directly, no ROS
  ros_processes  the lockstep loop through the sim, reference and policy node executables,
                 three processes, timed from the /clock a probe hears (one per step); the
                 resident memory of each process is read from /proc/PID/status as it runs
  ros_in_process the same loop on one executor in this process (`vrat_ros.loop`)
  latency        the policy node as a process: joint state in -> command out, round trip
                 as a driver sees it, over many messages
  realtime       the sim node in realtime mode at several control rates: jitter of the
                 control period, from its stamps (sender) and from arrival times (receiver)

Every node process runs in a private namespace, /clock included, and is stopped by its PID.
Numbers are printed and optionally written as JSON; nothing here asserts a speed.

The JSON report's headline keys (`run_bench`):
  steps_per_s, realtime_factor   {loop: value} for inline, ros_processes, ros_in_process
  ratio_lockstep_processes       ROS loop, three processes, steps/s over the inline loop's
  ratio_lockstep_one_process     ROS loop, one process, steps/s over the inline loop's
  latency_ms                     {p50, p99, max} of the policy node's round trip
  jitter_p99_ms                  {rate: p99 |period error| (ms)} of the realtime sim's steps
  memory_mb, memory_mb_total     peak resident memory (VmHWM, MiB) of each node process of the
                                 three-process loop, and their sum
  targets, targets_met           the targets of the README and whether this run met each
with the details under modes, policy_latency, realtime_jitter and memory_detail.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from vrat_ros.errors import VratError

DEFAULT_RATES_HZ = (50.0, 100.0, 500.0)
_PERCENTILES = (50, 90, 99)
# ROS node name of each node module, as memory_mb names them.
NODE_NAMES = {'sim_node': 'rat_sim', 'reference_node': 'reference', 'policy_node': 'policy'}
# The targets the README states, as (report key, comparison, bound).
TARGETS = (
    ('ratio_lockstep_processes', '>=', 0.8),
    ('ratio_lockstep_one_process', '>=', 0.8),
    ('latency_ms.p50', '<', 0.5),
    ('latency_ms.p99', '<', 2.0),
    ('jitter_p99_ms.*', '<', 1.0),
    ('memory_mb_total', '<', 400.0),
)


class BenchError(VratError):
    """A benchmark could not run: a node failed to start or the loop stalled."""


# The inline loop.

def bench_inline(clip_path: str, policy_path: str, seconds: float) -> dict:
    """Steps MuJoCo and the ONNX policy directly for `seconds` of sim time.

    Returns:
        {'steps', 'wall_s', 'steps_per_s', 'realtime_factor'}.
    """
    from vrat_ros.clip import Clip
    from vrat_ros.kinematics import quat_to_mat
    from vrat_ros.observation import build_observation
    from vrat_ros.policy import OnnxPolicy
    from vrat_ros.rat_model import RatBody

    clip = Clip.load(clip_path)
    body = RatBody(scale=clip.body_scale)
    clip = clip.reorder_to(body.hinge_names)
    policy = OnnxPolicy(policy_path)
    idx = np.array([body.hinge_names.index(n) for n in policy.joint_names])
    rate_hz = policy.control_rate_hz
    n_substeps = int(round(1.0 / (rate_hz * body.timestep)))
    dt, k_frames = policy.reference_dt, policy.reference_frames
    n_steps = max(int(seconds * rate_hz), 1)
    body.reset(clip.sample(0.0), clip.velocity(0.0))

    start = time.perf_counter()
    for step in range(n_steps):
        q, v = body.data.qpos, body.data.qvel
        ref = clip.window(step / rate_hz + dt, k_frames, dt)
        obs = build_observation(q[7 + idx], v[6 + idx], q[:3], q[3:7],
                                quat_to_mat(q[3:7]).T @ v[:3], v[3:6],
                                ref[:, :3], ref[:, 3:7], ref[:, 7 + idx])
        body.set_ctrl_from_torque(policy.torques(obs))
        body.step(n_substeps)
        if not body.state_is_finite():
            raise BenchError(f'the inline loop diverged at step {step}')
    wall = time.perf_counter() - start
    return _rate_entry(n_steps, wall, rate_hz)


def _rate_entry(steps: int, wall_s: float, rate_hz: float) -> dict:
    sps = steps / wall_s
    return {'steps': int(steps), 'wall_s': wall_s, 'steps_per_s': sps,
            'realtime_factor': sps / rate_hz}


# Node processes.

class NodeProcesses:
    """Starts node executables as processes in one namespace and stops them by PID.

    Args:
        namespace: absolute namespace of every node; /clock is remapped into it.
        log_dir: where each process's output goes (`<module>.log`).
    """

    def __init__(self, namespace: str, log_dir: str):
        self.namespace = namespace
        self.log_dir = log_dir
        self._procs = []

    def start(self, module: str, **params) -> subprocess.Popen:
        args = [sys.executable, '-m', f'vrat_ros.{module}', '--ros-args',
                '-r', f'__ns:={self.namespace}', '-r', f'/clock:={self.namespace}/clock']
        for key, value in params.items():
            if isinstance(value, bool):
                value = 'true' if value else 'false'
            args += ['-p', f'{key}:={value}']
        path = os.path.join(self.log_dir, f'{self.namespace.strip("/").replace("/", "_")}_'
                            f'{module}.log')
        log = open(path, 'w')
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self._procs.append((module, proc, log, path))
        return proc

    def check_alive(self) -> None:
        """Raises BenchError naming a process that exited, with the end of its output."""
        for module, proc, _, path in self._procs:
            if proc.poll() is not None:
                with open(path) as f:
                    tail = f.read()[-2000:]
                raise BenchError(f'{module} exited with code {proc.returncode}:\n{tail}')

    def stop(self, timeout_s: float = 15.0) -> dict:
        """SIGINT to each process, then SIGKILL after `timeout_s`; returns the exit codes."""
        for _, proc, _, _ in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        codes = {}
        for module, proc, log, _ in self._procs:
            try:
                codes[module] = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[module] = proc.wait()
            log.close()
        self._procs = []
        return codes

    def memory_mb(self) -> dict:
        """{module: {'rss_mb', 'peak_mb'}} of each running process (VmRSS, VmHWM; MiB)."""
        out = {}
        for module, proc, _, _ in self._procs:
            out[module] = read_memory_mb(proc.pid)
        return out


def read_memory_mb(pid: int) -> dict:
    """Resident memory of a process from /proc/PID/status: {'rss_mb', 'peak_mb'} (MiB).

    Raises:
        BenchError: the process is gone or the kernel does not report it (not Linux).
    """
    fields = {}
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key in ('VmRSS', 'VmHWM'):
                    fields[key] = int(value.split()[0]) / 1024.0  # kB -> MiB
    except OSError as exc:
        raise BenchError(f'cannot read the memory of process {pid}: {exc}') from exc
    if len(fields) != 2:
        raise BenchError(f'/proc/{pid}/status reports no VmRSS and VmHWM')
    return {'rss_mb': fields['VmRSS'], 'peak_mb': fields['VmHWM']}


class _Probe:
    """An rclpy node of its own context that listens and talks to the processes."""

    def __init__(self, namespace: str):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        self.context = Context()
        rclpy.init(context=self.context, args=[])
        self.node = rclpy.create_node('bench_probe', context=self.context, namespace=namespace,
                                      start_parameter_services=False)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate, timeout_s: float, procs: NodeProcesses | None = None,
                   what: str = '') -> None:
        deadline = time.monotonic() + timeout_s
        checked = time.monotonic()
        while not predicate():
            if time.monotonic() > deadline:
                raise BenchError(f'timed out after {timeout_s:g} s waiting for {what}')
            self.executor.spin_once(timeout_sec=0.01)
            if procs is not None and time.monotonic() - checked > 0.5:
                procs.check_alive()
                checked = time.monotonic()

    def close(self) -> None:
        import rclpy
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@contextlib.contextmanager
def _graph(namespace: str, log_dir: str):
    procs = NodeProcesses(namespace, log_dir)
    probe = None
    try:
        probe = _Probe(namespace)
        yield procs, probe
    finally:
        procs.stop()
        if probe is not None:
            probe.close()


def _stamps_listener(probe: _Probe, topic: str, depth: int = 1000) -> list:
    """Subscribes to a JointState topic; returns the list of (arrival s, stamp ns)."""
    from sensor_msgs.msg import JointState

    from vrat_ros.ros_messages import stamp_to_ns
    seen = []

    def on_msg(msg: JointState) -> None:
        seen.append((time.perf_counter(), stamp_to_ns(msg.header.stamp)))
    probe.node.create_subscription(JointState, topic, on_msg, depth)
    return seen


def _clock_listener(probe: _Probe) -> list:
    """Subscribes to the namespace's /clock; returns the list of (arrival s, clock ns).

    The lockstep sim sends /clock once per control step, just before the state it stamps:
    the lightest way for the probe to follow the loop without loading it.
    """
    from rosgraph_msgs.msg import Clock

    from vrat_ros.ros_messages import stamp_to_ns
    seen = []

    def on_msg(msg: Clock) -> None:
        seen.append((time.perf_counter(), stamp_to_ns(msg.clock)))
    probe.node.create_subscription(Clock, 'clock', on_msg, 1000)
    return seen


def bench_ros_processes(clip_path: str, policy_path: str, seconds: float, namespace: str,
                        log_dir: str, startup_timeout_s: float = 60.0) -> dict:
    """The lockstep loop through three node processes, for `seconds` of sim time.

    Steps per second come from the sim times the probe hears on /clock: the sim time they
    cover over the wall time between hearing them, start-up excluded. The entry also holds
    'node_memory', {module: {'rss_mb', 'peak_mb'}} of each process at the end of the run.
    """
    from vrat_ros.policy import read_contract
    contract = read_contract(policy_path)
    rate_hz = float(contract['control_rate_hz'])
    with _graph(namespace, log_dir) as (procs, probe):
        seen = _clock_listener(probe)
        procs.start('sim_node', mode='lockstep', control_rate_hz=rate_hz, clip_file=clip_path)
        procs.start('reference_node', clip_file=clip_path, control_rate_hz=rate_hz,
                    window_frames=int(contract['reference']['frames']),
                    window_dt_s=float(contract['reference']['dt_s']), use_sim_time=True)
        procs.start('policy_node', policy_file=policy_path, use_sim_time=True)
        # Started: the stamps move. Then time `seconds` of sim time from the next new stamp.
        probe.spin_until(lambda: len({s for _, s in seen}) >= 3, startup_timeout_s, procs,
                         'the three-process loop to start stepping')
        first_wall, first_stamp = seen[-1]
        target = first_stamp + int(seconds * 1e9)
        stall_s = max(30.0, 20.0 * seconds)
        probe.spin_until(lambda: seen[-1][1] >= target, stall_s, procs,
                         f'{seconds:g} s of sim time in the three-process loop')
        last_wall, last_stamp = seen[-1]
        memory = procs.memory_mb()  # while they run: a process that has exited has no status
    steps = int(round((last_stamp - first_stamp) * 1e-9 * rate_hz))
    entry = _rate_entry(steps, last_wall - first_wall, rate_hz)
    entry['node_memory'] = memory
    return entry


def bench_ros_in_process(clip_path: str, policy_path: str, seconds: float,
                         namespace: str) -> dict:
    """The same loop on one executor in this process (`vrat_ros.loop.run_ros_loop`)."""
    from vrat_ros.loop import run_ros_loop
    from vrat_ros.policy import read_contract
    rate_hz = float(read_contract(policy_path)['control_rate_hz'])
    result = run_ros_loop(clip_path, policy_path, seconds=seconds, namespace=namespace)
    if result.n_control_steps < 1 or result.wall_seconds <= 0.0:
        raise BenchError('the in-process loop made no step')
    return _rate_entry(result.n_control_steps, result.wall_seconds, rate_hz)


# Policy latency.

def _latency_messages(clip_path: str, policy_path: str):
    """Joint state, odometry and reference windows of one clip state, to re-stamp and send."""
    from geometry_msgs.msg import Transform
    from geometry_msgs.msg import Vector3
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory
    from trajectory_msgs.msg import JointTrajectoryPoint
    from trajectory_msgs.msg import MultiDOFJointTrajectory
    from trajectory_msgs.msg import MultiDOFJointTrajectoryPoint

    from vrat_ros import rat_constants as rc
    from vrat_ros.clip import Clip
    from vrat_ros.kinematics import quat_to_mat
    from vrat_ros.policy import read_contract
    from vrat_ros.ros_messages import ns_to_duration
    from vrat_ros.ros_messages import quat_wxyz_to_msg
    from vrat_ros.ros_messages import seconds_to_ns

    contract = read_contract(policy_path)
    clip = Clip.load(clip_path)
    t = min(0.5, clip.duration_s / 2.0)
    qpos, qvel = clip.sample(t), clip.velocity(t)
    js = JointState(name=list(clip.joint_names), position=qpos[7:].tolist(),
                    velocity=qvel[6:].tolist())
    odom = Odometry()
    odom.pose.pose.position.x, odom.pose.pose.position.y = qpos[0], qpos[1]
    odom.pose.pose.position.z = qpos[2]
    odom.pose.pose.orientation = quat_wxyz_to_msg(qpos[3:7])
    lin = quat_to_mat(qpos[3:7]).T @ qvel[:3]
    odom.twist.twist.linear = Vector3(x=lin[0], y=lin[1], z=lin[2])
    odom.twist.twist.angular = Vector3(x=qvel[3], y=qvel[4], z=qvel[5])
    dt_ns = seconds_to_ns(contract['reference']['dt_s'])
    joints = JointTrajectory(joint_names=list(clip.joint_names))
    root = MultiDOFJointTrajectory(joint_names=[rc.ROOT_JOINT])
    for k in range(1, int(contract['reference']['frames']) + 1):
        q = clip.sample(t + k * dt_ns * 1e-9)
        after = ns_to_duration(k * dt_ns)
        joints.points.append(JointTrajectoryPoint(positions=q[7:].tolist(),
                                                  time_from_start=after))
        pose = Transform(translation=Vector3(x=q[0], y=q[1], z=q[2]),
                         rotation=quat_wxyz_to_msg(q[3:7]))
        root.points.append(MultiDOFJointTrajectoryPoint(transforms=[pose],
                                                        time_from_start=after))
    period_ns = seconds_to_ns(1.0 / float(contract['control_rate_hz']))
    return js, odom, joints, root, period_ns


def bench_policy_latency(clip_path: str, policy_path: str, messages: int, namespace: str,
                         log_dir: str, startup_timeout_s: float = 60.0,
                         warmup: int = 20) -> dict:
    """Round trip joint state -> command through a policy node process, `messages` times.

    For each message the probe publishes the odometry of stamp t, then the joint state, and
    waits for the command stamped t; the time from publishing the joint state to receiving
    the command is one sample. The reference windows for t go out before, untimed, right
    after the previous command: the reference node sends them independently of the driver,
    so they are not part of the driver's round trip. The sample includes the probe's own
    receiving (a Python executor), so it is an upper bound of the policy node's share.
    """
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory
    from trajectory_msgs.msg import MultiDOFJointTrajectory

    from vrat_ros.ros_messages import ns_to_time
    from vrat_ros.ros_messages import stamp_to_ns

    js, odom, joints, root, period_ns = _latency_messages(clip_path, policy_path)
    answered = {}
    with _graph(namespace, log_dir) as (procs, probe):
        node = probe.node
        pubs = [node.create_publisher(JointTrajectory, 'reference/joint_trajectory', 10),
                node.create_publisher(MultiDOFJointTrajectory, 'reference/root_trajectory', 10),
                node.create_publisher(Odometry, 'odom', 10),
                node.create_publisher(JointState, 'joint_states', 10)]

        def on_command(msg: JointState) -> None:
            answered.setdefault(stamp_to_ns(msg.header.stamp), time.perf_counter())
        node.create_subscription(JointState, 'policy/effort', on_command, 10)
        procs.start('policy_node', policy_file=policy_path)
        probe.spin_until(lambda: all(p.get_subscription_count() > 0 for p in pubs),
                         startup_timeout_s, procs, 'the policy node to subscribe')
        probe.spin_until(lambda: node.count_publishers('policy/effort') > 0,
                         startup_timeout_s, procs, 'the policy node to publish')

        def send_windows(stamp_ns: int) -> None:
            for pub, msg in zip(pubs[:2], (joints, root)):
                msg.header.stamp = ns_to_time(stamp_ns)
                pub.publish(msg)

        samples, lost = [], 0
        send_windows(period_ns)
        for i in range(warmup + messages):
            stamp_ns = (i + 1) * period_ns
            stamp = ns_to_time(stamp_ns)
            odom.header.stamp = js.header.stamp = stamp
            pubs[2].publish(odom)
            sent = time.perf_counter()
            pubs[3].publish(js)
            try:
                probe.spin_until(lambda: stamp_ns in answered, 2.0, procs,
                                 f'the command for message {i}')
            except BenchError:
                procs.check_alive()
                lost += 1
                send_windows(stamp_ns + period_ns)
                continue
            send_windows(stamp_ns + period_ns)
            if i >= warmup:
                samples.append(answered.pop(stamp_ns) - sent)
            else:
                answered.pop(stamp_ns)
    if not samples:
        raise BenchError('the policy node answered no message')
    ms = np.asarray(samples) * 1e3
    entry = {'messages': len(samples), 'lost': lost, 'mean_ms': float(ms.mean()),
             'max_ms': float(ms.max()), 'min_ms': float(ms.min())}
    for p in _PERCENTILES:
        entry[f'p{p}_ms'] = float(np.percentile(ms, p))
    return entry


# Realtime jitter.

def _jitter(times_s: np.ndarray, period_s: float) -> dict:
    gaps = np.diff(times_s)
    error_ms = np.abs(gaps - period_s) * 1e3
    entry = {'mean_period_ms': float(gaps.mean() * 1e3),
             'std_period_ms': float(gaps.std() * 1e3),
             'max_error_ms': float(error_ms.max()),
             'late': int(np.count_nonzero(gaps > 1.5 * period_s))}
    for p in _PERCENTILES:
        entry[f'p{p}_error_ms'] = float(np.percentile(error_ms, p))
    return entry


def bench_realtime(rate_hz: float, seconds: float, namespace: str, log_dir: str,
                   clip_path: str, startup_timeout_s: float = 60.0) -> dict:
    """Control period of the realtime sim node at `rate_hz`, measured for `seconds`.

    The sim runs as a process without /clock, so its stamps are its wall clock at each step
    (the sender's view); the arrival times at the probe add the transport (the receiver's).
    """
    with _graph(namespace, log_dir) as (procs, probe):
        seen = _stamps_listener(probe, 'joint_states', depth=max(1000, int(rate_hz * 4)))
        procs.start('sim_node', mode='realtime', control_rate_hz=float(rate_hz),
                    clip_file=clip_path, publish_clock=False, command_timeout_s=0.0)
        probe.spin_until(lambda: len(seen) >= 5, startup_timeout_s, procs,
                         f'the realtime sim at {rate_hz:g} Hz to publish')
        start = len(seen)
        wanted = start + max(int(seconds * rate_hz), 10)
        probe.spin_until(lambda: len(seen) >= wanted, 30.0 + 4.0 * seconds, procs,
                         f'{seconds:g} s of the realtime sim at {rate_hz:g} Hz')
        window = seen[start:wanted]
    arrivals = np.array([a for a, _ in window])
    stamps = (np.array([s for _, s in window], dtype=np.int64) - window[0][1]) * 1e-9
    period = 1.0 / rate_hz
    span = stamps[-1] - stamps[0]
    return {'rate_hz': float(rate_hz), 'samples': len(window),
            'achieved_hz': (len(window) - 1) / span,
            'sender': _jitter(stamps, period), 'receiver': _jitter(arrivals, period)}


# The whole benchmark.

def run_bench(clip_path: str, policy_path: str, seconds: float = 5.0, messages: int = 10000,
              rates_hz=DEFAULT_RATES_HZ, startup_timeout_s: float = 60.0,
              log_dir: str | None = None, progress=None) -> dict:
    """Runs the five measurements; returns the report (see the module docstring).

    Args:
        clip_path: reference clip (.npz).
        policy_path: ONNX policy with a vrat contract.
        seconds: sim seconds of each lockstep loop; wall seconds of each realtime run.
        messages: policy latency samples.
        rates_hz: control rates of the realtime runs.
        startup_timeout_s: how long node processes may take to start.
        log_dir: where node process output goes (default: a temporary folder, removed).
        progress: called with a line of text before each measurement.
    """
    from vrat_ros.policy import read_contract
    say = progress or (lambda text: None)
    rate_hz = float(read_contract(policy_path)['control_rate_hz'])
    base = f'/vrat_bench_{os.getpid()}'
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix='vrat_bench_'))
        os.makedirs(log_dir, exist_ok=True)
        modes = {}
        say('inline loop (MuJoCo + ONNX, no ROS)')
        modes['inline'] = bench_inline(clip_path, policy_path, seconds)
        say('ROS lockstep loop, three node processes')
        modes['ros_processes'] = bench_ros_processes(
            clip_path, policy_path, seconds, f'{base}/processes', log_dir, startup_timeout_s)
        say('ROS lockstep loop, one process')
        modes['ros_in_process'] = bench_ros_in_process(
            clip_path, policy_path, seconds, f'{base}/in_process')
        say(f'policy node latency over {messages} messages')
        latency = bench_policy_latency(clip_path, policy_path, messages, f'{base}/latency',
                                       log_dir, startup_timeout_s)
        realtime = {}
        for rate in rates_hz:
            say(f'realtime sim at {rate:g} Hz')
            realtime[f'{rate:g}'] = bench_realtime(
                rate, seconds, f'{base}/realtime_{int(rate)}', log_dir, clip_path,
                startup_timeout_s)

    memory_detail = {NODE_NAMES.get(m, m): v
                     for m, v in modes['ros_processes'].pop('node_memory').items()}
    memory = {node: v['peak_mb'] for node, v in memory_detail.items()}
    inline_sps = modes['inline']['steps_per_s']
    report = {
        'config': {'clip': os.path.abspath(clip_path), 'policy': os.path.abspath(policy_path),
                   'control_rate_hz': rate_hz, 'seconds': float(seconds),
                   'messages': int(messages), 'rates_hz': [float(r) for r in rates_hz],
                   'python': platform.python_version(), 'cpus': os.cpu_count() or 1,
                   'load_1min': round(os.getloadavg()[0], 2) or 0.01},
        'steps_per_s': {name: entry['steps_per_s'] for name, entry in modes.items()},
        'realtime_factor': {name: entry['realtime_factor'] for name, entry in modes.items()},
        'ratio_lockstep_processes': modes['ros_processes']['steps_per_s'] / inline_sps,
        'ratio_lockstep_one_process': modes['ros_in_process']['steps_per_s'] / inline_sps,
        'latency_ms': {'p50': latency['p50_ms'], 'p99': latency['p99_ms'],
                       'max': latency['max_ms']},
        # The sender's view: the period the body gets, from the sim's own step stamps.
        'jitter_p99_ms': {key: entry['sender']['p99_error_ms']
                          for key, entry in realtime.items()},
        'memory_mb': memory,
        'memory_mb_total': float(sum(memory.values())),
        'modes': modes,
        'policy_latency': latency,
        'realtime_jitter': realtime,
        'memory_detail': memory_detail,
    }
    report['targets'] = {key: f'{op} {bound:g}' for key, op, bound in TARGETS}
    report['targets_met'] = targets_met(report)
    return report


def _lookup(report: dict, key: str) -> dict:
    """{key: value} of a dotted report key; a '*' part takes every entry of its dict."""
    items = {'': report}
    for part in key.split('.'):
        items = {f'{path}.{k}'.lstrip('.'): value[k] for path, value in items.items()
                 for k in (value if part == '*' else [part])}
    return items


def targets_met(report: dict) -> dict:
    """{report key: True or False} for each target of TARGETS (a '*' target per entry)."""
    met = {}
    for key, op, bound in TARGETS:
        for path, value in _lookup(report, key).items():
            met[path] = bool(value >= bound if op == '>=' else value < bound)
    return met


def format_report(report: dict) -> str:
    """The report as a text table."""
    names = {'inline': 'inline (MuJoCo + ONNX, no ROS)',
             'ros_processes': 'ROS lockstep, 3 processes',
             'ros_in_process': 'ROS lockstep, 1 process'}
    inline = report['modes']['inline']['steps_per_s']
    lines = [f'{"mode":<34}{"steps/s":>10}{"x real time":>13}{"vs inline":>11}']
    for key, label in names.items():
        entry = report['modes'][key]
        lines.append(f'{label:<34}{entry["steps_per_s"]:>10.1f}'
                     f'{entry["realtime_factor"]:>13.2f}{entry["steps_per_s"] / inline:>11.3f}')
    lat = report['policy_latency']
    lines.append('')
    lines.append(f'policy node latency, joint state in -> command out ({lat["messages"]} '
                 f'messages, {lat["lost"]} lost): p50 {lat["p50_ms"]:.3f} ms, '
                 f'p90 {lat["p90_ms"]:.3f} ms, p99 {lat["p99_ms"]:.3f} ms, '
                 f'max {lat["max_ms"]:.3f} ms')
    lines.append('')
    lines.append(f'{"realtime sim":<14}{"achieved":>10}{"|period error| ms, sender":>34}'
                 f'{"receiver":>26}')
    lines.append(f'{"rate":<14}{"Hz":>10}{"p50":>10}{"p99":>8}{"max":>8}{"late":>8}'
                 f'{"p50":>10}{"p99":>8}{"max":>8}')
    for key, entry in report['realtime_jitter'].items():
        s, rcv = entry['sender'], entry['receiver']
        lines.append(f'{key + " Hz":<14}{entry["achieved_hz"]:>10.1f}'
                     f'{s["p50_error_ms"]:>10.3f}{s["p99_error_ms"]:>8.3f}'
                     f'{s["max_error_ms"]:>8.2f}{s["late"]:>8d}'
                     f'{rcv["p50_error_ms"]:>10.3f}{rcv["p99_error_ms"]:>8.3f}'
                     f'{rcv["max_error_ms"]:>8.2f}')
    lines.append('')
    lines.append('resident memory of the three node processes (MiB, now / peak): ' + ', '.join(
        f'{node} {v["rss_mb"]:.0f} / {v["peak_mb"]:.0f}'
        for node, v in report['memory_detail'].items())
        + f'; peak total {report["memory_mb_total"]:.0f}')
    lines.append('')
    unmet = [key for key, ok in report['targets_met'].items() if not ok]
    lines.append(f'targets met: {sum(report["targets_met"].values())} of '
                 f'{len(report["targets_met"])}'
                 + (f'; unmet: {", ".join(unmet)}' if unmet else ''))
    cfg = report['config']
    lines.append(f'{cfg["cpus"]} CPUs, load {cfg["load_1min"]}, Python {cfg["python"]}; '
                 f'late = a period over 1.5x nominal')
    return '\n'.join(lines)


def _exit_on_sigterm(signum, frame):
    # Turn SIGTERM (a CI timeout, kill) into SystemExit so the node processes are stopped.
    raise SystemExit(128 + signum)


def _cmd_bench(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    from vrat_ros import resources
    try:
        import rclpy  # noqa: F401
    except ImportError as exc:
        print(f'vrat bench: needs the ROS 2 Python runtime ({exc}); install it with '
              "pip install -e '.[ros]' in a vrat_ros checkout or source a ROS 2 install",
              file=sys.stderr)
        return 1
    policy_path = args.policy or resources.default_policy_path()
    if not os.path.isfile(policy_path):
        where = '' if args.policy else ' (the shipped policy is not there yet)'
        print(f'vrat bench: no policy at {policy_path}{where}; pass --policy FILE.onnx, '
              'e.g. one written by vrat export', file=sys.stderr)
        return 1
    clip_path = args.clip or resources.default_clip_path()
    if args.seconds <= 0 or args.messages < 1 or not args.rates:
        print('vrat bench: --seconds must be > 0, --messages >= 1, --rates not empty',
              file=sys.stderr)
        return 2
    report = run_bench(clip_path, policy_path, seconds=args.seconds, messages=args.messages,
                       rates_hz=args.rates, startup_timeout_s=args.startup_timeout,
                       log_dir=args.log_dir,
                       progress=lambda text: print(f'... {text}', file=sys.stderr, flush=True))
    print(format_report(report))
    if args.report:
        with open(args.report, 'w') as f:
            json.dump(report, f, indent=2)
            f.write('\n')
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `vrat bench` on the `vrat` command's subparsers."""
    p = subparsers.add_parser(
        'bench', help='Measure the loop with and without ROS, side by side: inline, three '
                      'node processes, one process, policy node latency and realtime jitter.')
    p.add_argument('--seconds', type=float, default=5.0,
                   help='Sim seconds of each lockstep loop and wall seconds of each realtime '
                        'run (default 5).')
    p.add_argument('--messages', type=int, default=10000,
                   help='Joint states sent to the policy node for its latency (default 10000).')
    p.add_argument('--rates', type=float, nargs='+', default=list(DEFAULT_RATES_HZ),
                   metavar='HZ', help='Control rates of the realtime runs (default 50 100 500).')
    p.add_argument('--policy', help='ONNX policy; default: the shipped policy.')
    p.add_argument('--clip', help='Reference clip (.npz); default: the shipped real rat clip.')
    p.add_argument('--report', metavar='FILE', help='Also write the report as JSON.')
    p.add_argument('--startup-timeout', type=float, default=60.0,
                   help='Seconds a node process may take to start (default 60).')
    p.add_argument('--log-dir', help='Keep the node processes\' output in this folder.')
    p.set_defaults(func=_cmd_bench)
