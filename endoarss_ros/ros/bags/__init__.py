"""rosbag2 over DDS: play a bag through rclpy with its recorded timing, record topics into a
bag, and the `endoarss bag` command that fronts these and the ROS-free tools of
:mod:`endoarss_ros.bags`.
"""
