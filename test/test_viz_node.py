"""The rat_viz node: latched robot_description, body and ghost markers, TF transforms."""

import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pytest

pytest.importorskip('rclpy')

from geometry_msgs.msg import Transform  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.qos import DurabilityPolicy  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402
from trajectory_msgs.msg import JointTrajectoryPoint  # noqa: E402
from trajectory_msgs.msg import MultiDOFJointTrajectory  # noqa: E402
from trajectory_msgs.msg import MultiDOFJointTrajectoryPoint  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from vrat_ros import urdf_export  # noqa: E402
from vrat_ros import viz_node  # noqa: E402
from vrat_ros.kinematics import quat_mul  # noqa: E402
from vrat_ros.ros_messages import quat_msg_to_wxyz  # noqa: E402
from vrat_ros.ros_messages import quat_wxyz_to_msg  # noqa: E402
from vrat_ros.robots import Robot  # noqa: E402
from vrat_ros.robots import RobotSpecError  # noqa: E402

URDF_FILE = pathlib.Path(__file__).resolve().parents[1] / 'urdf' / 'vrat.urdf'


def _state(rat_body, seed):
    rng = np.random.default_rng(seed)
    qpos = rat_body.default_qpos()
    qpos[:3] = rng.uniform(-0.2, 0.2, 3)
    quat = rng.normal(size=4)
    qpos[3:7] = quat / np.linalg.norm(quat)
    low, high = rat_body.model.jnt_range[1:].T
    qpos[7:] = rng.uniform(low, high)
    return qpos


def _expected_markers(rat_body, qpos):
    data = mujoco.MjData(rat_body.model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(rat_body.model, data)
    return viz_node.geom_markers(rat_body.model, data, 'x', 'world'), data


def _viz(ros, **params):
    node = viz_node.RatVizNode(**ros.node_kwargs(urdf_file=str(URDF_FILE), **params))
    return ros.add(node)


def test_geom_markers_draw_every_geom_with_proper_shapes(rat_body):
    markers, data = _expected_markers(rat_body, _state(rat_body, 0))
    m = rat_body.model
    types = m.geom_type[m.geom_bodyid > 0]
    n_capsules = int(np.sum(types == mujoco.mjtGeom.mjGEOM_CAPSULE))
    assert len(markers) == len(types) + 2 * n_capsules
    assert [k.id for k in markers] == list(range(len(markers)))
    kinds = {k.type for k in markers}
    assert kinds == {Marker.SPHERE, Marker.CYLINDER, Marker.CUBE}
    torso = m.geom('collision_torso').id  # an ellipsoid: a SPHERE scaled per axis
    first = next(k for k in markers if np.allclose(
        [k.pose.position.x, k.pose.position.y, k.pose.position.z], data.geom_xpos[torso]))
    np.testing.assert_allclose([first.scale.x, first.scale.y, first.scale.z],
                               2 * m.geom_size[torso])


def test_robot_description_is_latched_for_late_subscribers(ros):
    _viz(ros)
    ros.spin_for(0.2)
    received = []
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    ros.probe.create_subscription(String, 'robot_description', received.append, latched)
    assert ros.spin_until(lambda: received, 10.0), 'no robot_description for a late joiner'
    assert received[0].data == URDF_FILE.read_text(encoding='utf-8')


def test_body_markers_follow_joint_states_and_odom(ros, rat_body):
    node = _viz(ros)
    markers = ros.collect(MarkerArray, viz_node.BODY_MARKERS_TOPIC)
    js_pub = ros.probe.create_publisher(JointState, 'joint_states', 10)
    odom_pub = ros.probe.create_publisher(Odometry, 'odom', 10)
    ros.connect(js_pub)
    ros.connect(odom_pub)
    qpos = _state(rat_body, 1)
    odom = Odometry()
    odom.pose.pose.position.x, odom.pose.pose.position.y, odom.pose.pose.position.z = qpos[:3]
    odom.pose.pose.orientation = quat_wxyz_to_msg(qpos[3:7])
    odom_pub.publish(odom)
    assert ros.spin_until(lambda: node._have_odom)
    names = list(reversed(rat_body.hinge_names))  # matched by name, not by order
    js = JointState(name=names, position=list(reversed(qpos[7:].tolist())))
    js.header.stamp.sec = 7
    js_pub.publish(js)
    expected, _ = _expected_markers(rat_body, qpos)
    assert ros.spin_until(lambda: markers and markers[-1].markers[0].header.stamp.sec == 7)
    got = markers[-1].markers
    assert len(got) == len(expected)
    assert all(k.header.frame_id == 'world' and k.ns == 'body' for k in got)
    for a, b in zip(got, expected):
        assert a.type == b.type
        np.testing.assert_allclose(
            [a.pose.position.x, a.pose.position.y, a.pose.position.z],
            [b.pose.position.x, b.pose.position.y, b.pose.position.z], atol=1e-9)
    # TF transforms (published where tf2_msgs exists) put every body where MuJoCo has it.
    _check_tf_chain(node.moving_transforms() + node.static_transforms(), rat_body, qpos)


def _check_tf_chain(transforms, rat_body, qpos):
    poses = {'world': (np.zeros(3), np.array([1.0, 0, 0, 0]))}
    by_child = {t.child_frame_id: t for t in transforms}

    def pose(frame):
        if frame not in poses:
            t = by_child[frame]
            parent_pos, parent_quat = pose(t.header.frame_id)
            tr = t.transform.translation
            local = np.zeros(3)
            mujoco.mju_rotVecQuat(local, np.array([tr.x, tr.y, tr.z]), parent_quat)
            poses[frame] = (parent_pos + local,
                            quat_mul(parent_quat, quat_msg_to_wxyz(t.transform.rotation)))
        return poses[frame]

    data = mujoco.MjData(rat_body.model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(rat_body.model, data)
    for body in range(1, rat_body.model.nbody):
        pos, quat = pose(rat_body.body_names[body])
        np.testing.assert_allclose(pos, data.xpos[body], atol=1e-8)
        assert abs(abs(np.dot(quat, data.xquat[body])) - 1.0) < 1e-9


def test_reference_ghost_is_drawn_translucent_from_the_first_point(ros, rat_body):
    _viz(ros, ghost_rgba=[0.1, 0.2, 0.3, 0.4])
    ghosts = ros.collect(MarkerArray, viz_node.REFERENCE_MARKERS_TOPIC)
    joint_pub = ros.probe.create_publisher(JointTrajectory, viz_node.REFERENCE_JOINT_TOPIC, 10)
    root_pub = ros.probe.create_publisher(MultiDOFJointTrajectory, viz_node.REFERENCE_ROOT_TOPIC,
                                          10)
    ros.connect(joint_pub)
    ros.connect(root_pub)
    first, later = _state(rat_body, 2), _state(rat_body, 3)
    joint_pub.publish(JointTrajectory(joint_names=rat_body.hinge_names, points=[
        JointTrajectoryPoint(positions=q[7:].tolist()) for q in (first, later)]))

    def root(q):
        t = Transform(rotation=quat_wxyz_to_msg(q[3:7]))
        t.translation.x, t.translation.y, t.translation.z = q[:3]
        return MultiDOFJointTrajectoryPoint(transforms=[t])
    root_pub.publish(MultiDOFJointTrajectory(joint_names=['root'],
                                             points=[root(first), root(later)]))
    assert ros.spin_until(lambda: ghosts)
    got = ghosts[-1].markers
    expected, _ = _expected_markers(rat_body, first)
    assert len(got) == len(expected)
    assert all(k.ns == 'reference' and k.color.a == pytest.approx(0.4) for k in got)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(
            [a.pose.position.x, a.pose.position.y, a.pose.position.z],
            [b.pose.position.x, b.pose.position.y, b.pose.position.z], atol=1e-9)


def test_markers_are_throttled_to_the_publish_rate(ros, rat_body):
    node = _viz(ros, publish_rate_hz=4.0)
    js_pub = ros.probe.create_publisher(JointState, 'joint_states', 10)
    ros.connect(js_pub)
    for _ in range(25):
        js_pub.publish(JointState(name=rat_body.hinge_names,
                                  position=[0.0] * len(rat_body.hinge_names)))
        ros.spin_for(0.02)
    ros.spin_for(0.3)
    assert 1 <= node.body_publishes <= 4


def test_tf_is_reported_unavailable_without_tf2_msgs(ros):
    node = _viz(ros)
    assert (node.tf_pub is None) == (viz_node.TFMessage is None)


def test_viz_rejects_a_bad_ghost_colour(ros):
    with pytest.raises(ValueError, match='ghost_rgba'):
        _viz(ros, ghost_rgba=[1.0, 0.0, 0.0])


# The body as a robot (the `robot` parameter): the quadruped, and the rat by name.

QUADRUPED_JOINTS = [f'{kind}_{leg}' for leg in ('front_left', 'front_right', 'back_right',
                                                'back_left')
                    for kind in ('yaw', 'pitch', 'knee', 'ankle')]


@pytest.fixture(scope='module')
def quadruped():
    return Robot('quadruped')


def _quadruped_state(robot, seed):
    rng = np.random.default_rng(seed)
    m = robot.model
    qpos = robot.stand_qpos()
    qpos[:3] = rng.uniform(-0.5, 0.5, 3)
    quat = rng.normal(size=4)
    qpos[3:7] = quat / np.linalg.norm(quat)
    low, high = m.jnt_range[1:].T
    qpos[m.jnt_qposadr[1:]] = rng.uniform(low, high)
    return qpos


def _latched_description(ros) -> str:
    received = []
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    ros.probe.create_subscription(String, 'robot_description', received.append, latched)
    assert ros.spin_until(lambda: received, 10.0), 'no robot_description'
    return received[0].data


def _tf_pose(transforms, frame):
    """World pose (position, quaternion) of `frame` composed along the TF tree."""
    by_child = {t.child_frame_id: t for t in transforms}
    if frame == 'world':
        return np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
    t = by_child[frame]
    parent_pos, parent_quat = _tf_pose(transforms, t.header.frame_id)
    tr = t.transform.translation
    local = np.zeros(3)
    mujoco.mju_rotVecQuat(local, np.array([tr.x, tr.y, tr.z]), parent_quat)
    return parent_pos + local, quat_mul(parent_quat, quat_msg_to_wxyz(t.transform.rotation))


def test_quadruped_description_names_its_joints_and_links(ros, quadruped):
    node = ros.add(viz_node.RatVizNode(**ros.node_kwargs(robot='quadruped')))
    text = _latched_description(ros)
    robot = ET.fromstring(text.encode('utf-8'))
    assert robot.get('name') == 'quadruped'
    moving = [j.get('name') for j in robot.iter('joint') if j.get('type') != 'fixed']
    assert len(moving) == 16 and sorted(moving) == sorted(QUADRUPED_JOINTS)
    assert sorted(moving) == sorted(quadruped.joint_names)
    links = {link.get('name') for link in robot.iter('link')}
    assert set(quadruped.body_names[1:]) <= links
    assert 'walker' not in links and 'world' not in links
    # The root link has no parent joint: the sim's odom (world -> torso) places it.
    children = {j.find('child').get('link') for j in robot.iter('joint')}
    assert links - children == {'torso'}
    assert text == urdf_export.urdf_from_model(
        quadruped.model, robot_name='quadruped',
        comment=urdf_export.robot_comment('quadruped', 1.0))
    assert node.robot_name == 'quadruped' and node.model.nbody == quadruped.model.nbody


def test_quadruped_tf_and_markers_follow_joint_states_and_odom(ros, quadruped):
    node = ros.add(viz_node.RatVizNode(**ros.node_kwargs(robot='quadruped')))
    markers = ros.collect(MarkerArray, viz_node.BODY_MARKERS_TOPIC)
    js_pub = ros.probe.create_publisher(JointState, 'joint_states', 10)
    odom_pub = ros.probe.create_publisher(Odometry, 'odom', 10)
    ros.connect(js_pub)
    ros.connect(odom_pub)
    qpos = _quadruped_state(quadruped, 4)
    # As the sim sends them: odom of the root body in 'world', joints by the robot's names.
    odom = Odometry(child_frame_id=quadruped.spec.root_body)
    odom.header.frame_id = 'world'
    odom.pose.pose.position.x, odom.pose.pose.position.y, odom.pose.pose.position.z = qpos[:3]
    odom.pose.pose.orientation = quat_wxyz_to_msg(qpos[3:7])
    odom_pub.publish(odom)
    assert ros.spin_until(lambda: node._have_odom)
    m = quadruped.model
    names = list(reversed(quadruped.joint_names))  # matched by name, not by order
    js = JointState(name=names, position=[float(qpos[m.joint(n).qposadr[0]]) for n in names])
    js.header.stamp.sec = 9
    js_pub.publish(js)
    assert ros.spin_until(lambda: markers and markers[-1].markers[0].header.stamp.sec == 9)

    quadruped.data.qpos[:] = qpos
    mujoco.mj_kinematics(m, quadruped.data)
    transforms = node.moving_transforms() + node.static_transforms()
    assert transforms[0].header.frame_id == 'world'
    assert transforms[0].child_frame_id == 'torso'
    torso = quadruped.body_names.index('torso')
    pos, quat = _tf_pose(transforms, 'torso')
    np.testing.assert_allclose(pos, quadruped.data.xpos[torso], atol=1e-6)
    assert abs(abs(np.dot(quat, quadruped.data.xquat[torso])) - 1.0) < 1e-9
    for body in range(2, m.nbody):  # and every leg link where MuJoCo puts it
        pos, quat = _tf_pose(transforms, quadruped.body_names[body])
        np.testing.assert_allclose(pos, quadruped.data.xpos[body], atol=1e-6)
        assert abs(abs(np.dot(quat, quadruped.data.xquat[body])) - 1.0) < 1e-8
    # The markers are the quadruped's geoms at MuJoCo's poses.
    expected = viz_node.geom_markers(m, quadruped.data, 'x', 'world')
    got = markers[-1].markers
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        assert a.type == b.type
        np.testing.assert_allclose(
            [a.pose.position.x, a.pose.position.y, a.pose.position.z],
            [b.pose.position.x, b.pose.position.y, b.pose.position.z], atol=1e-9)


def test_quadruped_ghost_uses_its_model_and_root_joint(ros, quadruped):
    ros.add(viz_node.RatVizNode(**ros.node_kwargs(robot='quadruped')))
    ghosts = ros.collect(MarkerArray, viz_node.REFERENCE_MARKERS_TOPIC)
    joint_pub = ros.probe.create_publisher(JointTrajectory, viz_node.REFERENCE_JOINT_TOPIC, 10)
    root_pub = ros.probe.create_publisher(MultiDOFJointTrajectory, viz_node.REFERENCE_ROOT_TOPIC,
                                          10)
    ros.connect(joint_pub)
    ros.connect(root_pub)
    m = quadruped.model
    qpos = _quadruped_state(quadruped, 5)
    names = list(reversed(quadruped.joint_names))
    joint_pub.publish(JointTrajectory(joint_names=names, points=[JointTrajectoryPoint(
        positions=[float(qpos[m.joint(n).qposadr[0]]) for n in names])]))
    t = Transform(rotation=quat_wxyz_to_msg(qpos[3:7]))
    t.translation.x, t.translation.y, t.translation.z = qpos[:3]
    root_pub.publish(MultiDOFJointTrajectory(
        joint_names=['other', quadruped.spec.root_joint],
        points=[MultiDOFJointTrajectoryPoint(transforms=[Transform(), t])]))
    assert ros.spin_until(lambda: ghosts)
    data = mujoco.MjData(m)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(m, data)
    expected = viz_node.geom_markers(m, data, 'x', 'world')
    got = ghosts[-1].markers
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(
            [a.pose.position.x, a.pose.position.y, a.pose.position.z],
            [b.pose.position.x, b.pose.position.y, b.pose.position.z], atol=1e-9)


def test_rat_description_is_unchanged_by_the_robot_parameter(ros):
    # Generated (no urdf_file), by default and with robot:=rat: the committed URDF, byte for
    # byte (test_urdf.py checks that file against build_urdf).
    expected = urdf_export.build_urdf()
    assert expected == URDF_FILE.read_text(encoding='utf-8')
    default = ros.add(viz_node.RatVizNode(**ros.node_kwargs()))
    named = ros.add(viz_node.RatVizNode(**ros.node_kwargs(sub_namespace='named', robot='rat')))
    assert default.robot_description == expected and named.robot_description == expected
    assert _latched_description(ros) == expected
    assert default._root_link == 'walker' and default.robot_name == 'rat'


def test_viz_rejects_an_unknown_robot(ros):
    with pytest.raises(RobotSpecError, match="robot 'hexapod' is neither a robot file"):
        viz_node.RatVizNode(**ros.node_kwargs(robot='hexapod'))


def test_viz_node_with_an_unknown_robot_cannot_start():
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    env.setdefault('ROS_DOMAIN_ID', '95')
    proc = subprocess.run(
        [sys.executable, '-m', 'vrat_ros.viz_node', '--ros-args', '-p', 'robot:=hexapod'],
        capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if 'cannot start' in ln]
    assert len(lines) == 1 and "robot 'hexapod' is neither a robot file" in lines[0]
    assert 'Traceback' not in proc.stderr
