"""Robot descriptions: one YAML file per body, so that the same pipeline can drive any of them.

A robot file (config/robots/NAME.yaml, or any YAML file given by path) says:
  name               the robot's name
  mjcf               where the model comes from: {path: FILE} (relative to the YAML file, or
                     absolute) or {package: PKG, file: PATH_IN_PACKAGE} (a model installed with
                     a Python package, e.g. dm_control's suite quadruped; read, never copied)
  build              optional MjSpec edits, applied in this order: remove_skins, remove (bodies,
                     geoms, sites, lights, cameras, sensors, tendons, equalities, actuators by
                     name), scale (lengths; masses follow), actuators_to_torque (servos become
                     torque motors whose gain is the force range's upper bound), no_collision_
                     body_prefix, wrap_free_root ({body, joint}: the model goes under a new free
                     body), floor ({size, rgba}: a ground plane and a light), model_name
  root               {joint: the free joint, body: the body it moves}
  joints             'all' (every joint but the root) or a list: the joints clips cover
  actuation          {actuators: 'model', names: [...] or 'all'}: the MJCF's own actuators, or
                     {actuators: 'motors', joints: [...], max_effort: N_m or {joint: N_m}}:
                     torque motors created on those joints (force = max_effort x ctrl)
  command_interface  'effort' (commands are torques) or 'position' (commands are joint targets;
                     the sim applies `pd` at every physics step)
  pd                 {kp, kd}: scalars or {joint: value}; needed for 'position'
  timing             {physics_timestep_s, control_rate_hz}
  torso              {body, healthy_z_range: [lo, hi]}
  tracking           {root_dist_m, joint_sq_err_rad2}: when a frame counts as tracked
  stand              optional {joint: angle}: the standing pose (default: the model's qpos0)
  feet               {NAME: {site: S} or {body: B}, optional radius (m)}
  retarget           {trunk: {front: KP, back: KP}, limbs: {LIMB: {base: KP, end: KP,
                     foot: FOOT, hip_body: optional body}}, stand: optional {joint: angle}}:
                     which rat keypoints drive what, and the pose retargeted clips stand and
                     step in (default: `stand`)
  marker_set         optional: a marker set (name or YAML path) whose bodies must exist
  defaults           optional {clip, policy, eval_clips}: what `vrat run --robot` and `vrat eval
                     --robot` use when no clip or policy is given. Each is a path relative to
                     vrat_ros's data folder (or absolute), and clips may also be names that
                     `vrat clips` lists (`vrat_ros.resources.robot_defaults` resolves them)

`load_robot(name_or_path)` checks the file, builds the model and checks every name in it
against the model; every problem is one line naming the file, the field and the bad value.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
import os
import sys

import mujoco
import numpy as np
import numpy.typing as npt
import yaml

from vrat_ros.errors import ModelLoadError

COMMAND_INTERFACES = ('effort', 'position')
ACTUATOR_SOURCES = ('model', 'motors')
_BUILD_KEYS = ('remove_skins', 'remove', 'scale', 'actuators_to_torque',
               'no_collision_body_prefix', 'wrap_free_root', 'floor', 'model_name')
_REMOVE_KINDS = ('bodies', 'geoms', 'sites', 'lights', 'cameras', 'sensors', 'tendons',
                 'equalities', 'actuators')
_TOP_KEYS = ('name', 'mjcf', 'build', 'root', 'joints', 'actuation', 'command_interface', 'pd',
             'timing', 'torso', 'tracking', 'stand', 'feet', 'retarget', 'marker_set',
             'description', 'defaults')
_DEFAULTS_KEYS = ('clip', 'policy', 'eval_clips')
_REQUIRED_KEYS = ('name', 'mjcf', 'root', 'actuation', 'command_interface', 'timing', 'torso')


class RobotSpecError(ModelLoadError):
    """A robot file is missing, malformed, or names something its model does not have."""


# ---------------------------------------------------------------------------------------------
# Finding robot files


def robot_dirs() -> list[str]:
    """Returns the folders searched for robot files, in order.

    VRAT_ROBOTS_PATH (os.pathsep-separated) first, then config/robots of a source checkout, then
    share/vrat_ros/config/robots under each AMENT_PREFIX_PATH entry and under sys.prefix.
    """
    dirs = [p for p in os.environ.get('VRAT_ROBOTS_PATH', '').split(os.pathsep) if p]
    here = os.path.dirname(os.path.abspath(__file__))
    dirs.append(os.path.join(os.path.dirname(here), 'config', 'robots'))
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    for prefix in prefixes + [sys.prefix]:
        dirs.append(os.path.join(prefix, 'share', 'vrat_ros', 'config', 'robots'))
    seen, out = set(), []
    for d in dirs:
        key = os.path.realpath(d)
        if key not in seen and os.path.isdir(d):
            seen.add(key)
            out.append(d)
    return out


def robot_names() -> list[str]:
    """Returns the names of the robot files found in `robot_dirs()`, sorted."""
    names = set()
    for d in robot_dirs():
        names.update(os.path.splitext(f)[0] for f in os.listdir(d) if f.endswith('.yaml'))
    return sorted(names)


def robot_path(name_or_path: str | os.PathLike) -> str:
    """Returns the YAML file of a robot name ('quadruped') or of a path to a robot file.

    Raises:
        RobotSpecError: it is neither an existing file nor a known robot name.
    """
    text = str(name_or_path)
    if os.path.isfile(text):
        return text
    if os.sep not in text and not text.endswith(('.yaml', '.yml')):
        for d in robot_dirs():
            candidate = os.path.join(d, text + '.yaml')
            if os.path.isfile(candidate):
                return candidate
    raise RobotSpecError(
        f"robot '{text}' is neither a robot file nor a known robot name: expected a YAML path "
        f'or one of {robot_names()}')


def is_rat(name_or_path: str | os.PathLike) -> bool:
    """Whether a robot name or path is the rat's own robot file (what `robot_path('rat')` finds).

    The CLI runs the rat with `vrat_ros.rat_model.RatBody` and its inertia-scaled PD, any other
    robot with `Robot`.

    Raises:
        RobotSpecError: it is neither a robot file nor a known robot name.
    """
    path = robot_path(name_or_path)
    try:
        return os.path.realpath(path) == os.path.realpath(robot_path('rat'))
    except RobotSpecError:  # no rat file installed: nothing is the rat's file
        return False


# ---------------------------------------------------------------------------------------------
# The description


@dataclasses.dataclass
class Foot:
    """A foot (or end effector): a site or a body, and the radius of its contact geometry."""

    name: str
    site: str | None
    body: str | None
    radius: float | None  # None: taken from the largest sphere/capsule at the foot

    @property
    def target(self) -> str:
        return self.site if self.site is not None else self.body


@dataclasses.dataclass
class Limb:
    """Which rat keypoints drive a foot: `base` (hip/shoulder) and `end` (the limb's tip)."""

    name: str
    base: str
    end: str
    foot: str
    hip_body: str | None = None


@dataclasses.dataclass
class RobotSpec:
    """A robot file, parsed and checked for shape (names are checked by `load_robot`)."""

    name: str
    path: str
    mjcf: dict
    build: dict
    root_joint: str
    root_body: str
    joints: list[str] | str
    actuator_source: str
    actuator_names: list[str] | str
    motor_joints: list[str]
    max_effort: float | dict
    command_interface: str
    kp: float | dict | None
    kd: float | dict | None
    physics_timestep_s: float
    control_rate_hz: float
    torso_body: str
    healthy_z_range: tuple[float, float]
    track_root_dist_m: float
    track_joint_sq_err_rad2: float
    stand: dict
    feet: list[Foot]
    trunk: dict
    limbs: list[Limb]
    marker_set: str | None
    description: str = ''
    retarget_stand: dict | None = None  # None: retargeting uses `stand`
    default_clip: str | None = None  # `defaults.clip`, as written in the file
    default_policy: str | None = None  # `defaults.policy`, as written in the file
    eval_clips: list[str] = dataclasses.field(default_factory=list)  # `defaults.eval_clips`

    @property
    def n_substeps(self) -> int:
        """Physics steps per control step."""
        return int(round(1.0 / (self.control_rate_hz * self.physics_timestep_s)))

    @property
    def control_dt(self) -> float:
        return self.n_substeps * self.physics_timestep_s

    def foot(self, name: str) -> Foot:
        for foot in self.feet:
            if foot.name == name:
                return foot
        raise KeyError(name)

    def mjcf_path(self) -> str:
        """Returns the MJCF file this robot is built from.

        Raises:
            RobotSpecError: the file or the package holding it is missing.
        """
        where = f"'{self.path}': mjcf"
        if 'path' in self.mjcf:
            path = os.path.expanduser(str(self.mjcf['path']))
            if not os.path.isabs(path):
                path = os.path.join(os.path.dirname(os.path.abspath(self.path)), path)
            if not os.path.isfile(path):
                raise RobotSpecError(f'{where}.path: MJCF file {path!r} does not exist')
            return path
        package, rel = str(self.mjcf['package']), str(self.mjcf['file'])
        if importlib.util.find_spec(package) is None:
            raise RobotSpecError(f"{where}.package: Python package {package!r} is not "
                                 'installed')
        path = importlib.resources.files(package).joinpath(*rel.split('/'))
        if not path.is_file():
            raise RobotSpecError(f'{where}.file: {rel!r} is not a file of package {package!r} '
                                 f'({path})')
        return str(path)


def _fail(path: str, field: str, what: str) -> RobotSpecError:
    return RobotSpecError(f"'{path}': {field}: {what}")


def _mapping(value, path: str, field: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, field, f'should be a mapping, got {type(value).__name__} {value!r}')
    return value


def _name_list(value, path: str, field: str, allow_all: bool = True) -> list[str] | str:
    if allow_all and value == 'all':
        return 'all'
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(path, field, "should be a non-empty list of names"
                    + (" or 'all'" if allow_all else '') + f', got {value!r}')
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        raise _fail(path, field, f'names appear twice: {dupes}')
    return list(value)


def _positive(value, path: str, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(path, field, f'should be a number, got {value!r}') from None
    if not np.isfinite(number) or number <= 0:
        raise _fail(path, field, f'should be a positive number, got {value!r}')
    return number


def _gain(value, path: str, field: str) -> float | dict | None:
    """A scalar, or a {joint: value} mapping with an optional 'default' key."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {str(k): _positive(v, path, f'{field}.{k}') for k, v in value.items()}
    return _positive(value, path, field)


def _z_range(value, path: str, field: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise _fail(path, field, f'should be [lo, hi] in metres, got {value!r}') from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise _fail(path, field, f'should be [lo, hi] with lo < hi, got {value!r}')
    return lo, hi


def _angles(value, path: str, field: str) -> dict[str, float]:
    """A {joint: angle} mapping (a pose), its angles checked to be numbers."""
    out = {}
    for joint, angle in _mapping(value, path, field).items():
        try:
            out[str(joint)] = float(angle)
        except (TypeError, ValueError):
            raise _fail(path, f'{field}.{joint}', f'should be a number, got {angle!r}') from None
    return out


def parse_robot_spec(data: dict, path: str) -> RobotSpec:
    """Checks the shape of a parsed robot file and returns its RobotSpec.

    Args:
        data: the parsed YAML mapping.
        path: the file it came from (relative MJCF paths resolve against it; errors name it).

    Raises:
        RobotSpecError: a field is missing, unknown, or of the wrong kind.
    """
    if not isinstance(data, dict):
        raise RobotSpecError(f"'{path}': a robot file should be a YAML mapping, got "
                             f'{type(data).__name__}')
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise _fail(path, 'top level', f'unknown fields {unknown}; known: {list(_TOP_KEYS)}')
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise _fail(path, 'top level', f'missing fields {missing}')

    mjcf = _mapping(data['mjcf'], path, 'mjcf')
    if ('path' in mjcf) == ('package' in mjcf):
        raise _fail(path, 'mjcf', "give either 'path' or 'package' and 'file', got "
                                  f'{sorted(mjcf)}')
    if 'package' in mjcf and 'file' not in mjcf:
        raise _fail(path, 'mjcf', "'package' needs 'file' (the model's path inside it)")

    build = _mapping(data.get('build'), path, 'build')
    unknown = sorted(set(build) - set(_BUILD_KEYS))
    if unknown:
        raise _fail(path, 'build', f'unknown edits {unknown}; known: {list(_BUILD_KEYS)}')
    remove = _mapping(build.get('remove'), path, 'build.remove')
    for kind, names in remove.items():
        if kind not in _REMOVE_KINDS:
            raise _fail(path, 'build.remove', f'unknown kind {kind!r}; known: '
                                              f'{list(_REMOVE_KINDS)}')
        _name_list(names, path, f'build.remove.{kind}', allow_all=False)
    if 'scale' in build:
        scale = _positive(build['scale'], path, 'build.scale')
        if not 0.01 <= scale <= 100:
            raise _fail(path, 'build.scale', f'should be in [0.01, 100], got {scale}')
    if build.get('wrap_free_root') is not None:
        wrap = _mapping(build['wrap_free_root'], path, 'build.wrap_free_root')
        if set(wrap) != {'body', 'joint'}:
            raise _fail(path, 'build.wrap_free_root', f'should be {{body, joint}}, got {wrap!r}')

    root = _mapping(data['root'], path, 'root')
    if not isinstance(root.get('joint'), str) or not isinstance(root.get('body'), str):
        raise _fail(path, 'root', f'should be {{joint: NAME, body: NAME}}, got {root!r}')

    actuation = _mapping(data['actuation'], path, 'actuation')
    source = actuation.get('actuators')
    if source not in ACTUATOR_SOURCES:
        raise _fail(path, 'actuation.actuators', f'should be one of {ACTUATOR_SOURCES}, got '
                                                 f'{source!r}')
    if source == 'model':
        actuator_names = _name_list(actuation.get('names', 'all'), path, 'actuation.names')
        motor_joints, max_effort = [], 0.0
    else:
        motor_joints = _name_list(actuation.get('joints'), path, 'actuation.joints',
                                  allow_all=False)
        actuator_names = list(motor_joints)
        max_effort = _gain(actuation.get('max_effort'), path, 'actuation.max_effort')
        if max_effort is None:
            raise _fail(path, 'actuation.max_effort', "is needed with actuators: 'motors'")

    interface = data['command_interface']
    if interface not in COMMAND_INTERFACES:
        raise _fail(path, 'command_interface', f'should be one of {COMMAND_INTERFACES}, got '
                                               f'{interface!r}')
    pd = _mapping(data.get('pd'), path, 'pd')
    kp, kd = _gain(pd.get('kp'), path, 'pd.kp'), _gain(pd.get('kd'), path, 'pd.kd')
    if interface == 'position' and (kp is None or kd is None):
        raise _fail(path, 'pd', "command_interface 'position' needs pd gains {kp, kd}")

    timing = _mapping(data['timing'], path, 'timing')
    dt = _positive(timing.get('physics_timestep_s'), path, 'timing.physics_timestep_s')
    rate = _positive(timing.get('control_rate_hz'), path, 'timing.control_rate_hz')
    substeps = 1.0 / (rate * dt)
    if abs(substeps - round(substeps)) > 1e-6 or round(substeps) < 1:
        raise _fail(path, 'timing', f'the control period 1/{rate:g} s is not a whole number '
                                    f'of {dt:g} s physics steps')

    torso = _mapping(data['torso'], path, 'torso')
    if not isinstance(torso.get('body'), str):
        raise _fail(path, 'torso.body', f'should be a body name, got {torso.get("body")!r}')
    z_range = _z_range(torso.get('healthy_z_range'), path, 'torso.healthy_z_range')
    tracking = _mapping(data.get('tracking'), path, 'tracking')
    root_dist = _positive(tracking.get('root_dist_m', 0.1), path, 'tracking.root_dist_m')
    joint_err = _positive(tracking.get('joint_sq_err_rad2', 20.0), path,
                          'tracking.joint_sq_err_rad2')

    stand = _angles(data.get('stand'), path, 'stand')

    feet = []
    for name, entry in _mapping(data.get('feet'), path, 'feet').items():
        entry = _mapping(entry, path, f'feet.{name}')
        if ('site' in entry) == ('body' in entry):
            raise _fail(path, f'feet.{name}', f"give either 'site' or 'body', got {entry!r}")
        radius = entry.get('radius')
        if radius is not None:
            radius = float(radius)
            if not np.isfinite(radius) or radius < 0:
                raise _fail(path, f'feet.{name}.radius', f'should be >= 0, got {radius!r}')
        feet.append(Foot(name=str(name), site=entry.get('site'), body=entry.get('body'),
                         radius=radius))

    retarget = _mapping(data.get('retarget'), path, 'retarget')
    trunk = _mapping(retarget.get('trunk'), path, 'retarget.trunk')
    retarget_stand = (None if retarget.get('stand') is None
                      else _angles(retarget['stand'], path, 'retarget.stand'))
    limbs = []
    if retarget:
        if set(trunk) != {'front', 'back'}:
            raise _fail(path, 'retarget.trunk', f'should be {{front: KP, back: KP}}, got '
                                                f'{trunk!r}')
        foot_names = [f.name for f in feet]
        for name, entry in _mapping(retarget.get('limbs'), path, 'retarget.limbs').items():
            entry = _mapping(entry, path, f'retarget.limbs.{name}')
            for key in ('base', 'end', 'foot'):
                if not isinstance(entry.get(key), str):
                    raise _fail(path, f'retarget.limbs.{name}.{key}',
                                f'should be a name, got {entry.get(key)!r}')
            if entry['foot'] not in foot_names:
                raise _fail(path, f'retarget.limbs.{name}.foot',
                            f"{entry['foot']!r} is not one of the feet {foot_names}")
            limbs.append(Limb(name=str(name), base=entry['base'], end=entry['end'],
                              foot=entry['foot'], hip_body=entry.get('hip_body')))
        if not limbs:
            raise _fail(path, 'retarget.limbs', 'should name at least one limb')

    defaults = _mapping(data.get('defaults'), path, 'defaults')
    unknown = sorted(set(defaults) - set(_DEFAULTS_KEYS))
    if unknown:
        raise _fail(path, 'defaults', f'unknown fields {unknown}; known: {list(_DEFAULTS_KEYS)}')
    for key in ('clip', 'policy'):
        if defaults.get(key) is not None and not (isinstance(defaults[key], str)
                                                  and defaults[key]):
            raise _fail(path, f'defaults.{key}', f'should be a file or clip name, got '
                                                 f'{defaults[key]!r}')
    eval_clips = ([] if defaults.get('eval_clips') is None else
                  _name_list(defaults['eval_clips'], path, 'defaults.eval_clips',
                             allow_all=False))

    name = data['name']
    if not isinstance(name, str) or not name:
        raise _fail(path, 'name', f'should be a non-empty string, got {name!r}')
    joints = _name_list(data.get('joints', 'all'), path, 'joints')
    return RobotSpec(
        name=name, path=path, mjcf=mjcf, build=build, root_joint=root['joint'],
        root_body=root['body'], joints=joints, actuator_source=source,
        actuator_names=actuator_names, motor_joints=motor_joints, max_effort=max_effort,
        command_interface=interface, kp=kp, kd=kd, physics_timestep_s=dt,
        control_rate_hz=rate, torso_body=torso['body'], healthy_z_range=z_range,
        track_root_dist_m=root_dist, track_joint_sq_err_rad2=joint_err,
        stand=stand, feet=feet, trunk=dict(trunk), limbs=limbs,
        marker_set=data.get('marker_set'), description=str(data.get('description', '')),
        retarget_stand=retarget_stand, default_clip=defaults.get('clip'),
        default_policy=defaults.get('policy'), eval_clips=list(eval_clips))


def load_robot_spec(name_or_path: str | os.PathLike) -> RobotSpec:
    """Reads a robot file (a name from `robot_names()` or a path) and checks its shape.

    Raises:
        RobotSpecError: the file is missing, is not YAML, or a field is malformed.
    """
    path = robot_path(name_or_path)
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        where = getattr(exc, 'problem_mark', None)
        at = f' (line {where.line + 1}, column {where.column + 1})' if where else ''
        problem = getattr(exc, 'problem', None) or str(exc).splitlines()[0]
        raise RobotSpecError(f"'{path}': not valid YAML{at}: {problem}") from None
    return parse_robot_spec(data, path)


# ---------------------------------------------------------------------------------------------
# Building the model


def _scale_lengths(spec: mujoco.MjSpec, scale: float) -> None:
    """Scales positions and sizes of bodies, geoms, sites, joints and cameras."""
    # NOTE: the same edits as rat_model's rat scaling, so the rat built here is identical.
    from vrat_ros.rat_model import _scale_rat
    _scale_rat(spec, scale)


def _find(spec: mujoco.MjSpec, kind: str, name: str):
    finder = {'bodies': spec.body, 'geoms': spec.geom, 'sites': spec.site,
              'lights': spec.light, 'cameras': spec.camera, 'sensors': spec.sensor,
              'tendons': spec.tendon, 'equalities': spec.equality,
              'actuators': spec.actuator}[kind]
    return finder(name)


def _apply_build(spec: mujoco.MjSpec, robot: RobotSpec) -> mujoco.MjSpec:
    """Applies the `build` edits to the loaded MJCF; returns the spec to compile."""
    build = robot.build
    if build.get('remove_skins'):
        for skin in list(spec.skins):
            spec.delete(skin)
    for kind, names in (build.get('remove') or {}).items():
        for name in names:
            element = _find(spec, kind, name)
            if element is None:
                raise _fail(robot.path, f'build.remove.{kind}',
                            f'the model has no {kind[:-1] if kind != "bodies" else "body"} '
                            f'named {name!r}')
            spec.delete(element)
    if build.get('scale', 1.0) != 1.0:
        _scale_lengths(spec, float(build['scale']))
    if build.get('actuators_to_torque'):
        from vrat_ros.rat_model import _make_torque_actuators
        _make_torque_actuators(spec)
    prefix = build.get('no_collision_body_prefix')
    if prefix:
        for body in spec.bodies:
            if body.name.startswith(prefix):
                for geom in body.geoms:
                    geom.contype = 0
                    geom.conaffinity = 0
    wrap = build.get('wrap_free_root')
    floor = build.get('floor')
    if wrap:
        parent = mujoco.MjSpec()
        parent.njmax, parent.nconmax = spec.njmax, spec.nconmax
        parent.visual.quality.shadowsize = 2048
        _add_floor(parent, floor)
        body = parent.worldbody.add_body(name=str(wrap['body']))
        body.add_freejoint(name=str(wrap['joint']))
        from vrat_ros.rat_model import _quiet_mujoco_warnings
        with _quiet_mujoco_warnings():
            parent.attach(spec, frame=body.add_frame(), prefix='')
        spec = parent
    else:
        _add_floor(spec, floor)
    if build.get('model_name'):
        spec.modelname = str(build['model_name'])
    spec.option.timestep = robot.physics_timestep_s
    return spec


def _add_floor(spec: mujoco.MjSpec, floor) -> None:
    if not floor:
        return
    floor = floor if isinstance(floor, dict) else {}
    spec.worldbody.add_geom(
        name='floor', type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=list(floor.get('size', [2.0, 2.0, 0.05])),
        rgba=list(floor.get('rgba', [0.45, 0.5, 0.55, 1.0])))
    spec.worldbody.add_light(name='top_light', pos=[0, 0, 2.0], dir=[0, 0, -1])


def _add_motors(spec: mujoco.MjSpec, robot: RobotSpec) -> None:
    """Replaces every actuator by a torque motor on each of `robot.motor_joints`."""
    for act in list(spec.actuators):
        spec.delete(act)
    for joint in robot.motor_joints:
        if spec.joint(joint) is None:
            raise _fail(robot.path, 'actuation.joints', f'the model has no joint {joint!r}')
        fmax = _per_joint(robot.max_effort, joint, robot.path, 'actuation.max_effort')
        spec.add_actuator(
            name=joint, target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT,
            gaintype=mujoco.mjtGain.mjGAIN_FIXED, gainprm=[fmax] + [0.0] * 9,
            biastype=mujoco.mjtBias.mjBIAS_NONE, ctrllimited=True, ctrlrange=[-1.0, 1.0],
            forcelimited=True, forcerange=[-fmax, fmax],
            # Spelled out: a model's default class may give its actuators dynamics (the suite
            # quadruped's filters each command over 0.1 s), which would delay every torque.
            dyntype=mujoco.mjtDyn.mjDYN_NONE, dynprm=[0.0] * 10)


def _per_joint(value: float | dict, joint: str, path: str, field: str) -> float:
    if isinstance(value, dict):
        if joint in value:
            return float(value[joint])
        if 'default' in value:
            return float(value['default'])
        raise _fail(path, field, f'has no value for {joint!r} and no default')
    return float(value)


def build_robot_model(robot: RobotSpec) -> mujoco.MjModel:
    """Loads, edits and compiles the robot's MJCF.

    Raises:
        RobotSpecError: the MJCF is missing or does not compile, or an edit names a missing
            element.
    """
    path = robot.mjcf_path()
    try:
        spec = mujoco.MjSpec.from_file(path)
    except ValueError as exc:
        raise RobotSpecError(f"'{robot.path}': mjcf: cannot load {path!r}: "
                             f"{str(exc).strip().splitlines()[0]}") from None
    spec = _apply_build(spec, robot)
    if robot.actuator_source == 'motors':
        _add_motors(spec, robot)
    from vrat_ros.rat_model import _quiet_mujoco_warnings
    with _quiet_mujoco_warnings():
        try:
            return spec.compile()
        except ValueError as exc:
            raise RobotSpecError(f"'{robot.path}': the model from {path!r} does not compile: "
                                 f"{str(exc).strip().splitlines()[0]}") from None


def _names(model: mujoco.MjModel, obj: mujoco.mjtObj, count: int) -> list[str]:
    return [mujoco.mj_id2name(model, obj, i) or '' for i in range(count)]


def _check_names(robot: RobotSpec, model: mujoco.MjModel) -> None:
    """Checks every name of the robot file against the compiled model."""
    path = robot.path
    joints = _names(model, mujoco.mjtObj.mjOBJ_JOINT, model.njnt)
    bodies = _names(model, mujoco.mjtObj.mjOBJ_BODY, model.nbody)
    sites = _names(model, mujoco.mjtObj.mjOBJ_SITE, model.nsite)
    actuators = _names(model, mujoco.mjtObj.mjOBJ_ACTUATOR, model.nu)

    def need(name, pool, field, kind):
        if name not in pool:
            raise _fail(path, field, f'the model has no {kind} named {name!r}')

    need(robot.root_joint, joints, 'root.joint', 'joint')
    need(robot.root_body, bodies, 'root.body', 'body')
    jid = joints.index(robot.root_joint)
    if model.jnt_type[jid] != mujoco.mjtJoint.mjJNT_FREE:
        raise _fail(path, 'root.joint', f'{robot.root_joint!r} is not a free joint')
    if model.jnt_bodyid[jid] != bodies.index(robot.root_body):
        raise _fail(path, 'root.body', f'the free joint {robot.root_joint!r} moves body '
                                       f'{bodies[model.jnt_bodyid[jid]]!r}, not '
                                       f'{robot.root_body!r}')
    if jid != 0 or model.jnt_qposadr[0] != 0:
        raise _fail(path, 'root.joint', f'{robot.root_joint!r} should be the first joint '
                                        '(qpos[0:7]); the model has another one first')
    free = [joints[i] for i in range(1, model.njnt)
            if model.jnt_type[i] == mujoco.mjtJoint.mjJNT_FREE]
    if free:
        raise _fail(path, 'build.remove.bodies', f'the model has more free joints than the '
                                                 f'root: {free}; remove their bodies')
    multi = [joints[i] for i in range(1, model.njnt)
             if model.jnt_type[i] == mujoco.mjtJoint.mjJNT_BALL]
    if multi:
        # NOTE: clips store one angle per joint, so ball joints are not supported yet.
        raise _fail(path, 'mjcf', f'ball joints are not supported (clips hold one value per '
                                  f'joint): {multi[:5]}')
    if robot.joints != 'all':
        for j in robot.joints:
            need(j, joints, 'joints', 'joint')
    if robot.actuator_source == 'model' and robot.actuator_names != 'all':
        for a in robot.actuator_names:
            need(a, actuators, 'actuation.names', 'actuator')
        if list(robot.actuator_names) != actuators:
            extra = [a for a in actuators if a not in robot.actuator_names]
            raise _fail(path, 'actuation.names', f'should list the model\'s {len(actuators)} '
                                                 f'actuators in order; differs (unlisted: '
                                                 f'{extra[:5]})')
    if model.nu == 0:
        raise _fail(path, 'actuation', 'the model has no actuators')
    if robot.command_interface == 'position':
        for i in range(model.nu):
            if model.actuator_trntype[i] != mujoco.mjtTrn.mjTRN_JOINT:
                raise _fail(path, 'command_interface', f"'position' needs one joint per "
                                                       f'actuator; {actuators[i]!r} drives a '
                                                       'tendon or site')
            joint = joints[model.actuator_trnid[i, 0]]
            _per_joint(robot.kp, joint, path, 'pd.kp')
            _per_joint(robot.kd, joint, path, 'pd.kd')
    for joint in robot.stand:
        need(joint, joints, f'stand.{joint}', 'joint')
    for joint in robot.retarget_stand or {}:
        need(joint, joints, f'retarget.stand.{joint}', 'joint')
    need(robot.torso_body, bodies, 'torso.body', 'body')
    for foot in robot.feet:
        if foot.site is not None:
            need(foot.site, sites, f'feet.{foot.name}.site', 'site')
        else:
            need(foot.body, bodies, f'feet.{foot.name}.body', 'body')
    for limb in robot.limbs:
        if limb.hip_body is not None:
            need(limb.hip_body, bodies, f'retarget.limbs.{limb.name}.hip_body', 'body')
    if robot.marker_set:
        from vrat_ros.marker_sets import resolve_marker_set
        try:
            markers = resolve_marker_set(robot.marker_set)
        except Exception as exc:  # a ClipError or a YAML problem: report it as this field's
            raise _fail(path, 'marker_set', str(exc)) from None
        for body in sorted(set(markers.bodies)):
            need(body, bodies, 'marker_set', 'body')


def load_robot(name_or_path: str | os.PathLike, scale: float | None = None
               ) -> tuple[mujoco.MjModel, RobotSpec]:
    """Reads a robot file, builds its model and checks every name in the file against it.

    Args:
        name_or_path: a robot name from `robot_names()` ('rat', 'quadruped') or a YAML path.
        scale: if given, replaces the file's `build.scale` (lengths of the MJCF times this).

    Returns:
        The compiled MjModel and the RobotSpec.

    Raises:
        RobotSpecError: (one line) the file, the MJCF or a name in the file is wrong, or the
            scale is out of range.
    """
    robot = load_robot_spec(name_or_path)
    if scale is not None:
        robot.build = dict(robot.build, scale=_positive(scale, robot.path, 'build.scale'))
        if not 0.01 <= robot.build['scale'] <= 100:
            raise _fail(robot.path, 'build.scale', f'should be in [0.01, 100], got {scale}')
    model = build_robot_model(robot)
    _check_names(robot, model)
    return model, robot


# ---------------------------------------------------------------------------------------------
# Stepping a robot


class Robot:
    """A compiled robot with its command interface applied at physics rate. No ROS in here.

    qpos layout: [0:7] the free root (position, quaternion w, x, y, z), then one value per
    joint in `joint_names` order (the order clips use).

    It has the members of `vrat_ros.rat_model.RatBody` that the inline rollout, the
    controllers and the tracking metrics read (`nq`, `nv`, `nu`, `time`, `reset`,
    `state_is_finite`, `hinge_names`, `tracked_hinge_idx`, `tracked_body_ids`, `torso_id`,
    `actuator_gain`), so those run on any robot. What differs from the rat:
      tracked_hinge_idx  every joint (the rat leaves its tail out).
      tracked_body_ids   the torso and the bodies that hold the feet (sites or bodies named in
                         `feet`): the points that say where the robot is and where it stands.
                         The rat tracks every body but its tail; a robot's other bodies are
                         mostly links between those and add little.
      track_*            the "tracked" limits of the robot file (`tracking`, and the torso's
                         `healthy_z_range`) instead of the rat's constants.
    """

    def __init__(self, name_or_path: str | os.PathLike | None = None, *,
                 model: mujoco.MjModel | None = None, spec: RobotSpec | None = None):
        if model is None or spec is None:
            model, spec = load_robot(name_or_path)
        self.model, self.spec = model, spec
        self.data = mujoco.MjData(model)
        m = model
        self.joint_names: list[str] = _names(m, mujoco.mjtObj.mjOBJ_JOINT, m.njnt)[1:]
        self.actuator_names: list[str] = _names(m, mujoco.mjtObj.mjOBJ_ACTUATOR, m.nu)
        self.body_names: list[str] = _names(m, mujoco.mjtObj.mjOBJ_BODY, m.nbody)
        # Joint torque (N m) per unit ctrl, and the torque limit: gain and force range times
        # the transmission's gear.
        gear = np.array(m.actuator_gear[:, 0], dtype=np.float64)
        self.actuator_gain = np.array(m.actuator_gainprm[:, 0], dtype=np.float64) * gear
        self.max_force = np.where(m.actuator_forcelimited.astype(bool),
                                  m.actuator_forcerange[:, 1] * gear, np.inf)
        self.torso_id = self.body_names.index(spec.torso_body)
        self.n_substeps = spec.n_substeps
        # The joint each actuator drives (index into joint_names; -1 for an actuator on a
        # tendon or site), and that joint's qpos and dof addresses (-1 likewise).
        on_joint = m.actuator_trntype == mujoco.mjtTrn.mjTRN_JOINT
        jids = np.where(on_joint, m.actuator_trnid[:, 0], 0)  # 0 (the root): not a joint's
        self.actuator_joint_idx = np.where(on_joint & (jids > 0), jids - 1, -1).astype(int)
        self.actuator_qposadr = np.where(self.actuator_joint_idx >= 0,
                                         m.jnt_qposadr[jids], -1).astype(int)
        self.actuator_dofadr = np.where(self.actuator_joint_idx >= 0,
                                        m.jnt_dofadr[jids], -1).astype(int)
        self.tracked_hinge_idx = np.arange(len(self.joint_names))
        feet = []
        for foot in spec.feet:
            feet.append(int(m.site_bodyid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE,
                                                            foot.site)])
                        if foot.site is not None else
                        mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, foot.body))
        self.tracked_body_ids = np.array(list(dict.fromkeys([self.torso_id] + feet)))
        self._stand = None
        self._target = None
        if spec.command_interface == 'position':
            jids = m.actuator_trnid[:, 0]
            self._act_qpos = m.jnt_qposadr[jids].copy()
            self._act_dof = m.jnt_dofadr[jids].copy()
            jnames = [_names(m, mujoco.mjtObj.mjOBJ_JOINT, m.njnt)[j] for j in jids]
            self.kp = np.array([_per_joint(spec.kp, j, spec.path, 'pd.kp') for j in jnames])
            self.kd = np.array([_per_joint(spec.kd, j, spec.path, 'pd.kd') for j in jnames])
        self.reset()

    @property
    def nq(self) -> int:
        return self.model.nq

    @property
    def nv(self) -> int:
        return self.model.nv

    @property
    def nu(self) -> int:
        return self.model.nu

    @property
    def time(self) -> float:
        """The simulation time (s)."""
        return float(self.data.time)

    @property
    def track_root_dist_m(self) -> float:
        """A frame fails when the root is farther than this from the reference's (m)."""
        return self.spec.track_root_dist_m

    @property
    def track_joint_sq_err_rad2(self) -> float:
        """A frame fails when the summed squared joint error is above this (rad^2)."""
        return self.spec.track_joint_sq_err_rad2

    @property
    def track_torso_z_range_m(self) -> tuple[float, float]:
        """A frame fails when the torso's height is outside this range (m)."""
        return self.spec.healthy_z_range

    @property
    def actuated_hinge_idx(self) -> np.ndarray:
        """Indices (into `joint_names`) of the joints with an actuator of their own, sorted."""
        return np.array(sorted(set(int(i) for i in self.actuator_joint_idx if i >= 0)),
                        dtype=int)

    @property
    def hinge_names(self) -> list[str]:
        """The joints after the root, in qpos order (`joint_names`; RatBody's name for them)."""
        return self.joint_names

    @property
    def timestep(self) -> float:
        """The physics timestep (s)."""
        return float(self.model.opt.timestep)

    @property
    def scale(self) -> float:
        """The length scale the model was built with (`build.scale`, 1 when absent)."""
        return float(self.spec.build.get('scale', 1.0))

    @property
    def command_interface(self) -> str:
        return self.spec.command_interface

    @property
    def target(self) -> np.ndarray | None:
        """The joint targets the PD law tracks (actuator order), or None."""
        return None if self._target is None else self._target.copy()

    def foot_radius(self, foot: Foot) -> float:
        """The foot's contact radius: from the file, else the largest sphere/capsule there."""
        if foot.radius is not None:
            return foot.radius
        m = self.model
        body = (m.site_bodyid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, foot.site)]
                if foot.site is not None
                else mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, foot.body))
        radii = [m.geom_size[g, 0] for g in range(m.ngeom) if m.geom_bodyid[g] == body
                 and int(m.geom_type[g]) in (int(mujoco.mjtGeom.mjGEOM_SPHERE),
                                             int(mujoco.mjtGeom.mjGEOM_CAPSULE))]
        return float(max(radii)) if radii else 0.0

    def foot_position(self, foot: Foot, data: mujoco.MjData | None = None) -> np.ndarray:
        d = self.data if data is None else data
        return (d.site(foot.site).xpos if foot.site is not None
                else d.body(foot.body).xpos).copy()

    def stand_qpos(self, pose: dict | None = None) -> np.ndarray:
        """The standing pose: `stand` angles (else qpos0), level, lowest foot on the floor.

        Args:
            pose: {joint: angle} to use instead of the file's `stand` (e.g. `retarget_stand`).
        """
        m, d = self.model, mujoco.MjData(self.model)
        qpos = m.qpos0.copy()
        qpos[0:3] = 0.0
        qpos[3:7] = [1.0, 0.0, 0.0, 0.0]
        for joint, angle in (self.spec.stand if pose is None else pose).items():
            qpos[m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, joint)]] = angle
        d.qpos[:] = qpos
        mujoco.mj_kinematics(m, d)
        if self.spec.feet:
            lowest = min(self.foot_position(f, d)[2] - self.foot_radius(f)
                         for f in self.spec.feet)
        else:  # no feet named: the lowest geom's lowest point
            lowest = float(np.min(d.geom_xpos[:, 2] - m.geom_rbound))
        qpos[2] = -lowest
        return qpos

    def pd_gains(self) -> tuple[np.ndarray, np.ndarray]:
        """The robot file's PD gains per actuator (kp in N m/rad, kd in N m s/rad).

        Raises:
            RobotSpecError: the file has no `pd` gains, lacks one for an actuated joint, or an
                actuator drives a tendon or site rather than one joint.
        """
        spec = self.spec
        if spec.kp is None or spec.kd is None:
            raise RobotSpecError(f"'{spec.path}': pd: robot '{spec.name}' has no PD gains; add "
                                 'pd: {kp, kd} (scalars or {joint: value})')
        if np.any(self.actuator_joint_idx < 0):
            raise RobotSpecError(f"'{spec.path}': robot '{spec.name}': PD gains need one joint "
                                 'per actuator; some actuators drive tendons or sites')
        joints = [self.joint_names[i] for i in self.actuator_joint_idx]
        return (np.array([_per_joint(spec.kp, j, spec.path, 'pd.kp') for j in joints]),
                np.array([_per_joint(spec.kd, j, spec.path, 'pd.kd') for j in joints]))

    def stand_targets(self) -> np.ndarray:
        """The standing pose at the actuated joints (actuator order): the targets that hold it.

        For a position robot this is the command of a policy's zero action (trained position
        policies take `action_offset` = these values).

        Raises:
            RobotSpecError: an actuator drives a tendon or site, not one joint.
        """
        if np.any(self.actuator_qposadr < 0):
            raise RobotSpecError(f"robot '{self.spec.name}': joint targets need one joint per "
                                 'actuator; some actuators drive tendons or sites')
        if self._stand is None:
            self._stand = self.stand_qpos()
        return self._stand[self.actuator_qposadr].copy()

    def retarget_stand_qpos(self) -> np.ndarray:
        """The pose retargeted clips stand and step in: `retarget.stand`, else `stand`."""
        return self.stand_qpos(self.spec.retarget_stand)

    def reset(self, qpos: npt.ArrayLike | None = None, qvel: npt.ArrayLike | None = None,
              time: float = 0.0) -> None:
        """Sets the state and recomputes kinematics; no command afterwards.

        Args:
            qpos: (nq,) generalised positions; default: the standing pose.
            qvel: (nv,) generalised velocities; default: zero.
            time: simulation time (s).
        """
        mujoco.mj_resetData(self.model, self.data)
        qpos = self.stand_qpos() if qpos is None else np.asarray(qpos, dtype=np.float64)
        if qpos.shape != (self.nq,):
            raise ValueError(f'qpos should have shape ({self.nq},): got {qpos.shape}')
        self.data.qpos[:] = qpos
        if qvel is not None:
            qvel = np.asarray(qvel, dtype=np.float64)
            if qvel.shape != (self.nv,):
                raise ValueError(f'qvel should have shape ({self.nv},): got {qvel.shape}')
            self.data.qvel[:] = qvel
        self.data.time = float(time)
        self._target = None
        self.data.ctrl[:] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def set_command(self, command: npt.ArrayLike | None) -> int:
        """Sets the command in actuator order: torques (N m) or joint targets (rad, m).

        None means no command: zero torque on every actuator (both interfaces).

        Returns:
            How many torques were clamped to their limit (always 0 for targets: the PD law
            clamps later, see `step`).
        """
        if command is None:
            self._target = None
            self.data.ctrl[:] = 0.0
            return 0
        command = np.asarray(command, dtype=np.float64)
        if command.shape != (self.nu,) or not np.all(np.isfinite(command)):
            raise ValueError(f'command should be {self.nu} finite values: got shape '
                             f'{command.shape}')
        if self.spec.command_interface == 'position':
            self._target = command.copy()
            return 0
        ctrl = command / self.actuator_gain
        self.data.ctrl[:] = np.clip(ctrl, -1.0, 1.0)
        return int(np.count_nonzero(np.abs(ctrl) > 1.0))

    def state_is_finite(self) -> bool:
        """Whether qpos and qvel hold only finite values."""
        return bool(np.all(np.isfinite(self.data.qpos)) and np.all(np.isfinite(self.data.qvel)))

    def _apply_pd(self) -> np.ndarray:
        """Sets ctrl from the PD law; returns which actuators hit their torque limit."""
        q = self.data.qpos[self._act_qpos]
        qd = self.data.qvel[self._act_dof]
        torque = self.kp * (self._target - q) - self.kd * qd
        ctrl = torque / self.actuator_gain
        self.data.ctrl[:] = np.clip(ctrl, -1.0, 1.0)
        return np.abs(ctrl) > 1.0

    def step(self, n_steps: int = 1) -> int:
        """Advances `n_steps` physics steps with the current command.

        Torques (or no command) stay in ctrl for all of them, in one MuJoCo call; position
        targets get the PD law before each step.

        Returns:
            How many actuators the PD law clamped to their torque limit in at least one of
            the steps (0 without position targets).
        """
        if self._target is None:
            mujoco.mj_step(self.model, self.data, nstep=int(n_steps))
            return 0
        clamped = np.zeros(self.nu, dtype=bool)
        for _ in range(int(n_steps)):
            clamped |= self._apply_pd()
            mujoco.mj_step(self.model, self.data)
        return int(np.count_nonzero(clamped))

    def step_control(self, command: npt.ArrayLike | None = None, keep: bool = False) -> None:
        """Runs one control period; a 'position' command gets PD at every physics step.

        Args:
            command: see `set_command`.
            keep: keep the previous command instead (ignores `command`).
        """
        if not keep:
            self.set_command(command)
        for _ in range(self.n_substeps):
            if self._target is not None:
                self._apply_pd()
            mujoco.mj_step(self.model, self.data)

    def describe(self) -> dict:
        """A JSON-friendly summary of the robot."""
        return {
            'name': self.spec.name, 'nq': self.model.nq, 'nv': self.model.nv,
            'nu': self.model.nu, 'physics_timestep_s': self.spec.physics_timestep_s,
            'control_rate_hz': self.spec.control_rate_hz,
            'command_interface': self.spec.command_interface,
            'mass_kg': round(float(self.model.body_subtreemass[1]), 6),
            'joint_names': list(self.joint_names),
            'actuator_names': list(self.actuator_names),
            'feet': [f.target for f in self.spec.feet],
        }
