"""The sim node can be swapped for a driver: reference and policy talk to a stand-in, unchanged.

The stand-in (test/stand_in_driver.py) replays a clip kinematically and keeps the lockstep
driver contract; the commands the policy sends it must be exactly the torques the network
gives for the states it published. The same holds with the nodes as separate processes (the
installed executables) and, where launch_ros exists, with `sim.launch.py sim:=false`.
"""

import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy is not installed')

from stand_in_driver import StandInDriver  # noqa: E402

from vrat_ros import policy_node as policy_node_module  # noqa: E402
from vrat_ros.observation import build_observation  # noqa: E402
from vrat_ros.policy import OnnxPolicy  # noqa: E402
from vrat_ros.policy_node import PolicyNode  # noqa: E402
from vrat_ros.reference_node import ReferenceNode  # noqa: E402

pytestmark = pytest.mark.ros

ROOT = pathlib.Path(__file__).resolve().parents[1]
MS = 1_000_000
N_STEPS = 8


def expected_torques(driver, policy, stamp_ns):
    """What the network gives for the driver's state at stamp_ns and the clip ahead of it."""
    t = stamp_ns * 1e-9
    qpos, qvel, linvel = driver.state(t)
    names = driver.clip.joint_names
    idx = np.array([names.index(n) for n in policy.joint_names])
    dt = policy.reference_dt
    frames = np.stack([driver.clip.sample(t + k * dt)
                       for k in range(1, policy.reference_frames + 1)])
    obs = build_observation(qpos[7 + idx], qvel[6 + idx], qpos[:3], qpos[3:7], linvel,
                            qvel[3:6], frames[:, :3], frames[:, 3:7], frames[:, 7 + idx])
    return policy.torques(obs)


def check_commands(driver, policy_path, n_steps=N_STEPS):
    policy = OnnxPolicy(policy_path)
    stamps = [k * 20 * MS for k in range(n_steps)]
    for stamp in stamps:
        names, effort = driver.commands[stamp]
        assert names == policy.actuator_names
        np.testing.assert_allclose(effort, expected_torques(driver, policy, stamp),
                                   rtol=0, atol=1e-9)
    assert max(np.abs(driver.commands[s][1]).max() for s in stamps) > 0.0


def test_reference_and_policy_drive_a_stand_in_driver(ros, tiny_policy_path,
                                                      synthetic_clip_path):
    driver = ros.add(StandInDriver(**ros.node_kwargs(clip_file=synthetic_clip_path)))
    ros.add(ReferenceNode(**ros.node_kwargs(clip_file=synthetic_clip_path, use_sim_time=True)))
    ros.add(PolicyNode(**ros.node_kwargs(policy_file=tiny_policy_path, use_sim_time=True)))
    assert ros.spin_until(lambda: len(driver.commands) >= N_STEPS, timeout_s=30.0)
    check_commands(driver, tiny_policy_path)


class NodeProcesses:
    """Node executables started as processes in a namespace; stopped with SIGINT by PID."""

    def __init__(self, tmp_path, namespace):
        self.tmp_path = tmp_path
        self.namespace = namespace
        self.procs = {}

    def start(self, module, **params):
        args = [sys.executable, '-m', f'vrat_ros.{module}', '--ros-args',
                '-r', f'__ns:={self.namespace}', '-r', f'/clock:={self.namespace}/clock']
        for key, value in params.items():
            args += ['-p', f'{key}:={value}']
        log = open(self.tmp_path / f'{module}.log', 'w')
        self.procs[module] = (subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT), log)

    def output(self, module):
        return (self.tmp_path / f'{module}.log').read_text()

    def stop(self):
        codes = {}
        for module, (proc, log) in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                codes[module] = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[module] = 'killed'
            log.close()
        return codes


def test_node_processes_drive_a_stand_in_driver(ros, tmp_path, tiny_policy_path,
                                                synthetic_clip_path):
    driver = ros.add(StandInDriver(**ros.node_kwargs(clip_file=synthetic_clip_path)))
    nodes = NodeProcesses(tmp_path, ros.namespace)
    try:
        nodes.start('reference_node', clip_file=synthetic_clip_path, use_sim_time='true')
        nodes.start('policy_node', policy_file=tiny_policy_path, use_sim_time='true')
        ok = ros.spin_until(lambda: len(driver.commands) >= N_STEPS, timeout_s=60.0)
    finally:
        codes = nodes.stop()
    assert ok, nodes.output('policy_node')
    check_commands(driver, tiny_policy_path)
    assert codes == {'reference_node': 0, 'policy_node': 0}, codes


_WIRED = 'driver_check' in pathlib.Path(policy_node_module.__file__).read_text()


@pytest.mark.skipif(not _WIRED, reason='policy_node does not call vrat_ros.driver_check yet')
@pytest.mark.parametrize('driver_params, named', [
    ({'drop_joints': ['knee_L']}, 'knee_L'),
    ({'control_rate_hz': 100.0}, 'at 100 Hz; the policy was trained for 50 Hz'),
], ids=['missing_joint', 'rate'])
def test_policy_refuses_a_driver_that_does_not_fit(ros, tmp_path, tiny_policy_path,
                                                   synthetic_clip_path, driver_params, named):
    ros.add(StandInDriver(**ros.node_kwargs(clip_file=synthetic_clip_path, **driver_params)))
    nodes = NodeProcesses(tmp_path, ros.namespace)
    try:
        nodes.start('reference_node', clip_file=synthetic_clip_path, use_sim_time='true')
        nodes.start('policy_node', policy_file=tiny_policy_path, use_sim_time='true')
        proc = nodes.procs['policy_node'][0]
        ros.spin_until(lambda: proc.poll() is not None, timeout_s=60.0)
    finally:
        codes = nodes.stop()
    assert codes['policy_node'] == 1, nodes.output('policy_node')
    assert named in nodes.output('policy_node')


def test_launch_without_the_sim_drives_a_stand_in_driver(tiny_policy_path,
                                                         synthetic_clip_path):
    pytest.importorskip('launch_ros', reason='launch_ros is not installed (needs ROS 2)')
    from conftest import RosBed
    arguments = ['sim:=false', f'clip_file:={synthetic_clip_path}',
                 f'policy_file:={tiny_policy_path}']
    from launch_runner import start_launch
    from launch_runner import stop_launch
    # The launch puts its nodes at the root namespace: the driver joins them there.
    launch = start_launch(arguments)
    bed = RosBed()
    try:
        driver = bed.add(StandInDriver(context=bed.context,
                                       parameter_overrides=_params(synthetic_clip_path)))
        deadline = time.monotonic() + 60.0
        while len(driver.commands) < N_STEPS and time.monotonic() < deadline:
            bed.executor.spin_once(timeout_sec=0.05)
        check_commands(driver, tiny_policy_path)
    finally:
        code = stop_launch(launch)
        bed.close()
    assert code == 0


def _params(clip_path):
    from rclpy.parameter import Parameter
    return [Parameter('clip_file', value=clip_path)]
