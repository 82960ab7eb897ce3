"""A tiny vrat ONNX policy with hidden layers exposed as graph outputs, built on the fly.

Like `fixtures.make_tiny_policy`, it fits the real rat body, so nodes and loops accept it,
but its contract names two hidden layers, 'hidden_0' and 'hidden_1', that the graph returns
beside the action, the way `vrat_ros.export` writes a trained policy.
"""

from __future__ import annotations

import json

import numpy as np

from vrat_ros.observation import observation_size
from fixtures import tiny_contract

from vrat_ros.policy import CONTRACT_KEY
from vrat_ros.rat_model import RatBody

LAYERED_INPUT = 'observation'
LAYERED_OUTPUT = 'action'
LAYERS = ('hidden_0', 'hidden_1')


def make_layered_policy(path: str, body: RatBody, sizes: tuple[int, int] = (24, 16),
                        seed: int = 0, identity_outputs: bool = False, frames: int = 5,
                        dt_s: float = 0.02, control_rate_hz: float = 50.0) -> str:
    """Write obs -> tanh -> 'hidden_0' -> relu -> 'hidden_1' -> tanh -> 'action' as ONNX.

    Args:
        path: destination .onnx file.
        body: the rat body the contract describes.
        sizes: units of the two hidden layers.
        seed: seed of the random weights.
        identity_outputs: expose each layer through an Identity node while the next layer
            reads the tensor before it (as some exporters do).
        frames: reference window frames of the contract.
        dt_s: seconds between reference frames.
        control_rate_hz: control rate of the contract.

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
    widths = [n_obs, sizes[0], sizes[1]]
    weights = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(widths, widths[1:])]
    weights.append(0.05 * rng.standard_normal((sizes[1], n_act)) / np.sqrt(sizes[1]))
    biases = [0.1 * rng.standard_normal(w.shape[1]) for w in weights]

    def tensor(name, array):
        array = np.asarray(array, dtype=np.float32)
        return helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.ravel())

    nodes = []
    x = LAYERED_INPUT
    for i, act in enumerate(('Tanh', 'Relu')):
        nodes += [helper.make_node('MatMul', [x, f'W{i}'], [f'xw{i}']),
                  helper.make_node('Add', [f'xw{i}', f'b{i}'], [f'pre{i}'])]
        if identity_outputs:
            nodes += [helper.make_node(act, [f'pre{i}'], [f'h{i}']),
                      helper.make_node('Identity', [f'h{i}'], [LAYERS[i]])]
            x = f'h{i}'
        else:
            nodes.append(helper.make_node(act, [f'pre{i}'], [LAYERS[i]]))
            x = LAYERS[i]
    nodes += [helper.make_node('MatMul', [x, 'W2'], ['xw2']),
              helper.make_node('Add', ['xw2', 'b2'], ['pre2']),
              helper.make_node('Tanh', ['pre2'], [LAYERED_OUTPUT])]
    outputs = [helper.make_tensor_value_info(LAYERED_OUTPUT, TensorProto.FLOAT,
                                             ['batch', n_act])]
    outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, ['batch', n])
                for name, n in zip(LAYERS, sizes)]
    graph = helper.make_graph(
        nodes=nodes, name='tiny_layered_policy',
        inputs=[helper.make_tensor_value_info(LAYERED_INPUT, TensorProto.FLOAT,
                                              ['batch', n_obs])],
        outputs=outputs,
        initializer=[tensor(f'W{i}', w) for i, w in enumerate(weights)]
        + [tensor(f'b{i}', b) for i, b in enumerate(biases)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 9
    contract = tiny_contract(body, joints, LAYERED_INPUT, LAYERED_OUTPUT, list(LAYERS),
                             control_rate_hz, frames, dt_s)
    helper.set_model_props(model, {CONTRACT_KEY: json.dumps(contract)})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
