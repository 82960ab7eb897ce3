"""Clip format: time-indexed sampling, slerp, atomic saving and clear errors."""

import numpy as np
import pytest

from vrat_ros.clip import Clip
from vrat_ros.errors import ClipError
from vrat_ros.kinematics import rotvec_to_quat


def _clip(n=31, fps=30.0, joints=2):
    qpos = np.zeros((n, 7 + joints))
    qpos[:, 0] = np.arange(n) * 0.01          # root x moves 1 cm per frame
    qpos[:, 3:7] = rotvec_to_quat(np.outer(np.arange(n) * 0.02, [0, 0, 1]))
    qpos[:, 7] = np.arange(n)                 # joint 0 holds the frame index
    return Clip(qpos=qpos, fps=fps, joint_names=[f'j{i}' for i in range(joints)],
                body_scale=0.9, meta={'title': 'test'})


def test_frames_are_picked_by_time():
    clip = _clip()
    assert clip.sample(1.0)[7] == pytest.approx(30.0)     # t = 1 s is frame 30 at 30 Hz
    assert clip.sample(0.5 / 30)[7] == pytest.approx(0.5)  # halfway between frames 0 and 1
    assert clip.sample(99.0)[7] == pytest.approx(30.0)    # held at the end


def test_root_rotation_is_slerped():
    clip = _clip()
    mid = clip.sample(0.5 / 30)
    np.testing.assert_allclose(mid[3:7], rotvec_to_quat([0, 0, 0.01]), atol=1e-9)


def test_window_and_velocity():
    clip = _clip()
    win = clip.window(0.1, 5, 0.02)
    np.testing.assert_allclose(win[:, 7], (0.1 + 0.02 * np.arange(5)) * 30)
    vel = clip.velocity(0.5)
    assert vel[0] == pytest.approx(0.3)   # 0.01 m per frame at 30 Hz
    assert vel[5] == pytest.approx(0.6)   # yaw rate 0.02 rad per frame
    assert vel[6] == pytest.approx(30.0)


def test_states_sample_positions_and_interpolate_frame_velocities():
    clip = _clip()
    times = [0.0, 0.1, 0.5 / 30, 0.5, 0.51, clip.duration_s, 99.0]
    qpos, qvel = clip.states(times)
    assert qpos.shape == (7, 9) and qvel.shape == (7, 8)
    for t, q in zip(times, qpos):
        np.testing.assert_array_equal(q, clip.sample(t))  # the same numbers, not just close
    # Constant rates: 0.3 m/s, 0.6 rad/s of yaw, 30 frames/s; the ends use one-sided steps.
    np.testing.assert_allclose(qvel[:, 0], 0.3)
    np.testing.assert_allclose(qvel[:, 5], 0.6)
    np.testing.assert_allclose(qvel[:, 6], 30.0)
    np.testing.assert_allclose(qvel[:, [1, 2, 3, 4, 7]], 0.0, atol=1e-12)
    np.testing.assert_allclose(qvel[3], clip.velocity(0.5))


def test_frame_velocities_blend_a_change_of_speed():
    qpos = np.zeros((4, 8))
    qpos[:, 3] = 1.0
    qpos[:, 7] = [0.0, 0.0, 1.0, 2.0]  # still, then 1 rad per frame from frame 1 on
    clip = Clip(qpos=qpos, fps=10.0, joint_names=['j0'], body_scale=1.0, meta={})
    np.testing.assert_allclose(clip.frame_velocities()[:, 6], [0.0, 5.0, 10.0, 10.0])
    _, qvel = clip.states([0.05, 0.15])
    np.testing.assert_allclose(qvel[:, 6], [2.5, 7.5])  # halfway between the frames' values
    assert clip.velocity(0.15)[6] == pytest.approx(10.0)  # the slope of that interval


def test_save_load_round_trip(tmp_path):
    clip = _clip()
    path = tmp_path / 'c.npz'
    clip.save(str(path))
    back = Clip.load(str(path))
    np.testing.assert_array_equal(back.qpos, clip.qpos)
    assert back.fps == 30.0 and back.meta == {'title': 'test'} and back.joint_names == ['j0', 'j1']
    assert [p.name for p in tmp_path.iterdir()] == ['c.npz']  # no temporary file left


def test_reorder_matches_joints_by_name():
    clip = _clip()
    swapped = clip.reorder_to(['j1', 'j0'])
    np.testing.assert_array_equal(swapped.qpos[:, 8], clip.qpos[:, 7])
    with pytest.raises(ClipError, match='lacks 1 joints'):
        clip.reorder_to(['j0', 'j9'])


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ClipError, match='does not exist'):
        Clip.load(str(tmp_path / 'missing.npz'))
    bogus = tmp_path / 'bogus.npz'
    bogus.write_text('not a zip')
    with pytest.raises(ClipError, match='not a vrat clip: not an .npz archive'):
        Clip.load(str(bogus))
    other = tmp_path / 'other.npz'
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ClipError, match=r"missing arrays \['qpos'"):
        Clip.load(str(other))
    with pytest.raises(ClipError, match='does not match 7 root values'):
        Clip(qpos=np.zeros((3, 10)), fps=50, joint_names=['a'], body_scale=0.9, meta={})
    with pytest.raises(ClipError, match='non-finite'):
        Clip(qpos=np.full((3, 8), np.nan), fps=50, joint_names=['a'], body_scale=0.9, meta={})
    # 1e308 was accepted and gave inf velocities; 5e-324 a clip lasting forever; an array of
    # two rates or a string in a file gave a TypeError naming neither the file nor fps.
    for fps in (0.0, np.inf, 1e308, 5e-324, True, None, '30', [30.0, 40.0], 10 ** 400):
        with pytest.raises(ClipError, match='fps should be a number >= 0.001 and <= 100000'):
            _clip(fps=fps)
    assert np.all(np.isfinite(_clip(fps=1e5).velocity(0.0)))
    assert _clip(fps=np.array([25.0])).fps == 25.0 and _clip(fps=0.001).duration_s == 30000.0
    good = _clip()
    for stored in (np.array([30.0, 40.0]), np.array('abc'), np.float64(1e6)):
        path = tmp_path / 'bad_fps.npz'
        good.save(str(path))
        with np.load(path) as z:
            arrays = dict(z)
        arrays['fps'] = stored
        np.savez(path, **arrays)
        with pytest.raises(ClipError, match=r"bad_fps.npz': the stored fps should be a number"):
            Clip.load(str(path))


def test_failed_save_leaves_the_old_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / 'c.npz'
    _clip().save(str(path))
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError('disk full')
    monkeypatch.setattr(np, 'savez_compressed', boom)
    with pytest.raises(OSError, match='disk full'):
        _clip(n=5).save(str(path))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['c.npz']


def test_atomic_write_follows_links_and_refuses_devices(tmp_path):
    """A report path that is a link writes its target (the link stays); a device is refused."""
    import os
    from vrat_ros.clip import atomic_write

    def write(text):
        def fn(tmp):
            with open(tmp, 'w') as f:
                f.write(text)
        return fn
    target = tmp_path / 'target.json'
    link = tmp_path / 'link.json'
    link.symlink_to(target)
    atomic_write(str(link), write('first'))
    assert link.is_symlink() and target.read_text() == 'first'
    atomic_write(str(link), write('second'))
    assert link.is_symlink() and target.read_text() == 'second'
    fifo = tmp_path / 'pipe'
    os.mkfifo(fifo)
    with pytest.raises(OSError, match='is not a regular file'):
        atomic_write(str(fifo), write('x'))
    assert fifo.exists() and not fifo.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['link.json', 'pipe', 'target.json']
