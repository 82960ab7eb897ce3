"""The simulated rat: dm_control's rodent body composed with MjSpec, and a stepping wrapper."""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import warnings

import mujoco
import numpy as np
import numpy.typing as npt

from vrat_ros import rat_constants as rc
from vrat_ros.errors import ModelLoadError

_LOG = logging.getLogger(__name__)

ACTUATOR_VARIANTS = ('torque', 'servo')


def rodent_xml_path() -> str:
    """Returns the path of dm_control's rodent walker MJCF (it is not copied into this repo)."""
    path = importlib.resources.files('dm_control') / 'locomotion/walkers/assets/rodent.xml'
    if not path.is_file():
        raise ModelLoadError(
            f'dm_control rodent asset not found at {path}; is dm-control installed?')
    return str(path)


@contextlib.contextmanager
def _quiet_mujoco_warnings():
    """Routes MuJoCo's C-level warnings (e.g. attach notices) to the logger while composing."""
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda msg: _LOG.debug('mujoco: %s', msg))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            yield
    finally:
        mujoco.set_mju_user_warning(previous)


def _scale_rat(spec: mujoco.MjSpec, scale: float) -> None:
    """Scales every length of the rat by `scale`; masses follow from the unchanged densities."""
    for body in spec.bodies:
        body.pos = np.asarray(body.pos) * scale
    for geom in spec.geoms:
        geom.pos = np.asarray(geom.pos) * scale
        geom.size = np.asarray(geom.size) * scale
    for site in spec.sites:
        site.pos = np.asarray(site.pos) * scale
        site.size = np.asarray(site.size) * scale
    for joint in spec.joints:
        joint.pos = np.asarray(joint.pos) * scale
    for camera in spec.cameras:
        camera.pos = np.asarray(camera.pos) * scale


def _make_torque_actuators(spec: mujoco.MjSpec) -> None:
    """Turns the rodent's servo-like actuators into plain torque motors.

    force = gain * ctrl with ctrl in [-1, 1] and gain = the original force range's upper bound.
    NOTE: the original servos have forcelimited="false", so their forcerange was never enforced;
    as torque motors the limbs are weaker than the servos were (see README, "The body").
    """
    for act in spec.actuators:
        fmax = float(act.forcerange[1])
        act.dyntype = mujoco.mjtDyn.mjDYN_NONE
        act.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        act.biastype = mujoco.mjtBias.mjBIAS_NONE
        act.gainprm = np.array([fmax] + [0.0] * 9)
        act.biasprm = np.zeros(10)
        act.dynprm = np.array([1.0] + [0.0] * 9)
        act.ctrllimited = True
        act.ctrlrange = np.array([-1.0, 1.0])
        act.forcelimited = True
        act.forcerange = np.array([-fmax, fmax])


def build_rat_spec(
    scale: float = rc.DEFAULT_BODY_SCALE,
    actuators: str = 'torque',
    tail_collisions: bool = False,
    floor: bool = True,
) -> mujoco.MjSpec:
    """Composes the rat on a floor with a free root joint.

    Args:
        scale: body length scale; 0.9 matches published STAC fits of real rats.
        actuators: 'torque' (default) or 'servo' (the original servo-like actuators).
        tail_collisions: the STAC fits leave the tail straight and inside the floor, so tail
            collisions are off by default.
        floor: add a ground plane.

    Returns:
        An uncompiled MjSpec; its root body is 'walker' with free joint 'root', as in dm_control.
    """
    if actuators not in ACTUATOR_VARIANTS:
        raise ValueError(f"actuators should be one of {ACTUATOR_VARIANTS}: got '{actuators}'")
    if not np.isfinite(scale) or not 0.2 <= scale <= 5.0:
        raise ValueError(f'scale should be a finite number in [0.2, 5]: got {scale}')

    rat = mujoco.MjSpec.from_file(rodent_xml_path())
    for skin in list(rat.skins):  # the skin mesh cannot follow a rescaled body
        rat.delete(skin)
    _scale_rat(rat, scale)
    if actuators == 'torque':
        _make_torque_actuators(rat)
    if not tail_collisions:
        for body in rat.bodies:
            if body.name.startswith(rc.TAIL_BODY_PREFIX):
                for geom in body.geoms:
                    geom.contype = 0
                    geom.conaffinity = 0

    parent = mujoco.MjSpec()
    parent.modelname = 'vrat'
    parent.njmax, parent.nconmax = rat.njmax, rat.nconmax
    parent.option.timestep = rc.PHYSICS_TIMESTEP_S
    parent.visual.quality.shadowsize = 2048
    if floor:
        parent.worldbody.add_geom(
            name='floor', type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2.0, 2.0, 0.05],
            rgba=[0.45, 0.5, 0.55, 1.0])
        parent.worldbody.add_light(name='top_light', pos=[0, 0, 2.0], dir=[0, 0, -1])
    walker = parent.worldbody.add_body(name=rc.ROOT_BODY)
    walker.add_freejoint(name=rc.ROOT_JOINT)
    with _quiet_mujoco_warnings():
        parent.attach(rat, frame=walker.add_frame(), prefix='')
    return parent


def build_rat_model(**kwargs) -> mujoco.MjModel:
    """Compiles `build_rat_spec(**kwargs)`; see there for the arguments."""
    spec = build_rat_spec(**kwargs)
    with _quiet_mujoco_warnings():
        try:
            return spec.compile()
        except ValueError as exc:
            raise ModelLoadError(f'rat model failed to compile: {exc}') from exc


def _names(model: mujoco.MjModel, obj: mujoco.mjtObj, count: int) -> list[str]:
    return [mujoco.mj_id2name(model, obj, i) for i in range(count)]


class RatBody:
    """A compiled rat with named access to its joints, actuators and bodies. No ROS in here.

    qpos layout: [0:3] root position (m, world), [3:7] root quaternion (w, x, y, z),
    [7:] the 67 hinge angles (rad) in `hinge_names` order. qvel: [0:3] root linear velocity
    (world), [3:6] root angular velocity (root body frame), [6:] hinge velocities.
    """

    def __init__(self, scale: float = rc.DEFAULT_BODY_SCALE, actuators: str = 'torque',
                 tail_collisions: bool = False):
        self.scale = float(scale)
        self.actuator_variant = actuators
        self.model = build_rat_model(
            scale=scale, actuators=actuators, tail_collisions=tail_collisions)
        self.data = mujoco.MjData(self.model)
        m = self.model
        joints = _names(m, mujoco.mjtObj.mjOBJ_JOINT, m.njnt)
        if joints[0] != rc.ROOT_JOINT or m.nq != 7 + m.njnt - 1:
            raise ModelLoadError(f"expected a free root joint '{rc.ROOT_JOINT}' then hinges")
        self.hinge_names: list[str] = joints[1:]
        self.actuator_names: list[str] = _names(m, mujoco.mjtObj.mjOBJ_ACTUATOR, m.nu)
        self.body_names: list[str] = _names(m, mujoco.mjtObj.mjOBJ_BODY, m.nbody)
        # Force at ctrl = 1 for each actuator: the torque gain (N m per unit command).
        self.actuator_gain = np.array(m.actuator_forcerange[:, 1], dtype=np.float64)
        self.torso_id = self.body_names.index(rc.TORSO_BODY)
        self.tracked_body_ids = np.array([
            i for i, n in enumerate(self.body_names)
            if i > 1 and not n.startswith(rc.TAIL_BODY_PREFIX)])
        self.tracked_hinge_idx = np.array([
            i for i, n in enumerate(self.hinge_names) if not n.startswith(rc.TAIL_JOINT_PREFIX)])
        self.n_substeps = 1
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
    def timestep(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def total_mass(self) -> float:
        return float(self.model.body_subtreemass[1])

    def default_qpos(self) -> np.ndarray:
        """Returns the neutral pose: hinges at 0, root at the origin, identity orientation.

        NOTE: this pose is not a resting one; the feet sit about 1 mm into the floor.
        Start from a clip frame for a physically consistent state.
        """
        qpos = np.zeros(self.nq)
        qpos[3] = 1.0
        return qpos

    def reset(self, qpos: npt.ArrayLike | None = None, qvel: npt.ArrayLike | None = None,
              time: float = 0.0) -> None:
        """Sets the state and recomputes kinematics.

        Args:
            qpos: (nq,) generalised positions; defaults to `default_qpos()`.
            qvel: (nv,) generalised velocities; defaults to zero.
            time: simulation time (s).
        """
        mujoco.mj_resetData(self.model, self.data)
        qpos = self.default_qpos() if qpos is None else np.asarray(qpos, dtype=np.float64)
        if qpos.shape != (self.nq,):
            raise ValueError(f'qpos should have shape ({self.nq},): got {qpos.shape}')
        self.data.qpos[:] = qpos
        if qvel is not None:
            qvel = np.asarray(qvel, dtype=np.float64)
            if qvel.shape != (self.nv,):
                raise ValueError(f'qvel should have shape ({self.nv},): got {qvel.shape}')
            self.data.qvel[:] = qvel
        self.data.time = time
        mujoco.mj_forward(self.model, self.data)

    def set_ctrl_from_torque(self, torque: npt.ArrayLike) -> int:
        """Applies actuator torques (N m, actuator order), clamped to the force limits.

        Returns:
            How many actuators were saturated (clamped).
        """
        torque = np.asarray(torque, dtype=np.float64)
        if torque.shape != (self.nu,):
            raise ValueError(f'torque should have shape ({self.nu},): got {torque.shape}')
        if not np.all(np.isfinite(torque)):
            raise ValueError('torque has non-finite values')
        ctrl = torque / self.actuator_gain
        saturated = int(np.count_nonzero(np.abs(ctrl) > 1.0))
        self.data.ctrl[:] = np.clip(ctrl, -1.0, 1.0)
        return saturated

    def step(self, n_substeps: int = 1) -> None:
        """Advances physics by `n_substeps` timesteps with the current ctrl."""
        mujoco.mj_step(self.model, self.data, nstep=n_substeps)

    def state_is_finite(self) -> bool:
        return bool(np.all(np.isfinite(self.data.qpos)) and np.all(np.isfinite(self.data.qvel)))

    def body_positions(self, qpos: npt.ArrayLike | None = None) -> np.ndarray:
        """Returns (nbody, 3) world body positions (m), for `qpos` if given (data is restored)."""
        if qpos is None:
            return self.data.xpos.copy()
        saved = self.data.qpos.copy()
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        xpos = self.data.xpos.copy()
        self.data.qpos[:] = saved
        mujoco.mj_kinematics(self.model, self.data)
        return xpos

    def describe(self) -> dict:
        """Returns a JSON-friendly summary (sizes, mass, names) of the model."""
        return {
            'nq': self.nq, 'nv': self.nv, 'nu': self.nu,
            'timestep_s': self.timestep,
            'scale': self.scale,
            'actuators_variant': self.actuator_variant,
            'mass_kg': round(self.total_mass, 6),
            'root_joint': rc.ROOT_JOINT,
            'joint_names': list(self.hinge_names),
            'actuator_names': list(self.actuator_names),
            'actuator_max_force': [float(f) for f in self.actuator_gain],
        }
