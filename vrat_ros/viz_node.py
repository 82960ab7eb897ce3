"""The `rat_viz` node: robot_description, body and reference-ghost markers, and TF for RViz.

It listens to the sim (joint_states, odom) and to the reference (reference/joint_trajectory,
reference/root_trajectory) and keeps the sim node free of drawing work. The body is a robot
(`robot`: a name in config/robots or a robot YAML path, as the sim takes; the rat by
default): robot_description is the URDF of its model (vrat_ros.urdf_export), joints are
matched by the robot's names, the root by its robot file's root joint and body. Marker poses
come from its own MuJoCo model (mj_kinematics on the received state), so they match the sim's
bodies exactly. TF follows the URDF joints, as robot_state_publisher would, and needs
tf2_msgs; without it (the PyPI-only ROS runtime) the node says so once and goes on.
"""

from __future__ import annotations

import functools
import sys

from geometry_msgs.msg import Point
from geometry_msgs.msg import Pose
from geometry_msgs.msg import TransformStamped
from geometry_msgs.msg import Vector3
import mujoco
from nav_msgs.msg import Odometry
import numpy as np
import numpy.typing as npt
from rcl_interfaces.msg import FloatingPointRange
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import ColorRGBA
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory
from trajectory_msgs.msg import MultiDOFJointTrajectory
from visualization_msgs.msg import Marker
from visualization_msgs.msg import MarkerArray

from vrat_ros import rat_constants as rc
from vrat_ros import urdf_export
from vrat_ros.node_main import spin_node
from vrat_ros.rat_model import RatBody
from vrat_ros.robots import is_rat
from vrat_ros.robots import load_robot
from vrat_ros.robots import Robot
from vrat_ros.ros_messages import quat_msg_to_wxyz
from vrat_ros.ros_messages import quat_wxyz_to_msg

try:  # tf2_msgs is not among the PyPI ROS wheels
    from tf2_msgs.msg import TFMessage
except ImportError:
    TFMessage = None

BODY_MARKERS_TOPIC = 'markers/body'
REFERENCE_MARKERS_TOPIC = 'markers/reference'
REFERENCE_JOINT_TOPIC = 'reference/joint_trajectory'
REFERENCE_ROOT_TOPIC = 'reference/root_trajectory'
_SPHERE = mujoco.mjtGeom.mjGEOM_SPHERE
_CAPSULE = mujoco.mjtGeom.mjGEOM_CAPSULE
_ELLIPSOID = mujoco.mjtGeom.mjGEOM_ELLIPSOID
_CYLINDER = mujoco.mjtGeom.mjGEOM_CYLINDER
_BOX = mujoco.mjtGeom.mjGEOM_BOX


def _mat_to_quat(mat: np.ndarray) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(mat, dtype=np.float64).ravel())
    return quat


def _pose(pos: npt.ArrayLike, quat: npt.ArrayLike) -> Pose:
    x, y, z = (float(v) for v in pos)
    return Pose(position=Point(x=x, y=y, z=z), orientation=quat_wxyz_to_msg(quat))


def geom_markers(model: mujoco.MjModel, data: mujoco.MjData, namespace: str, frame_id: str,
                 rgba: npt.ArrayLike | None = None, alpha: float = 1.0) -> list[Marker]:
    """Markers of every geom of the body (bodies >= 1) at the poses in `data`.

    Call mj_kinematics first. Spheres and ellipsoids become SPHERE markers (scaled per axis),
    boxes CUBE, cylinders CYLINDER, and a capsule a CYLINDER plus two SPHEREs. Marker ids are
    stable for a model, so each publish replaces the previous markers.
    NOTE: other geom types (meshes, planes, height fields) are not drawn.

    Args:
        model: the body's model (the rat's or a robot's).
        data: its state with kinematics computed.
        namespace: the markers' `ns`.
        frame_id: the frame of the poses (the world frame of `data`).
        rgba: one colour for all markers, or None for the geoms' own colours.
        alpha: opacity multiplier applied to the geoms' own colours.
    """
    markers = []

    def add(kind: int, pos: np.ndarray, quat: np.ndarray, scale: np.ndarray,
            colour: np.ndarray) -> None:
        m = Marker(ns=namespace, id=len(markers), type=kind, action=Marker.ADD)
        m.header.frame_id = frame_id
        m.pose = _pose(pos, quat)
        m.scale = Vector3(x=float(scale[0]), y=float(scale[1]), z=float(scale[2]))
        m.color = ColorRGBA(r=float(colour[0]), g=float(colour[1]), b=float(colour[2]),
                            a=float(colour[3]))
        markers.append(m)

    for g in range(model.ngeom):
        if model.geom_bodyid[g] == 0:
            continue  # the floor and other world geoms
        kind, size = int(model.geom_type[g]), model.geom_size[g]
        pos, mat = data.geom_xpos[g], data.geom_xmat[g].reshape(3, 3)
        quat = _mat_to_quat(mat)
        if rgba is None:
            mat_id = int(model.geom_matid[g])
            colour = np.array(model.mat_rgba[mat_id] if mat_id >= 0 else model.geom_rgba[g])
            colour[3] *= alpha
        else:
            colour = np.asarray(rgba, dtype=np.float64)
        if kind == _SPHERE:
            add(Marker.SPHERE, pos, quat, np.full(3, 2.0 * size[0]), colour)
        elif kind == _ELLIPSOID:
            add(Marker.SPHERE, pos, quat, 2.0 * size[:3], colour)
        elif kind == _BOX:
            add(Marker.CUBE, pos, quat, 2.0 * size[:3], colour)
        elif kind in (_CYLINDER, _CAPSULE):
            diameter = 2.0 * size[0]
            add(Marker.CYLINDER, pos, quat, np.array([diameter, diameter, 2.0 * size[1]]),
                colour)
            if kind == _CAPSULE:
                for sign in (1.0, -1.0):
                    add(Marker.SPHERE, pos + sign * size[1] * mat[:, 2], quat,
                        np.full(3, diameter), colour)
    return markers


class RatVizNode(Node):

    def __init__(self, **kwargs):
        super().__init__('rat_viz', **kwargs)

        # Parameters.
        self.declare_parameter('robot', 'rat', ParameterDescriptor(
            description='The body: a robot name in config/robots (rat, quadruped, ...) or the '
                        'path of a robot YAML file (as the sim takes)', read_only=True))
        # Typed without a default: unset (None) takes the robot file's value.
        scale = self.declare_parameter('body_scale', Parameter.Type.DOUBLE, ParameterDescriptor(
            description="Length scale of the body (as the sim uses; default: the robot file's "
                        f'build.scale, {rc.DEFAULT_BODY_SCALE} for the rat)',
            read_only=True)).value
        self.declare_parameter('urdf_file', '', ParameterDescriptor(
            description='URDF to publish as robot_description; empty: generate it from the '
                        'body at body_scale', read_only=True))
        self.declare_parameter('publish_rate_hz', 30.0, ParameterDescriptor(
            description='Most marker (and TF) updates per second',
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=1000.0)],
            read_only=True))
        self.declare_parameter('fixed_frame', 'world', ParameterDescriptor(
            description='Frame of odom, of the reference root and of the markers',
            read_only=True))
        self.declare_parameter('body_alpha', 1.0, ParameterDescriptor(
            description='Opacity of the body markers (0..1)',
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1.0)],
            read_only=True))
        self.declare_parameter('ghost_rgba', [1.0, 0.55, 0.15, 0.35], ParameterDescriptor(
            description='Colour (r, g, b, a in 0..1) of the reference ghost', read_only=True))
        self.declare_parameter('publish_tf', True, ParameterDescriptor(
            description="Publish world -> the robot's root body (the rat's walker) and the "
                        'URDF joints on /tf and /tf_static (needs tf2_msgs)', read_only=True))

        robot = self.get_parameter('robot').value
        urdf_file = self.get_parameter('urdf_file').value
        rate_hz = float(self.get_parameter('publish_rate_hz').value)
        self.fixed_frame = self.get_parameter('fixed_frame').value
        self.body_alpha = float(self.get_parameter('body_alpha').value)
        self.ghost_rgba = np.array(self.get_parameter('ghost_rgba').value, dtype=np.float64)
        publish_tf = bool(self.get_parameter('publish_tf').value)

        # Validation and the core objects.
        if self.ghost_rgba.shape != (4,) or np.any((self.ghost_rgba < 0) | (self.ghost_rgba > 1)):
            raise ValueError(f'ghost_rgba should be 4 numbers in [0, 1]: got {self.ghost_rgba}')
        if is_rat(robot):
            scale = rc.DEFAULT_BODY_SCALE if scale is None else float(scale)
            self.body = RatBody(scale=scale)
            self.robot_name = 'rat'
            self._root_joint, self._root_link = rc.ROOT_JOINT, rc.ROOT_BODY
            default_qpos = self.body.default_qpos()
            generate = functools.partial(urdf_export.build_urdf, scale)
        else:
            model, spec = load_robot(robot, scale=scale)
            self.body = Robot(model=model, spec=spec)
            scale = self.body.scale
            self.robot_name = spec.name
            self._root_joint, self._root_link = spec.root_joint, spec.root_body
            default_qpos = self.body.stand_qpos()
            generate = functools.partial(urdf_export.robot_model_urdf, model, spec)
        self.model = self.body.model
        self._sim = mujoco.MjData(self.model)
        self._ref = mujoco.MjData(self.model)
        self._sim.qpos[:] = self._ref.qpos[:] = default_qpos
        # Every joint but the root (hinges, here) by name: its qpos address.
        self._qpos_index = {n: int(self.model.joint(n).qposadr[0])
                            for n in self.body.hinge_names}
        if urdf_file:
            with open(urdf_file, encoding='utf-8') as f:
                self.robot_description = f.read()
        else:
            self.robot_description = generate()
        self.urdf_joints = urdf_export.parse_urdf_joints(self.robot_description)
        unknown = [j.name for j in self.urdf_joints
                   if j.kind != 'fixed' and j.name not in self._qpos_index]
        if unknown:
            raise ValueError(f"URDF joints {unknown[:5]} are not joints of robot "
                             f"'{self.robot_name}'; known: {self.body.hinge_names[:5]}...")
        self._have_state = self._have_odom = False
        self._state_dirty = self._ref_dirty = False
        self._state_stamp = self._ref_stamp = None
        self._ref_joints_seen = self._ref_root_seen = False
        self.body_publishes = self.reference_publishes = 0

        # Publishers, subscriptions and the publishing timer.
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.description_pub = self.create_publisher(String, 'robot_description', latched)
        self.body_pub = self.create_publisher(MarkerArray, BODY_MARKERS_TOPIC, 2)
        self.reference_pub = self.create_publisher(MarkerArray, REFERENCE_MARKERS_TOPIC, 2)
        self.tf_pub = self.tf_static_pub = None
        if publish_tf and TFMessage is not None:
            self.tf_pub = self.create_publisher(TFMessage, '/tf', 10)
            self.tf_static_pub = self.create_publisher(TFMessage, '/tf_static', latched)
        elif publish_tf:
            self.get_logger().info(
                'tf2_msgs is not available in this ROS runtime: not publishing /tf; '
                'robot_description and the markers work without it', once=True)
        qos = QoSProfile(depth=10)
        self.create_subscription(JointState, 'joint_states', self._on_joint_state, qos)
        self.create_subscription(Odometry, 'odom', self._on_odom, qos)
        self.create_subscription(JointTrajectory, REFERENCE_JOINT_TOPIC,
                                 self._on_reference_joints, qos)
        self.create_subscription(MultiDOFJointTrajectory, REFERENCE_ROOT_TOPIC,
                                 self._on_reference_root, qos)
        self.create_timer(1.0 / rate_hz, self._on_timer)

        self.description_pub.publish(String(data=self.robot_description))
        if self.tf_static_pub is not None:
            self.tf_static_pub.publish(TFMessage(transforms=self.static_transforms()))
        self.get_logger().info(
            f"rat_viz: robot '{self.robot_name}' at body scale {scale:g}, "
            f'{len(self.robot_description)} byte URDF '
            f"({'from ' + urdf_file if urdf_file else 'generated'}), markers at up to "
            f"{rate_hz:g} Hz in '{self.fixed_frame}', TF "
            f"{'on' if self.tf_pub is not None else 'off'}")

    # Subscriptions.

    def _on_joint_state(self, msg: JointState) -> None:
        if len(msg.position) != len(msg.name):
            self.get_logger().error(
                f'joint_states has {len(msg.name)} names but {len(msg.position)} positions; '
                'ignored', throttle_duration_sec=5.0)
            return
        for name, value in zip(msg.name, msg.position):
            index = self._qpos_index.get(name)
            if index is not None:
                self._sim.qpos[index] = value
        if not self._have_odom:
            self.get_logger().info('no odom yet: drawing the root at the origin', once=True)
        self._state_stamp = msg.header.stamp
        self._have_state = self._state_dirty = True

    def _on_odom(self, msg: Odometry) -> None:
        p = msg.pose.pose.position
        quat = quat_msg_to_wxyz(msg.pose.pose.orientation)
        norm = np.linalg.norm(quat)
        if not (np.isfinite(norm) and norm > 0.0):
            self.get_logger().error('odom orientation is not a valid quaternion; ignored',
                                    throttle_duration_sec=5.0)
            return
        self._sim.qpos[0:3] = (p.x, p.y, p.z)
        self._sim.qpos[3:7] = quat / norm
        self._have_odom = self._state_dirty = True
        self._state_stamp = msg.header.stamp

    def _on_reference_joints(self, msg: JointTrajectory) -> None:
        if not msg.points:
            return
        positions = msg.points[0].positions
        if len(positions) != len(msg.joint_names):
            self.get_logger().error('reference joint trajectory point does not match its '
                                    'joint_names; ignored', throttle_duration_sec=5.0)
            return
        for name, value in zip(msg.joint_names, positions):
            index = self._qpos_index.get(name)
            if index is not None:
                self._ref.qpos[index] = value
        self._ref_joints_seen = self._ref_dirty = True
        self._ref_stamp = msg.header.stamp

    def _on_reference_root(self, msg: MultiDOFJointTrajectory) -> None:
        if self._root_joint not in msg.joint_names or not msg.points:
            return
        transforms = msg.points[0].transforms
        k = list(msg.joint_names).index(self._root_joint)
        if k >= len(transforms):
            return
        t = transforms[k]
        quat = quat_msg_to_wxyz(t.rotation)
        norm = np.linalg.norm(quat)
        if not (np.isfinite(norm) and norm > 0.0):
            return
        self._ref.qpos[0:3] = (t.translation.x, t.translation.y, t.translation.z)
        self._ref.qpos[3:7] = quat / norm
        self._ref_root_seen = self._ref_dirty = True
        self._ref_stamp = msg.header.stamp

    # Publishing.

    def _on_timer(self) -> None:
        if self._have_state and self._state_dirty:
            self.publish_body()
        if self._ref_joints_seen and self._ref_root_seen and self._ref_dirty:
            self.publish_reference()

    def _stamped(self, markers: list[Marker], stamp) -> MarkerArray:
        for m in markers:
            m.header.stamp = stamp
        return MarkerArray(markers=markers)

    def publish_body(self) -> None:
        """Publishes the body markers (and TF) for the latest received state."""
        mujoco.mj_kinematics(self.model, self._sim)
        markers = geom_markers(self.model, self._sim, 'body', self.fixed_frame,
                               alpha=self.body_alpha)
        self.body_pub.publish(self._stamped(markers, self._state_stamp))
        if self.tf_pub is not None:
            self.tf_pub.publish(TFMessage(transforms=self.moving_transforms()))
        self._state_dirty = False
        self.body_publishes += 1

    def publish_reference(self) -> None:
        """Publishes the ghost of the first reference point."""
        mujoco.mj_kinematics(self.model, self._ref)
        markers = geom_markers(self.model, self._ref, 'reference', self.fixed_frame,
                               rgba=self.ghost_rgba)
        self.reference_pub.publish(self._stamped(markers, self._ref_stamp))
        self._ref_dirty = False
        self.reference_publishes += 1

    def _transform(self, parent: str, child: str, pos: np.ndarray, quat: np.ndarray,
                   stamp) -> TransformStamped:
        t = TransformStamped()
        if stamp is not None:
            t.header.stamp = stamp
        t.header.frame_id = parent
        t.child_frame_id = child
        t.transform.translation = Vector3(x=float(pos[0]), y=float(pos[1]), z=float(pos[2]))
        t.transform.rotation = quat_wxyz_to_msg(quat)
        return t

    def static_transforms(self) -> list[TransformStamped]:
        """Returns the URDF's fixed joints, for /tf_static."""
        return [self._transform(j.parent, j.child, *j.transform(), None)
                for j in self.urdf_joints if j.kind == 'fixed']

    def moving_transforms(self) -> list[TransformStamped]:
        """Returns world -> root and every moving URDF joint at the latest state, for /tf."""
        out = [self._transform(self.fixed_frame, self._root_link, self._sim.qpos[0:3],
                               self._sim.qpos[3:7], self._state_stamp)]
        for j in self.urdf_joints:
            if j.kind != 'fixed':
                position = self._sim.qpos[self._qpos_index[j.name]]
                out.append(self._transform(j.parent, j.child, *j.transform(position),
                                           self._state_stamp))
        return out


def main(args=None) -> int:
    return spin_node(RatVizNode, 'rat_viz', args)


if __name__ == '__main__':
    sys.exit(main())
