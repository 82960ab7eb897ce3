"""MCAP recording and replay: hand-published messages come back with the mcap library."""

import pytest

pytest.importorskip('rclpy')
pytest.importorskip('mcap')
mcap_ros2_decoder = pytest.importorskip('mcap_ros2.decoder')

from mcap.reader import make_reader  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from vrat_ros import recorder  # noqa: E402

N_STATES, N_MARKERS = 12, 3


def _record(ros, path):
    """Publishes a latched description, joint states, odometry and markers; records them."""
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    description = ros.probe.create_publisher(String, 'robot_description', latched)
    description.publish(String(data='<robot name="r"/>'))  # before the recorder exists
    states = ros.probe.create_publisher(JointState, 'joint_states', 10)
    odom = ros.probe.create_publisher(Odometry, 'odom', 10)
    markers = ros.probe.create_publisher(MarkerArray, 'markers/body', 10)
    topics = [f'{ros.namespace}/{t}' for t in
              ('robot_description', 'joint_states', 'odom', 'markers/body')]
    node = ros.add(Node('recorder', **ros.node_kwargs()))
    rec = recorder.McapRecorder(node, str(path), topics=topics, discovery_period_s=0.1)
    for pub in (states, odom, markers):
        ros.connect(pub)
    for i in range(N_STATES):
        states.publish(JointState(name=['knee_L'], position=[0.1 * i]))
        odom.publish(Odometry(child_frame_id='walker'))
        ros.spin_for(0.01)
    for i in range(N_MARKERS):
        markers.publish(MarkerArray(markers=[Marker(id=i, type=Marker.SPHERE)]))
    expected = {topics[0]: 1, topics[1]: N_STATES, topics[2]: N_STATES, topics[3]: N_MARKERS}
    assert ros.spin_until(lambda: rec.counts == expected, 10.0), rec.counts
    rec.close()
    return topics, expected


def test_recorded_mcap_holds_every_topic_with_the_right_counts(ros, tmp_path):
    path = tmp_path / 'run.mcap'
    topics, expected = _record(ros, path)
    counts, decoded = {}, {}
    with open(path, 'rb') as f:
        reader = make_reader(f, decoder_factories=[mcap_ros2_decoder.DecoderFactory()])
        assert reader.get_header().profile == 'ros2'
        summary = reader.get_summary()
        schemas = {s.name: s.encoding for s in summary.schemas.values()}
        assert schemas['sensor_msgs/msg/JointState'] == 'ros2msg'
        assert all(c.message_encoding == 'cdr' for c in summary.channels.values())
        for schema, channel, message, msg in reader.iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            decoded.setdefault(channel.topic, []).append(msg)
    assert counts == expected
    assert decoded[topics[0]][0].data == '<robot name="r"/>'
    assert [m.position[0] for m in decoded[topics[1]]] == pytest.approx(
        [0.1 * i for i in range(N_STATES)])
    assert decoded[topics[2]][0].child_frame_id == 'walker'
    assert [m.markers[0].id for m in decoded[topics[3]]] == list(range(N_MARKERS))


def test_replay_publishes_the_recording_on_the_same_topics(ros, tmp_path):
    path = tmp_path / 'run.mcap'
    topics, expected = _record(ros, path)
    heard = ros.collect(JointState, 'joint_states')
    node = ros.add(Node('replayer', **ros.node_kwargs()))
    counts = recorder.replay(node, str(path), rate=100.0, start_delay_s=1.0,
                             spin_once=lambda t: ros.executor.spin_once(timeout_sec=t))
    assert counts == expected
    assert ros.spin_until(lambda: len(heard) >= N_STATES, 10.0)
    assert [m.position[0] for m in heard] == pytest.approx([0.1 * i for i in range(N_STATES)])


def test_message_definition_lists_nested_types_once():
    text = recorder.message_definition(Odometry)
    assert text.count('MSG: std_msgs/Header') == 1
    assert 'MSG: geometry_msgs/PoseWithCovariance' in text
    assert 'MSG: builtin_interfaces/Time' in text


def test_replay_rejects_a_missing_file(ros, tmp_path):
    with pytest.raises(recorder.RecordError, match='does not exist'):
        recorder.replay(ros.probe, str(tmp_path / 'none.mcap'))
