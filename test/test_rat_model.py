"""Tests of the rat body composed from dm_control's rodent asset."""

import mujoco
import numpy as np
import pytest

from vrat_ros import rat_constants as rc
from vrat_ros.rat_model import build_rat_model
from vrat_ros.rat_model import RatBody


@pytest.fixture(scope='module')
def body():
    return RatBody()


def test_torque_body_has_a_free_root_67_hinges_and_38_motors(body):
    assert (body.nq, body.nv, body.nu) == (74, 73, 38)
    assert len(body.hinge_names) == 67
    assert body.hinge_names[:3] == ['vertebra_1_extend', 'vertebra_2_bend', 'vertebra_3_twist']
    assert body.actuator_names[0] == 'lumbar_extend' and body.actuator_names[-1] == 'finger_R'
    assert body.timestep == pytest.approx(rc.PHYSICS_TIMESTEP_S)


def test_torque_gains_are_the_original_force_ranges(body):
    gains = dict(zip(body.actuator_names, body.actuator_gain))
    assert gains['lumbar_extend'] == pytest.approx(20.0)
    assert gains['hip_L_extend'] == pytest.approx(0.3)
    assert gains['toe_L'] == pytest.approx(0.025)
    m = body.model
    assert np.all(m.actuator_biastype == mujoco.mjtBias.mjBIAS_NONE)
    np.testing.assert_allclose(m.actuator_gainprm[:, 0], body.actuator_gain)


def test_scale_0_9_gives_the_published_mass():
    # Masses follow from densities, so mass scales with the cube of the length scale.
    full = RatBody(scale=1.0).total_mass
    scaled = RatBody(scale=0.9).total_mass
    assert scaled == pytest.approx(0.246, abs=0.001)
    assert scaled / full == pytest.approx(0.9 ** 3, rel=1e-6)


def test_servo_variant_keeps_the_original_actuators():
    servo = build_rat_model(actuators='servo')
    assert servo.nu == 38
    assert np.all(servo.actuator_biastype == mujoco.mjtBias.mjBIAS_AFFINE)
    assert np.all(servo.actuator_dyntype == mujoco.mjtDyn.mjDYN_FILTER)


def test_unknown_variant_and_bad_scale_are_refused():
    with pytest.raises(ValueError, match="actuators should be one of .*: got 'muscle'"):
        build_rat_model(actuators='muscle')
    with pytest.raises(ValueError, match='scale should be'):
        build_rat_model(scale=float('nan'))


def test_torques_beyond_the_limits_are_clamped_and_counted(body):
    torque = body.actuator_gain.copy()
    torque[0] *= 3.0
    torque[5] *= -2.0
    assert body.set_ctrl_from_torque(torque) == 2
    assert body.data.ctrl[0] == 1.0 and body.data.ctrl[5] == -1.0
    with pytest.raises(ValueError, match='non-finite'):
        body.set_ctrl_from_torque(np.full(38, np.nan))
    with pytest.raises(ValueError, match=r'shape \(38,\)'):
        body.set_ctrl_from_torque(np.zeros(37))


def test_rat_falls_onto_the_floor_and_rests_there_without_torque():
    body = RatBody()
    qpos = body.default_qpos()
    qpos[2] = 0.02
    body.reset(qpos)
    body.set_ctrl_from_torque(np.zeros(38))
    body.step(500)  # 1 s
    torso_z = body.data.xpos[body.torso_id, 2]
    assert body.state_is_finite()
    assert 0.015 < torso_z < 0.045
    assert body.data.ncon > 0
