"""Retargeting real rat walking (Rat7M markers) onto the quadruped and onto a user's robot."""

from pathlib import Path

import numpy as np
import pytest

from vrat_ros import resources
from vrat_ros import retarget as rt
from vrat_ros.clip import Clip
from vrat_ros.errors import ClipError
from vrat_ros.robots import Robot

RAT7M_MAT = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'rat' / \
    'demo_indices.mat'
needs_rat_data = pytest.mark.skipif(not RAT7M_MAT.is_file(),
                                    reason=f'real rat data not found at {RAT7M_MAT}')
SHIPPED = Path(resources.data_path('clips', 'quadruped'))


@pytest.fixture(scope='module')
def quadruped():
    return Robot('quadruped')


@pytest.fixture(scope='module')
def source():
    return rt.read_source(str(RAT7M_MAT))


@needs_rat_data
def test_read_source_in_metres(source):
    assert source.xyz.shape == (3000, 20, 3) and source.fps == 30.0
    assert source.names[3:6] == ['SpineF', 'SpineM', 'SpineL']
    spine_z = np.nanmedian(source.xyz[1000:, 4, 2])
    assert 0.08 < spine_z < 0.13  # about 100 mm above the floor


@needs_rat_data
def test_retarget_a_walk_onto_the_quadruped(tmp_path, quadruped, source):
    frames = (2601, 2661)  # 2 s of a training bout
    clip, report = rt.retarget_keypoints(quadruped, source, frames)
    scale = report['scale']
    # Limb length: the robot's hips stand 0.52 m high, the rat's markers about 70 mm.
    assert 6.5 < scale < 9.5
    assert report['scale_from']['robot_limb_m']['front_left'] == pytest.approx(0.52)
    assert report['time_scale'] == pytest.approx(np.sqrt(scale), rel=1e-5)
    assert clip.duration_s == pytest.approx(59 / 30 * np.sqrt(scale), abs=1 / 50)
    assert report['ik_foot_error_mm']['mean'] < 40.0
    path = tmp_path / 'walk.npz'
    clip.save(str(path))
    back = Clip.load(str(path))
    assert back.joint_names == quadruped.joint_names and back.fps == 50.0
    assert back.meta['retarget']['source_frames'] == [2601, 2661]
    # Joint ranges hold in every frame; feet never go below the floor.
    m = quadruped.model
    lo, hi = m.jnt_range[1:, 0], m.jnt_range[1:, 1]
    assert np.all(back.qpos[:, 7:] >= lo - 1e-9) and np.all(back.qpos[:, 7:] <= hi + 1e-9)
    assert np.all(back.keypoints[..., 2] >= 0.08 - 1e-9)
    # The clip starts at the origin facing +x, at the height of the retarget stance (0.83 m;
    # the sim's standing pose is the suite's 0.52 m one).
    np.testing.assert_allclose(back.qpos[0, :2], 0.0, atol=1e-9)
    assert quadruped.retarget_stand_qpos()[2] == pytest.approx(0.8284, abs=1e-3)
    assert 0.7 < back.qpos[0, 2] < 0.95
    assert back.qpos[0, 6] == pytest.approx(0.0, abs=0.2)  # no yaw left (pitch may remain)


def test_shipped_clips_keep_the_held_out_windows_out():
    names = sorted(p.name for p in SHIPPED.glob('*.npz'))
    assert 'quadruped_eval_2010_2310.npz' in names
    train = [n for n in names if '_train_' in n]
    assert len(train) == 4
    scales = set()
    for name in names:
        clip = Clip.load(str(SHIPPED / name))
        a, b = clip.meta['retarget']['source_frames']
        scales.add(clip.meta['retarget']['scale'])
        assert clip.meta['robot'] == 'quadruped' and clip.fps == 25.0
        if clip.meta['role'] == 'train':
            for ha, hb in rt.HELD_OUT_WINDOWS:
                assert b <= ha or a >= hb, (name, a, b)
        else:
            assert (a, b) == rt.EVAL_WINDOW
        assert clip.meta['source']['commit'] == 'ba95087c735e439efd7302cfb8b9ef09a4002f04'
    assert len(scales) == 1  # measured on the training windows, reused for the evaluation


def test_split_refuses_training_frames_in_a_held_out_window(tmp_path):
    with pytest.raises(ClipError, match='overlaps held-out window 2010:2310'):
        rt.write_split('quadruped', str(RAT7M_MAT), str(tmp_path),
                       training_windows=((1900, 2050),))


def test_pd_tracks_a_shipped_clip_longer_than_zero_torque(quadruped):
    clip = Clip.load(str(SHIPPED / 'quadruped_train_1640_1740.npz'))
    zero = rt.track_clip(quadruped, clip, 'zero', seconds=3.0)
    pd = rt.track_clip(quadruped, clip, 'pd', seconds=3.0)
    assert zero['frames'] == pd['frames'] == 150
    # Measured: zero torque loses the root after about 1 s; PD tracks the 3 s.
    assert zero['tracked_fraction'] < 0.5
    assert pd['tracked_fraction'] > 0.9
    assert pd['joint_rmse_rad'] < 0.5 * zero['joint_rmse_rad']


@needs_rat_data
def test_missing_keypoints_and_bad_frames(quadruped, source):
    names = list(source.names)
    names[names.index('ArmL')] = 'ForearmL'
    renamed = rt.Source(xyz=source.xyz, names=names, fps=30.0, path='x.mat', fmt='rat7m')
    with pytest.raises(ClipError, match=r"lacks keypoints \['ArmL'\]"):
        rt.retarget_keypoints(quadruped, renamed, (2601, 2631))
    with pytest.raises(ClipError, match='do not fit a recording of 3000 frames'):
        rt.parse_frames('2900:3100', 3000)
    with pytest.raises(ClipError, match="'A:B'"):
        rt.parse_frames('10-20', 3000)
    with pytest.raises(ClipError, match='missing in every frame'):
        rt.retarget_keypoints(quadruped, source, (500, 560))  # the markerless stretch


@needs_rat_data
def test_user_robot_by_path_retargets_too(tmp_path, source):
    from test_robots import write_toy
    robot = Robot(write_toy(tmp_path))
    clip, report = rt.retarget_keypoints(robot, source, (2601, 2631))
    assert clip.joint_names == robot.joint_names and clip.n_frames > 20
    # The toy's hips stand 0.26 m high: half the quadruped's scale.
    assert 2.5 < report['scale'] < 4.5
    assert np.all(np.isfinite(clip.qpos))


@needs_rat_data
def test_planted_feet_stay_still_in_stance(quadruped, source):
    # Opt-in planting (experimental, see RetargetOptions.plant_feet): a foot on the floor does
    # not slide, and the scale comes from stepping range (robot reach / rat step spread).
    opts = rt.RetargetOptions(plant_feet=True, scale_from='step', reach_m=0.12,
                              yaw_sigma_s=0.5, time_scale=5.0, out_fps=25.0)
    clip, report = rt.retarget_keypoints(quadruped, source, (2601, 2661), opts)
    # Measured on these 60 frames only: 2 x 0.12 m over a 33 mm marker spread.
    assert report['scale'] == pytest.approx(7.22, abs=0.01)
    assert report['scale_from']['method'] == 'step'
    feet = clip.keypoints
    down = np.isclose(feet[..., 2], 0.08)
    still = down[1:] & down[:-1]
    moved = np.linalg.norm(np.diff(feet[..., :2], axis=0), axis=-1)[still]
    assert still.sum() > 0.5 * still.size and np.all(moved < 1e-9)
    gaps = report['keypoint_gaps']
    assert sum(gaps[n]['rat_timed'] for n in ('ShinL', 'ShinR')) >= 2
