"""Small test fixtures built on the fly: a tiny ONNX policy and a short synthetic clip.

Both fit the real rat body (names, sizes and force limits), so nodes and loops accept them,
but they are a few KB and take milliseconds to make. Import them from any test:
`from fixtures import make_tiny_policy, make_synthetic_clip`.

For other bodies: `write_toy` writes a small legged robot of our own (MJCF and robot file),
and `make_robot_policy` / `make_robot_clip` make the same kind of policy and clip for any
`vrat_ros.robots.Robot`.
"""

from __future__ import annotations

import json

import numpy as np

from vrat_ros.clip import Clip
from vrat_ros.observation import observation_layout
from vrat_ros.observation import observation_size
from vrat_ros.policy import CONTRACT_KEY
from vrat_ros.policy import CONTRACT_VERSION
from vrat_ros.rat_model import RatBody

TINY_INPUT = 'observation'
TINY_OUTPUT = 'action'


def tiny_contract(body: RatBody, joints: list[str], input_name: str, output_name: str,
                  layers: list[str], control_rate_hz: float, frames: int, dt_s: float) -> dict:
    """Returns a valid vrat contract for a test policy on `body` reading `joints`."""
    return {
        'format_version': CONTRACT_VERSION,
        'joint_names': joints,
        'actuator_names': list(body.actuator_names),
        'command_interface': 'effort',
        'action_scale': [float(g) for g in body.actuator_gain],
        'action_clip': [-1.0, 1.0],
        'control_rate_hz': control_rate_hz,
        'reference': {'frames': frames, 'dt_s': dt_s},
        'observation': {'size': observation_size(len(joints), frames),
                        'layout': observation_layout(len(joints), frames)},
        'input_name': input_name,
        'output_name': output_name,
        'layers': layers,
        'body': {'name': 'rat', 'scale': body.scale, 'actuators': body.actuator_variant},
    }


def make_tiny_policy(path: str, body: RatBody, seed: int = 0, weight_scale: float = 0.001,
                     frames: int = 5, dt_s: float = 0.02,
                     control_rate_hz: float = 50.0) -> str:
    """Write a vrat ONNX policy computing action = tanh(W obs + b) with small random W, b.

    Its contract reads the 43 non-tail hinges and drives every actuator of `body`, with
    action_scale = the actuator force limits (so |torque| stays within them).

    Returns:
        `path`.
    """
    joints = [body.hinge_names[i] for i in body.tracked_hinge_idx]
    contract = tiny_contract(body, joints, TINY_INPUT, TINY_OUTPUT, [], control_rate_hz,
                             frames, dt_s)
    return write_linear_policy(path, contract, seed, weight_scale)


def write_linear_policy(path: str, contract: dict, seed: int = 0,
                        weight_scale: float = 0.001) -> str:
    """Write action = tanh(W obs + b), W and b small and random, with `contract` attached.

    The sizes come from the contract (observation size, number of actuators); the graph's
    tensor names are TINY_INPUT and TINY_OUTPUT.

    Returns:
        `path`.
    """
    import onnx
    from onnx import helper
    from onnx import TensorProto

    n_obs = int(contract['observation']['size'])
    n_act = len(contract['actuator_names'])
    rng = np.random.default_rng(seed)
    weight = (weight_scale * rng.standard_normal((n_obs, n_act))).astype(np.float32)
    bias = (weight_scale * rng.standard_normal(n_act)).astype(np.float32)

    graph = helper.make_graph(
        nodes=[
            helper.make_node('MatMul', [TINY_INPUT, 'W'], ['xw']),
            helper.make_node('Add', ['xw', 'b'], ['pre']),
            helper.make_node('Tanh', ['pre'], [TINY_OUTPUT]),
        ],
        name='tiny_linear_policy',
        inputs=[helper.make_tensor_value_info(TINY_INPUT, TensorProto.FLOAT, [1, n_obs])],
        outputs=[helper.make_tensor_value_info(TINY_OUTPUT, TensorProto.FLOAT, [1, n_act])],
        initializer=[
            helper.make_tensor('W', TensorProto.FLOAT, weight.shape, weight.ravel()),
            helper.make_tensor('b', TensorProto.FLOAT, bias.shape, bias),
        ])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 9
    helper.set_model_props(model, {CONTRACT_KEY: json.dumps(contract)})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def synthetic_qpos(body: RatBody, t: np.ndarray) -> np.ndarray:
    """Smooth (T, nq) poses at times `t` (s): a slow forward walk with a turn and small swings."""
    t = np.asarray(t, dtype=np.float64)
    qpos = np.tile(body.default_qpos(), (len(t), 1))
    qpos[:, 0] = 0.05 * t
    qpos[:, 1] = 0.01 * np.sin(2.0 * t)
    qpos[:, 2] = 0.03
    yaw = 0.4 + 0.3 * t
    qpos[:, 3] = np.cos(yaw / 2.0)
    qpos[:, 6] = np.sin(yaw / 2.0)
    phase = 0.3 * np.arange(len(body.hinge_names))
    qpos[:, 7:] = 0.05 * np.sin(2.0 * np.pi * 0.7 * t[:, None] + phase[None, :])
    return qpos


def make_synthetic_clip(path: str, body: RatBody, n_frames: int = 45,
                        fps: float = 30.0) -> str:
    """Write a clip of `n_frames` frames at `fps` from `synthetic_qpos`; returns `path`."""
    qpos = synthetic_qpos(body, np.arange(n_frames) / fps)
    Clip(qpos=qpos, fps=fps, joint_names=list(body.hinge_names), body_scale=body.scale,
         meta={'source': 'synthetic test fixture'}).save(path)
    return path


# A small legged robot of our own: a box torso, four legs of two hinges each, motors, feet.
_LEG = """
      <body name="{n}_thigh" pos="{x} {y} 0">
        <joint name="{n}_hip" axis="0 1 0" range="-60 60"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.12" size="0.02"/>
        <body name="{n}_shin" pos="0 0 -0.12">
          <joint name="{n}_knee" axis="0 1 0" range="-120 0"/>
          <geom type="capsule" fromto="0 0 0 0 0 -0.12" size="0.015"/>
          <geom name="{n}_foot" type="sphere" pos="0 0 -0.12" size="0.02"/>
          <site name="{n}_foot" pos="0 0 -0.12" size="0.021"/>
        </body>
      </body>"""
_LEGS = {'fl': (0.15, 0.08), 'fr': (0.15, -0.08), 'hl': (-0.15, 0.08), 'hr': (-0.15, -0.08)}
TOY_XML = """<mujoco model="toy">
  <compiler angle="degree"/>
  <option timestep="0.004"/>
  <worldbody>
    <geom name="ground" type="plane" size="3 3 0.1"/>
    <body name="base" pos="0 0 0.3">
      <freejoint name="base_free"/>
      <geom type="box" size="0.2 0.1 0.04" mass="2"/>{legs}
    </body>
  </worldbody>
  <actuator>{motors}
  </actuator>
</mujoco>
""".format(
    legs=''.join(_LEG.format(n=n, x=x, y=y) for n, (x, y) in _LEGS.items()),
    motors=''.join(f'\n    <motor name="{n}_{j}" joint="{n}_{j}" gear="5" ctrlrange="-1 1" '
                   'ctrllimited="true"/>' for n in _LEGS for j in ('hip', 'knee')))

TOY_YAML = """\
name: toy
mjcf: {path: models/toy.xml}
root: {joint: base_free, body: base}
joints: all
actuation: {actuators: model, names: all}
command_interface: effort
pd: {kp: 20.0, kd: 0.5}
timing: {physics_timestep_s: 0.004, control_rate_hz: 50.0}
torso: {body: base, healthy_z_range: [0.1, 1.0]}
feet:
  fl: {site: fl_foot}
  fr: {site: fr_foot}
  hl: {site: hl_foot}
  hr: {site: hr_foot}
retarget:
  trunk: {front: SpineF, back: SpineL}
  limbs:
    fl: {base: ShoulderL, end: ArmL, foot: fl}
    fr: {base: ShoulderR, end: ArmR, foot: fr}
    hl: {base: HipL, end: ShinL, foot: hl}
    hr: {base: HipR, end: ShinR, foot: hr}
"""
# The same robot taking joint targets: its motors act on joints, so the sim's PD law can
# drive them (kp 20 N m/rad, kd 0.5 N m s/rad, torques clamped at the 5 N m gear).
TOY_POSITION_YAML = TOY_YAML.replace('command_interface: effort', 'command_interface: position')


def write_toy(directory, yaml_text: str = TOY_YAML, xml_text: str = TOY_XML,
              name: str = 'toy.yaml') -> str:
    """Write the toy robot's MJCF (models/toy.xml) and robot file into `directory`.

    Returns:
        The robot file's path, for `vrat_ros.robots.load_robot` or a sim's `robot`.
    """
    import pathlib
    directory = pathlib.Path(directory)
    (directory / 'models').mkdir(exist_ok=True)
    (directory / 'models' / 'toy.xml').write_text(xml_text)
    path = directory / name
    path.write_text(yaml_text)
    return str(path)


def robot_contract(robot, frames: int = 3, target_range: float = 0.3) -> dict:
    """A vrat contract for a test policy on `robot` (a vrat_ros.robots.Robot).

    It reads every joint, drives every actuator through the robot's command interface and
    names the robot's root joint. Effort: action_scale = the torque at full command. Position:
    targets = the standing pose's joint angles + target_range x action.
    """
    spec = robot.spec
    joints = list(robot.joint_names)
    contract = {
        'format_version': CONTRACT_VERSION,
        'joint_names': joints,
        'actuator_names': list(robot.actuator_names),
        'command_interface': spec.command_interface,
        'action_clip': [-1.0, 1.0],
        'control_rate_hz': spec.control_rate_hz,
        'reference': {'frames': frames, 'dt_s': spec.control_dt},
        'observation': {'size': observation_size(len(joints), frames),
                        'layout': observation_layout(len(joints), frames)},
        'input_name': TINY_INPUT,
        'output_name': TINY_OUTPUT,
        'layers': [],
        'body': {'name': spec.name, 'scale': robot.scale},
        'root_joint': spec.root_joint,
        'body_joints': joints,
    }
    if spec.command_interface == 'effort':
        contract['action_scale'] = [float(g) for g in robot.actuator_gain]  # torque at ctrl 1
    else:
        m = robot.model
        stand = robot.stand_qpos()
        contract['action_scale'] = [float(target_range)] * robot.nu
        contract['action_offset'] = [float(v) for v in
                                     stand[m.jnt_qposadr[m.actuator_trnid[:, 0]]]]
    return contract


def make_robot_policy(path: str, robot, seed: int = 0, weight_scale: float = 0.05,
                      frames: int = 3) -> str:
    """Write a tiny linear ONNX policy for `robot` with `robot_contract`; returns `path`."""
    return write_linear_policy(path, robot_contract(robot, frames), seed, weight_scale)


def robot_qpos(robot, t: np.ndarray, amplitude: float = 0.15) -> np.ndarray:
    """Smooth (T, nq) poses of `robot` at times `t`: a slow walk forward from its stand.

    Every joint swings by `amplitude` (rad) at 1 Hz, clipped to its range.
    """
    t = np.asarray(t, dtype=np.float64)
    m = robot.model
    qpos = np.tile(robot.stand_qpos(), (len(t), 1))
    qpos[:, 0] += 0.05 * t
    phase = 0.5 * np.arange(m.njnt - 1)
    swing = amplitude * np.sin(2.0 * np.pi * t[:, None] + phase[None, :])
    lo, hi = m.jnt_range[1:, 0], m.jnt_range[1:, 1]
    limited = m.jnt_limited[1:].astype(bool)
    qpos[:, 7:] += swing
    qpos[:, 7:] = np.where(limited, np.clip(qpos[:, 7:], lo, hi), qpos[:, 7:])
    return qpos


def make_robot_clip(path: str, robot, n_frames: int = 30, fps: float = 30.0) -> str:
    """Write a clip of `robot_qpos` for `robot` (its joint names, meta robot name)."""
    qpos = robot_qpos(robot, np.arange(n_frames) / fps)
    Clip(qpos=qpos, fps=fps, joint_names=list(robot.joint_names), body_scale=robot.scale,
         meta={'source': 'synthetic test fixture', 'robot': robot.spec.name,
               'root_joint': robot.spec.root_joint}).save(path)
    return path
