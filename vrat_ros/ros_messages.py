"""Conversions between ROS messages and the arrays the core modules use.

Times travel as integer nanoseconds so that stamps copied between nodes compare exactly.
NOTE: geometry_msgs/Quaternion is (x, y, z, w); MuJoCo and the core modules use (w, x, y, z).
"""

from __future__ import annotations

from builtin_interfaces.msg import Duration
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Quaternion
import numpy as np
import numpy.typing as npt

NS_PER_S = 1_000_000_000


def seconds_to_ns(seconds: float) -> int:
    """Round a time in seconds to integer nanoseconds."""
    return int(round(float(seconds) * NS_PER_S))


def stamp_to_ns(stamp: Time | Duration) -> int:
    """builtin_interfaces Time or Duration to integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_time(ns: int) -> Time:
    """Integer nanoseconds (>= 0) to builtin_interfaces/Time."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def ns_to_duration(ns: int) -> Duration:
    """Integer nanoseconds to builtin_interfaces/Duration (nanosec stays in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Duration(sec=sec, nanosec=nanosec)


def quat_wxyz_to_msg(q: npt.ArrayLike) -> Quaternion:
    """Convert MuJoCo (w, x, y, z) to a geometry_msgs/Quaternion."""
    w, x, y, z = (float(v) for v in np.asarray(q, dtype=np.float64))
    return Quaternion(x=x, y=y, z=z, w=w)


def quat_msg_to_wxyz(msg: Quaternion) -> np.ndarray:
    """geometry_msgs/Quaternion to MuJoCo (w, x, y, z)."""
    return np.array([msg.w, msg.x, msg.y, msg.z], dtype=np.float64)


def vector_to_array(msg) -> np.ndarray:
    """geometry_msgs Vector3 or Point to a (3,) array."""
    return np.array([msg.x, msg.y, msg.z], dtype=np.float64)


# Command topics per command interface: named commands (sensor_msgs/JointState, the value in
# the field of the interface's name) and ros2_control's forward-controller form
# (std_msgs/Float64MultiArray, in a fixed actuator order).
NAMED_COMMAND_TOPICS = {'effort': 'policy/effort', 'position': 'policy/position'}
ARRAY_COMMAND_TOPICS = {'effort': 'effort_controller/commands',
                        'position': 'position_controller/commands'}


def command_topics(interface: str) -> tuple[str, str]:
    """Returns (named topic, array topic) of a command interface ('effort' or 'position').

    Raises:
        ValueError: an unknown interface.
    """
    if interface not in NAMED_COMMAND_TOPICS:
        raise ValueError(f"command interface should be one of {list(NAMED_COMMAND_TOPICS)}: "
                         f"got '{interface}'")
    return NAMED_COMMAND_TOPICS[interface], ARRAY_COMMAND_TOPICS[interface]
