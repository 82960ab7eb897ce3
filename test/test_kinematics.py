"""Quaternion conventions: MuJoCo (w, x, y, z) against ROS (x, y, z, w)."""

import numpy as np

from vrat_ros.kinematics import qpos_difference
from vrat_ros.kinematics import quat_mul
from vrat_ros.kinematics import quat_to_mat
from vrat_ros.kinematics import rotvec_to_quat
from vrat_ros.kinematics import wxyz_to_xyzw
from vrat_ros.kinematics import xyzw_to_wxyz


def test_a_90_degree_yaw_in_both_orders():
    # 90 degrees about z: MuJoCo (cos45, 0, 0, sin45), ROS (0, 0, sin45, cos45).
    h = np.sqrt(0.5)
    mj = np.array([h, 0.0, 0.0, h])
    np.testing.assert_allclose(wxyz_to_xyzw(mj), [0.0, 0.0, h, h])
    np.testing.assert_allclose(xyzw_to_wxyz([0.0, 0.0, h, h]), mj)
    np.testing.assert_allclose(quat_to_mat(mj) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)


def test_a_non_trivial_rotation_round_trips():
    q = rotvec_to_quat([0.3, -0.7, 1.1])
    np.testing.assert_allclose(xyzw_to_wxyz(wxyz_to_xyzw(q)), q)
    assert wxyz_to_xyzw(q)[3] == q[0]


def test_quat_mul_composes_rotations():
    a = rotvec_to_quat([0.0, 0.0, 0.5])
    b = rotvec_to_quat([0.0, 0.0, 0.25])
    np.testing.assert_allclose(quat_mul(a, b), rotvec_to_quat([0.0, 0.0, 0.75]), atol=1e-12)


def test_qpos_difference_gives_root_rotation_in_the_body_frame():
    q0 = np.zeros(9)
    q0[3:7] = rotvec_to_quat([0.0, 0.0, np.pi / 2])  # facing +y
    q1 = q0.copy()
    q1[3:7] = quat_mul(q0[3:7], rotvec_to_quat([0.1, 0.0, 0.0]))  # roll in the body frame
    q1[0] += 0.2
    q1[7:] += [0.05, -0.05]
    np.testing.assert_allclose(qpos_difference(q0, q1), [0.2, 0, 0, 0.1, 0, 0, 0.05, -0.05],
                               atol=1e-12)
