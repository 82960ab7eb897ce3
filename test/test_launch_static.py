"""Static checks of launch/sim.launch.py that run everywhere, with or without launch_ros.

Every executable a launch file starts must be a console script of the package, every parameter
file it names must exist and be keyed by the node's name, every parameter it sets must be one
the node declares, and every LaunchConfiguration must be declared as an argument.
"""

import ast
import pathlib
import re

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / 'launch' / 'sim.launch.py'


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else getattr(f, 'attr', '')


def _str_arg(call: ast.Call, index: int = 0, keyword: str | None = None):
    for kw in call.keywords:
        if kw.arg == keyword and isinstance(kw.value, ast.Constant):
            return kw.value.value
    if len(call.args) > index and isinstance(call.args[index], ast.Constant):
        return call.args[index].value
    return None


def _launch_calls():
    tree = ast.parse(LAUNCH.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _console_scripts() -> dict:
    text = (ROOT / 'setup.py').read_text()
    block = re.search(r'NODE_EXECUTABLES = \{(.*?)\}', text, re.S).group(1)
    return dict(re.findall(r"'(\w+)': '([\w.]+):main'", block))


def _nodes():
    nodes = []
    for call in _launch_calls():
        if _call_name(call) != 'Node':
            continue
        info = {kw.arg: kw.value for kw in call.keywords}
        params = info.get('parameters')
        files, keys = [], []
        for item in getattr(params, 'elts', []):
            if isinstance(item, ast.Call) and _call_name(item) == 'PathJoinSubstitution':
                parts = item.args[0].elts
                files.append(parts[-1].value)
            elif isinstance(item, ast.Dict):
                keys += [k.value for k in item.keys]
        arguments = info.get('arguments')
        for item in getattr(arguments, 'elts', []):
            if isinstance(item, ast.Call) and _call_name(item) == 'PathJoinSubstitution':
                files.append(item.args[0].elts[-1].value)
        nodes.append({'executable': info['executable'].value, 'name': info['name'].value,
                      'package': info['package'].value, 'files': files, 'keys': keys})
    return nodes


def _own_nodes():
    return [n for n in _nodes() if n['package'] == 'vrat_ros']


def test_launch_file_starts_the_loop_and_the_viz_nodes():
    names = sorted(n['name'] for n in _own_nodes())
    assert names == ['policy', 'rat_sim', 'rat_viz', 'reference', 'safety']
    others = [(n['package'], n['executable']) for n in _nodes() if n['package'] != 'vrat_ros']
    assert others == [('rviz2', 'rviz2')]


@pytest.mark.parametrize('node', _own_nodes(), ids=lambda n: n['name'])
def test_executable_is_a_console_script_of_the_package(node):
    scripts = _console_scripts()
    assert node['executable'] in scripts
    module = scripts[node['executable']].split('.')[-1]
    assert (ROOT / 'vrat_ros' / f'{module}.py').is_file()


@pytest.mark.parametrize('node', _own_nodes(), ids=lambda n: n['name'])
def test_parameter_files_exist_and_match_the_node(node):
    scripts = _console_scripts()
    source = (ROOT / 'vrat_ros' / (scripts[node['executable']].split('.')[-1] + '.py')).read_text()
    assert node['files'], 'each node should load its config/*.yaml'
    for name in node['files']:
        path = ROOT / 'config' / name
        assert path.is_file(), f'{path} is named by the launch file but missing'
        doc = yaml.safe_load(path.read_text())
        assert list(doc) == [node['name']], f'{name} should be keyed by node name {node["name"]}'
        for param in doc[node['name']]['ros__parameters']:
            assert f"'{param}'" in source, f'{name} sets {param}, which the node never declares'
    for key in node['keys']:
        if key == 'use_sim_time':  # declared by rclpy itself
            continue
        assert f"'{key}'" in source, f'launch sets {key}, which the node never declares'


def test_every_launch_configuration_is_declared():
    declared, used = set(), set()
    for call in _launch_calls():
        if _call_name(call) == 'DeclareLaunchArgument':
            declared.add(_str_arg(call))
        elif _call_name(call) == 'LaunchConfiguration':
            used.add(_str_arg(call))
    assert used <= declared, f'undeclared launch arguments: {sorted(used - declared)}'
    assert {'clip_file', 'policy_file', 'mode', 'sim', 'viz', 'rviz', 'safety'} <= declared


def test_rviz_config_named_by_the_launch_file_exists():
    rviz = [n for n in _nodes() if n['executable'] == 'rviz2']
    assert rviz and all((ROOT / 'config' / f).is_file() for f in rviz[0]['files'])
    assert rviz[0]['files'] == ['vrat.rviz']


def test_launch_defaults_point_at_shipped_files():
    from vrat_ros import resources
    assert pathlib.Path(resources.default_clip_path()).is_file()
    assert pathlib.Path(resources.default_policy_path()).is_file()


def test_launch_and_config_files_are_installed_by_setup():
    text = (ROOT / 'setup.py').read_text()
    assert "'launch/*.launch.py'" in text and "'config/*.yaml'" in text


def test_robot_argument_reaches_the_sim_and_the_contract_the_reference():
    robot = [c for c in _launch_calls() if _call_name(c) == 'DeclareLaunchArgument'
             and _str_arg(c) == 'robot']
    assert len(robot) == 1 and _str_arg(robot[0], keyword='default_value') == 'rat'
    nodes = {n['name']: n for n in _own_nodes()}
    assert 'robot' in nodes['rat_sim']['keys']
    # The reference node takes its window and root joint from the policy's contract.
    assert 'policy_file' in nodes['reference']['keys']


def _function(name: str) -> ast.FunctionDef:
    tree = ast.parse(LAUNCH.read_text())
    found = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
    assert len(found) == 1, f'{name} should be defined once in the launch file'
    return found[0]


def test_clip_and_policy_default_to_the_robots_files_at_launch_time():
    declared = {_str_arg(c): c for c in _launch_calls()
                if _call_name(c) == 'DeclareLaunchArgument'}
    for name in ('clip_file', 'policy_file'):
        # Empty: filled in from the robot by the OpaqueFunction before the nodes start.
        assert _str_arg(declared[name], keyword='default_value') == ''
    opaque = [c for c in _launch_calls() if _call_name(c) == 'OpaqueFunction']
    assert len(opaque) == 1
    function = opaque[0].keywords[0].value.id
    calls = [n for n in ast.walk(_function(function)) if isinstance(n, ast.Call)]
    assert 'launch_files' in {_call_name(c) for c in calls}
    assert {_str_arg(c) for c in calls if _call_name(c) == 'SetLaunchConfiguration'} == {
        'clip_file', 'policy_file'}
    # The OpaqueFunction comes before every node in the description it returns.
    returned = _function('generate_launch_description').body[-1].value
    order = [n.id for n in ast.walk(returned) if isinstance(n, ast.Name)]
    nodes = ('reference', 'policy', 'safety', 'sim')
    assert order.index('robot_files') < min(order.index(n) for n in nodes)


def test_launch_files_of_the_rat_are_the_shipped_ones():
    from vrat_ros import resources
    assert resources.launch_files('rat') == (resources.default_clip_path(),
                                             resources.default_policy_path())
    assert resources.launch_files('rat', '/my/clip.npz', '/my/policy.onnx') == (
        '/my/clip.npz', '/my/policy.onnx')


def test_launch_files_of_the_quadruped_are_its_defaults():
    from vrat_ros import resources
    from vrat_ros.errors import PolicyLoadError
    clip = resources.data_path('clips', 'quadruped', 'quadruped_eval_2010_2310.npz')
    policy = resources.data_path('policies', 'quadruped_inverse_dynamics.onnx')
    assert pathlib.Path(clip).is_file()
    if pathlib.Path(policy).is_file():
        assert resources.launch_files('quadruped') == (clip, policy)
    else:  # not trained yet: one line that says what to give
        with pytest.raises(PolicyLoadError, match=re.escape(f"'{policy}' does not exist")) as e:
            resources.launch_files('quadruped')
        assert 'policy_file:=FILE' in str(e.value) and '\n' not in str(e.value)
    # Given files win; a clip name that `vrat clips` lists becomes its path.
    train = resources.data_path('clips', 'quadruped', 'quadruped_train_0_250.npz')
    assert resources.launch_files('quadruped', 'quadruped_train_0_250', '/my/policy.onnx') == (
        train, '/my/policy.onnx')
    assert resources.launch_files('quadruped', policy_file='/my/policy.onnx') == (
        clip, '/my/policy.onnx')


def test_launch_files_of_a_robot_file_given_by_path(tmp_path):
    from vrat_ros import resources
    from vrat_ros.robots import RobotSpecError
    text = (ROOT / 'config' / 'robots' / 'quadruped.yaml').read_text()
    policy = tmp_path / 'trained.onnx'
    policy.write_bytes(b'')  # only its path matters here
    robot = tmp_path / 'my_quadruped.yaml'
    robot.write_text(text.replace('policy: policies/quadruped_inverse_dynamics.onnx',
                                  f'policy: {policy}'))
    clip = resources.data_path('clips', 'quadruped', 'quadruped_eval_2010_2310.npz')
    assert resources.launch_files(str(robot)) == (clip, str(policy))
    bare = tmp_path / 'no_defaults.yaml'
    bare.write_text(text[:text.index('\ndefaults:')] + '\n')
    with pytest.raises(ValueError, match="names no default clip .*; give clip_file:=FILE"):
        resources.launch_files(str(bare))
    with pytest.raises(RobotSpecError, match="robot 'no_such_robot' is neither"):
        resources.launch_files('no_such_robot')
