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
