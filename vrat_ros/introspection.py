"""Hidden activations and virtual lesions of a vrat ONNX policy.

Finding the layers: the contract's `layers` lists graph output names, one per hidden layer,
each naming the tensor the layer hands to the next one (after its nonlinearity, as
`vrat_ros.export` writes it). When an output is produced through a chain of Identity nodes,
the chain is followed back to the node that really computes the tensor, so downstream
nodes that read the tensor before the Identity are perturbed too.

Lesions act inside the network. At load time a second graph is built in which every named
layer h becomes

    h' = h * mask + offset

with `mask` and `offset` extra (n,) graph inputs of that layer. h' replaces h everywhere:
the next layer reads it and the graph output of that name reports it. The first graph is
kept as it was; it runs whenever no lesion is active, so an unperturbed policy costs nothing
more and returns exactly what it always did. (With mask 1 and offset 0 the second graph
returns the same numbers anyway; the tests check that to the bit.)

A lesion of one layer (`LayerLesion`) may
  silence      units forced to 0 (mask 0, offset 0),
  clamp        units forced to `clamp_value` (mask 0, offset clamp_value),
  noise        units that get Gaussian noise of std `noise_std` added on each evaluation
               (after silencing or clamping), drawn from a seeded generator.
Units are 0-based indices into the layer's (n,) activation vector.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np
import numpy.typing as npt

from vrat_ros.errors import PolicyLoadError
from vrat_ros.errors import PolicyShapeError
from vrat_ros.policy import load_session
from vrat_ros.policy import OnnxPolicy
from vrat_ros.policy import SessionSettings

LESION_FIELDS = ('silence', 'clamp', 'clamp_value', 'noise', 'noise_std')
_UNIT_FIELDS = ('silence', 'clamp', 'noise')
_MASK_SUFFIX = ':lesion_mask'
_OFFSET_SUFFIX = ':lesion_offset'
_NUMPY_DTYPES = {'tensor(float)': np.float32, 'tensor(double)': np.float64}


@dataclasses.dataclass(frozen=True)
class LayerLesion:
    """A perturbation of one hidden layer (see the module docstring).

    Attributes:
        silence: units set to 0.
        clamp: units set to `clamp_value`.
        clamp_value: value of the clamped units.
        noise: units that get Gaussian noise added on every evaluation.
        noise_std: standard deviation of that noise (same units as the activations).
    """

    silence: tuple[int, ...] = ()
    clamp: tuple[int, ...] = ()
    clamp_value: float = 0.0
    noise: tuple[int, ...] = ()
    noise_std: float = 0.0

    def __post_init__(self):
        for name in _UNIT_FIELDS:
            units = getattr(self, name)
            try:
                units = tuple(int(u) for u in units)
            except (TypeError, ValueError) as exc:
                raise ValueError(f'lesion {name} should be a list of unit indices: got '
                                 f'{getattr(self, name)!r}') from exc
            object.__setattr__(self, name, units)
        for name in ('clamp_value', 'noise_std'):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f'lesion {name} should be finite: got {value}')
            object.__setattr__(self, name, value)
        if self.noise_std < 0.0:
            raise ValueError(f'lesion noise_std should be >= 0: got {self.noise_std}')
        both = sorted(set(self.silence) & set(self.clamp))
        if both:
            raise ValueError(f'units {both[:10]} are both silenced and clamped; pick one')

    @property
    def active(self) -> bool:
        """True when the lesion changes anything."""
        return bool(self.silence or self.clamp or (self.noise and self.noise_std > 0.0))

    def check_units(self, layer: str, n_units: int) -> None:
        """Raises ValueError when a unit index is outside the layer's [0, n_units)."""
        for name in _UNIT_FIELDS:
            bad = [u for u in getattr(self, name) if not 0 <= u < n_units]
            if bad:
                raise ValueError(
                    f"lesion.{layer}.{name}: units {bad[:10]} are outside layer '{layer}', "
                    f'which has units 0..{n_units - 1}')

    def to_dict(self) -> dict:
        """Returns the lesion as plain JSON-ready values."""
        return {'silence': list(self.silence), 'clamp': list(self.clamp),
                'clamp_value': self.clamp_value, 'noise': list(self.noise),
                'noise_std': self.noise_std}

    @classmethod
    def from_dict(cls, values: Mapping) -> 'LayerLesion':
        """Builds a lesion from a dict with keys among LESION_FIELDS.

        Raises:
            ValueError: an unknown key or a bad value.
        """
        unknown = sorted(set(values) - set(LESION_FIELDS))
        if unknown:
            raise ValueError(f'unknown lesion fields {unknown}; valid: {list(LESION_FIELDS)}')
        return cls(**dict(values))


def normalize_lesions(lesions: Mapping | None, layer_sizes: Mapping[str, int]
                      ) -> dict[str, LayerLesion]:
    """Checks lesions against a policy's layers; returns {layer: LayerLesion} of active ones.

    Args:
        lesions: {layer: LayerLesion or dict of LESION_FIELDS}, or None.
        layer_sizes: {layer: number of units} of the policy.

    Raises:
        ValueError: an unknown layer, field or unit index.
    """
    checked = {}
    for layer, lesion in (lesions or {}).items():
        if layer not in layer_sizes:
            raise ValueError(f"no layer '{layer}' in the policy; its layers are "
                             f'{list(layer_sizes)}')
        if not isinstance(lesion, LayerLesion):
            lesion = LayerLesion.from_dict(lesion)
        lesion.check_units(layer, int(layer_sizes[layer]))
        if lesion.active:
            checked[layer] = lesion
    return checked


def lesions_to_parameters(lesions: Mapping | None) -> dict:
    """Turns {layer: lesion} into the policy node's `lesion.<layer>.<field>` parameters."""
    params = {}
    for layer, lesion in (lesions or {}).items():
        if not isinstance(lesion, LayerLesion):
            lesion = LayerLesion.from_dict(lesion)
        for name, value in lesion.to_dict().items():
            if value != []:  # an empty list has no ROS type; unset means none anyway
                params[f'lesion.{layer}.{name}'] = value
    return params


def _parse_units(text: str) -> list[int]:
    units = []
    for part in filter(None, (p.strip() for p in text.split(','))):
        if ':' in part:
            lo, hi = part.split(':', 1)
            units.extend(range(int(lo), int(hi)))
        else:
            units.append(int(part))
    return units


def parse_lesion_specs(specs: list[str] | None) -> dict[str, dict]:
    """Parses command-line lesions like 'hidden_0.silence=0,3,8:16' or 'hidden_1.noise_std=0.2'.

    Unit lists are comma-separated indices or half-open ranges 'a:b'. Values of one layer
    given in several specs are merged.

    Returns:
        {layer: {field: value}}, ready for `run_ros_loop(lesions=...)`.

    Raises:
        ValueError: a spec that is not LAYER.FIELD=VALUE, an unknown field or a bad number.
    """
    lesions: dict[str, dict] = {}
    for spec in specs or []:
        key, sep, value = spec.partition('=')
        layer, dot, field = key.strip().rpartition('.')
        if not sep or not dot or not layer:
            raise ValueError(f"lesion '{spec}' should read LAYER.FIELD=VALUE, e.g. "
                             "'hidden_0.silence=0,1,2'")
        if field not in LESION_FIELDS:
            raise ValueError(f"lesion '{spec}': unknown field '{field}'; valid: "
                             f'{list(LESION_FIELDS)}')
        try:
            parsed = _parse_units(value) if field in _UNIT_FIELDS else float(value)
        except ValueError as exc:
            raise ValueError(f"lesion '{spec}': bad value '{value}' ({exc})") from exc
        lesions.setdefault(layer, {})[field] = parsed
    return lesions


def _unique_name(base: str, taken: set[str]) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f'{base}_{k}', k + 1
    taken.add(name)
    return name


def insert_lesion_points(model, layer_types: Mapping[str, int]) -> dict[str, tuple[str, str]]:
    """Rewrites an ONNX model in place so each named layer h becomes h * mask + offset.

    Args:
        model: onnx.ModelProto; its graph outputs include the layers.
        layer_types: {layer output name: ONNX element type (TensorProto enum)}.

    Returns:
        {layer: (mask input name, offset input name)}; both are new (n,) graph inputs.

    Raises:
        PolicyLoadError: a layer is not computed by a node of the main graph, or two layers
            are the same tensor.
    """
    from onnx import helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    taken = {v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
    taken |= {t.name for t in graph.initializer}
    taken |= {name for node in graph.node for name in list(node.input) + list(node.output)}
    output_names = {o.name for o in graph.output}
    inserted = {}       # id(producer node) -> new nodes to place right after it
    roots = {}
    names = {}
    for layer, elem_type in layer_types.items():
        if layer not in producer:
            raise PolicyLoadError(f"layer '{layer}' is not computed by any node of the graph")
        root = layer
        while producer[root].op_type == 'Identity' and producer[root].input[0] in producer:
            root = producer[root].input[0]
        if root in roots:
            raise PolicyLoadError(f"layers '{roots[root]}' and '{layer}' are the same tensor")
        roots[root] = layer
        node = producer[root]
        mask = _unique_name(layer + _MASK_SUFFIX, taken)
        offset = _unique_name(layer + _OFFSET_SUFFIX, taken)
        scaled = _unique_name(f'{layer}:lesion_scaled', taken)
        if root == layer:
            # The layer's own node: it now writes the raw tensor, the Add writes the layer.
            source = _unique_name(f'{layer}:pre_lesion', taken)
            node.output[list(node.output).index(root)] = source
            target = layer
        else:
            if root in output_names:
                raise PolicyLoadError(f"layer '{layer}' is an alias of graph output '{root}'")
            source = root
            target = _unique_name(f'{layer}:lesioned', taken)
            for consumer in graph.node:
                for i, name in enumerate(consumer.input):
                    if name == root:
                        consumer.input[i] = target
        inserted.setdefault(id(node), []).extend([
            helper.make_node('Mul', [source, mask], [scaled], name=f'{layer}/lesion_mask'),
            helper.make_node('Add', [scaled, offset], [target], name=f'{layer}/lesion_offset'),
        ])
        graph.input.extend([helper.make_tensor_value_info(mask, elem_type, ['units']),
                            helper.make_tensor_value_info(offset, elem_type, ['units'])])
        names[layer] = (mask, offset)
    nodes = []
    for node in graph.node:
        nodes.append(node)
        nodes.extend(inserted.get(id(node), []))
    del graph.node[:]
    graph.node.extend(nodes)
    return names


class LesionablePolicy(OnnxPolicy):
    """An `OnnxPolicy` whose hidden layers can be silenced, clamped or made noisy.

    With no active lesion it runs the unchanged graph (same cost, same numbers as
    `OnnxPolicy`); otherwise the rewritten graph of the module docstring.

    Args:
        path: the .onnx file.
        expected_observation_size: if given, refuse a model whose input width differs.
        intra_op_threads: onnxruntime threads; ignored when `session_settings` is given.
        seed: seed of the noise generator.
        session_settings: all the onnxruntime options (`policy.SessionSettings`), used by
            both the plain and the lesioned graph.

    Attributes:
        layer_sizes: {layer: number of units}, in contract order.

    Raises:
        PolicyLoadError: the file cannot be loaded or a layer cannot be perturbed.
        PolicyShapeError: a layer is not a vector per observation.
    """

    def __init__(self, path: str, expected_observation_size: int | None = None,
                 intra_op_threads: int = 1, seed: int = 0,
                 session_settings: SessionSettings | None = None):
        super().__init__(path, expected_observation_size, intra_op_threads, session_settings)
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.layer_sizes: dict[str, int] = {}
        self._layer_dtypes = {}
        if self.layer_names:
            _, probe = super().run(np.zeros(self.observation_size), with_layers=True)
            for layer in self.layer_names:
                shape = outputs[layer].shape
                if len(shape) > 2 or outputs[layer].type not in _NUMPY_DTYPES:
                    raise PolicyShapeError(
                        f"layer '{layer}' is {outputs[layer].type} of shape {shape}; only "
                        'float vectors per observation, (batch, n) or (n,), can be lesioned')
                self.layer_sizes[layer] = int(probe[layer].size)
                self._layer_dtypes[layer] = _NUMPY_DTYPES[outputs[layer].type]
        self._lesions: dict[str, LayerLesion] = {}
        self._feeds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._noise = {}
        self._rng = np.random.default_rng(seed)
        self.lesion_session = self._build_lesion_session(path)

    def _build_lesion_session(self, path: str):
        if not self.layer_names:
            return None
        import onnx
        from onnx import helper
        model = onnx.load(path)
        types = {layer: helper.np_dtype_to_tensor_dtype(np.dtype(self._layer_dtypes[layer]))
                 for layer in self.layer_names}
        self._lesion_inputs = insert_lesion_points(model, types)
        try:
            onnx.checker.check_model(model)
            return load_session(model.SerializeToString(), self.session_settings)
        except Exception as exc:
            raise PolicyLoadError(
                f"'{path}': the graph with lesion points does not load: {exc}") from exc

    # Lesions.

    @property
    def lesions(self) -> dict[str, LayerLesion]:
        """The active lesions, {layer: LayerLesion}."""
        return dict(self._lesions)

    @property
    def lesioned(self) -> bool:
        return bool(self._lesions)

    def set_lesions(self, lesions: Mapping | None) -> None:
        """Replaces all lesions at once (validated first, so a bad one changes nothing).

        Args:
            lesions: {layer: LayerLesion or dict}; None or {} clears them.

        Raises:
            ValueError: an unknown layer, field or unit index.
        """
        checked = normalize_lesions(lesions, self.layer_sizes)
        feeds, noise = {}, {}
        for layer, n in self.layer_sizes.items():
            dtype = self._layer_dtypes[layer]
            mask, offset = np.ones(n, dtype=dtype), np.zeros(n, dtype=dtype)
            lesion = checked.get(layer)
            if lesion is not None:
                idx = list(lesion.silence) + list(lesion.clamp)
                mask[idx] = 0.0
                offset[list(lesion.clamp)] = lesion.clamp_value
                if lesion.noise and lesion.noise_std > 0.0:
                    noise[layer] = (np.asarray(lesion.noise, dtype=np.int64), lesion.noise_std)
            feeds[layer] = (mask, offset)
        self._lesions, self._feeds, self._noise = checked, feeds, noise

    def clear_lesions(self) -> None:
        self.set_lesions(None)

    def reseed(self, seed: int) -> None:
        """Restarts the noise generator from `seed`."""
        self._rng = np.random.default_rng(seed)

    # Evaluation.

    def run(self, observation: npt.ArrayLike, with_layers: bool = False):
        """Evaluates the network on one observation, with the active lesions if any.

        Args:
            observation: (observation_size,) raw observation.
            with_layers: also return the (perturbed) hidden activations.

        Returns:
            action (nu,) float64 clipped to action_clip, and if with_layers a dict
            {layer: (n,) float32 activations}.
        """
        if not self._lesions:
            return super().run(observation, with_layers)
        feeds = {}
        for layer, (mask, offset) in self._feeds.items():
            if layer in self._noise:
                units, std = self._noise[layer]
                offset = offset.copy()
                offset[units] += (std * self._rng.standard_normal(len(units))).astype(
                    offset.dtype)
            feeds[layer] = (mask, offset)
        return self.run_with_masks(observation, feeds, with_layers)

    def run_with_masks(self, observation: npt.ArrayLike,
                       feeds: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
                       with_layers: bool = False):
        """Evaluates the lesion graph with explicit masks and offsets.

        Args:
            observation: (observation_size,) raw observation.
            feeds: {layer: (mask (n,), offset (n,))}; layers left out get mask 1, offset 0.
            with_layers: also return the hidden activations.

        Returns:
            As `run`.
        """
        if self.lesion_session is None:
            raise PolicyLoadError(f"'{self.path}' names no layers in its contract")
        obs = np.asarray(observation, dtype=self._input_dtype).reshape(-1)
        if obs.shape[0] != self.observation_size:
            raise PolicyShapeError(
                f'observation has {obs.shape[0]} values; the policy expects '
                f'{self.observation_size}')
        inputs = {self._input_name: obs[None, :] if self._batched else obs}
        for layer, n in self.layer_sizes.items():
            dtype = self._layer_dtypes[layer]
            mask, offset = feeds.get(layer, (np.ones(n), np.zeros(n)))
            mask_name, offset_name = self._lesion_inputs[layer]
            inputs[mask_name] = np.asarray(mask, dtype=dtype).reshape(n)
            inputs[offset_name] = np.asarray(offset, dtype=dtype).reshape(n)
        names = self._outputs if with_layers else self._outputs[:1]
        return self._unpack(self.lesion_session.run(names, inputs), with_layers)


@dataclasses.dataclass
class PolicyStep:
    """One computation of the policy node, handed to `PolicyNode.on_step`.

    Attributes:
        stamp_ns: stamp of the joint state the command answers (ns, sim time).
        observation: (obs,) the observation as fed to the network.
        action: (nu,) clipped action.
        torques: (nu,) torques published (N m, contract actuator order).
        layers: {layer: (n,) float32 activations}, as the (possibly lesioned) net computed.
        ref_root_pos: (K, 3) reference root positions of the window (m, world).
        ref_root_quat: (K, 4) reference root orientations (w, x, y, z).
        ref_joint_pos: (K, J) reference joint angles (rad, contract joint order).
    """

    stamp_ns: int
    observation: np.ndarray
    action: np.ndarray
    torques: np.ndarray
    layers: dict[str, np.ndarray]
    ref_root_pos: np.ndarray
    ref_root_quat: np.ndarray
    ref_joint_pos: np.ndarray


def tracking_change(intact: Mapping, lesioned: Mapping) -> dict:
    """Returns {metric: lesioned - intact} for the numeric tracking metrics both have."""
    def numeric(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    return {key: float(value) - float(intact[key]) for key, value in lesioned.items()
            if numeric(value) and numeric(intact.get(key))}


def lesion_effect(clip_path: str, policy_path: str, lesions: Mapping,
                  seconds: float | None = None, start_time_s: float = 0.0,
                  body_scale: float | None = None, lesion_seed: int = 0) -> dict:
    """Runs the ROS loop intact and lesioned on the same clip and compares their tracking.

    Args:
        clip_path: reference clip (.npz).
        policy_path: ONNX policy whose contract names the layers.
        lesions: {layer: LayerLesion or dict}, as for `run_ros_loop`.
        seconds: sim time of each run (s); None runs to the clip's end.
        start_time_s: clip time of the initial state (s).
        body_scale: body scale; None takes the clip's.
        lesion_seed: seed of the noise lesions.

    Returns:
        {'lesions': {layer: dict}, 'intact': metrics, 'lesioned': metrics,
         'change': lesioned - intact per metric} (metrics of `tracking.tracking_metrics`).
    """
    from vrat_ros.clip import Clip
    from vrat_ros.loop import run_ros_loop
    from vrat_ros.rat_model import RatBody
    from vrat_ros.tracking import tracking_metrics

    scale = Clip.load(clip_path).body_scale if body_scale is None else body_scale
    body = RatBody(scale=scale)
    metrics = {}
    for name, applied in (('intact', None), ('lesioned', lesions)):
        result = run_ros_loop(clip_path, policy_path, seconds=seconds,
                              start_time_s=start_time_s, body_scale=scale,
                              lesions=applied, lesion_seed=lesion_seed)
        metrics[name] = tracking_metrics(body, result.qpos, result.ref_qpos)
    as_dicts = {layer: (lesion.to_dict() if isinstance(lesion, LayerLesion)
                        else LayerLesion.from_dict(lesion).to_dict())
                for layer, lesion in lesions.items()}
    return {'lesions': as_dicts, 'intact': metrics['intact'],
            'lesioned': metrics['lesioned'],
            'change': tracking_change(metrics['intact'], metrics['lesioned'])}
