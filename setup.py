"""Install script for vrat_ros: an ament_python package that also installs with plain pip."""

from glob import glob
import os
import stat

from setuptools import find_packages
from setuptools import setup
from setuptools.command.editable_wheel import editable_wheel
try:  # older setuptools
    from setuptools.command.install_data import install_data
except ImportError:  # setuptools >= 80 routes distutils to its own copy
    from distutils.command.install_data import install_data

PACKAGE = 'vrat_ros'
NODE_EXECUTABLES = {
    'sim_node': 'vrat_ros.sim_node:main',
    'policy_node': 'vrat_ros.policy_node:main',
    'reference_node': 'vrat_ros.reference_node:main',
    'viz_node': 'vrat_ros.viz_node:main',
    'safety_node': 'vrat_ros.safety_node:main',
}

_LAUNCHER = """#!/bin/sh
# Launcher written by vrat_ros's setup.py so that `ros2 run vrat_ros {name}` and launch files
# find this node under PREFIX/lib/vrat_ros after a plain pip install. The real entry point is
# the console script pip put in PREFIX/bin.
exec "$(dirname "$0")/../../bin/{name}" "$@"
"""


class InstallDataWithLaunchers(install_data):
    """Installs data_files, then a launcher in lib/vrat_ros for each node executable.

    colcon (through setup.cfg's install_scripts) already puts the console scripts in
    lib/vrat_ros; an existing file there is kept. pip ignores setup.cfg's install_scripts and
    puts them in PREFIX/bin, so there the launchers are what ros2 run and launch execute.
    The same command runs for wheels, editable installs and `setup.py install`.
    """

    def run(self):
        super().run()
        lib_dir = os.path.join(self.install_dir, 'lib', PACKAGE)
        os.makedirs(lib_dir, exist_ok=True)
        for name in NODE_EXECUTABLES:
            path = os.path.join(lib_dir, name)
            if os.path.exists(path):
                continue
            with open(path, 'w') as f:
                f.write(_LAUNCHER.format(name=name))
            os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            self.outfiles.append(path)


class EditableWheelWithData(editable_wheel):
    """Editable install that also installs data_files (launch, config, ament index, lib/).

    setuptools' editable wheels leave data_files out, so `pip install -e` would give a package
    that `ros2 run` and `ros2 launch` cannot find; this adds them under the wheel's .data dir.
    """

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        version = self.distribution.get_version()
        data_dir = os.path.join(unpacked_wheel, f'{dist_name}-{version}.data', 'data')
        if not os.path.isdir(data_dir):
            cmd = self.reinitialize_command('install_data')
            cmd.install_dir = data_dir
            cmd.ensure_finalized()
            cmd.run()
        return result


_HERE = os.path.dirname(os.path.abspath(__file__))


def _files(pattern):
    """Files matching `pattern` relative to this file's folder, whatever the working dir is."""
    paths = glob(os.path.join(_HERE, pattern))
    return sorted(os.path.relpath(p, _HERE) for p in paths if os.path.isfile(p))


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={PACKAGE: ['data/*.md', 'data/*/*', 'data/*/*/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', _files('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', _files('config/*.yaml') + _files('config/*.rviz')
         + _files('config/*.json')),
        ('share/' + PACKAGE + '/config/robots', _files('config/robots/*.yaml')),
        ('share/' + PACKAGE + '/urdf', _files('urdf/*')),
    ],
    cmdclass={'install_data': InstallDataWithLaunchers,
              'editable_wheel': EditableWheelWithData},
    python_requires='>=3.10',
    install_requires=[
        'numpy>=1.24',
        'mujoco>=3.2',
        'dm-control>=1.0.20',
        'onnx>=1.16',
        'onnxruntime>=1.18',
        'scipy>=1.10',
        'h5py>=3.8',
        'pyyaml>=6',
        'tqdm>=4.60',
    ],
    extras_require={
        # The ROS 2 Python runtime from PyPI, for machines without a ROS install.
        'ros': [
            'ros-rclpy', 'ros-std-msgs', 'ros-sensor-msgs', 'ros-geometry-msgs',
            'ros-trajectory-msgs', 'ros-visualization-msgs', 'ros-nav-msgs',
            'ros-rosgraph-msgs', 'ros-std-srvs', 'ros-rmw-fastrtps-cpp',
        ],
        # Training and export; pinned: an unpinned torch pulls a multi-GB CUDA build.
        'train': ['torch==2.13.0'],
        # Episode collection and evaluation on Ray (--ray-address); pinned to the minor
        # version tested: vrat_ros keeps a loopback cluster on 127.0.0.1 through its settings.
        'scale': ['ray==2.60.*'],
        # Video, plots and MCAP recording.
        'viz': ['matplotlib>=3.7', 'imageio>=2.30', 'imageio-ffmpeg>=0.4', 'mcap>=1.1',
                'mcap-ros2-support>=0.5'],
        # ament_flake8 and ament_pep257 come from a ROS install or from these Kilted wheels.
        'test': ['pytest>=7', 'ros-ament-flake8', 'ros-ament-pep257', 'flake8>=6',
                 'pydocstyle>=6.3', 'yourdfpy>=0.0.56'],
    },
    zip_safe=False,
    maintainer='vrat_ros developers',
    maintainer_email='vrat-ros@users.noreply.github.com',
    description='ROS 2 bridge for an inverse-dynamics controlled virtual rat in MuJoCo.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [f'{n} = {t}' for n, t in NODE_EXECUTABLES.items()]
        + ['vrat = vrat_ros.cli:main'],
    },
)
