"""ament_flake8 over the package, tests, setup.py and launch files (99 columns)."""

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.linter
def test_flake8():
    main = pytest.importorskip('ament_flake8.main').main_with_errors
    rc, errors = main(argv=[str(ROOT / p) for p in ('vrat_ros', 'test', 'setup.py', 'launch')])
    assert rc == 0, f'Found {len(errors)} code style errors / warnings:\n' + '\n'.join(errors)
