"""Shared test setup: keep ROS traffic on this machine, fixture files, an in-process ROS bed."""

import itertools
import os
import time

import pytest

# Before any rclpy init: a private domain on loopback only (override from the environment).
os.environ.setdefault('ROS_DOMAIN_ID', '57')
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

from fixtures import make_synthetic_clip  # noqa: E402
from fixtures import make_tiny_policy  # noqa: E402

_NAMESPACES = itertools.count()


@pytest.fixture(scope='session')
def rat_body():
    from vrat_ros.rat_model import RatBody
    return RatBody()


@pytest.fixture(scope='session')
def tiny_policy_path(tmp_path_factory, rat_body):
    path = tmp_path_factory.mktemp('policy') / 'tiny_policy.onnx'
    return make_tiny_policy(str(path), rat_body)


@pytest.fixture(scope='session')
def synthetic_clip_path(tmp_path_factory, rat_body):
    path = tmp_path_factory.mktemp('clip') / 'synthetic_30hz.npz'
    return make_synthetic_clip(str(path), rat_body)


class RosBed:
    """One rclpy Context with an executor and a probe node, for a single test.

    Every node made through `node_kwargs` lives in a namespace of its own, /clock included,
    so tests never hear each other even in the same ROS domain.
    """

    def __init__(self):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        self.context = Context()
        rclpy.init(context=self.context, args=[])
        self.namespace = f'/vrat_test_{os.getpid()}_{next(_NAMESPACES)}'
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes = []
        self.probe = self.add(rclpy.create_node('probe', **self.node_kwargs()))

    def node_kwargs(self, sub_namespace: str = '', **parameters) -> dict:
        """Node keyword arguments: this bed's context and namespace, and parameter values.

        `sub_namespace` puts the node (and its /clock) one level deeper, for a second graph.
        """
        from rclpy.parameter import Parameter
        namespace = self.namespace + (f'/{sub_namespace}' if sub_namespace else '')
        return {
            'context': self.context,
            'namespace': namespace,
            'cli_args': ['--ros-args', '-r', f'/clock:={namespace}/clock'],
            'parameter_overrides': [Parameter(k, value=v) for k, v in parameters.items()],
        }

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def spin_until(self, predicate, timeout_s: float = 10.0) -> bool:
        """Spins until `predicate()` is true or the timeout passes; returns predicate()."""
        deadline = time.monotonic() + timeout_s
        while not predicate() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)
        return bool(predicate())

    def spin_for(self, seconds: float) -> None:
        """Spins for a while, to let messages that should NOT cause anything arrive."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)

    def connect(self, publisher, count: int = 1, timeout_s: float = 10.0) -> None:
        """Wait until `publisher` has matched `count` subscriptions."""
        assert self.spin_until(lambda: publisher.get_subscription_count() >= count, timeout_s), (
            f'{publisher.topic_name} found no subscriber')

    def collect(self, msg_type, topic: str) -> list:
        """Subscribe the probe to `topic` and returns the list its messages go into."""
        received = []
        self.probe.create_subscription(msg_type, topic, received.append, 50)
        return received

    def close(self) -> None:
        import rclpy
        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def ros():
    bed = RosBed()
    try:
        yield bed
    finally:
        bed.close()
