"""Offscreen video of the simulated rat (or a robot) beside its reference, and `vrat render`.

Rendering needs an offscreen OpenGL context: EGL (MUJOCO_GL=egl, also GPU-less through
Mesa's llvmpipe) or OSMesa (MUJOCO_GL=osmesa). The context is chosen here rather than through
`mujoco.Renderer`, because MuJoCo fixes its backend when it is first imported, often before
the caller could set MUJOCO_GL. Text overlays use MuJoCo's own font (mjr_overlay).

The camera distances below were chosen for the rat; a robot's (`vrat_ros.robots.Robot`) are
scaled by its size, `camera_scale`: the ratio of its model's extent to the rat's.
"""

from __future__ import annotations

import argparse
import ctypes.util
import dataclasses
import logging
import os
from typing import Iterator
from typing import TYPE_CHECKING

import mujoco
import numpy as np
import numpy.typing as npt

from vrat_ros import rat_constants as rc
from vrat_ros.errors import VratError
from vrat_ros.tracking import body_distances

if TYPE_CHECKING:
    from vrat_ros.robots import Robot

_LOG = logging.getLogger(__name__)

GL_BACKENDS = ('egl', 'osmesa')
_GL_LIBRARIES = {'egl': 'EGL', 'osmesa': 'OSMesa'}
VIDEO_SUFFIXES = ('.mp4', '.mkv', '.webm', '.avi', '.mov')
_GHOST_RGBA = (0.95, 0.55, 0.2, 0.35)
# The ghost of a body coloured like the ghost above (dm_control's quadruped is orange).
_GHOST_RGBA_ALT = (0.2, 0.55, 0.95, 0.35)
_GHOST_MIN_COLOUR_DISTANCE = 0.4
_CAMERA_DISTANCE_M = 0.42
_CAMERA_AZIMUTH_DEG = 135.0
_CAMERA_ELEVATION_DEG = -28.0
_LOOKAT_HEIGHT_M = 0.04
# The rat model's `stat.extent` (MuJoCo's size of the model, m), the size the camera constants
# above were chosen for; test_render.py checks it against the rat model.
RAT_EXTENT_M = 0.4
_MAX_GEOMS = 2000


class RenderError(VratError):
    """Offscreen rendering is not possible here, or its output cannot be written."""


def _import_gl_context(backend: str):
    if backend == 'egl':
        from mujoco.egl import GLContext
    elif backend == 'osmesa':
        from mujoco.osmesa import GLContext
    elif backend == 'glfw':
        from mujoco.glfw import GLContext
    else:
        raise RenderError(f"MUJOCO_GL should be one of {GL_BACKENDS + ('glfw',)}: "
                          f"got '{backend}'")
    return GLContext


def make_gl_context(width: int, height: int):
    """Creates and makes current an offscreen OpenGL context of at least width x height.

    Tries MUJOCO_GL if it is set, else EGL then OSMesa, whichever library is installed.

    Raises:
        RenderError: no backend could create a context; the message lists each failure.
    """
    requested = os.environ.get('MUJOCO_GL', '').strip().lower()
    backends = (requested,) if requested else GL_BACKENDS
    failures = []
    for backend in backends:
        library = _GL_LIBRARIES.get(backend)
        if not requested and library and ctypes.util.find_library(library) is None:
            # Checked before importing: PyOpenGL binds to the first platform it loads.
            failures.append(f'{backend}: lib{library} not found')
            continue
        try:
            context = _import_gl_context(backend)(width, height)
            context.make_current()
            return context
        except RenderError:
            raise
        except Exception as exc:  # the GL bindings raise many kinds of errors
            failures.append(f'{backend}: {type(exc).__name__}: {exc}')
    raise RenderError(
        'no offscreen OpenGL backend works here (' + '; '.join(failures) + '); install '
        'EGL (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri) or OSMesa (libosmesa6) and set '
        'MUJOCO_GL=egl or MUJOCO_GL=osmesa')


def gl_backend_error() -> str:
    """Returns '' when an offscreen context can be made here, else why not (for test skips)."""
    try:
        context = make_gl_context(16, 16)
    except RenderError as exc:
        return str(exc)
    context.free()
    return ''


@dataclasses.dataclass
class FrameInfo:
    """What the overlay of one frame says."""

    time_s: float
    body_error_mm: float | None


class SideBySideRenderer:
    """Renders the simulated rat (with the reference as a ghost) beside the reference.

    Each panel is `panel_width` x `height` pixels; without a simulated state only the
    reference panel is drawn. Both panels share one camera that follows the reference root,
    so an offset between sim and reference shows as an offset on screen; its distance and
    height are the rat's times `size_scale` (see `camera_scale`).
    NOTE: it changes `model`: offscreen buffer, shadow size, head light, floor size.
    """

    def __init__(self, model: mujoco.MjModel, panel_width: int = 480, height: int = 400,
                 ghost: bool = True, size_scale: float = 1.0):
        if panel_width < 16 or height < 16:
            raise ValueError(f'frame size should be at least 16x16: got {panel_width}x{height}')
        if not (np.isfinite(size_scale) and size_scale > 0):
            raise ValueError(f'size_scale should be a positive number: got {size_scale}')
        self.size_scale = float(size_scale)
        self.model = model
        self.panel_width, self.height, self.ghost = int(panel_width), int(height), ghost
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, 2 * panel_width)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, height)
        self.model.vis.quality.shadowsize = min(self.model.vis.quality.shadowsize, 1024)
        # A larger floor in the picture (rendering only; the states are given, not simulated).
        for g in range(model.ngeom):
            if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_PLANE:
                model.geom_size[g, :2] = np.maximum(model.geom_size[g, :2], 50.0)
        # A brighter head light than MuJoCo's default; the floor is dark otherwise.
        self.model.vis.headlight.ambient[:] = 0.35
        self.model.vis.headlight.diffuse[:] = 0.55
        self._gl = make_gl_context(2 * self.panel_width, self.height)
        self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._scene = mujoco.MjvScene(model, maxgeom=_MAX_GEOMS)
        self._option = mujoco.MjvOption()
        self._perturb = mujoco.MjvPerturb()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self._camera.distance = _CAMERA_DISTANCE_M * self.size_scale
        self._camera.azimuth = _CAMERA_AZIMUTH_DEG
        self._camera.elevation = _CAMERA_ELEVATION_DEG
        self._sim = mujoco.MjData(model)
        self._ref = mujoco.MjData(model)
        self.ghost_rgba = ghost_rgba(model)

    def close(self) -> None:
        """Frees the GL resources (the renderer cannot be used afterwards)."""
        if self._gl is not None:
            self._con.free()
            self._gl.free()
            self._gl = None

    def __enter__(self) -> 'SideBySideRenderer':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _panel(self, data: mujoco.MjData, left: int, title: str, lines: list[tuple[str, str]],
               ghost_of: mujoco.MjData | None) -> None:
        mujoco.mjv_updateScene(self.model, data, self._option, self._perturb, self._camera,
                               mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        if ghost_of is not None:
            first = self._scene.ngeom
            mujoco.mjv_addGeoms(self.model, ghost_of, self._option, self._perturb,
                                mujoco.mjtCatBit.mjCAT_DYNAMIC, self._scene)
            for i in range(first, self._scene.ngeom):
                self._scene.geoms[i].rgba[:] = self.ghost_rgba
        viewport = mujoco.MjrRect(left, 0, self.panel_width, self.height)
        mujoco.mjr_render(viewport, self._scene, self._con)
        font = mujoco.mjtFont.mjFONT_NORMAL
        mujoco.mjr_overlay(font, mujoco.mjtGridPos.mjGRID_TOPLEFT, viewport, title, '',
                           self._con)
        if lines:
            mujoco.mjr_overlay(font, mujoco.mjtGridPos.mjGRID_BOTTOMLEFT, viewport,
                               '\n'.join(k for k, _ in lines), '\n'.join(v for _, v in lines),
                               self._con)

    def render(self, ref_qpos: npt.ArrayLike, sim_qpos: npt.ArrayLike | None,
               info: FrameInfo) -> np.ndarray:
        """Returns one (height, width, 3) uint8 frame; width is 1 or 2 panels."""
        self._ref.qpos[:] = ref_qpos
        mujoco.mj_kinematics(self.model, self._ref)
        root = self._ref.xpos[1]
        self._camera.lookat[:] = (root[0], root[1], _LOOKAT_HEIGHT_M * self.size_scale)
        lines = [('time', f'{info.time_s:6.2f} s')]
        if info.body_error_mm is not None:
            lines.append(('body error', f'{info.body_error_mm:6.1f} mm'))
        panels = 1
        if sim_qpos is not None:
            self._sim.qpos[:] = sim_qpos
            mujoco.mj_kinematics(self.model, self._sim)
            self._panel(self._sim, 0, 'sim' + (' + reference ghost' if self.ghost else ''),
                        lines, self._ref if self.ghost else None)
            self._panel(self._ref, self.panel_width, 'reference', [], None)
            panels = 2
        else:
            self._panel(self._ref, 0, 'reference', lines, None)
        width = panels * self.panel_width
        rgb = np.empty((self.height, width, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(rgb, None, mujoco.MjrRect(0, 0, width, self.height), self._con)
        return np.flipud(rgb).copy()  # OpenGL rows run bottom-up


def camera_scale(model: mujoco.MjModel) -> float:
    """How much farther than the rat's the camera stands from a body: its extent / the rat's.

    MuJoCo's `stat.extent` spans the model's bodies and geoms (not the floor plane) unless
    the MJCF sets it (<statistic extent=...>); dm_control's quadruped: 3.0 m, 7.5 times the
    rat's. Known shortcoming: a model whose MJCF sets a larger extent (e.g. to span a scene)
    is framed from too far.
    """
    return float(model.stat.extent) / RAT_EXTENT_M


def ghost_rgba(model: mujoco.MjModel) -> tuple[float, float, float, float]:
    """The reference ghost's colour: orange, or blue on a body whose mean colour is orange-like.

    The body's colour is the mean RGB of its visible geoms (their material's when they have
    one), leaving out the world body's (floor, walls).
    """
    colours = [model.mat_rgba[m] if m >= 0 else model.geom_rgba[g]
               for g, m in enumerate(model.geom_matid) if model.geom_bodyid[g] > 0]
    colours = np.array([c[:3] for c in colours if c[3] > 0])
    if len(colours) and np.linalg.norm(colours.mean(axis=0) - _GHOST_RGBA[:3]) \
            < _GHOST_MIN_COLOUR_DISTANCE:
        return _GHOST_RGBA_ALT
    return _GHOST_RGBA


def _render_body(robot: 'str | os.PathLike | Robot | None', scale: float):
    """(the rat of `scale`, or the robot, and the camera's size scale for it)."""
    if robot is None:
        from vrat_ros.rat_model import RatBody
        return RatBody(scale=scale), 1.0  # the rat's camera, whatever its body scale
    from vrat_ros.robots import Robot
    body = robot if isinstance(robot, Robot) else Robot(robot)
    return body, camera_scale(body.model)


def body_position_error_mm(model: mujoco.MjModel, sim_qpos: np.ndarray, ref_qpos: np.ndarray,
                           body_ids: npt.ArrayLike) -> np.ndarray:
    """Returns (T,) mean distance (mm) between sim and reference positions of `body_ids`."""
    return 1e3 * body_distances(model, sim_qpos, ref_qpos, body_ids).mean(axis=1)


def _check_qpos(name: str, qpos: npt.ArrayLike, nq: int) -> np.ndarray:
    qpos = np.asarray(qpos, dtype=np.float64)
    if qpos.ndim != 2 or qpos.shape[1] != nq or qpos.shape[0] < 1:
        raise ValueError(f'{name} should have shape (T >= 1, {nq}): got {qpos.shape}')
    if not np.all(np.isfinite(qpos)):
        raise ValueError(f'{name} has non-finite values')
    return qpos


def render_frames(sim_qpos: npt.ArrayLike | None, ref_qpos: npt.ArrayLike, fps: float,
                  width: int = 960, height: int = 400, scale: float = rc.DEFAULT_BODY_SCALE,
                  start_time_s: float = 0.0, ghost: bool = True,
                  robot: 'str | os.PathLike | Robot | None' = None) -> Iterator[np.ndarray]:
    """Yields (height, width, 3) uint8 frames, one per row of `ref_qpos`.

    Args:
        sim_qpos: (T, nq) simulated states (the rat: nq = 74), or None to show the reference
            alone.
        ref_qpos: (T, nq) reference states at the same times.
        fps: rate of the rows (Hz); the overlay time is start_time_s + row / fps.
        width: frame width in pixels (two panels of width / 2 each with a sim; the reference
            alone is width / 2 wide).
        height: frame height in pixels.
        scale: body scale of the rat the states belong to (not used for a robot).
        start_time_s: time shown for the first row (s).
        ghost: draw the reference as a translucent ghost over the sim.
        robot: the robot the states belong to: a `vrat_ros.robots.Robot` (its model is then
            changed, see `SideBySideRenderer`) or a robot name or YAML path; None: the rat.
            The overlaid body error is over `tracked_body_ids` (a robot: torso and feet).
    """
    body, size_scale = _render_body(robot, scale)
    ref = _check_qpos('ref_qpos', ref_qpos, body.nq)
    sim = None if sim_qpos is None else _check_qpos('sim_qpos', sim_qpos, body.nq)
    if sim is not None and sim.shape != ref.shape:
        raise ValueError(f'sim_qpos {sim.shape} and ref_qpos {ref.shape} should match')
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f'fps should be a positive number: got {fps}')
    errors = (None if sim is None
              else body_position_error_mm(body.model, sim, ref, body.tracked_body_ids))
    with SideBySideRenderer(body.model, panel_width=width // 2, height=height,
                            ghost=ghost, size_scale=size_scale) as renderer:
        for t in range(ref.shape[0]):
            info = FrameInfo(start_time_s + t / fps, None if errors is None else errors[t])
            yield renderer.render(ref[t], None if sim is None else sim[t], info)


def _frame_writer(out: str, fps: float):
    """Returns (append(frame), close()) for an mp4-like video, a GIF, or a PNG folder."""
    import imageio.v2 as imageio
    suffix = os.path.splitext(out)[1].lower()
    if suffix in VIDEO_SUFFIXES:
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as exc:
            raise RenderError(
                f'writing {suffix} needs imageio-ffmpeg (pip install imageio-ffmpeg); '
                'or write a .gif or a folder of PNG frames') from exc
        writer = imageio.get_writer(out, fps=fps, codec='libx264', quality=7,
                                    macro_block_size=2, ffmpeg_log_level='error')
        return writer.append_data, writer.close
    if suffix == '.gif':
        frames = []

        def close_gif() -> None:
            imageio.mimwrite(out, frames, duration=1000.0 / fps, loop=0)
        return frames.append, close_gif
    if suffix == '':
        os.makedirs(out, exist_ok=True)
        count = [0]

        def append_png(frame: np.ndarray) -> None:
            imageio.imwrite(os.path.join(out, f'frame_{count[0]:05d}.png'), frame)
            count[0] += 1
        return append_png, lambda: None
    raise RenderError(f"output '{out}' should end in one of {VIDEO_SUFFIXES + ('.gif',)}, "
                      'or have no suffix (a folder of PNG frames)')


def render_video(sim_qpos: npt.ArrayLike | None, ref_qpos: npt.ArrayLike, fps: float,
                 out: str, width: int = 960, height: int = 400,
                 scale: float = rc.DEFAULT_BODY_SCALE, start_time_s: float = 0.0,
                 ghost: bool = True, robot: 'str | os.PathLike | Robot | None' = None) -> int:
    """Renders a run (see `render_frames`) to `out` and returns the number of frames.

    `out` ending in .mp4 (or .mkv, .webm, .avi, .mov) is encoded with H.264 through
    imageio-ffmpeg; .gif writes an animated GIF; a path with no suffix becomes a folder of
    numbered PNG frames. Width and height are rounded down to even numbers (H.264 needs them).

    Raises:
        RenderError: no offscreen GL backend, or an output format that cannot be written.
        ValueError: arrays of the wrong shape or with non-finite values.
    """
    width, height = (int(width) // 4) * 4, (int(height) // 2) * 2
    suffix = os.path.splitext(out)[1].lower()
    if suffix not in VIDEO_SUFFIXES + ('.gif', ''):
        raise RenderError(f"output '{out}' should end in one of {VIDEO_SUFFIXES + ('.gif',)}, "
                          'or have no suffix (a folder of PNG frames)')
    frames = render_frames(sim_qpos, ref_qpos, fps, width, height, scale, start_time_s, ghost,
                           robot)
    first = next(frames)  # checks the inputs and the GL backend before any file is opened
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    append, close = _frame_writer(out, fps)
    count = 0
    try:
        append(first)
        count = 1
        for frame in frames:
            append(frame)
            count += 1
    finally:
        frames.close()
        close()
    _LOG.info('wrote %d frames to %s', count, out)
    return count


def write_png(frame: np.ndarray, out: str) -> None:
    """Writes one (height, width, 3) uint8 frame to the PNG file `out`, with 256 colours.

    The frames are shaded bodies on a plain background, so a palette keeps the picture and the
    file is a fraction of an RGB PNG's size.
    """
    from PIL import Image
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    Image.fromarray(np.asarray(frame, dtype=np.uint8)).quantize(
        256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def sample_clip(clip, fps: float, start_s: float = 0.0,
                seconds: float | None = None) -> np.ndarray:
    """Returns (T, nq) clip states resampled at `fps` from `start_s` for `seconds`."""
    end = clip.duration_s if seconds is None else min(clip.duration_s, start_s + seconds)
    if end < start_s:
        raise ValueError(f'start {start_s} s is past the end of the clip ({clip.duration_s} s)')
    times = start_s + np.arange(int(np.floor((end - start_s) * fps + 1e-9)) + 1) / fps
    return np.stack([clip.sample(t) for t in times])


# Largest frame side accepted: offscreen framebuffers beyond this fail on common GL drivers.
MAX_FRAME_PIXELS = 4096


def check_render_settings(fps: float, width: int, height: int) -> None:
    """Raises ValueError, before any work, for a frame rate or frame size that cannot work."""
    if not (np.isfinite(fps) and 0 < fps <= 1000):
        raise ValueError(f'--fps should be a number in (0, 1000]: got {fps}')
    for name, value in (('width', width), ('height', height)):
        if not 16 <= value <= MAX_FRAME_PIXELS:
            raise ValueError(f'--{name} should be between 16 and {MAX_FRAME_PIXELS} pixels: '
                             f'got {value}')


def _render_inputs(args: argparse.Namespace):
    """(body, clip in the body's joint order, policy path or None, robot or None) of a render.

    The body is the rat (`RatBody` at the clip's scale) without --robot or with the rat's own
    robot file, else the `Robot`; clip and policy default to the robot file's `defaults`.

    Raises:
        VratError, ValueError: (one line) an unknown robot, a clip made for another body or
            lacking its joints (matched by name), or a missing policy.
    """
    from vrat_ros import resources
    from vrat_ros.clip import Clip
    from vrat_ros.errors import ClipError
    from vrat_ros.robots import is_rat
    rat = args.robot is None or is_rat(args.robot)
    robot = None
    if rat:
        clip_path = (resources.resolve_clip_path(args.clip) if args.clip
                     else resources.default_clip_path())
        name = 'rat'
    else:
        from vrat_ros.robots import Robot
        robot = Robot(args.robot)
        name = robot.spec.name
        clip_path = (resources.resolve_clip_path(args.clip) if args.clip
                     else resources.robot_default_clip(robot.spec))
        if clip_path is None:
            raise ValueError(f"robot '{name}' names no default clip (defaults.clip in "
                             f"'{robot.spec.path}'); give --clip")
    clip = Clip.load(clip_path)
    made_for = clip.meta.get('robot') if isinstance(clip.meta, dict) else None
    if made_for is not None and made_for != name:
        raise ValueError(f"clip '{clip_path}' was made for robot '{made_for}', not for "
                         f"'{name}'" + (f' (give --robot {made_for})' if rat else ''))
    if rat:
        from vrat_ros.rat_model import RatBody
        body = RatBody(scale=clip.body_scale)
    else:
        body = robot
    try:
        clip = clip.reorder_to(body.hinge_names)  # joints matched by name
    except ClipError as exc:
        raise ClipError(f"clip '{clip_path}' does not fit "
                        + ('the rat' if rat else f"robot '{name}'") + f': {exc}') from None
    policy = None
    if args.controller == 'policy':
        policy = ((args.policy or resources.default_policy_path()) if rat
                  else resources.robot_policy_path(robot.spec, args.policy))
    return body, clip, policy, robot


def _check_frame_options(args: argparse.Namespace) -> None:
    """Refuses, before any work, --frame-at with --seconds or a non-PNG output, and the reverse."""
    is_png = os.path.splitext(args.out)[1].lower() == '.png'
    if args.frame_at is None:
        if is_png:
            raise RenderError(f"output '{args.out}' is one PNG frame: give --frame-at SECONDS, "
                              'or a folder (no suffix) for every frame')
        return
    if not is_png:
        raise RenderError(f"--frame-at writes one PNG frame: --out should end in .png, got "
                          f"'{args.out}'")
    if args.seconds is not None:
        raise ValueError('--frame-at renders the one frame at that time; leave out --seconds')
    if not (np.isfinite(args.frame_at) and args.frame_at >= args.start):
        raise ValueError(f'--frame-at should be a clip time at or after --start ({args.start} '
                         f's): got {args.frame_at}')


def _cmd_render(args: argparse.Namespace) -> int:
    import sys
    check_render_settings(args.fps, args.width, args.height)
    _check_frame_options(args)
    from vrat_ros.cli import _check_output_path
    _check_output_path(args.out, make_folders=True)  # render_video makes missing folders
    body, clip, policy, robot = _render_inputs(args)
    if args.frame_at is not None and args.frame_at >= clip.duration_s:
        raise ValueError(f'--frame-at {args.frame_at} s is past the end of the clip '
                         f'({clip.duration_s:.3f} s)')
    sim, fps = None, args.fps
    if args.controller != 'none':
        # Simulate first (the inline loop at the body's control rate), then render at the
        # video rate.
        from vrat_ros.evaluate import make_controller
        from vrat_ros.rollout import default_control_rate_hz
        from vrat_ros.rollout import run_inline
        controller = make_controller(args.controller, policy)
        seconds = args.seconds
        if args.frame_at is not None:  # to the control step nearest to the frame
            dt = 1.0 / default_control_rate_hz(body)
            seconds = max(np.floor((args.frame_at - args.start) / dt + 0.5) * dt, 1e-9)
        run = run_inline(body, clip, controller, seconds=seconds, start_time_s=args.start)
        if args.frame_at is not None:
            sim, ref, first_time = run.qpos[-1:], run.ref_qpos[-1:], float(run.times[-1])
        else:
            step = max(1, int(round(len(run.times) / max(run.times[-1] - run.times[0], 1e-9)
                                    / args.fps)))
            sim, ref, first_time = run.qpos[::step], run.ref_qpos[::step], args.start
            fps = 1.0 / (step * (run.times[1] - run.times[0]))
    elif args.frame_at is not None:
        ref, first_time = clip.sample(args.frame_at)[None], args.frame_at
    else:
        ref, first_time = sample_clip(clip, args.fps, args.start, args.seconds), args.start
    if args.frame_at is not None:
        frames = render_frames(sim, ref, fps, width=2 * args.width, height=args.height,
                               scale=clip.body_scale, start_time_s=first_time, robot=robot)
        try:
            write_png(next(frames), args.out)
        finally:
            frames.close()
        sys.stdout.write(f'wrote the frame at {first_time:.2f} s to {args.out}\n')
        return 0
    count = render_video(sim, ref, fps, args.out, width=2 * args.width, height=args.height,
                         scale=clip.body_scale, start_time_s=first_time, robot=robot)
    note = ''
    if abs(fps - args.fps) > 1e-6:  # a controller run is drawn every whole control step
        note = (f' at {fps:g} fps (asked {args.fps:g}: a frame is drawn every whole number of '
                'control steps)')
    sys.stdout.write(f'wrote {count} frames ({count / fps:.2f} s) to {args.out}{note}\n')
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `vrat render` and `vrat urdf` on the `vrat` command's subparsers."""
    from vrat_ros import urdf_export
    p = subparsers.add_parser(
        'render', help='Render offscreen to a video (MUJOCO_GL=egl or osmesa): the simulated '
                       'rat (or --robot) beside its reference with time and tracking error '
                       'overlaid, or, with --controller none, the reference replayed alone; '
                       'with --frame-at, one PNG frame.')
    p.add_argument('--robot', metavar='NAME_OR_YAML',
                   help='The body: a robot name in config/robots (e.g. quadruped) or a robot '
                        "YAML path (default: the rat); its file's defaults give the clip and "
                        'the policy.')
    p.add_argument('--clip', help='Reference clip: a .npz path or a name from vrat clips; '
                                  'default: the shipped real rat clip (for --robot, the robot '
                                  "file's defaults.clip).")
    p.add_argument('--policy', help='ONNX policy; default: the shipped one (for --robot, the '
                                    "robot file's defaults.policy).")
    p.add_argument('--controller', choices=['policy', 'pd', 'zero', 'mpc', 'none'],
                   default='policy',
                   help='What drives the simulated body (default policy); none renders the '
                        "reference alone; mpc (the rat or a position robot; slow: about 3 s "
                        'per simulated second for the quadruped, 50 s for the rat) is '
                        'vrat_ros/mpc.py.')
    p.add_argument('--out', required=True,
                   help='Output: .mp4 (H.264), .gif, or a folder (no suffix) of PNG frames; '
                        'with --frame-at, a .png file.')
    p.add_argument('--seconds', type=float, default=None,
                   help='Seconds of the clip to render (default: all of it).')
    p.add_argument('--start', type=float, default=0.0, help='Clip time (s) to start from.')
    p.add_argument('--frame-at', type=float, default=None, metavar='SECONDS',
                   help='Write only the frame at this clip time (s) to --out (.png); the '
                        'controller runs from --start to it.')
    p.add_argument('--fps', type=float, default=30.0, help='Video frame rate (default 30).')
    p.add_argument('--width', type=int, default=480,
                   help='Width of one panel in pixels (default 480).')
    p.add_argument('--height', type=int, default=400, help='Height in pixels (default 400).')
    p.set_defaults(func=_cmd_render)
    urdf_export.add_subcommand(subparsers)
