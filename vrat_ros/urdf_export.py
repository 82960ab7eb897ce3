"""URDF of a robot generated from its compiled MuJoCo model (for RViz and robot_description).

The rat's (`build_urdf`, committed as urdf/vrat.urdf) and any robot file's (`robot_urdf`, e.g.
the quadruped's) come from the same mapping of the MuJoCo body onto URDF:
  * The free root body (the rat's 'walker', the quadruped's 'torso') is the URDF root link: a
    floating base with no joint to 'world'; the sim (odom) or TF supplies world -> root.
  * Every other body is a link of the same name whose frame is exactly the MuJoCo body frame.
  * A hinge turns about an axis through a point (`jnt_pos`) of the body frame, and a body's
    hinges apply one after the other. Each hinge becomes a revolute joint of the same name
    placed on its axis; when a body has several hinges, or its last axis does not pass
    through the body origin, massless links named `<body>__<joint>` sit in between and a
    fixed joint `<body>__anchor` moves back from the axis to the body origin.
  * A body without hinges hangs from its parent by a fixed joint `<body>__fixed`.
  * Geoms become visuals; geoms that can collide in the sim also become collisions. A capsule
    is a cylinder plus two spheres; an ellipsoid is a unit-sphere mesh scaled per axis.
  * Mass and inertia sit at the body's inertial frame (body_ipos, body_iquat).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import os
import struct
import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import numpy.typing as npt

from vrat_ros import rat_constants as rc

URDF_FILE = 'vrat.urdf'
SPHERE_MESH_FILE = 'unit_sphere.stl'
DEFAULT_MESH_URI = 'package://vrat_ros/urdf/' + SPHERE_MESH_FILE

# NOTE: URDF needs effort and velocity limits on every revolute joint; MuJoCo has no velocity
# limit and passive joints have no actuator, so these stated nominal values fill the gaps.
NOMINAL_VELOCITY_RAD_S = 30.0
PASSIVE_EFFORT_NM = 0.01

# Ten significant digits: exact enough for 1e-9 m / rad FK agreement, and stable across
# MuJoCo builds that differ in the last bits of derived values (inertias, normalised axes).
_DIGITS = 10
_ZERO_TOL = 1e-12
_ICOSPHERE_SUBDIVISIONS = 2


def _num(x: float) -> str:
    """Formats a float for the URDF: a fixed number of significant digits, no '-0'.

    Values under _ZERO_TOL are written as 0: they are rounding noise (e.g. 3.9e-16 on one
    machine, 4.4e-16 on another for the same angle) and would make the file machine-bound.
    """
    if abs(float(x)) < _ZERO_TOL:
        return '0'
    text = f'{float(x):.{_DIGITS}g}'
    return '0' if text in ('-0', '0', '-0.0') else text


def _vec(v: npt.ArrayLike) -> str:
    return ' '.join(_num(x) for x in np.asarray(v, dtype=np.float64).ravel())


def quat_to_rpy(quat: npt.ArrayLike) -> np.ndarray:
    """Converts a MuJoCo quaternion (w, x, y, z) to URDF roll, pitch, yaw (rad).

    URDF composes R = Rz(yaw) @ Ry(pitch) @ Rx(roll). At pitch = +-90 deg (gimbal lock,
    common for capsules lying along x) roll is set to 0 and yaw carries the rest.
    """
    mat = np.zeros(9)
    q = np.asarray(quat, dtype=np.float64)
    mujoco.mju_quat2Mat(mat, q / np.linalg.norm(q))
    r = mat.reshape(3, 3)
    cos_pitch = math.hypot(r[0, 0], r[1, 0])
    pitch = math.atan2(-r[2, 0], cos_pitch)
    if cos_pitch > 1e-9:
        roll = math.atan2(r[2, 1], r[2, 2])
        yaw = math.atan2(r[1, 0], r[0, 0])
    else:
        roll = 0.0
        yaw = math.atan2(-r[0, 1], r[1, 1])
    return np.array([roll, pitch, yaw])


def _origin(parent: ET.Element, xyz: npt.ArrayLike, quat: npt.ArrayLike | None = None) -> None:
    attrs = {'xyz': _vec(xyz)}
    rpy = np.zeros(3) if quat is None else quat_to_rpy(quat)
    attrs['rpy'] = _vec(rpy)
    ET.SubElement(parent, 'origin', attrs)


def _quat_rotate(quat: npt.ArrayLike, vec: npt.ArrayLike) -> np.ndarray:
    out = np.zeros(3)
    mujoco.mju_rotVecQuat(out, np.asarray(vec, dtype=np.float64),
                          np.asarray(quat, dtype=np.float64))
    return out


def _axis_angle_quat(axis: npt.ArrayLike, angle: float) -> np.ndarray:
    out = np.zeros(4)
    mujoco.mju_axisAngle2Quat(out, np.asarray(axis, dtype=np.float64), float(angle))
    return out


def _quat_mul(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return out


def _name(model: mujoco.MjModel, obj: mujoco.mjtObj, idx: int) -> str:
    return mujoco.mj_id2name(model, obj, idx) or ''


def joint_effort_limits(model: mujoco.MjModel) -> np.ndarray:
    """Returns (njnt,) torque bounds (N m) that the actuators can put on each joint.

    A joint with its own actuator gets |gear| times the actuator's force bound. A joint driven
    through a fixed tendon gets |gear * tendon coefficient| times the force bound (the largest
    over such actuators). A joint no actuator reaches gets PASSIVE_EFFORT_NM.
    """
    limits = np.zeros(model.njnt)
    for a in range(model.nu):
        force = float(np.max(np.abs(model.actuator_forcerange[a])))
        if force == 0.0:  # no force range given: fall back to the gain at full control
            force = abs(float(model.actuator_gainprm[a, 0])) * float(
                np.max(np.abs(model.actuator_ctrlrange[a])))
        gear = abs(float(model.actuator_gear[a, 0]))
        trn, target = int(model.actuator_trntype[a]), int(model.actuator_trnid[a, 0])
        if trn == mujoco.mjtTrn.mjTRN_JOINT:
            limits[target] = max(limits[target], gear * force)
        elif trn == mujoco.mjtTrn.mjTRN_TENDON:
            adr, num = model.tendon_adr[target], model.tendon_num[target]
            for w in range(adr, adr + num):
                if model.wrap_type[w] == mujoco.mjtWrap.mjWRAP_JOINT:
                    j = int(model.wrap_objid[w])
                    limits[j] = max(limits[j], gear * abs(float(model.wrap_prm[w])) * force)
    limits[limits == 0.0] = PASSIVE_EFFORT_NM
    return limits


def _geom_rgba(model: mujoco.MjModel, g: int) -> np.ndarray:
    mat = int(model.geom_matid[g])
    return np.array(model.mat_rgba[mat] if mat >= 0 else model.geom_rgba[g], dtype=np.float64)


def _material_name(rgba: np.ndarray) -> str:
    return 'rgba_' + '_'.join(_num(round(c, 4)) for c in rgba)


def _add_shape(parent: ET.Element, tag: str, name: str, geom_type: int, size: np.ndarray,
               pos: np.ndarray, quat: np.ndarray, material: str | None, mesh_uri: str) -> None:
    """Appends <visual> or <collision> element(s) for one MuJoCo geom."""
    def element(suffix: str, xyz: np.ndarray) -> ET.Element:
        el = ET.SubElement(parent, tag, {'name': name + suffix})
        _origin(el, xyz, quat)
        return el

    def finish(el: ET.Element, shape: str, attrs: dict) -> None:
        geometry = ET.SubElement(el, 'geometry')
        ET.SubElement(geometry, shape, attrs)
        if material is not None:
            ET.SubElement(el, 'material', {'name': material})

    if geom_type == mujoco.mjtGeom.mjGEOM_SPHERE:
        finish(element('', pos), 'sphere', {'radius': _num(size[0])})
    elif geom_type == mujoco.mjtGeom.mjGEOM_BOX:
        finish(element('', pos), 'box', {'size': _vec(2.0 * size[:3])})
    elif geom_type == mujoco.mjtGeom.mjGEOM_CYLINDER:
        finish(element('', pos), 'cylinder',
               {'radius': _num(size[0]), 'length': _num(2.0 * size[1])})
    elif geom_type == mujoco.mjtGeom.mjGEOM_CAPSULE:
        finish(element('', pos), 'cylinder',
               {'radius': _num(size[0]), 'length': _num(2.0 * size[1])})
        for suffix, sign in (('__cap_pos', 1.0), ('__cap_neg', -1.0)):
            centre = pos + _quat_rotate(quat, [0.0, 0.0, sign * size[1]])
            finish(element(suffix, centre), 'sphere', {'radius': _num(size[0])})
    elif geom_type == mujoco.mjtGeom.mjGEOM_ELLIPSOID:
        # URDF has no ellipsoid; a unit sphere mesh scaled by the semi-axes is exact up to the
        # mesh's faceting (an icosphere of 320 faces).
        finish(element('', pos), 'mesh', {'filename': mesh_uri, 'scale': _vec(size[:3])})
    else:
        raise ValueError(
            f"geom '{name}' has type {mujoco.mjtGeom(geom_type).name}, which the URDF export "
            'does not handle (sphere, box, cylinder, capsule and ellipsoid are handled)')


def _add_link(robot: ET.Element, model: mujoco.MjModel, body: int, mesh_uri: str,
              materials: dict) -> None:
    link = ET.SubElement(robot, 'link', {'name': _name(model, mujoco.mjtObj.mjOBJ_BODY, body)})
    mass = float(model.body_mass[body])
    if mass > 0.0:
        inertial = ET.SubElement(link, 'inertial')
        _origin(inertial, model.body_ipos[body], model.body_iquat[body])
        ET.SubElement(inertial, 'mass', {'value': _num(mass)})
        ixx, iyy, izz = model.body_inertia[body]
        ET.SubElement(inertial, 'inertia', {
            'ixx': _num(ixx), 'ixy': '0', 'ixz': '0', 'iyy': _num(iyy), 'iyz': '0',
            'izz': _num(izz)})
    geoms = range(model.body_geomadr[body], model.body_geomadr[body] + model.body_geomnum[body])
    for tag in ('visual', 'collision'):
        for g in geoms:
            if tag == 'collision' and not (model.geom_contype[g] or model.geom_conaffinity[g]):
                continue  # NOTE: contacts are off for this geom in the sim (e.g. the tail)
            name = _name(model, mujoco.mjtObj.mjOBJ_GEOM, g) or f'geom_{g}'
            material = None
            if tag == 'visual':
                rgba = _geom_rgba(model, g)
                material = _material_name(rgba)
                materials.setdefault(material, rgba)
            _add_shape(link, tag, name, int(model.geom_type[g]), model.geom_size[g],
                       model.geom_pos[g], model.geom_quat[g], material, mesh_uri)


def _add_joint(robot: ET.Element, name: str, kind: str, parent: str, child: str,
               xyz: npt.ArrayLike, quat: npt.ArrayLike | None = None) -> ET.Element:
    joint = ET.SubElement(robot, 'joint', {'name': name, 'type': kind})
    _origin(joint, xyz, quat)
    ET.SubElement(joint, 'parent', {'link': parent})
    ET.SubElement(joint, 'child', {'link': child})
    return joint


def _add_body_joints(robot: ET.Element, model: mujoco.MjModel, body: int,
                     efforts: np.ndarray) -> None:
    """Joins `body` to its parent: fixed, or a chain of revolute joints (see module doc)."""
    name = _name(model, mujoco.mjtObj.mjOBJ_BODY, body)
    parent = _name(model, mujoco.mjtObj.mjOBJ_BODY, int(model.body_parentid[body]))
    first, count = int(model.body_jntadr[body]), int(model.body_jntnum[body])
    if count == 0:
        _add_joint(robot, f'{name}__fixed', 'fixed', parent, name,
                   model.body_pos[body], model.body_quat[body])
        return

    previous_link, previous_anchor = parent, None
    for k, j in enumerate(range(first, first + count)):
        jname = _name(model, mujoco.mjtObj.mjOBJ_JOINT, j)
        if model.jnt_type[j] != mujoco.mjtJoint.mjJNT_HINGE:
            raise ValueError(
                f"joint '{jname}' of body '{name}' is a "
                f'{mujoco.mjtJoint(model.jnt_type[j]).name}; only hinges below the free '
                'root can be exported')
        axis = np.array(model.jnt_axis[j], dtype=np.float64)
        axis /= np.linalg.norm(axis)
        # Any point of the hinge line works as the URDF joint origin; take the one nearest
        # the body origin, so that a line through the origin needs no anchor link.
        pos = np.array(model.jnt_pos[j], dtype=np.float64)
        anchor = pos - np.dot(pos, axis) * axis
        # MuJoCo turns by qpos - qpos0 (a joint's `ref`); fold -qpos0 into the joint origin.
        offset = _axis_angle_quat(axis, -float(model.qpos0[model.jnt_qposadr[j]]))
        if previous_anchor is None:
            xyz = model.body_pos[body] + _quat_rotate(model.body_quat[body], anchor)
            quat = _quat_mul(model.body_quat[body], offset)
        else:
            xyz, quat = anchor - previous_anchor, offset
        last = k == count - 1
        needs_anchor_link = not last or np.linalg.norm(anchor) > _ZERO_TOL
        child = f'{name}__{jname}' if needs_anchor_link else name
        if needs_anchor_link:
            ET.SubElement(robot, 'link', {'name': child})
        joint = _add_joint(robot, jname, 'revolute', previous_link, child, xyz, quat)
        ET.SubElement(joint, 'axis', {'xyz': _vec(axis)})
        lower, upper = model.jnt_range[j] if model.jnt_limited[j] else (-math.pi, math.pi)
        ET.SubElement(joint, 'limit', {
            'lower': _num(lower), 'upper': _num(upper), 'effort': _num(efforts[j]),
            'velocity': _num(NOMINAL_VELOCITY_RAD_S)})
        dof = int(model.jnt_dofadr[j])
        ET.SubElement(joint, 'dynamics', {
            'damping': _num(model.dof_damping[dof]),
            'friction': _num(model.dof_frictionloss[dof])})
        previous_link, previous_anchor = child, anchor
    if previous_link != name:
        # Back from the last hinge axis to the body origin.
        _add_joint(robot, f'{name}__anchor', 'fixed', previous_link, name, -previous_anchor)


def urdf_from_model(model: mujoco.MjModel, robot_name: str = 'vrat',
                    mesh_uri: str = DEFAULT_MESH_URI, comment: str = '') -> str:
    """Builds the URDF text of a model (see the module docstring for the mapping).

    Args:
        model: a compiled model whose body 1 is the free-floating root (the rat's 'walker')
            and whose other joints are hinges.
        robot_name: the <robot name>.
        mesh_uri: filename written for ellipsoid meshes (a unit sphere, see
            `unit_sphere_stl`).
        comment: text of an XML comment put at the top of the file ('--', which XML
            comments may not hold, becomes '- -').

    Returns:
        The URDF document as a string (UTF-8 XML, two-space indents, trailing newline).

    Raises:
        ValueError: the model has joints or geoms the export cannot express.
    """
    root_body = 1
    if model.nbody < 2 or model.body_jntnum[root_body] != 1 or (
            model.jnt_type[model.body_jntadr[root_body]] != mujoco.mjtJoint.mjJNT_FREE):
        raise ValueError('the model should have a root body (id 1) with a single free joint')
    efforts = joint_effort_limits(model)
    robot = ET.Element('robot', {'name': robot_name})
    materials: dict[str, np.ndarray] = {}
    links = ET.Element('links')
    for body in range(1, model.nbody):
        _add_link(links, model, body, mesh_uri, materials)
        if body != root_body:
            _add_body_joints(links, model, body, efforts)
    for name, rgba in materials.items():
        material = ET.SubElement(robot, 'material', {'name': name})
        ET.SubElement(material, 'color', {'rgba': _vec(np.round(rgba, 4))})
    robot.extend(list(links))
    ET.indent(robot, space='  ')
    text = ET.tostring(robot, encoding='unicode')
    header = '<?xml version="1.0" encoding="utf-8"?>\n'
    if comment:
        while '--' in comment:
            comment = comment.replace('--', '- -')
        header += f'<!-- {comment} -->\n'
    return header + text + '\n'


def rpy_to_quat(rpy: npt.ArrayLike) -> np.ndarray:
    """URDF roll, pitch, yaw (rad) to a (w, x, y, z) quaternion of Rz(yaw) Ry(pitch) Rx(roll)."""
    roll, pitch, yaw = (float(a) for a in rpy)
    q = _axis_angle_quat([0.0, 0.0, 1.0], yaw)
    q = _quat_mul(q, _axis_angle_quat([0.0, 1.0, 0.0], pitch))
    return _quat_mul(q, _axis_angle_quat([1.0, 0.0, 0.0], roll))


@dataclasses.dataclass(frozen=True)
class UrdfJoint:
    """One joint of a URDF: its origin as a position and a (w, x, y, z) quaternion."""

    name: str
    kind: str
    parent: str
    child: str
    pos: np.ndarray
    quat: np.ndarray
    axis: np.ndarray

    def transform(self, position: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Returns (pos, quat) of the child link in the parent link's frame."""
        if self.kind in ('revolute', 'continuous'):
            return self.pos, _quat_mul(self.quat, _axis_angle_quat(self.axis, position))
        if self.kind == 'prismatic':
            return self.pos + _quat_rotate(self.quat, self.axis * position), self.quat
        return self.pos, self.quat


def parse_urdf_joints(text: str) -> list[UrdfJoint]:
    """Reads the joints of a URDF document, in file order.

    Raises:
        ValueError: the text is not a URDF robot.
    """
    root = ET.fromstring(text.encode('utf-8'))
    if root.tag != 'robot':
        raise ValueError(f"expected a URDF <robot> document: got <{root.tag}>")
    joints = []
    for el in root.iter('joint'):
        origin = el.find('origin')
        xyz = [0.0] * 3 if origin is None else origin.get('xyz', '0 0 0').split()
        rpy = [0.0] * 3 if origin is None else origin.get('rpy', '0 0 0').split()
        axis = el.find('axis')
        joints.append(UrdfJoint(
            name=el.get('name'), kind=el.get('type'), parent=el.find('parent').get('link'),
            child=el.find('child').get('link'), pos=np.array(xyz, dtype=np.float64),
            quat=rpy_to_quat(np.array(rpy, dtype=np.float64)),
            axis=np.array((axis.get('xyz') if axis is not None else '1 0 0').split(),
                          dtype=np.float64)))
    return joints


def _icosphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns a unit icosphere: (V, 3) vertices and (F, 3) faces, counter-clockwise."""
    t = (1.0 + math.sqrt(5.0)) / 2.0
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t),
             (0, -1, -t), (0, 1, -t), (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
             (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8),
             (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    points = [np.array(v, dtype=np.float64) / np.linalg.norm(v) for v in verts]
    for _ in range(subdivisions):
        midpoints: dict[tuple[int, int], int] = {}

        def midpoint(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in midpoints:
                m = points[a] + points[b]
                points.append(m / np.linalg.norm(m))
                midpoints[key] = len(points) - 1
            return midpoints[key]

        new_faces = []
        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new_faces
    return np.array(points), np.array(faces, dtype=np.int64)


def unit_sphere_stl(subdivisions: int = _ICOSPHERE_SUBDIVISIONS) -> bytes:
    """Binary STL of a unit-radius icosphere, the mesh URDF ellipsoids scale per axis."""
    verts, faces = _icosphere(subdivisions)
    buf = io.BytesIO()
    buf.write(b'vrat_ros unit sphere (icosphere)'.ljust(80, b' '))
    buf.write(struct.pack('<I', len(faces)))
    for face in faces:
        tri = verts[face]
        normal = tri.mean(axis=0)
        normal /= np.linalg.norm(normal)
        buf.write(struct.pack('<12fH', *normal, *tri.ravel(), 0))
    return buf.getvalue()


def default_comment(scale: float) -> str:
    return (f'Generated by vrat_ros.urdf_export from the rodent body at scale {scale:g}; '
            'do not edit; regenerate it with the command vrat urdf')


def build_urdf(scale: float = rc.DEFAULT_BODY_SCALE, mesh_uri: str = DEFAULT_MESH_URI) -> str:
    """Returns the URDF text of the rat body at `scale` (no floor)."""
    from vrat_ros.rat_model import build_rat_model
    model = build_rat_model(scale=scale, floor=False)
    return urdf_from_model(model, mesh_uri=mesh_uri, comment=default_comment(scale))


def robot_comment(name: str, scale: float) -> str:
    """The comment at the top of a robot's URDF (see `default_comment` for the rat's)."""
    return (f"Generated by vrat_ros.urdf_export from robot '{name}' at scale {scale:g}; "
            f'do not edit; regenerate it with the command vrat urdf, option robot {name}')


def robot_model_urdf(model: mujoco.MjModel, spec, mesh_uri: str = DEFAULT_MESH_URI) -> str:
    """Returns the URDF text of a robot already loaded with `vrat_ros.robots.load_robot`.

    Args:
        model: the robot's compiled model.
        spec: its `vrat_ros.robots.RobotSpec` (gives the robot's name and scale).
        mesh_uri: filename written for ellipsoid meshes.

    Raises:
        ValueError: the model has joints or geoms the export cannot express.
    """
    scale = float(spec.build.get('scale', 1.0))
    return urdf_from_model(model, robot_name=spec.name, mesh_uri=mesh_uri,
                           comment=robot_comment(spec.name, scale))


def robot_urdf(robot: str | os.PathLike = 'rat', scale: float | None = None,
               mesh_uri: str = DEFAULT_MESH_URI) -> str:
    """Returns the URDF text of a robot: a name in config/robots or a robot YAML path.

    The rat's is `build_urdf`, byte for byte (the committed urdf/vrat.urdf at the default
    scale); any other robot's is `robot_model_urdf` of the model its robot file builds.

    Args:
        robot: the robot name or file.
        scale: length scale; None takes the robot file's (`DEFAULT_BODY_SCALE` for the rat).
        mesh_uri: filename written for ellipsoid meshes.

    Raises:
        vrat_ros.robots.RobotSpecError: no such robot, or a bad robot file.
        ValueError: the model has joints or geoms the export cannot express.
    """
    from vrat_ros import robots
    if robots.is_rat(robot):
        return build_urdf(rc.DEFAULT_BODY_SCALE if scale is None else scale, mesh_uri)
    model, spec = robots.load_robot(robot, scale=scale)
    return robot_model_urdf(model, spec, mesh_uri)


def write_urdf(path: str, scale: float | None = rc.DEFAULT_BODY_SCALE,
               mesh_uri: str = DEFAULT_MESH_URI, robot: str | os.PathLike = 'rat') -> list[str]:
    """Writes a robot's URDF to `path` and the unit-sphere mesh beside it; returns both paths.

    Args:
        path: the URDF file to write.
        scale: length scale; None takes the robot file's (see `robot_urdf`).
        mesh_uri: filename written for ellipsoid meshes.
        robot: a robot name in config/robots or a robot YAML path (default the rat).
    """
    from vrat_ros.clip import atomic_write
    text = robot_urdf(robot, scale, mesh_uri)
    mesh_path = os.path.join(os.path.dirname(os.path.abspath(path)), SPHERE_MESH_FILE)

    def write_text(tmp: str) -> None:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)

    def write_mesh(tmp: str) -> None:
        with open(tmp, 'wb') as f:
            f.write(unit_sphere_stl())

    atomic_write(path, write_text)
    atomic_write(mesh_path, write_mesh)
    return [path, mesh_path]


def _cmd_urdf(args: argparse.Namespace) -> int:
    import sys
    paths = write_urdf(args.out, scale=args.scale, mesh_uri=args.mesh_uri, robot=args.robot)
    sys.stdout.write('wrote ' + ', '.join(paths) + '\n')
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Registers `vrat urdf` on the `vrat` command's subparsers."""
    p = subparsers.add_parser(
        'urdf', help='Write the URDF of the rat body or of --robot (and the unit-sphere mesh '
                     'its ellipsoids use, beside it).')
    p.add_argument('--out', required=True, help='URDF file to write, e.g. urdf/vrat.urdf.')
    p.add_argument('--robot', metavar='NAME_OR_YAML', default='rat',
                   help='The body: a robot name in config/robots (e.g. quadruped) or a robot '
                        'YAML path (default: the rat).')
    p.add_argument('--scale', type=float, default=None,
                   help="Body length scale (default: the robot file's; "
                        f'{rc.DEFAULT_BODY_SCALE} for the rat).')
    p.add_argument('--mesh-uri', default=DEFAULT_MESH_URI,
                   help=f'URI written for the ellipsoid mesh (default {DEFAULT_MESH_URI}).')
    p.set_defaults(func=_cmd_urdf)
