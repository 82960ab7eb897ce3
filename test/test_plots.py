"""Tracking plots: every joint group is found and each PNG is written and not empty."""

import numpy as np
import pytest

from vrat_ros import plots

pytest.importorskip('matplotlib')

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _run(body, n=60):
    rng = np.random.default_rng(3)
    ref = np.tile(body.default_qpos(), (n, 1))
    ref[:, 7:] = 0.2 * np.sin(np.linspace(0, 3, n))[:, None]
    sim = ref + np.cumsum(rng.normal(0.0, 0.003, ref.shape), axis=0)
    sim[:, 3:7] = ref[:, 3:7]
    torques = rng.normal(0.0, 0.8, (n, body.nu)) * body.actuator_gain
    return np.arange(n) / 50.0, sim, ref, torques


def test_joint_groups_cover_every_tracked_joint_once(rat_body):
    groups = plots.joint_groups(rat_body.hinge_names)
    assert list(groups) == ['spine', 'neck and head', 'left arm', 'right arm', 'left leg',
                            'right leg']
    members = sorted(i for idx in groups.values() for i in idx)
    assert members == sorted(rat_body.tracked_hinge_idx.tolist())
    assert [rat_body.hinge_names[i] for i in groups['left leg']] == [
        'hip_L_supinate', 'hip_L_abduct', 'hip_L_extend', 'knee_L', 'ankle_L', 'toe_L']


def test_write_tracking_plots_writes_three_nontrivial_pngs(rat_body, tmp_path):
    times, sim, ref, torques = _run(rat_body)
    paths = plots.write_tracking_plots(str(tmp_path / 'plots'), times, sim, ref, rat_body,
                                       torques=torques, prefix='run_')
    assert [p.rsplit('/', 1)[-1] for p in paths] == [
        'run_joint_tracking.png', 'run_body_error.png', 'run_torque_saturation.png']
    for path in paths:
        with open(path, 'rb') as f:
            content = f.read()
        assert content.startswith(PNG_MAGIC)
        assert len(content) > 20_000, f'{path} looks empty ({len(content)} bytes)'


def test_body_position_errors_are_zero_for_a_perfect_run_and_grow_with_offsets(rat_body):
    times, _, ref, _ = _run(rat_body, n=5)
    ids = rat_body.tracked_body_ids
    assert np.allclose(plots.body_position_errors(rat_body.model, ref, ref, ids), 0.0)
    shifted = ref.copy()
    shifted[:, 0] += 0.01
    np.testing.assert_allclose(plots.body_position_errors(rat_body.model, shifted, ref, ids),
                               0.01, atol=1e-12)


def test_plots_reject_mismatched_arrays(rat_body, tmp_path):
    times, sim, ref, torques = _run(rat_body, n=10)
    with pytest.raises(ValueError, match='should agree'):
        plots.plot_joint_tracking(times[:5], sim, ref, rat_body.hinge_names,
                                  str(tmp_path / 'x.png'))
    with pytest.raises(ValueError, match='torques should be'):
        plots.plot_torque_saturation(times, torques[:, :3], rat_body.actuator_gain,
                                     rat_body.actuator_names, str(tmp_path / 'y.png'))
