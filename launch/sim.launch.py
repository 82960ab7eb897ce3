"""Starts the closed loop: reference, policy and MuJoCo sim nodes, each its own process.

Arguments (ros2 launch vrat_ros sim.launch.py --show-args lists them):
  robot                       the body of the sim, the viz node and the safety node: a name in
                              config/robots (rat, quadruped) or a robot YAML path; its joints,
                              rates and command interface must fit the policy's contract (the
                              clip's joints too)
  clip_file, policy_file      paths (a clip may also be a name `vrat clips` lists); left out,
                              they follow the robot: the clip and policy shipped for the rat,
                              or the robot file's defaults.clip and defaults.policy (e.g.
                              robot:=quadruped alone runs its held-out clip with
                              policies/quadruped_inverse_dynamics.onnx); a robot whose default
                              policy is missing stops the launch with a one-line error
                              (vrat_ros.resources.launch_files resolves them)
  mode                        lockstep (sim advances one control period per command) or realtime
  sim                         false leaves the sim out so a robot driver can take its place
  publish_float64_array       also send ros2_control-style Float64MultiArray commands
  use_sim_time                follow /clock from the sim (true with the sim)
  viz                         start rat_viz: robot_description, body and reference markers, TF
  rviz                        start RViz with config/vrat.rviz (implies viz)
  safety                      put the safety node between the policy and the sim or driver
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.actions import OpaqueFunction
from launch.actions import SetLaunchConfiguration
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch.substitutions import PathJoinSubstitution
from launch.substitutions import PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare
from launch_ros.parameter_descriptions import ParameterValue

from vrat_ros.resources import launch_files


def _files_of_the_robot(context):
    """Fills clip_file and policy_file, when left empty, from the robot (at launch time)."""
    config = context.launch_configurations
    clip, policy = launch_files(config['robot'], config.get('clip_file', ''),
                                config.get('policy_file', ''))
    return [SetLaunchConfiguration('clip_file', clip),
            SetLaunchConfiguration('policy_file', policy)]


def generate_launch_description():
    config_dir = PathJoinSubstitution([FindPackageShare('vrat_ros'), 'config'])
    clip_file = LaunchConfiguration('clip_file')
    policy_file = LaunchConfiguration('policy_file')
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    publish_array = ParameterValue(LaunchConfiguration('publish_float64_array'), value_type=bool)
    safety_on = LaunchConfiguration('safety')

    def through_safety(topic, checked):
        # With safety:=true the topic is remapped to the safety node's; otherwise left alone.
        return (topic, PythonExpression(
            ["'", checked, "' if '", safety_on, "' == 'true' else '", topic, "'"]))

    arguments = [
        DeclareLaunchArgument('clip_file', default_value='',
                              description="Reference clip (.npz) to track; default: the "
                                          "robot's (the rat: the shipped clip; another "
                                          "robot: its robot file's defaults.clip)."),
        DeclareLaunchArgument('policy_file', default_value='',
                              description="ONNX policy with a vrat contract; default: the "
                                          "robot's (the rat: the shipped policy; another "
                                          "robot: its robot file's defaults.policy)."),
        DeclareLaunchArgument('robot', default_value='rat',
                              description='Body of the sim: a robot name in config/robots '
                                          '(rat, quadruped) or a robot YAML path.'),
        DeclareLaunchArgument('mode', default_value='lockstep',
                              choices=['lockstep', 'realtime'],
                              description='Sim stepping: one period per command, or wall clock.'),
        DeclareLaunchArgument('sim', default_value='true', choices=['true', 'false'],
                              description='Start the MuJoCo sim; false leaves room for a driver.'),
        DeclareLaunchArgument('publish_float64_array', default_value='false',
                              choices=['true', 'false'],
                              description='Also publish effort_controller/commands.'),
        DeclareLaunchArgument('use_sim_time', default_value='true', choices=['true', 'false'],
                              description='Follow /clock published by the sim.'),
        DeclareLaunchArgument('viz', default_value='false', choices=['true', 'false'],
                              description='Publish robot_description, markers and TF.'),
        DeclareLaunchArgument('rviz', default_value='false', choices=['true', 'false'],
                              description='Start RViz with config/vrat.rviz (implies viz).'),
        DeclareLaunchArgument('safety', default_value='false', choices=['true', 'false'],
                              description='Check commands with the safety node on their way '
                                          'to the sim or driver.'),
    ]

    reference = Node(
        package='vrat_ros', executable='reference_node', name='reference', output='screen',
        parameters=[PathJoinSubstitution([config_dir, 'reference.yaml']),
                    {'clip_file': clip_file, 'policy_file': policy_file,
                     'use_sim_time': use_sim_time}])
    policy = Node(
        package='vrat_ros', executable='policy_node', name='policy', output='screen',
        remappings=[through_safety('joint_states', 'safety/joint_states'),
                    through_safety('odom', 'safety/odom')],
        parameters=[PathJoinSubstitution([config_dir, 'policy.yaml']),
                    {'policy_file': policy_file, 'use_sim_time': use_sim_time,
                     'publish_float64_array': publish_array}])
    safety = Node(
        package='vrat_ros', executable='safety_node', name='safety', output='screen',
        condition=IfCondition(safety_on),
        parameters=[PathJoinSubstitution([config_dir, 'safety.yaml']),
                    {'policy_file': policy_file, 'mode': LaunchConfiguration('mode'),
                     'robot': LaunchConfiguration('robot'),  # joint ranges of position bodies
                     'use_sim_time': use_sim_time, 'publish_float64_array': publish_array}])
    sim = Node(
        package='vrat_ros', executable='sim_node', name='rat_sim', output='screen',
        condition=IfCondition(LaunchConfiguration('sim')),
        # Both interfaces' command topics: the sim takes those of its robot's interface and
        # the safety node publishes those of the policy's contract (the two must agree).
        remappings=[through_safety(topic, 'safety/' + topic) for topic in (
            'policy/effort', 'effort_controller/commands',
            'policy/position', 'position_controller/commands')],
        parameters=[PathJoinSubstitution([config_dir, 'sim.yaml']),
                    {'clip_file': clip_file, 'mode': LaunchConfiguration('mode'),
                     'robot': LaunchConfiguration('robot'), 'use_sim_time': use_sim_time}])

    viz = Node(
        package='vrat_ros', executable='viz_node', name='rat_viz', output='screen',
        condition=IfCondition(PythonExpression(
            ["'", LaunchConfiguration('viz'), "' == 'true' or '",
             LaunchConfiguration('rviz'), "' == 'true'"])),
        parameters=[PathJoinSubstitution([config_dir, 'viz.yaml']),
                    {'robot': LaunchConfiguration('robot'), 'use_sim_time': use_sim_time}])
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', output='screen',
        condition=IfCondition(LaunchConfiguration('rviz')),
        arguments=['-d', PathJoinSubstitution([config_dir, 'vrat.rviz'])],
        parameters=[{'use_sim_time': use_sim_time}])

    # Before the nodes: their clip_file and policy_file substitutions read what it sets.
    robot_files = OpaqueFunction(function=_files_of_the_robot)
    return LaunchDescription(
        arguments + [robot_files, reference, policy, safety, sim, viz, rviz])
