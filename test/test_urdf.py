"""The generated URDF against MuJoCo: forward kinematics, inertias, limits, and staleness.

yourdfpy parses the URDF and evaluates each joint (an implementation independent of the
exporter); the test only multiplies the per-joint transforms along the tree, because
yourdfpy's own whole-chain lookup is slow on the rat's 50-link tail.
"""

import math
import pathlib

import mujoco
import numpy as np
import pytest

from vrat_ros import urdf_export

yourdfpy = pytest.importorskip('yourdfpy')

ROOT = pathlib.Path(__file__).resolve().parents[1]
URDF_PATH = ROOT / 'urdf' / urdf_export.URDF_FILE
MESH_PATH = ROOT / 'urdf' / urdf_export.SPHERE_MESH_FILE
N_CONFIGS = 50
POS_TOL_M = 1e-6
ROT_TOL_RAD = 1e-6

# A small body with the cases the rat lacks: a joint `ref`, several off-centre hinges, an
# axis not along x/y/z, a rotated child body, and every geom type the export supports.
_EDGE_MJCF = """
<mujoco>
  <worldbody>
    <body name="walker">
      <freejoint name="root"/>
      <geom type="box" size=".02 .01 .01" pos=".01 0 0" euler="0 0 30"/>
      <body name="a" pos=".03 .01 0" quat=".9 .1 .3 .2">
        <joint name="a1" axis="1 1 0" pos=".004 -.002 .001" range="-1 1" ref=".3"/>
        <joint name="a2" axis="0 0 1" pos="-.003 .002 0" range="-2 .5"/>
        <joint name="a3" axis=".2 -1 .4" pos=".001 .001 .005" range="-.7 .9" ref="-.2"/>
        <geom type="capsule" fromto="0 0 0 .03 .01 0" size=".004"/>
        <geom type="ellipsoid" size=".01 .005 .003" pos="0 0 .01" euler="10 20 30"/>
        <body name="b" pos=".03 0 0">
          <joint name="b1" axis="0 1 0" range="-1 1"/>
          <geom type="cylinder" size=".003 .01" euler="0 90 0"/>
          <geom type="sphere" size=".005" pos=".01 0 0" mass=".002"/>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


def _load_urdf(text: str, tmp_path: pathlib.Path):
    path = tmp_path / 'robot.urdf'
    path.write_text(text)
    return yourdfpy.URDF.load(str(path), build_scene_graph=True, load_meshes=False,
                              build_collision_scene_graph=False, load_collision_meshes=False)


def _link_poses(urdf, cfg: dict) -> dict:
    """World-from-link 4x4 transforms with the root link at the identity."""
    urdf.update_cfg(cfg)
    parent_of = {j.child: j.parent for j in urdf.robot.joints}
    poses = {urdf.base_link: np.eye(4)}

    def pose(link):
        if link not in poses:
            poses[link] = pose(parent_of[link]) @ urdf.get_transform(link, parent_of[link])
        return poses[link]

    for link in urdf.link_map:
        pose(link)
    return poses


def _rotation_angle(r_a: np.ndarray, r_b: np.ndarray) -> float:
    cos = (np.trace(r_a.T @ r_b) - 1.0) / 2.0
    sin = np.linalg.norm([r_a[:, 1] @ r_b[:, 2] - r_a[:, 2] @ r_b[:, 1],
                          r_a[:, 2] @ r_b[:, 0] - r_a[:, 0] @ r_b[:, 2],
                          r_a[:, 0] @ r_b[:, 1] - r_a[:, 1] @ r_b[:, 0]]) / 2.0
    return math.atan2(abs(sin), cos)


def _check_fk(model: mujoco.MjModel, urdf, n_configs: int, seed: int) -> None:
    data = mujoco.MjData(model)
    rng = np.random.default_rng(seed)
    names = [model.joint(j).name for j in range(1, model.njnt)]
    assert sorted(urdf.actuated_joint_names) == sorted(names)
    low, high = model.jnt_range[1:, 0], model.jnt_range[1:, 1]
    worst_pos, worst_rot = 0.0, 0.0
    for _ in range(n_configs):
        hinges = rng.uniform(low, high)
        quat = rng.normal(size=4)
        data.qpos[:] = np.concatenate([rng.uniform(-1, 1, 3), quat / np.linalg.norm(quat),
                                       hinges])
        mujoco.mj_kinematics(model, data)
        poses = _link_poses(urdf, dict(zip(names, hinges)))
        world_from_root = np.eye(4)
        world_from_root[:3, :3] = data.xmat[1].reshape(3, 3)
        world_from_root[:3, 3] = data.xpos[1]
        for body in range(2, model.nbody):
            pose = world_from_root @ poses[model.body(body).name]
            worst_pos = max(worst_pos, float(np.max(np.abs(pose[:3, 3] - data.xpos[body]))))
            worst_rot = max(worst_rot,
                            _rotation_angle(pose[:3, :3], data.xmat[body].reshape(3, 3)))
    assert worst_pos < POS_TOL_M, f'worst body position error {worst_pos:.3g} m'
    assert worst_rot < ROT_TOL_RAD, f'worst body orientation error {worst_rot:.3g} rad'


def _check_inertias(model: mujoco.MjModel, urdf) -> None:
    for body in range(1, model.nbody):
        link = urdf.link_map[model.body(body).name]
        mass = float(model.body_mass[body])
        if mass == 0.0:
            assert link.inertial is None or link.inertial.mass == 0.0
            continue
        assert link.inertial.mass == pytest.approx(mass, rel=1e-8)
        origin = link.inertial.origin
        np.testing.assert_allclose(origin[:3, 3], model.body_ipos[body], atol=1e-9)
        # Both tensors about the centre of mass, in the body frame.
        urdf_tensor = origin[:3, :3] @ link.inertial.inertia @ origin[:3, :3].T
        frame = np.zeros(9)
        mujoco.mju_quat2Mat(frame, model.body_iquat[body])
        frame = frame.reshape(3, 3)
        mj_tensor = frame @ np.diag(model.body_inertia[body]) @ frame.T
        np.testing.assert_allclose(urdf_tensor, mj_tensor,
                                   atol=1e-8 * np.max(model.body_inertia[body]),
                                   err_msg=f'inertia of {model.body(body).name}')


@pytest.fixture(scope='module')
def rat_model():
    from vrat_ros.rat_model import build_rat_model
    return build_rat_model(floor=False)


@pytest.fixture(scope='module')
def committed_urdf():
    return yourdfpy.URDF.load(str(URDF_PATH), build_scene_graph=True, load_meshes=False,
                              build_collision_scene_graph=False, load_collision_meshes=False)


def test_committed_urdf_is_what_the_generator_writes_now():
    assert URDF_PATH.read_text(encoding='utf-8') == urdf_export.build_urdf(), (
        'urdf/vrat.urdf is stale: regenerate it with `vrat urdf --out urdf/vrat.urdf`')
    assert MESH_PATH.read_bytes() == urdf_export.unit_sphere_stl()
    assert URDF_PATH.stat().st_size < 300_000


def test_urdf_forward_kinematics_matches_mujoco_body_poses(rat_model, committed_urdf):
    _check_fk(rat_model, committed_urdf, N_CONFIGS, seed=5)


def test_urdf_masses_and_inertias_match_mujoco(rat_model, committed_urdf):
    _check_inertias(rat_model, committed_urdf)
    total = sum(link.inertial.mass for link in committed_urdf.robot.links if link.inertial)
    assert total == pytest.approx(float(rat_model.body_subtreemass[1]), rel=1e-8)


def test_urdf_root_is_the_floating_walker_and_joints_carry_limits(rat_model, committed_urdf):
    assert committed_urdf.base_link == 'walker'
    assert 'world' not in committed_urdf.link_map
    efforts = urdf_export.joint_effort_limits(rat_model)
    joints = {j.name: j for j in committed_urdf.robot.joints}
    for j in range(1, rat_model.njnt):
        joint = joints[rat_model.joint(j).name]
        assert joint.type == 'revolute'
        assert joint.limit.lower == pytest.approx(rat_model.jnt_range[j, 0], abs=1e-9)
        assert joint.limit.upper == pytest.approx(rat_model.jnt_range[j, 1], abs=1e-9)
        assert joint.limit.effort == pytest.approx(efforts[j], rel=1e-8)
    # A joint with its own torque motor carries that motor's force bound.
    knee = rat_model.actuator('knee_L')
    assert joints['knee_L'].limit.effort == pytest.approx(float(knee.forcerange[1]))


def test_urdf_export_handles_ref_offsets_chains_and_all_geom_types(tmp_path):
    model = mujoco.MjModel.from_xml_string(_EDGE_MJCF)
    urdf = _load_urdf(urdf_export.urdf_from_model(model, robot_name='edge'), tmp_path)
    _check_fk(model, urdf, 20, seed=1)
    _check_inertias(model, urdf)
    links = urdf.link_map
    assert {'a__a1', 'a__a2', 'a__a3'} <= set(links)  # a chain for the three hinges of 'a'
    # The capsule is a cylinder plus two spheres; the ellipsoid is a scaled mesh.
    assert [v.name for v in links['a'].visuals] == [
        'geom_1', 'geom_1__cap_pos', 'geom_1__cap_neg', 'geom_2']
    mesh = links['a'].visuals[-1].geometry.mesh
    np.testing.assert_allclose(mesh.scale, [0.01, 0.005, 0.003])


def test_urdf_export_rejects_a_model_without_a_free_root():
    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><body><joint type="hinge"/><geom size=".1"/></body>'
        '</worldbody></mujoco>')
    with pytest.raises(ValueError, match='free joint'):
        urdf_export.urdf_from_model(model)


def test_unit_sphere_mesh_is_a_closed_unit_sphere():
    trimesh = pytest.importorskip('trimesh')
    import io
    mesh = trimesh.load(io.BytesIO(urdf_export.unit_sphere_stl()), file_type='stl')
    assert mesh.is_watertight
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=1), 1.0, atol=1e-6)
    assert mesh.volume == pytest.approx(4.0 / 3.0 * math.pi, rel=0.05)
    assert mesh.volume > 0  # outward normals


def test_parsed_urdf_joints_compose_to_mujoco_body_poses(rat_model):
    """The joint transforms the viz node sends on TF put each body where MuJoCo has it."""
    joints = urdf_export.parse_urdf_joints(URDF_PATH.read_text(encoding='utf-8'))
    by_child = {j.child: j for j in joints}
    data = mujoco.MjData(rat_model)
    rng = np.random.default_rng(11)
    data.qpos[7:] = rng.uniform(rat_model.jnt_range[1:, 0], rat_model.jnt_range[1:, 1])
    data.qpos[3:7] = [1.0, 0.0, 0.0, 0.0]
    mujoco.mj_kinematics(rat_model, data)
    positions = {rat_model.joint(j).name: data.qpos[6 + j] for j in range(1, rat_model.njnt)}
    poses = {'walker': (np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0]))}

    def pose(link):
        if link not in poses:
            joint = by_child[link]
            parent_pos, parent_quat = pose(joint.parent)
            pos, quat = joint.transform(positions.get(joint.name, 0.0))
            moved, composed = np.zeros(3), np.zeros(4)
            mujoco.mju_rotVecQuat(moved, pos, parent_quat)
            mujoco.mju_mulQuat(composed, parent_quat, quat)
            poses[link] = (parent_pos + moved, composed)
        return poses[link]

    for body in range(2, rat_model.nbody):
        pos, quat = pose(rat_model.body(body).name)
        np.testing.assert_allclose(pos, data.xpos[body], atol=1e-9)
        mat = np.zeros(9)
        mujoco.mju_quat2Mat(mat, quat / np.linalg.norm(quat))
        assert _rotation_angle(mat.reshape(3, 3), data.xmat[body].reshape(3, 3)) < 1e-9


def test_robot_urdf_of_the_rat_is_the_committed_one():
    from vrat_ros.robots import robot_path
    expected = urdf_export.build_urdf()
    assert urdf_export.robot_urdf('rat') == expected
    assert urdf_export.robot_urdf(robot_path('rat')) == expected
    assert urdf_export.robot_urdf('rat', scale=1.1) == urdf_export.build_urdf(1.1)


def test_quadruped_urdf_matches_its_mujoco_model(tmp_path):
    from vrat_ros.robots import load_robot
    model, spec = load_robot('quadruped')
    text = urdf_export.robot_urdf('quadruped')
    assert text == urdf_export.robot_model_urdf(model, spec)
    assert "from robot 'quadruped' at scale 1;" in text
    urdf = _load_urdf(text, tmp_path)
    assert urdf.robot.name == 'quadruped' and urdf.base_link == 'torso'
    assert len(urdf.actuated_joint_names) == 16
    _check_fk(model, urdf, 20, seed=3)
    _check_inertias(model, urdf)
    # The ellipsoid torso is the scaled unit-sphere mesh.
    meshes = [v.geometry.mesh for v in urdf.link_map['torso'].visuals if v.geometry.mesh]
    assert meshes and meshes[0].filename == urdf_export.DEFAULT_MESH_URI


def test_urdf_comment_never_holds_a_double_hyphen():
    model = mujoco.MjModel.from_xml_string(_EDGE_MJCF)
    text = urdf_export.urdf_from_model(model, comment='made with --robot edge')
    assert '<!-- made with - -robot edge -->' in text


def test_vrat_urdf_writes_a_robot_and_refuses_an_unknown_one(tmp_path, capsys):
    from vrat_ros.cli import main
    out = tmp_path / 'quadruped.urdf'
    assert main(['urdf', '--robot', 'quadruped', '--out', str(out)]) == 0
    assert out.read_text(encoding='utf-8') == urdf_export.robot_urdf('quadruped')
    assert (tmp_path / urdf_export.SPHERE_MESH_FILE).read_bytes() == urdf_export.unit_sphere_stl()
    rat = tmp_path / 'rat.urdf'
    assert main(['urdf', '--out', str(rat)]) == 0
    assert rat.read_text(encoding='utf-8') == urdf_export.build_urdf()
    capsys.readouterr()
    assert main(['urdf', '--robot', 'hexapod', '--out', str(tmp_path / 'h.urdf')]) == 1
    err = capsys.readouterr().err
    assert "robot 'hexapod' is neither a robot file" in err and 'Traceback' not in err
    assert not (tmp_path / 'h.urdf').exists()


def test_rounding_noise_is_written_as_zero():
    # The same rpy angle came out as 3.9e-16 on one machine and 4.4e-16 on another, so the
    # committed URDF differed from a fresh one; such noise is written as 0.
    from vrat_ros.urdf_export import _num
    assert _num(3.885780586e-16) == '0' and _num(-4.440892099e-16) == '0'
    assert _num(1.570796327) == '1.570796327' and _num(2.5e-9) == '2.5e-09'
