"""Small test fixtures built on the fly: a tiny ONNX policy and a short synthetic clip.

Both fit the real rat body (names, sizes and force limits), so nodes and loops accept them,
but they are a few KB and take milliseconds to make. Import them from any test:
`from fixtures import make_tiny_policy, make_synthetic_clip`.
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
    import onnx
    from onnx import helper
    from onnx import TensorProto

    joints = [body.hinge_names[i] for i in body.tracked_hinge_idx]
    n_obs = observation_size(len(joints), frames)
    n_act = body.nu
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
    contract = tiny_contract(body, joints, TINY_INPUT, TINY_OUTPUT, [], control_rate_hz,
                             frames, dt_s)
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
