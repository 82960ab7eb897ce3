"""The driver compatibility check: joint names, command interface and rate vs the contract."""

import pytest

from vrat_ros.driver_check import check_driver
from vrat_ros.driver_check import command_interfaces
from vrat_ros.driver_check import DriverCheck
from vrat_ros.driver_check import DriverMismatchError
from vrat_ros.driver_check import measured_rate_hz
from vrat_ros.policy import read_contract

MS = 1_000_000


@pytest.fixture
def contract(tiny_policy_path):
    return read_contract(tiny_policy_path)


def test_a_driver_that_fits_has_no_problems(contract, rat_body):
    # The sim publishes every hinge, the tail too; the contract reads the 43 others.
    assert check_driver(contract, rat_body.hinge_names, {'effort'}, 50.0) == []
    assert check_driver(contract, list(reversed(rat_body.hinge_names)), {'effort', 'position'},
                        52.0) == []
    assert check_driver(contract) == []  # nothing known: nothing to refuse


def test_missing_joints_are_named(contract, rat_body):
    names = [n for n in rat_body.hinge_names if n not in ('knee_L', 'elbow_R')]
    problems = check_driver(contract, names)
    assert len(problems) == 1
    assert 'knee_L' in problems[0] and 'elbow_R' in problems[0]
    assert 'lacks 2 of the 43 joints' in problems[0]
    repeated = check_driver(contract, rat_body.hinge_names + ['knee_L'])
    assert repeated == ['joint_states repeats joint names: knee_L']


def test_a_different_command_interface_is_named(contract):
    problems = check_driver(contract, interfaces={'position'})
    assert problems == ["the driver takes ['position'] commands; the policy's contract needs "
                        "'effort' (policy/effort, safety/effort, effort_controller/commands)"]


@pytest.mark.parametrize('rate_hz', [25.0, 44.0, 56.0, 100.0], ids=lambda r: f'{r:g}Hz')
def test_a_different_rate_is_named(contract, rate_hz):
    problems = check_driver(contract, rate_hz=rate_hz)
    assert problems == [f'the driver publishes joint_states at {rate_hz:g} Hz; the policy was '
                        'trained for 50 Hz (tolerance 10%)']


def test_rate_is_measured_from_distinct_stamps():
    stamps = [0, 0, 20 * MS, 20 * MS, 40 * MS, 61 * MS, 80 * MS]
    assert measured_rate_hz(stamps) == pytest.approx(50.0)
    assert measured_rate_hz([5, 5]) is None


def test_driver_check_refuses_wrong_names_at_the_first_message(contract, rat_body):
    check = DriverCheck(contract)
    names = [n for n in rat_body.hinge_names if n != 'ankle_R']
    with pytest.raises(DriverMismatchError, match='ankle_R'):
        check.observe(names, 0, {'effort'})
    assert not check.pending


def test_driver_check_refuses_a_wrong_rate_after_measuring_it(contract, rat_body):
    check = DriverCheck(contract, intervals=5)
    for k in range(5):  # 100 Hz, but five stamps give only four gaps: still measuring
        check.observe(rat_body.hinge_names, k * 10 * MS, {'effort'})
    assert check.pending
    with pytest.raises(DriverMismatchError, match='100 Hz; the policy was trained for 50 Hz'):
        check.observe(rat_body.hinge_names, 50 * MS, {'effort'})


def test_driver_check_passes_a_fitting_driver_and_then_stays_quiet(contract, rat_body):
    check = DriverCheck(contract, intervals=3)
    check.observe(rat_body.hinge_names, 0, {'effort'})
    # A later message lacking a joint is an input error of the policy, not another driver.
    check.observe(rat_body.hinge_names[1:], 0, set())
    for k in range(1, 4):
        check.observe(rat_body.hinge_names, k * 20 * MS, {'effort'})
    assert not check.pending and check.rate_hz == pytest.approx(50.0)
    check.observe(['nothing'], 10 * 20 * MS, {'position'})  # the check is over


def test_driver_check_refuses_a_position_driver(contract, rat_body):
    check = DriverCheck(contract)
    check.observe(rat_body.hinge_names, 0, set())  # its subscription not discovered yet
    with pytest.raises(DriverMismatchError, match="takes \\['position'\\] commands"):
        check.observe(rat_body.hinge_names, 0, {'position'})


def test_command_interfaces_are_read_from_subscribers():
    class Graph:
        def __init__(self, topics):
            self.topics = topics

        def count_subscribers(self, name):
            return self.topics.get(name, 0)

    assert command_interfaces(Graph({'policy/effort': 1})) == {'effort'}
    assert command_interfaces(Graph({'position_controller/commands': 2})) == {'position'}
    assert command_interfaces(Graph({})) == set()


def test_command_interfaces_in_a_live_graph(ros):
    from std_msgs.msg import Float64MultiArray
    node = ros.probe
    node.create_subscription(Float64MultiArray, 'velocity_controller/commands', print, 10)
    assert ros.spin_until(lambda: command_interfaces(node) == {'velocity'})
