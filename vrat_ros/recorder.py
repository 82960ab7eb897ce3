"""Records ROS 2 topics to MCAP (ROS 2 profile, CDR messages) and plays them back.

The files are what `ros2 bag record -s mcap` writes in spirit: one `ros2msg` schema per message
type (the .msg text with its dependencies), one `cdr` channel per topic, messages stored as
the serialized bytes received from the middleware. Foxglove and the mcap tools read them.
Recording subscribes with raw=True, so no message is deserialized on the way to the file.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import threading
import time

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy
from rclpy.qos import QoSProfile
from rclpy.qos import ReliabilityPolicy

from vrat_ros.errors import VratError

# Topics every node has; left out unless asked for by name.
DEFAULT_EXCLUDE = ('/rosout', '/parameter_events')
_SEPARATOR = '=' * 80
_IDL_TO_MSG = {'boolean': 'bool', 'octet': 'byte', 'float': 'float32', 'double': 'float64'}


class RecordError(VratError):
    """A topic cannot be recorded or a file cannot be played back."""


def message_class(type_name: str):
    """Returns the Python class of a ROS message type 'pkg/msg/Name' (or 'pkg/Name')."""
    parts = type_name.split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or parts[1] != 'msg':
        raise RecordError(f"'{type_name}' is not a message type name like 'std_msgs/msg/String'")
    try:
        return getattr(importlib.import_module(f'{parts[0]}.msg'), parts[2])
    except (ImportError, AttributeError) as exc:
        raise RecordError(f"message type '{type_name}' is not installed: {exc}") from exc


def _type_name(cls) -> str:
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


def _msg_search_dirs() -> list[str]:
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    return prefixes + [sys.prefix]


def _field_type_to_msg(idl: str) -> tuple[str, str | None]:
    """Maps a rosidl field type (e.g. 'sequence<double>') to .msg syntax and a nested type."""
    suffix = ''
    if idl.startswith('sequence<'):
        inner = idl[len('sequence<'):-1]
        inner, _, bound = inner.partition(', ')
        suffix = f'[<={bound}]' if bound else '[]'
        idl = inner
    elif idl.endswith(']'):
        idl, _, size = idl[:-1].rpartition('[')
        suffix = f'[{size}]'
    nested = idl if '/' in idl else None
    return _IDL_TO_MSG.get(idl, idl) + suffix, nested


def _own_definition(cls) -> str:
    """The .msg text of `cls`: the installed .msg file, else rebuilt from its fields."""
    package = cls.__module__.split('.')[0]
    for prefix in _msg_search_dirs():
        path = os.path.join(prefix, 'share', package, 'msg', cls.__name__ + '.msg')
        if os.path.isfile(path):
            with open(path, encoding='utf-8') as f:
                return f.read()
    # NOTE: rebuilt definitions lack constants and comments; decoders need neither.
    return ''.join(f'{_field_type_to_msg(t)[0]} {name}\n'
                   for name, t in cls.get_fields_and_field_types().items())


def message_definition(cls) -> str:
    """Returns the ros2msg schema text of a message class, dependencies included.

    The layout is the one rosbag2 writes: the type's own definition, then for each nested
    type a line of '=' characters, 'MSG: pkg/Name' and that type's definition.
    """
    parts, seen, pending = [_own_definition(cls)], set(), [cls]
    while pending:
        current = pending.pop(0)
        for field_type in current.get_fields_and_field_types().values():
            nested = _field_type_to_msg(field_type)[1]
            if nested is None or nested in seen:
                continue
            seen.add(nested)
            nested_cls = message_class(nested)
            parts.append(f'{_SEPARATOR}\nMSG: {nested}\n{_own_definition(nested_cls)}')
            pending.append(nested_cls)
    return '\n'.join(p.rstrip('\n') for p in parts) + '\n'


class McapRecorder:
    """Subscribes a node to topics and writes every message to an MCAP file.

    Topics are discovered on a timer (`discovery_period_s`), so topics that appear later are
    recorded from then on. The subscription's durability and reliability follow the
    publishers' offered QoS, so latched topics (robot_description, /tf_static) are recorded
    too. Call `close()` to finish the file (it is unreadable until then).

    Args:
        node: the node to subscribe with (it must be spun by the caller's executor).
        path: the .mcap file to write.
        topics: absolute topic names to record; None records every topic but the excluded.
        exclude: topics left out when `topics` is None.
        discovery_period_s: how often to look for new topics (s).
    """

    def __init__(self, node: Node, path: str, topics: list[str] | None = None,
                 exclude: tuple[str, ...] = DEFAULT_EXCLUDE, discovery_period_s: float = 0.5):
        from mcap.writer import Writer
        self.node = node
        self.path = path
        self.topics = None if topics is None else set(topics)
        self.exclude = set(exclude)
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._subscriptions = {}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._stream = open(path, 'wb')
        self._writer = Writer(self._stream)
        self._writer.start(profile='ros2', library='vrat_ros')
        self._closed = False
        self.discover()
        self._timer = node.create_timer(discovery_period_s, self.discover)

    def discover(self) -> None:
        """Subscribes to topics that appeared since the last call."""
        if self._closed:
            return
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self._subscriptions:
                continue
            if self.topics is not None and topic not in self.topics:
                continue
            if self.topics is None and topic in self.exclude:
                continue
            if len(types) != 1:
                self.node.get_logger().warn(
                    f'not recording {topic}: it has several types {types}', once=True)
                continue
            self._subscribe(topic, types[0])

    def _subscription_qos(self, topic: str) -> QoSProfile:
        offered = [info.qos_profile for info in self.node.get_publishers_info_by_topic(topic)]
        latched = bool(offered) and all(
            q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
        reliable = all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
        return QoSProfile(
            depth=100,
            durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                        else DurabilityPolicy.VOLATILE),
            reliability=(ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT))

    def _subscribe(self, topic: str, type_name: str) -> None:
        try:
            cls = message_class(type_name)
        except RecordError as exc:
            self.node.get_logger().warn(f'not recording {topic}: {exc}', once=True)
            return
        with self._lock:
            if type_name not in self._schemas:
                self._schemas[type_name] = self._writer.register_schema(
                    name=type_name, encoding='ros2msg',
                    data=message_definition(cls).encode('utf-8'))
            self._channels[topic] = self._writer.register_channel(
                topic=topic, message_encoding='cdr', schema_id=self._schemas[type_name])
            self.counts[topic] = 0

        # A one-argument callable: rclpy passes MessageInfo to two-argument callbacks.
        on_message = functools.partial(self._write, topic)
        self._subscriptions[topic] = self.node.create_subscription(
            cls, topic, on_message, self._subscription_qos(topic), raw=True)

    def _write(self, topic: str, data: bytes) -> None:
        now = time.time_ns()
        with self._lock:
            if self._closed:
                return
            self._writer.add_message(self._channels[topic], log_time=now, data=data,
                                     publish_time=now, sequence=self.counts[topic])
            self.counts[topic] += 1

    def close(self) -> None:
        """Stops recording and finishes the file (summary and index)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.node.destroy_timer(self._timer)
        for subscription in self._subscriptions.values():
            self.node.destroy_subscription(subscription)
        self._writer.finish()
        self._stream.close()


def read_messages(path: str):
    """Yields (topic, type_name, log_time_ns, cdr_bytes) from an MCAP file in log-time order."""
    from mcap.reader import make_reader
    with open(path, 'rb') as f:
        reader = make_reader(f)
        for schema, channel, message in reader.iter_messages(log_time_order=True):
            if channel.message_encoding != 'cdr' or schema is None:
                continue
            yield channel.topic, schema.name, message.log_time, message.data


def _topic_types(path: str) -> dict[str, str]:
    from mcap.reader import make_reader
    with open(path, 'rb') as f:
        summary = make_reader(f).get_summary()
    if summary is None:
        raise RecordError(f"'{path}' has no MCAP summary (was the recording finished?)")
    return {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()
            if c.message_encoding == 'cdr' and c.schema_id in summary.schemas}


def replay(node: Node, path: str, rate: float = 1.0, spin_once=None, should_stop=None,
           start_delay_s: float = 1.0) -> dict[str, int]:
    """Publishes the messages of an MCAP file on their topics, keeping their timing.

    Latched topics in the file (recorded from transient-local publishers) cannot be told
    apart, so every topic is published volatile and reliable.

    Args:
        node: the node that publishes.
        path: the .mcap file.
        rate: playback speed (1 = as recorded; higher is faster).
        spin_once: called with a timeout (s) while waiting (e.g. an executor's spin_once).
        should_stop: called between messages; returning True stops the playback.
        start_delay_s: at most this long (s) before the first message, for subscribers to
            connect; it ends early once every topic has a subscriber.

    Returns:
        {topic: messages published}.
    """
    if not rate > 0:
        raise ValueError(f'rate should be > 0: got {rate}')
    if not os.path.isfile(path):
        raise RecordError(f"'{path}' does not exist")

    def wait(seconds: float) -> None:
        if spin_once is not None:
            spin_once(seconds)
        else:
            time.sleep(seconds)

    publishers = {topic: node.create_publisher(message_class(type_name), topic, 100)
                  for topic, type_name in _topic_types(path).items()}
    counts = dict.fromkeys(publishers, 0)
    deadline = time.monotonic() + start_delay_s
    while time.monotonic() < deadline and not all(
            p.get_subscription_count() > 0 for p in publishers.values()):
        wait(0.02)
    start_wall = start_log = None
    for topic, _, log_time, data in read_messages(path):
        if should_stop is not None and should_stop():
            break
        if start_log is None:
            start_wall, start_log = time.monotonic(), log_time
        due = start_wall + (log_time - start_log) * 1e-9 / rate
        while (left := due - time.monotonic()) > 0:
            wait(min(left, 0.05))
        publishers[topic].publish(data)
        counts[topic] += 1
    return counts


def _with_node(name: str, work) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    rclpy.init(args=[])
    node = rclpy.create_node(name)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        return work(node, executor)
    except KeyboardInterrupt:
        return 0
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


def _cmd_record(args: argparse.Namespace) -> int:
    def work(node, executor) -> int:
        recorder = McapRecorder(node, args.out, topics=args.topics or None)
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        try:
            while deadline is None or time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
        finally:
            recorder.close()
        sys.stdout.write(f'recorded {sum(recorder.counts.values())} messages on '
                         f'{len(recorder.counts)} topics to {args.out}\n')
        return 0
    return _with_node('vrat_recorder', work)


def _cmd_replay(args: argparse.Namespace) -> int:
    def work(node, executor) -> int:
        while True:
            counts = replay(node, args.file, rate=args.rate,
                            spin_once=lambda t: executor.spin_once(timeout_sec=t))
            sys.stdout.write(f'replayed {sum(counts.values())} messages on {len(counts)} '
                             f'topics from {args.file}\n')
            if not args.loop:
                return 0
    return _with_node('vrat_replay', work)


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `vrat record` and `vrat replay` on the `vrat` command's subparsers."""
    p = subparsers.add_parser(
        'record', help='Record ROS 2 topics of a running graph to an MCAP file (ROS 2 CDR).')
    p.add_argument('--out', required=True, help='MCAP file to write.')
    p.add_argument('--seconds', type=float, default=None,
                   help='Stop after this many seconds (default: at Ctrl-C).')
    p.add_argument('topics', nargs='*',
                   help='Absolute topic names (default: all but /rosout, /parameter_events).')
    p.set_defaults(func=_cmd_record)

    p = subparsers.add_parser(
        'replay', help='Publish the messages of an MCAP recording on their topics, in time.')
    p.add_argument('file', help='MCAP file (from vrat run --record or vrat record).')
    p.add_argument('--rate', type=float, default=1.0,
                   help='Playback speed (default 1.0: as recorded).')
    p.add_argument('--loop', action='store_true', help='Start over at the end, until Ctrl-C.')
    p.set_defaults(func=_cmd_replay)
