"""Offscreen rendering: frames are not blank, change over time, and videos are written."""

import argparse

import numpy as np
import pytest

from vrat_ros import render
from vrat_ros import resources
from vrat_ros.clip import Clip

_GL_ERROR = render.gl_backend_error()
needs_gl = pytest.mark.skipif(bool(_GL_ERROR), reason=f'no offscreen GL here: {_GL_ERROR}')
N_FRAMES = 10
FPS = 25.0


@pytest.fixture(scope='module')
def states():
    """Ten reference frames of the real clip and a 'sim' that drifts away from them."""
    clip = Clip.load(resources.default_clip_path())
    ref = render.sample_clip(clip, FPS, start_s=2.0, seconds=(N_FRAMES - 1) / FPS)
    sim = ref.copy()
    sim[:, 0] += np.linspace(0.0, 0.03, len(ref))
    sim[:, 7:] += np.linspace(0.0, 0.3, len(ref))[:, None]
    return sim, ref


@needs_gl
def test_frames_are_not_blank_and_change_over_time(states):
    sim, ref = states
    frames = list(render.render_frames(sim, ref, FPS, width=320, height=160))
    assert len(frames) == N_FRAMES
    assert all(f.shape == (160, 320, 3) and f.dtype == np.uint8 for f in frames)
    for frame in frames:
        assert frame.std() > 10.0, 'a frame is (nearly) blank'
    # The middle band holds the rats and none of the text overlays.
    band = [f[40:120].astype(np.float64) for f in frames]
    diffs = [np.abs(b - a).mean() for a, b in zip(band, band[1:])]
    assert min(diffs) > 0.05, f'consecutive frames barely differ: {diffs}'


@needs_gl
def test_render_video_writes_an_mp4_with_every_frame(states, tmp_path):
    imageio = pytest.importorskip('imageio.v2')
    pytest.importorskip('imageio_ffmpeg')
    sim, ref = states
    out = tmp_path / 'run.mp4'
    assert render.render_video(sim[:6], ref[:6], FPS, str(out), width=322, height=162) == 6
    with imageio.get_reader(str(out)) as reader:
        frames = [f for f in reader]
    assert len(frames) == 6
    assert frames[0].shape == (162, 320, 3)  # width rounded down to two even panels


@needs_gl
def test_render_video_writes_a_png_folder_for_the_reference_alone(states, tmp_path):
    _, ref = states
    out = tmp_path / 'frames'
    assert render.render_video(None, ref[:3], FPS, str(out), width=320, height=160) == 3
    assert sorted(p.name for p in out.iterdir()) == [
        'frame_00000.png', 'frame_00001.png', 'frame_00002.png']


@needs_gl
def test_render_command_renders_the_clip(tmp_path):
    parser = argparse.ArgumentParser()
    render.add_subcommands(parser.add_subparsers(dest='command'))
    out = tmp_path / 'clip.gif'
    args = parser.parse_args(['render', '--out', str(out), '--seconds', '0.1', '--fps', '20',
                              '--width', '96', '--height', '64'])
    assert args.func(args) == 0
    assert out.stat().st_size > 1000


def test_render_video_rejects_bad_inputs(states, tmp_path):
    sim, ref = states
    with pytest.raises(render.RenderError, match='should end in one of'):
        render.render_video(sim, ref, FPS, str(tmp_path / 'run.xyz'))
    with pytest.raises(ValueError, match='should have shape'):
        list(render.render_frames(sim[:, :10], ref, FPS))
    with pytest.raises(ValueError, match='should match'):
        list(render.render_frames(sim[:3], ref, FPS))


@pytest.mark.parametrize('argv, message', [
    (['--fps', '0'], '--fps should be a number in (0, 1000]: got 0.0'),
    (['--fps', 'nan'], '--fps should be a number in (0, 1000]: got nan'),
    (['--width', '100000'], '--width should be between 16 and 4096 pixels: got 100000'),
    (['--height', '4'], '--height should be between 16 and 4096 pixels: got 4'),
])
def test_render_refuses_impossible_settings_before_any_work(argv, message, tmp_path, capsys):
    from vrat_ros.cli import main
    out = tmp_path / 'video.gif'
    assert main(['render', '--controller', 'none', '--out', str(out)] + argv) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


# --- Robots (dm_control's quadruped, config/robots/quadruped.yaml) ---

QUAD_CLIP = 'quadruped_eval_2010_2310'


@pytest.fixture(scope='module')
def quadruped():
    from vrat_ros.robots import Robot
    return Robot('quadruped')


def test_the_camera_constants_are_the_rats_and_scale_with_a_robot(quadruped):
    from vrat_ros.rat_model import RatBody
    assert RatBody().model.stat.extent == pytest.approx(render.RAT_EXTENT_M)
    # The quadruped (about 1 m tall, ~7x the rat): 3.0 m of extent, 7.5 times the rat's.
    assert render.camera_scale(quadruped.model) == pytest.approx(7.5)
    assert render.ghost_rgba(RatBody().model) == render._GHOST_RGBA  # teal rat: orange ghost
    assert render.ghost_rgba(quadruped.model) == render._GHOST_RGBA_ALT  # orange body: blue


@needs_gl
def test_the_camera_keeps_the_quadrupeds_torso_in_frame_along_its_clip():
    from vrat_ros.robots import Robot
    plain, marked = Robot('quadruped'), Robot('quadruped')
    torso = marked.model.geom_bodyid == marked.torso_id
    assert torso.any()
    marked.model.geom_rgba[torso] = (1.0, 0.0, 0.0, 1.0)  # the torso in red: the pixels that
    marked.model.geom_matid[torso] = -1                 # change are the torso's
    clip = Clip.load(resources.resolve_clip_path(QUAD_CLIP)).reorder_to(plain.hinge_names)
    times = np.linspace(0.0, clip.duration_s, 6)
    ref = np.stack([clip.sample(t) for t in times])
    assert np.ptp(ref[:, 0]) > 0.5 or np.ptp(ref[:, 1]) > 0.5  # the root moves in the clip
    width, height = 240, 180
    frames = [list(render.render_frames(None, ref, FPS, width=2 * width, height=height,
                                        robot=robot)) for robot in (plain, marked)]
    for t, a, b in zip(times, *frames):
        assert a.shape == (height, width, 3)
        ys, xs = np.nonzero(np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 30)
        assert len(xs) > 0.01 * width * height, f'torso barely visible at {t:.1f} s'
        # Whole torso inside the frame, its centre in the middle half.
        assert xs.min() > 0 and xs.max() < width - 1 and ys.min() > 0 and ys.max() < height - 1
        assert width / 4 < xs.mean() < 3 * width / 4 and height / 4 < ys.mean() < 3 * height / 4


@needs_gl
def test_render_command_writes_one_png_frame_of_the_quadruped_and_of_the_rat(tmp_path, capsys):
    imageio = pytest.importorskip('imageio.v2')
    from vrat_ros.cli import main
    quad, rat = tmp_path / 'quad.png', tmp_path / 'rat.png'
    size = ['--width', '160', '--height', '120']
    assert main(['render', '--robot', 'quadruped', '--controller', 'pd', '--start', '4.6',
                 '--frame-at', '4.9', '--out', str(quad)] + size) == 0
    assert 'wrote the frame at 4.90 s' in capsys.readouterr().out
    assert main(['render', '--controller', 'pd', '--start', '4.6', '--frame-at', '4.9',
                 '--out', str(rat)] + size) == 0
    frames = [imageio.imread(str(p))[..., :3].astype(np.float64) for p in (quad, rat)]
    for frame in frames:
        assert frame.shape == (120, 320, 3)  # sim and reference panels
        assert frame.std() > 10.0, 'the frame is (nearly) blank'
    band = slice(25, 95)  # between the overlays
    assert np.abs(frames[0][band] - frames[1][band]).mean() > 10.0, 'quadruped looks like the rat'
    assert quad.stat().st_size < 60_000


@pytest.mark.parametrize('argv, message', [
    (['--clip', QUAD_CLIP],
     "was made for robot 'quadruped', not for 'rat' (give --robot quadruped)"),
    (['--robot', 'quadruped', '--clip', 'rat7m_walk_2010_2310'],
     "does not fit robot 'quadruped': clip lacks 16 joints of the body"),
    (['--robot', 'no_such_robot'], "robot 'no_such_robot' is neither a robot file nor a known "
                                   'robot name'),
    (['--robot', 'quadruped', '--controller', 'policy', '--policy', 'missing.onnx'],
     "policy file 'missing.onnx' does not exist"),
    (['--seconds', '1'], '--frame-at renders the one frame at that time; leave out --seconds'),
    (['--start', '2'], '--frame-at should be a clip time at or after --start (2.0 s): got 1.0'),
])
def test_render_refuses_a_clip_robot_or_frame_that_does_not_fit(argv, message, tmp_path, capsys):
    from vrat_ros.cli import main
    out = tmp_path / 'frame.png'
    assert main(['render', '--controller', 'none', '--frame-at', '1.0', '--out', str(out)]
                + argv) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize('argv, message', [
    (['--out', 'x.gif', '--frame-at', '1'], "--frame-at writes one PNG frame: --out should end "
                                            "in .png, got 'x.gif'"),
    (['--out', 'x.png'], "output 'x.png' is one PNG frame: give --frame-at SECONDS"),
    (['--out', 'x.png', '--frame-at', '99'], '--frame-at 99.0 s is past the end of the clip'),
])
def test_render_refuses_frame_outputs_that_do_not_fit(argv, message, tmp_path, capsys,
                                                      monkeypatch):
    from vrat_ros.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(['render', '--robot', 'quadruped', '--controller', 'none'] + argv) == 1
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_render_says_when_it_draws_at_another_fps(tmp_path, capsys):
    """With a controller a frame is drawn every whole number of 20 ms steps: 30 fps -> 25."""
    from vrat_ros.render import gl_backend_error
    if gl_backend_error():
        pytest.skip(gl_backend_error())
    from vrat_ros.cli import main
    out = tmp_path / 'run.gif'
    assert main(['render', '--controller', 'pd', '--seconds', '0.2', '--fps', '30',
                 '--width', '64', '--height', '48', '--out', str(out)]) == 0
    assert 'at 25 fps (asked 30' in capsys.readouterr().out
    assert out.is_file()
