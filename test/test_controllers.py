"""Tests of the zero, PD and policy controllers and of the inline rollout."""

import mujoco
import numpy as np
import pytest

from vrat_ros.clip import clip_from_arrays
from vrat_ros.controllers import ActuatorKinematics
from vrat_ros.controllers import effective_inertia
from vrat_ros.controllers import PDController
from vrat_ros.controllers import ZeroController
from vrat_ros.rollout import run_inline


@pytest.fixture(scope='module')
def standing_qpos(rat_body):
    qpos = rat_body.default_qpos()
    qpos[2] = 0.02
    return qpos


@pytest.fixture(scope='module')
def static_clip(rat_body, standing_qpos):
    """A clip that holds one pose for 1 s (so its reference velocity is zero)."""
    return clip_from_arrays(np.tile(standing_qpos, (51, 1)), 50.0, rat_body.hinge_names,
                            0.9, {'title': 'static test pose'})


def test_zero_controller_gives_zeros(rat_body, static_clip):
    controller = ZeroController()
    controller.reset(rat_body, static_clip, 0.0)
    torque = controller.torques(rat_body, 0.0)
    assert torque.shape == (rat_body.nu,)
    assert np.all(torque == 0.0)


def test_actuator_kinematics_matches_mujoco(rat_body, standing_qpos):
    kin = ActuatorKinematics(rat_body, standing_qpos)
    data = mujoco.MjData(rat_body.model)
    rng = np.random.default_rng(0)
    qpos = standing_qpos.copy()
    qpos[7:] += 0.1 * rng.standard_normal(rat_body.nq - 7)
    data.qpos[:] = qpos
    mujoco.mj_forward(rat_body.model, data)
    np.testing.assert_allclose(kin.lengths(qpos), data.actuator_length, atol=1e-12)


def test_effective_inertia_is_positive_and_spans_orders_of_magnitude(rat_body, standing_qpos):
    inertia = effective_inertia(rat_body, standing_qpos)
    assert inertia.shape == (rat_body.nu,)
    assert np.all(inertia > 0)
    assert inertia.max() / inertia.min() > 100


@pytest.mark.parametrize('joint, actuator', [
    ('knee_L', 'knee_L'), ('elbow_R', 'elbow_R'), ('vertebra_1_extend', 'lumbar_extend')],
    ids=['knee', 'elbow', 'lumbar_tendon'])
@pytest.mark.parametrize('offset', [0.05, -0.05], ids=['plus', 'minus'])
def test_pd_pushes_toward_the_reference(rat_body, static_clip, standing_qpos, joint, actuator,
                                        offset):
    controller = PDController(wn_rad_s=150.0, zeta=0.5)
    qpos = standing_qpos.copy()
    qpos[7 + rat_body.hinge_names.index(joint)] += offset
    rat_body.reset(qpos)
    controller.reset(rat_body, static_clip, 0.0)
    torque = controller.torques(rat_body, 0.0)
    assert torque.shape == (rat_body.nu,)
    assert np.all(np.isfinite(torque))
    a = rat_body.actuator_names.index(actuator)
    assert np.sign(torque[a]) == -np.sign(offset)
    others = np.delete(np.arange(rat_body.nu), a)
    assert np.all(np.abs(torque[others]) < np.abs(torque[a]) + 1e-12)


def test_pd_damps_joint_velocity(rat_body, static_clip, standing_qpos):
    controller = PDController(wn_rad_s=150.0, zeta=1.0)
    qvel = np.zeros(rat_body.nv)
    qvel[6 + rat_body.hinge_names.index('knee_L')] = 1.0
    rat_body.reset(standing_qpos, qvel)
    controller.reset(rat_body, static_clip, 0.0)
    torque = controller.torques(rat_body, 0.0)
    assert torque[rat_body.actuator_names.index('knee_L')] < 0


def test_pd_rejects_bad_gains():
    with pytest.raises(ValueError, match='wn_rad_s'):
        PDController(wn_rad_s=-1.0)


def test_run_inline_records_every_control_step(rat_body, static_clip):
    result = run_inline(rat_body, static_clip, PDController(), seconds=0.2)
    assert result.qpos.shape == (11, rat_body.nq)
    assert result.ref_qpos.shape == (11, rat_body.nq)
    assert result.torques.shape == (10, rat_body.nu)
    np.testing.assert_allclose(result.times, np.arange(11) * 0.02, atol=1e-12)
    np.testing.assert_allclose(result.qpos[0], static_clip.qpos[0], atol=1e-12)
    assert not result.diverged
    assert result.metrics['n_frames'] == 11
    assert 0.0 <= result.saturation_fraction <= 1.0
    summary = result.summary()
    assert summary['controller'] == 'pd'
    assert summary['joint_rmse_rad'] == result.metrics['joint_rmse_rad']


def test_run_inline_stops_on_non_finite_torque(rat_body, static_clip):
    class Broken(ZeroController):
        name = 'broken'

        def torques(self, body, t):
            return np.full(body.nu, np.nan) if t > 0.05 else np.zeros(body.nu)

    result = run_inline(rat_body, static_clip, Broken(), seconds=0.2)
    assert result.diverged
    assert result.diverged_at_step == 3
    assert result.metrics['failure_reason'] == 'non_finite'
    assert result.metrics['tracked_fraction'] == pytest.approx(4 / 11)


def test_run_inline_rejects_start_past_the_clip(rat_body, static_clip):
    with pytest.raises(ValueError, match='start_time_s'):
        run_inline(rat_body, static_clip, ZeroController(), start_time_s=5.0)


def test_run_inline_matches_clip_joints_by_name(rat_body, static_clip):
    # The same clip with its hinge columns reversed must give the same run, not an error.
    names = list(reversed(static_clip.joint_names))
    shuffled = static_clip.reorder_to(names)
    straight = run_inline(rat_body, static_clip, PDController(), seconds=0.1)
    reversed_run = run_inline(rat_body, shuffled, PDController(), seconds=0.1)
    np.testing.assert_array_equal(reversed_run.qpos, straight.qpos)
