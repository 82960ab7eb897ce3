"""Left-right mirrored clips (vrat_ros.mirror) and the `mirror` training setting."""

import mujoco
import numpy as np
import pytest

from vrat_ros.clip import Clip
from vrat_ros.errors import ClipError
from vrat_ros.mirror import mirror_clip
from vrat_ros.mirror import mirror_map
from vrat_ros.rat_model import RatBody
from vrat_ros.resources import data_path
from vrat_ros.train import collection_job
from vrat_ros.train import default_config
from vrat_ros.train import validate_config

WALK = data_path('clips', 'rat7m_walk_2010_2310.npz')


@pytest.fixture(scope='module')
def rat():
    return RatBody()


def _body_positions(body, qpos):
    body.data.qpos[:] = qpos
    mujoco.mj_kinematics(body.model, body.data)
    return body.data.xpos[1:].copy()  # without the world body


def test_mirrored_walk_puts_every_body_at_the_reflection_of_one(rat):
    clip = Clip.load(WALK).reorder_to(rat.hinge_names)
    mirrored = mirror_clip(clip, rat.model)
    assert mirrored.n_frames == clip.n_frames and mirrored.fps == clip.fps
    for frame in (0, 120, clip.n_frames - 1):
        reflected = _body_positions(rat, clip.qpos[frame]) * [1.0, -1.0, 1.0]
        moved = _body_positions(rat, mirrored.qpos[frame])
        # Each reflected body lies on some body of the mirrored pose (its mate); the rat
        # model is symmetric to about 0.02 mm.
        gap = np.linalg.norm(reflected[:, None] - moved[None], axis=-1).min(axis=1)
        assert gap.max() < 1e-4
        # Not trivially: the walk's pose is not symmetric itself.
        plain = np.linalg.norm(reflected - _body_positions(rat, clip.qpos[frame]), axis=-1)
        assert plain.max() > 5e-3
    np.testing.assert_allclose(mirrored.qpos[:, 1], -clip.qpos[:, 1])


def test_mirroring_twice_gives_the_clip_back(rat):
    clip = Clip.load(WALK).reorder_to(rat.hinge_names)
    once = mirror_clip(clip, rat.model)
    twice = mirror_clip(once, rat.model)
    assert once.meta['mirrored'] is True and twice.meta['mirrored'] is False
    assert once.meta['citation'] == clip.meta['citation']
    assert once.keypoints is None
    np.testing.assert_allclose(twice.qpos, clip.qpos, atol=1e-12)


def test_rat_mirror_swaps_limbs_and_flips_midline_bends(rat):
    names = rat.hinge_names
    mapping = mirror_map(rat.model, names)

    def mate(name):
        i = names.index(name)
        return names[mapping.mates[i]], mapping.signs[i]

    assert mate('hip_L_extend') == ('hip_R_extend', 1.0)
    assert mate('elbow_R') == ('elbow_L', 1.0)
    assert mate('vertebra_1_extend') == ('vertebra_1_extend', 1.0)
    assert mate('vertebra_2_bend') == ('vertebra_2_bend', -1.0)
    assert mate('vertebra_3_twist') == ('vertebra_3_twist', -1.0)
    # 6 hind-leg and 8 foreleg joints a side swap; all others (spine, neck, tail) are their own
    assert sum(names[m] != n for n, m in zip(names, mapping.mates)) == 2 * (6 + 8)


_LOPSIDED = """
<mujoco>
  <worldbody>
    <body name="trunk">
      <freejoint name="root"/>
      <geom type="box" size="0.05 0.02 0.01" mass="0.1"/>
      <body name="arm" pos="0 0.03 0">
        <joint name="shoulder_L" type="hinge" axis="0 1 0"/>
        <geom type="capsule" fromto="0 0 0 0.03 0 0" size="0.004" mass="0.01"/>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


def test_a_lopsided_body_is_refused_by_name():
    model = mujoco.MjModel.from_xml_string(_LOPSIDED)
    with pytest.raises(ClipError, match="mirrors 'shoulder_L'.*not symmetric"):
        mirror_map(model, ['shoulder_L'])
    with pytest.raises(ClipError, match="'elbow' is not a hinge"):
        mirror_map(model, ['elbow'])


def test_the_mirror_is_taken_in_the_root_bodys_frame():
    # A symmetric body whose root starts off the world's x-z plane, turned by 30 degrees.
    arm = '''
      <body name="arm_{side}" pos="0 {y} 0">
        <joint name="shoulder_{side}" type="hinge" axis="0 1 0"/>
        <joint name="twist_{side}" type="hinge" axis="1 0 0"/>
        <geom type="capsule" fromto="0 0 0 0.03 0 0" size="0.004" mass="0.01"/>
      </body>'''
    xml = ("""<mujoco><worldbody><body name="trunk" pos="0.1 0.2 0.1" euler="0 0 30">
      <freejoint name="root"/><geom type="box" size="0.05 0.02 0.01" mass="0.1"/>"""
           + arm.format(side='L', y=0.03) + arm.format(side='R', y=-0.03)
           + '</body></worldbody></mujoco>')
    model = mujoco.MjModel.from_xml_string(xml)
    names = ['shoulder_L', 'twist_L', 'shoulder_R', 'twist_R']
    mapping = mirror_map(model, names)
    assert mapping.mates.tolist() == [2, 3, 0, 1]
    # Both arms use the same axes, not mirrored ones: the pitch keeps its sign, the roll
    # about the forward axis flips it.
    assert mapping.signs.tolist() == [1.0, -1.0, 1.0, -1.0]


def test_a_clip_lacking_a_mate_is_refused(rat):
    clip = Clip.load(WALK).reorder_to(rat.hinge_names)
    keep = [n for n in rat.hinge_names if n != 'knee_R']
    with pytest.raises(ClipError, match="'knee_L' mirrors 'knee_R', which the clip lacks"):
        mirror_clip(clip.reorder_to(keep), rat.model)


def test_mirror_setting_adds_mirrored_clips_to_data_collection():
    config = default_config(small=True)
    config['clips'] = [WALK]
    init_args, _ = collection_job(config)
    assert len(init_args[0]) == 1
    config['mirror'] = True
    validate_config(config)
    clips = collection_job(config)[0][0]
    assert len(clips) == 2
    assert clips[1].meta['mirrored'] is True
    np.testing.assert_allclose(clips[1].qpos[:, 1], -clips[0].qpos[:, 1])


def test_mirror_setting_must_be_true_or_false():
    config = default_config(small=True)
    config['mirror'] = 1
    with pytest.raises(ValueError, match="'mirror' should be true or false: got 1"):
        validate_config(config)
    del config['mirror']  # configurations written before the setting existed
    validate_config(config)


def test_quadruped_mirror_comes_from_its_geometry_too():
    # The dm_control quadruped builds its legs by rotation, not reflection: its hip yaw
    # joints flip sign between sides where the rat's limb joints do not.
    from vrat_ros.robots import Robot
    robot = Robot('quadruped')
    names = robot.hinge_names
    mapping = mirror_map(robot.model, names)
    pairs = {names[i]: (names[j], s) for i, (j, s) in enumerate(zip(mapping.mates,
                                                                    mapping.signs))}
    assert pairs['yaw_front_left'] == ('yaw_front_right', -1.0)
    assert pairs['pitch_back_right'] == ('pitch_back_left', 1.0)
    assert pairs['knee_front_left'] == ('knee_front_right', 1.0)
