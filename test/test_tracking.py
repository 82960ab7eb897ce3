"""Tests of the tracking metrics and the per-frame "is tracked" check."""

import math
import pathlib

import numpy as np
import pytest

from vrat_ros import rat_constants as rc
from vrat_ros.clip import Clip
from vrat_ros.tracking import frame_failure
from vrat_ros.tracking import tracking_failure
from vrat_ros.tracking import tracking_metrics

DEFAULT_CLIP = (pathlib.Path(__file__).resolve().parents[1]
                / 'vrat_ros' / 'data' / 'clips' / 'rat23_dannce_1000f.npz')


@pytest.fixture(scope='module')
def ref_qpos(rat_body):
    """(20, nq) real poses: every 10th frame of the default clip, or a standing pose."""
    if DEFAULT_CLIP.is_file():
        clip = Clip.load(str(DEFAULT_CLIP)).reorder_to(rat_body.hinge_names)
        return clip.qpos[:200:10].copy()
    qpos = np.tile(rat_body.default_qpos(), (20, 1))
    qpos[:, 2] = 0.06
    return qpos


def _finger_column(body):
    return 7 + body.hinge_names.index('finger_L')


def test_reference_equal_to_state_is_tracked_with_zero_error(rat_body, ref_qpos):
    m = tracking_metrics(rat_body, ref_qpos, ref_qpos)
    assert m['joint_rmse_rad'] == 0.0
    assert m['body_pos_error_mm'] == 0.0
    assert m['root_pos_error_mm'] == 0.0
    assert m['tracked_fraction'] == 1.0
    assert m['first_failure_frame'] is None
    assert m['failure_reason'] is None
    assert m['n_frames'] == len(ref_qpos)


def test_root_far_from_reference_fails_for_root(rat_body, ref_qpos):
    sim = ref_qpos.copy()
    sim[:, 0] += 0.2
    m = tracking_metrics(rat_body, sim, ref_qpos)
    assert m['tracked_fraction'] == 0.0
    assert m['first_failure_frame'] == 0
    assert m['failure_reason'] == 'root'
    assert m['root_pos_error_mm'] == pytest.approx(200.0)
    assert m['body_pos_error_mm'] == pytest.approx(200.0)
    assert m['joint_rmse_rad'] == 0.0
    assert frame_failure(rat_body, sim[0], ref_qpos[0]) == 'root'


@pytest.mark.parametrize('factor, reason', [(0.99, None), (1.01, 'joints')],
                         ids=['just_below', 'just_above'])
def test_joint_error_threshold(rat_body, ref_qpos, factor, reason):
    # A finger offset changes no torso height, so only the joint criterion can trip.
    sim = ref_qpos.copy()
    sim[:, _finger_column(rat_body)] += factor * math.sqrt(rc.TRACK_JOINT_SQ_ERR_RAD2)
    assert frame_failure(rat_body, sim[0], ref_qpos[0]) == reason
    m = tracking_metrics(rat_body, sim, ref_qpos)
    assert m['failure_reason'] == reason
    assert m['tracked_fraction'] == (1.0 if reason is None else 0.0)


def test_tracked_fraction_is_share_before_first_failure(rat_body, ref_qpos):
    sim = ref_qpos.copy()
    sim[5:, 2] -= 0.5  # torso below the floor from frame 5 on; root also 0.5 m away
    sim[12:, 0] += 0.3
    m = tracking_metrics(rat_body, sim, ref_qpos)
    assert m['first_failure_frame'] == 5
    assert m['tracked_fraction'] == pytest.approx(5 / len(ref_qpos))
    # Errors average over all frames, also those after the failure.
    assert m['root_pos_error_mm'] > 0.5 * 1e3 * (len(ref_qpos) - 5) / len(ref_qpos) - 1e-6


def test_torso_too_low_fails_for_torso_height(rat_body, ref_qpos):
    sim = ref_qpos.copy()
    sim[:, 2] -= 0.06
    assert frame_failure(rat_body, sim[0], ref_qpos[0]) == 'torso_height'


def test_run_that_stopped_early_fails_at_its_end(rat_body, ref_qpos):
    m = tracking_metrics(rat_body, ref_qpos[:10], ref_qpos[:10], n_expected=20)
    assert m['first_failure_frame'] == 10
    assert m['failure_reason'] == 'non_finite'
    assert m['tracked_fraction'] == 0.5


@pytest.mark.parametrize('values, reason', [
    ((0.0, 0.0, 0.07), None),
    ((rc.TRACK_ROOT_DIST_M + 1e-6, 0.0, 0.07), 'root'),
    ((0.0, rc.TRACK_JOINT_SQ_ERR_RAD2 + 1e-6, 0.07), 'joints'),
    ((0.0, rc.TRACK_JOINT_SQ_ERR_RAD2 - 1e-6, 0.07), None),
    ((0.0, 0.0, rc.TRACK_TORSO_Z_RANGE_M[0] - 1e-6), 'torso_height'),
    ((0.0, 0.0, rc.TRACK_TORSO_Z_RANGE_M[1] + 1e-6), 'torso_height'),
    ((float('nan'), 0.0, 0.07), 'non_finite'),
], ids=['ok', 'root', 'joints_above', 'joints_below', 'too_low', 'too_high', 'nan'])
def test_tracking_failure_on_hand_made_values(values, reason):
    assert tracking_failure(*values) == reason


def test_metrics_reject_mismatched_shapes(rat_body, ref_qpos):
    with pytest.raises(ValueError, match=r'\(T, 74\)'):
        tracking_metrics(rat_body, ref_qpos[:5], ref_qpos[:6])
