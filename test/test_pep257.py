"""ament_pep257 with the Google docstring layout this package uses.

D401 is ignored too: summaries read "Returns the ...", as in dm_control. D402 and D403
misfire on summaries that mention a unit in brackets or start with a name like MuJoCo.
"""

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.linter
def test_pep257():
    main = pytest.importorskip('ament_pep257.main').main
    rc = main(argv=[str(ROOT / 'vrat_ros'), str(ROOT / 'test'),
                    '--add-ignore', 'D213', 'D401', 'D402', 'D403', 'D406', 'D407', 'D413'])
    assert rc == 0, 'Found code style errors / warnings'
